// Live convergence diagnostics under each panel, from the worker's metrics: per unit (grid
// column) the split R-hat and the effective sample size of the activation over its chains,
// and its state in plain words (mixing, stuck in separate modes, not burned in yet); above the
// grid, the columns' labels (the checkpoint's class names when it has them).

const SHORT = {
  "mixing": "mixing",
  "stuck in separate modes": "stuck",
  "not burned in yet": "burn-in",
};
// Above this many columns a cell shows only its coloured mark (the numbers are in its title).
const DENSE_COLUMNS = 14;

function fixed(value, digits) {
  return value === null || value === undefined ? "—" : value.toFixed(digits);
}

export class Diagnostics {
  constructor() {
    this.info = null;
  }

  /** The `info` message: panels' units and unit labels. */
  setInfo(info) {
    this.info = info;
  }

  // The row above or below a panel's canvas, made once.
  row(figure, cls, before) {
    let row = figure.querySelector(`.${cls}`);
    if (!row) {
      row = document.createElement("div");
      row.className = cls;
      figure.insertBefore(row, before);
    }
    return row;
  }

  /** Lay out panel `index`'s label row (one cell per column of a unit layout) and its
   * diagnostics rows; `panel` is the frame header's entry, `layout` the parameters' layout. */
  layout(figure, index, panel, layout) {
    const canvas = figure.querySelector("canvas");
    const labels = this.row(figure, "columns", canvas);
    const diag = this.row(figure, "diag", canvas.nextSibling);
    const summary = this.row(figure, "diag-summary", diag.nextSibling);
    const units = layout === "chains" ? [] : this.units(index, panel.columns);
    const key = `${layout}|${units.join(",")}|${this.labelFor(index, units[0])}`;
    if (labels.dataset.key === key) return;
    labels.dataset.key = key;
    const columns = Math.max(1, units.length);
    for (const row of [labels, diag]) {
      row.style.gridTemplateColumns = `repeat(${columns}, minmax(0, 1fr))`;
      row.classList.toggle("dense", units.length > DENSE_COLUMNS);
    }
    labels.hidden = units.length === 0;
    labels.replaceChildren(...units.map((u) => {
      const cell = document.createElement("span");
      cell.textContent = this.labelFor(index, u);
      cell.title = `unit ${u}`;
      return cell;
    }));
    diag.replaceChildren();
    summary.textContent = "";
  }

  units(index, columns) {
    const panel = this.info?.panels?.[index];
    const units = panel?.units ?? [];
    return units.length === columns ? units : [];
  }

  labelFor(index, unit) {
    const labels = this.info?.panels?.[index]?.unit_labels ?? {};
    return labels[String(unit)] ?? String(unit);
  }

  /** The metrics' `diagnostics`: one entry per panel, `units` in column order. */
  update(diagnostics, figures) {
    (diagnostics || []).forEach((panel, i) => {
      const figure = figures[i];
      if (!figure || !panel) return;
      const diag = figure.querySelector(".diag");
      const summary = figure.querySelector(".diag-summary");
      if (!diag || !summary) return;
      if (panel.note) {
        diag.replaceChildren();
        summary.textContent = panel.note;
        return;
      }
      const units = panel.units || [];
      // One unit with many chains: one cell across the grid.
      diag.style.gridTemplateColumns = `repeat(${Math.max(1, units.length)}, minmax(0, 1fr))`;
      while (diag.children.length > units.length) diag.lastElementChild.remove();
      units.forEach((u, k) => {
        let cell = diag.children[k];
        if (!cell) {
          cell = document.createElement("span");
          cell.className = "unit-diag";
          diag.append(cell);
        }
        const text = `R̂ ${fixed(u.rhat, 2)}\nESS ${fixed(u.ess, 0)}\n${SHORT[u.state] ?? u.state}`;
        if (cell.textContent !== text) cell.textContent = text;
        cell.dataset.state = SHORT[u.state] ?? "other";
        const tuning = u.scale === undefined ? "" :
          `; activation ${fixed(u.activation, 3)}, own scale ${u.scale === null ? "none (absolute)" : fixed(u.scale, 4)}` +
          `, step ${fixed(u.step_size, 4)}${u.adapting ? " (adapting)" : ""}${u.dead ? "; dead unit" : ""}`;
        cell.title = `${u.label}: ${u.state}; split R-hat ${fixed(u.rhat, 3)}, ESS ${fixed(u.ess, 1)} ` +
          `of ${u.draws * u.chains} draws (${u.chains} chains)${tuning}`;
      });
      const counts = {};
      for (const u of units) counts[u.state] = (counts[u.state] ?? 0) + 1;
      const parts = ["mixing", "stuck in separate modes", "not burned in yet"]
        .filter((s) => counts[s])
        .map((s) => `${counts[s]} ${s}`);
      if (units.length === 1) summary.textContent = `The chains are ${units[0].state}.`;
      else summary.textContent = units.length ? `${units.length} units: ${parts.join(", ")}.` : "";
      summary.dataset.states = Object.keys(counts).join(",");
    });
  }
}
