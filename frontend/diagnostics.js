// Live convergence diagnostics under each panel, from the worker's metrics: per unit (grid
// column) the split R-hat and the effective sample size of the activation over its chains,
// its state in plain words (mixing, stuck in separate modes, not burned in yet), and how many
// different images its chains hold (modes, Vendi score); above the grid, the columns' labels
// (the checkpoint's class names when it has them). In the compare view (two panels), under the
// second one, each unit's modes and Vendi of both models side by side with their difference.

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

function signed(value, digits) {
  if (value === null || value === undefined) return "—";
  const text = value.toFixed(digits);
  return value > 0 ? `+${text}` : text.replace("-", "−");
}

function difference(a, b) {
  return a === null || a === undefined || b === null || b === undefined ? null : b - a;
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
    const compare = this.row(figure, "diag-compare", summary.nextSibling);
    const units = layout === "chains" ? [] : this.units(index, panel.columns);
    const key = `${layout}|${units.join(",")}|${this.labelFor(index, units[0])}`;
    if (labels.dataset.key === key) return;
    labels.dataset.key = key;
    const columns = Math.max(1, units.length);
    for (const row of [labels, diag, compare]) {
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
    compare.replaceChildren();
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
        // Replica exchange: the lowest per-pair swap acceptance and the round trips.
        const swaps = (u.swap_acceptance ?? []).filter((a) => a !== null);
        const exchange = swaps.length
          ? `\nswap ${fixed(Math.min(...swaps), 2)} · trips ${u.round_trips}${u.adapting ? "…" : ""}`
          : "";
        const text = `R̂ ${fixed(u.rhat, 2)}\nESS ${fixed(u.ess, 0)}\n${SHORT[u.state] ?? u.state}` +
          `\nmodes ${u.modes ?? "—"} · V ${fixed(u.vendi, 1)}${exchange}`;
        if (cell.textContent !== text) cell.textContent = text;
        cell.dataset.state = SHORT[u.state] ?? "other";
        const tuning = u.scale === undefined ? "" :
          `; activation ${fixed(u.activation, 3)}, own scale ${u.scale === null ? "none (absolute)" : fixed(u.scale, 4)}` +
          `, step ${fixed(u.step_size, 4)}${u.adapting ? " (adapting)" : ""}${u.dead ? "; dead unit" : ""}` +
          (swaps.length
            ? `; replica swaps accepted per pair (cold first) ${u.swap_acceptance.map((a) => fixed(a, 2)).join(" ")}, ` +
              `${u.round_trips} round trips, ladder ${u.ladder.map((b) => fixed(b, 3)).join(" ")}`
            : "");
        const diverse = u.modes === null || u.modes === undefined
          ? "modes and Vendi once every chain's window is full"
          : `${u.modes} modes, Vendi ${fixed(u.vendi, 2)} (effective distinct window blocks)`;
        cell.title = `${u.label}: ${u.state}; split R-hat ${fixed(u.rhat, 3)}, ESS ${fixed(u.ess, 1)} ` +
          `of ${u.draws * u.chains} draws (${u.chains} chains); ${diverse}${tuning}`;
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
    this.compare(diagnostics || [], figures);
  }

  /** Under the second of two panels: per unit, the first panel's (main) and the second's
   * (compare) modes and Vendi, and the difference second − first. */
  compare(diagnostics, figures) {
    const [main, other] = diagnostics;
    const figure = figures[1];
    const row = figure?.querySelector(".diag-compare");
    if (!row) return;
    const units = other?.units ?? [];
    const theirs = new Map((main?.units ?? []).map((u) => [u.unit, u]));
    if (diagnostics.length !== 2 || main.note || other.note || !units.every((u) => theirs.has(u.unit))) {
      row.replaceChildren();
      return;
    }
    const names = [0, 1].map((i) => figures[i].querySelector("figcaption")?.textContent.split(" · ")[0]);
    while (row.children.length > units.length) row.lastElementChild.remove();
    units.forEach((u, k) => {
      let cell = row.children[k];
      if (!cell) {
        cell = document.createElement("span");
        cell.className = "unit-compare";
        row.append(cell);
      }
      const a = theirs.get(u.unit);
      const text = `modes ${a.modes ?? "—"}→${u.modes ?? "—"} (${signed(difference(a.modes, u.modes), 0)})` +
        `\nV ${fixed(a.vendi, 1)}→${fixed(u.vendi, 1)} (${signed(difference(a.vendi, u.vendi), 1)})`;
      if (cell.textContent !== text) cell.textContent = text;
      cell.title = `${u.label}: ${names[0] ?? "main"} ${a.modes ?? "—"} modes, Vendi ${fixed(a.vendi, 2)}; ` +
        `${names[1] ?? "compare"} ${u.modes ?? "—"} modes, Vendi ${fixed(u.vendi, 2)}; ` +
        `difference (compare − main) ${signed(difference(a.modes, u.modes), 0)} modes, ` +
        `Vendi ${signed(difference(a.vendi, u.vendi), 2)}`;
    });
  }
}
