// Controls: sliders, toggles, pickers and buttons send messages; server state updates them.
//
// Every sampler control takes its bounds, default, scale and step from the server's settings
// model (the `settings` list of the state message): nothing about a setting's range is written
// here or in the HTML. Log sliders hold log10 of the value (so `temperature` at -2 is
// T = 0.01); the shown value is the parameter itself. While the user drags, messages go out at most every SEND_MS and the
// page does not overwrite the control being moved.

import { LayerPicker } from "./layers.js";

const SEND_MS = 40;
const HOLD_MS = 600;
// The settings the page picks from a list (`select` elements with these ids).
const CHOICES = ["normalize", "energy_scale", "prior", "transforms"];

function formatValue(value, integer) {
  if (integer) return String(Math.round(value));
  if (value === 0) return "0";
  const a = Math.abs(value);
  if (a >= 100) return value.toFixed(0);
  if (a >= 0.01) return value.toPrecision(3).replace(/\.?0+$/, "");
  return value.toExponential(1);
}

export class Controls {
  /** @param {(msg: object) => void} send */
  constructor(send) {
    this.send = send;
    this.params = null;
    this.defaults = null;
    this.touched = new Map(); // element id -> time the user last moved it
    this.queued = {};
    this.timer = null;
    this.info = null;
    this.settings = null; // name -> the server's description of a setting
    this.appliedUrl = false;
    this.layers = new LayerPicker(
      document.getElementById("layer"),
      document.getElementById("layer-filter"),
      document.getElementById("layer-count"),
      (name) => this.set(this.layerChanges(name)),
    );
    this.bindSliders();
    this.bindToggles();
    this.bindPickers();
    this.bindButtons();
  }

  // --- outgoing ------------------------------------------------------------------------

  set(changes) {
    Object.assign(this.queued, changes);
    if (this.timer === null) {
      this.timer = setTimeout(() => this.flush(), SEND_MS);
    }
  }

  flush() {
    this.timer = null;
    const changes = this.queued;
    this.queued = {};
    if (Object.keys(changes).length) this.send({ type: "set", ...changes });
  }

  /** Once, from the first state: every control's span, scale, step and choices. */
  configure(described) {
    if (this.settings || !described) return;
    this.settings = Object.fromEntries(described.map((d) => [d.name, d]));
    // A setting with a control span and no slider of its own on the page gets a plain one, so
    // a new setting of the model reaches the page with no change here.
    const more = document.getElementById("more-settings");
    for (const d of described) {
      if (!d.slider || document.querySelector(`.slider[data-param="${d.name}"]`)) continue;
      const box = document.createElement("div");
      box.className = "slider";
      box.dataset.param = d.name;
      const label = document.createElement("label");
      label.htmlFor = d.name;
      label.textContent = d.name.replaceAll("_", " ");
      const output = document.createElement("output");
      output.htmlFor = d.name;
      output.id = `${d.name}-value`;
      const input = document.createElement("input");
      input.id = d.name;
      input.type = "range";
      box.append(label, output, input);
      more.append(box);
      more.hidden = false;
      this.bindSlider(box);
    }
    for (const box of document.querySelectorAll(".slider")) {
      const d = this.settings[box.dataset.param];
      if (!d?.slider) continue;
      const input = box.querySelector("input");
      const log = d.slider.scale === "log";
      box.dataset.scale = d.slider.scale;
      box.dataset.integer = String(d.kind === "int");
      input.min = String(log ? Math.log10(d.slider.low) : d.slider.low);
      input.max = String(log ? Math.log10(d.slider.high) : d.slider.high);
      input.step = String(d.slider.step);
      box.title = d.help;
    }
    for (const el of document.querySelectorAll("[data-setting]")) {
      const d = this.settings[el.dataset.setting];
      if (!d) continue;
      el.title = d.help;
      if (el.tagName === "SELECT") {
        el.replaceChildren(...d.choices.map((c) => new Option(c, c)));
      } else {
        if (d.low !== null) el.min = String(d.low);
        if (d.high !== null) el.max = String(d.high);
      }
    }
    // A sweep's rows take values of one per-chain setting the page shows.
    const label = (name) => document.querySelector(`label[for="${name}"]`)?.textContent ?? name;
    document.getElementById("sweep_param").replaceChildren(
      ...described.filter((d) => d.scope === "per_chain").map((d) => new Option(label(d.name), d.name)),
    );
  }

