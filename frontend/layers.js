// The target-layer picker: hundreds of layers, grouped by module and narrowed by a filter.
//
// Layers come in the worker's order, the order the network runs them. They are cut into
// groups by the start of their dotted names: one group per top-level module ("layer1",
// "blocks", "features"), and a group of more than MAX_GROUP layers is cut again one name
// level deeper ("blocks" -> "blocks.0" ... "blocks.11"), so a ViT's blocks and a ConvNeXt's
// stages each get a group of their own. A layer alone in its group (a top-level "conv1",
// "fc", "output") is listed outside any group.
//
// The filter keeps the layers whose text holds every word typed: the name, the shape
// ("197x192" or "197×192") and the kind ("tokens", "channels_last"). Enter picks the first
// match, ArrowDown opens the list, Escape clears the filter. The current layer stays in the
// list even when it does not match, so the picker always shows what is sampled.

export const MAX_GROUP = 32;

function keyAt(name, depth) {
  return name.split(".").slice(0, depth).join(".");
}

/**
 * Consecutive groups of `layers` (each {name, shape, units, kind?}) in their order.
 * @returns {{label: string | null, layers: object[]}[]}  label null: a layer alone, no group
 */
export function groupLayers(layers, maxGroup = MAX_GROUP) {
  const groups = [];
  const cut = (members, depth) => {
    const runs = [];
    for (const layer of members) {
      const key = keyAt(layer.name, depth);
      const run = runs[runs.length - 1];
      if (run && run.key === key) run.layers.push(layer);
      else runs.push({ key, layers: [layer] });
    }
    for (const run of runs) {
      const deeper = run.layers.some((l) => l.name.split(".").length > depth);
      if (run.layers.length > maxGroup && deeper) cut(run.layers, depth + 1);
      else groups.push({ label: run.layers.length > 1 ? run.key : null, layers: run.layers });
    }
  };
  cut(layers, 1);
  return groups;
}

/** What an option shows: name, output shape (and kind, when the worker says), units. */
export function layerLabel(layer) {
  const kind = layer.kind ? ` ${layer.kind.replace("_", " ")}` : "";
  return `${layer.name} [${layer.shape.join("×")}]${kind} · ${layer.units} units`;
}

/** True when `layer` holds every word of `query` (case-insensitive) in its name, shape or kind. */
export function layerMatches(layer, query) {
  const words = query.toLowerCase().split(/\s+/).filter(Boolean);
  if (!words.length) return true;
  const shape = layer.shape.join("x");
  const text = `${layer.name} ${shape} ${shape.replaceAll("x", "×")} ${layer.kind ?? ""}`.toLowerCase();
  return words.every((w) => text.includes(w));
}

export class LayerPicker {
  /**
   * @param {HTMLSelectElement} select  the picker (its change event is the pick)
   * @param {HTMLInputElement} filter   the search box
   * @param {HTMLElement} count         "12 of 213 layers"
   * @param {(name: string) => void} pick  called when the filter's Enter picks a layer
   */
  constructor(select, filter, count, pick) {
    this.select = select;
    this.filter = filter;
    this.count = count;
    this.pick = pick;
    this.layers = [];
    this.groups = [];
    this.current = "";
    filter.addEventListener("input", () => this.render());
    filter.addEventListener("keydown", (event) => this.onKey(event));
  }

  /** A new model's layers (the `info` message). */
  setLayers(layers) {
    this.layers = layers || [];
    this.groups = groupLayers(this.layers);
    this.render();
  }

  /** The layer the server samples; shown whether or not it matches the filter. */
  setCurrent(name) {
    if (name === this.current && this.select.value === name) return;
    this.current = name;
    this.render();
  }

  matching() {
    return this.layers.filter((l) => layerMatches(l, this.filter.value));
  }

  render() {
    const query = this.filter.value;
    const nodes = [];
    for (const group of this.groups) {
      const options = [];
      for (const layer of group.layers) {
        const match = layerMatches(layer, query);
        if (!match && layer.name !== this.current) continue;
        const option = new Option(layerLabel(layer) + (match ? "" : " (current)"), layer.name);
        options.push(option);
      }
      if (!options.length) continue;
      if (group.label === null) {
        nodes.push(...options);
      } else {
        const optgroup = document.createElement("optgroup");
        optgroup.label = group.label;
        optgroup.append(...options);
        nodes.push(optgroup);
      }
    }
    this.select.replaceChildren(...nodes);
    this.select.value = this.current;
    const total = this.layers.length;
    const noun = total === 1 ? "layer" : "layers";
    this.count.textContent = query.trim()
      ? `${this.matching().length} of ${total} ${noun} match`
      : `${total} ${noun}`;
  }

  onKey(event) {
    if (event.key === "Enter") {
      event.preventDefault();
      const first = this.matching()[0];
      if (first) {
        this.current = first.name;
        this.render();
        this.pick(first.name);
      }
    } else if (event.key === "ArrowDown") {
      event.preventDefault();
      this.select.focus();
      try {
        this.select.showPicker();
      } catch {
        // Older browsers cannot open a select from script; it has the focus for its arrows.
      }
    } else if (event.key === "Escape" && this.filter.value) {
      event.preventDefault();
      this.filter.value = "";
      this.render();
    }
  }
}