  sliderValue(input) {
    const box = input.closest(".slider");
    const raw = Number(input.value);
    let value = box.dataset.scale === "log" ? 10 ** raw : raw;
    if (box.dataset.integer === "true") value = Math.round(value);
    return value;
  }

  bindSliders() {
    for (const box of document.querySelectorAll(".slider")) this.bindSlider(box);
  }

  bindSlider(box) {
    {
      const input = box.querySelector("input");
      const output = box.querySelector("output");
      const update = () => {
        const value = this.sliderValue(input);
        output.textContent = formatValue(value, box.dataset.integer === "true");
        return value;
      };
      const autoBox = { window: "window_auto", step_size: "step_auto" }[box.dataset.param];
      if (autoBox) {
        // Moving the slider is choosing a value: automatic goes off.
        input.addEventListener("input", () => { document.getElementById(autoBox).checked = false; });
      }
      input.addEventListener("input", () => {
        this.touched.set(input.id, performance.now());
        this.set({ [box.dataset.param]: update() });
      });
      input.addEventListener("change", () => {
        this.touched.set(input.id, performance.now());
        this.set({ [box.dataset.param]: update() });
      });
      update();
    }
  }

  bindToggles() {
    // The choices of the settings model (a changed prior or transforms rebuilds the chains).
    for (const name of CHOICES) {
      const select = document.getElementById(name);
      select.addEventListener("change", () => this.set({ [name]: select.value }));
    }
    // Automatic window and step: null, fitted to the memory budget / adapted in burn-in.
    for (const [box, param] of [["window_auto", "window"], ["step_auto", "step_size"]]) {
      const auto = document.getElementById(box);
      auto.addEventListener("change", () => {
        this.set({ [param]: auto.checked ? null : this.sliderValue(document.getElementById(param)) });
      });
    }
    const disc = document.getElementById("disc_training");
    disc.addEventListener("change", () => this.set({ disc_training: disc.checked }));
    const avg = document.getElementById("show_average");
    avg.addEventListener("change", () => this.set({ show: avg.checked ? "average" : "sample" }));
    const view = document.getElementById("view_input");
    view.addEventListener("change", () => this.set({ view: view.checked ? "input" : "symmetric" }));
  }

  bindPickers() {
    const on = (id, make) => {
      const el = document.getElementById(id);
      el.addEventListener("change", () => {
        this.touched.set(id, performance.now());
        const changes = make(el);
        if (changes) this.set(changes);
      });
    };
    // "" is the "(from the command line)" entry: the server goes back to the operator's file.
    on("checkpoint", (el) => ({ checkpoint: el.value }));
    on("compare", (el) => ({ compare: el.value }));
    on("layer", (el) => this.layerChanges(el.value));
    on("layout", (el) => ({ layout: el.value }));
    const int = (el) => Math.max(0, Math.round(Number(el.value)));
    on("unit", (el) => ({ unit: int(el) }));
    on("unit_end", (el) => ({ unit_end: int(el) }));
    on("chains", (el) => ({ chains: Math.max(1, int(el)) }));
    on("seed", (el) => ({ seed: int(el) }));
    on("sweep_param", (el) => ({ sweep_param: el.value }));
    on("sweep_values", (el) => {
      const values = el.value.split(/[,\s]+/).filter(Boolean).map(Number);
      if (!values.length || values.some((v) => !Number.isFinite(v))) {
        el.setCustomValidity("Give numbers separated by commas.");
        el.reportValidity();
        return null;
      }
      el.setCustomValidity("");
      return { sweep_values: values };
    });
  }

  bindButtons() {
    document.getElementById("reset").addEventListener("click", () => this.send({ type: "reset" }));
    document.getElementById("shake").addEventListener("click", () => this.send({ type: "shake" }));
    document.getElementById("pause").addEventListener("click", () => this.togglePause());
    document.getElementById("disc-restart").addEventListener("click", () => this.send({ type: "disc_restart" }));
  }

  /** A new target layer: its first unit, and up to ten units for the range layout. */
  layerChanges(name) {
    const layer = this.layerInfo(name);
    const last = layer ? Math.min(layer.units - 1, 9) : 9;
    return { layer: name, unit: 0, unit_end: last };
  }

  togglePause() {
    if (this.params) this.set({ paused: !this.params.paused });
  }

  toggleAverage() {
    if (this.params) this.set({ show: this.params.show === "average" ? "sample" : "average" });
  }

  toggleView() {
    if (this.params) this.set({ view: this.shownView() === "input" ? "symmetric" : "input" });
  }

  /** The view the panels are drawn in: the chosen one, or for "auto" the one the worker
   * resolved for the main panel's network (`info.panels[0].auto_view`). */
  shownView() {
    const view = this.params?.view;
    return view === "auto" ? this.info?.panels?.[0]?.auto_view ?? "symmetric" : view;
  }

  stepUnit(delta) {
    if (!this.params) return;
    const layer = this.layerInfo(this.params.layer);
    const max = layer ? layer.units - 1 : Infinity;
    const unit = Math.min(max, Math.max(0, this.params.unit + delta));
    const span = this.params.unit_end - this.params.unit;
    this.set({ unit, unit_end: Math.min(max, Math.max(0, unit + span)) });
  }

  // --- incoming ------------------------------------------------------------------------

  layerInfo(name) {
    return this.info?.layers?.find((l) => l.name === name) ?? null;
  }

  busy(id) {
    const t = this.touched.get(id);
    return (t !== undefined && performance.now() - t < HOLD_MS) || (document.activeElement?.id === id && id !== "pause");
  }

  /** The value in force of an automatic setting: the fitted window, the adapted step. */
  inForce(param) {
    if (param === "window") return this.info?.window ?? 1;
    const units = this.metrics?.diagnostics?.[0]?.units ?? [];
    const steps = units.map((u) => u.step_size).filter((v) => typeof v === "number");
    return steps.length ? steps.reduce((a, b) => a + b, 0) / steps.length : 0.05;
  }

  /** Live figures (`metrics` message): an automatic step's slider shows the adapted value. */
  setMetrics(metrics) {
    this.metrics = metrics;
    if (this.params?.step_size !== null || this.busy("step_size")) return;
    const box = document.querySelector('.slider[data-param="step_size"]');
    const value = this.inForce("step_size");
    box.querySelector("input").value = String(Math.log10(Math.max(value, 1e-12)));
    box.querySelector("output").textContent = formatValue(value, false);
  }

  /** The model and checkpoints (`info` message): fill the pickers. */
  setInfo(info) {
    this.info = info;
    this.layers.setLayers(info.layers);
    const note = document.getElementById("window-note");
    note.textContent = info.window_note || "";
    note.hidden = !info.window_note;
    if (this.params?.window === null && !this.busy("window")) {
      const box = document.querySelector('.slider[data-param="window"]');
      const input = box.querySelector("input");
      input.value = String(Math.log10(Math.max(info.window ?? 1, 1)));
      box.querySelector("output").textContent = formatValue(info.window ?? 0, true);
    }
    const names = info.checkpoints || [];
    const fill = (select, none) => {
      const options = names.map((n) => new Option(n, n));
      if (none) options.unshift(new Option(none, ""));
      select.replaceChildren(...options);
    };
    const checkpoint = document.getElementById("checkpoint");
    fill(checkpoint, null);
    // The operator's checkpoint stays selectable after another one was picked.
    const label = info.operator_checkpoint ?? info.panels?.[0]?.label;
    if (label && !names.includes(label)) checkpoint.prepend(new Option(`${label} (from the command line)`, ""));
    fill(document.getElementById("compare"), "none");
    // New options reset a select to its first one: show the current parameters again, even
    // on a control the user is moving (its new value is already on its way).
    if (this.params) {
      this.layers.setCurrent(this.params.layer);
      checkpoint.value = this.params.checkpoint ?? "";
      document.getElementById("compare").value = this.params.compare ?? "";
      this.setState(this.params, this.version, this.defaults);
    }
  }

  /** The full parameters (`state` message): move every control to them. */
  setState(params, version, defaults) {
    this.params = params;
    this.version = version;
    if (defaults) this.defaults = defaults;
    for (const box of document.querySelectorAll(".slider")) {
      const input = box.querySelector("input");
      if (this.busy(input.id)) continue;
      let value = params[box.dataset.param];
      // An automatic window or step shows the value in force, which the worker reports.
      if (value === null) value = this.inForce(box.dataset.param);
      input.value = box.dataset.scale === "log" ? Math.log10(Math.max(value, 1e-12)) : value;
      box.querySelector("output").textContent = formatValue(value, box.dataset.integer === "true");
    }
    document.getElementById("window_auto").checked = params.window === null;
    document.getElementById("step_auto").checked = params.step_size === null;
    document.getElementById("disc_training").checked = params.disc_training;
    document.getElementById("show_average").checked = params.show === "average";
    document.getElementById("view_input").checked = this.shownView() === "input";
    const pause = document.getElementById("pause");
    pause.textContent = params.paused ? "Resume" : "Pause";
    pause.setAttribute("aria-pressed", String(params.paused));
    const put = (id, value) => { if (!this.busy(id)) document.getElementById(id).value = value; };
    if (!this.busy("layer")) this.layers.setCurrent(params.layer);
    put("layout", params.layout);
    put("unit", params.unit);
    put("unit_end", params.unit_end);
    put("chains", params.chains);
    put("seed", params.seed);
    put("sweep_param", params.sweep_param);
    for (const name of CHOICES) put(name, params[name]);
    put("sweep_values", params.sweep_values.join(", "));
    put("checkpoint", params.checkpoint ?? "");
    put("compare", params.compare ?? "");
    const layer = this.layerInfo(params.layer);
    if (layer) {
      document.getElementById("unit").max = layer.units - 1;
      document.getElementById("unit_end").max = layer.units - 1;
    }
    for (const el of document.querySelectorAll("[data-when]")) {
      el.hidden = !el.dataset.when.split(" ").includes(params.layout);
    }
    this.writeUrl();
  }

  // --- the URL holds the settings --------------------------------------------------------

  writeUrl() {
    if (!this.params || !this.defaults || !this.appliedUrl) return;
    const query = new URLSearchParams();
    for (const [key, value] of Object.entries(this.params)) {
      if (JSON.stringify(value) === JSON.stringify(this.defaults[key])) continue;
      const none = this.settings?.[key]?.none ?? "";
      query.set(key, Array.isArray(value) ? value.join(",") : value === null ? none : String(value));
    }
    const text = query.toString();
    const url = text ? `${location.pathname}?${text}` : location.pathname;
    if (url !== location.pathname + location.search) history.replaceState(null, "", url);
  }

  /** Once, after the first state: send the settings the page's URL carries. */
  applyUrl() {
    if (this.appliedUrl || !this.params) return;
    this.appliedUrl = true;
    const query = new URLSearchParams(location.search);
    const changes = {};
    for (const [key, text] of query) {
      if (!(key in this.params) || (text === "" && key !== "compare")) continue;
      const current = this.params[key];
      const setting = this.settings?.[key];
      if (setting?.none && text === setting.none) changes[key] = null;
      else if (setting && (setting.kind === "int" || setting.kind === "float")) changes[key] = Number(text);
      else if (Array.isArray(current)) changes[key] = text.split(",").filter(Boolean).map(Number);
      else if (typeof current === "boolean") changes[key] = text === "true";
      else if (typeof current === "number") changes[key] = Number(text);
      else changes[key] = text;
    }
    if (Object.keys(changes).length) this.send({ type: "set", ...changes });
    this.writeUrl();
  }
}
