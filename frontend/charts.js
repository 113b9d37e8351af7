// Live charts of the worker's metrics with uPlot (served from node_modules by the app).
//
// Each chart keeps the last HISTORY points (metrics arrive about 4 times a second) and is
// redrawn at most once per animation frame.

const HISTORY = 480;
const AXIS = { stroke: "#8b93a1", grid: { stroke: "#262b33", width: 1 }, ticks: { stroke: "#262b33" } };

// Short tick labels: 1200 -> "1.2k", 0.25 -> "0.25".
function compact(v) {
  const a = Math.abs(v);
  if (a >= 1e6) return `${+(v / 1e6).toFixed(1)}M`;
  if (a >= 1e3) return `${+(v / 1e3).toFixed(1)}k`;
  return `${+v.toPrecision(3)}`;
}

function makeChart(element, series, yRange) {
  const width = Math.max(240, element.clientWidth || 320);
  const opts = {
    width,
    height: 150,
    legend: { show: true, live: false },
    cursor: { drag: { x: false, y: false } },
    scales: { x: { time: false }, y: yRange ? { range: yRange } : {} },
    axes: [
      { ...AXIS, space: 60, values: (u, ticks) => ticks.map((t) => `${Math.round(t)} s`) },
      { ...AXIS, size: 52, values: (u, ticks) => ticks.map(compact) },
    ],
    series: [{}, ...series.map((s) => ({ width: 1.5, points: { show: false }, ...s }))],
  };
  const data = [[], ...series.map(() => [])];
  return { plot: new uPlot(opts, data, element), data, element };
}

export class Charts {
  constructor() {
    this.ready = typeof uPlot !== "undefined";
    this.dirty = false;
    if (!this.ready) return;
    this.activation = makeChart(document.getElementById("chart-activation"), [
      { label: "mean", stroke: "#7cc4ff" },
      { label: "min", stroke: "#3d6f94", dash: [4, 4] },
      { label: "max", stroke: "#3d6f94", dash: [4, 4] },
      { label: "compare mean", stroke: "#f2a65a" },
    ]);
    this.disc = makeChart(document.getElementById("chart-disc"), [
      { label: "loss", stroke: "#e06c75" },
      { label: "acc real", stroke: "#98c379" },
      { label: "acc generated", stroke: "#c678dd" },
      { label: "mean D(x)", stroke: "#e5c07b" },
    ]);
    this.speed = makeChart(document.getElementById("chart-speed"), [
      { label: "steps/s", stroke: "#7cc4ff", scale: "y" },
      { label: "frames/s", stroke: "#98c379", scale: "y" },
    ]);
    window.addEventListener("resize", () => this.resize());
  }

  static push(chart, values, t) {
    chart.data[0].push(t);
    values.forEach((v, i) => chart.data[i + 1].push(Number.isFinite(v) ? v : null));
    if (chart.data[0].length > HISTORY) chart.data.forEach((column) => column.shift());
  }

  /** Add one metrics message (see server.worker) to every chart. */
  add(metrics, shownFps) {
    if (!this.ready) return;
    // Seconds since this page opened, so the axis reads "0 s ... 120 s".
    this.start ??= metrics.time;
    const t = metrics.time - this.start;
    const stats = (values) => {
      if (!values || values.length === 0) return [NaN, NaN, NaN];
      let sum = 0, lo = Infinity, hi = -Infinity;
      for (const v of values) { sum += v; lo = Math.min(lo, v); hi = Math.max(hi, v); }
      return [sum / values.length, lo, hi];
    };
    const main = stats(metrics.activation?.[0]);
    const other = stats(metrics.activation?.[1]);
    Charts.push(this.activation, [...main, other[0]], t);
    const d = metrics.disc || {};
    Charts.push(this.disc, [d.loss, d.acc_real, d.acc_generated, d.mean_d], t);
    Charts.push(this.speed, [metrics.steps_per_s, shownFps], t);
    if (!this.dirty) {
      this.dirty = true;
      requestAnimationFrame(() => {
        this.dirty = false;
        for (const c of [this.activation, this.disc, this.speed]) c.plot.setData(c.data);
      });
    }
  }

  resize() {
    for (const c of [this.activation, this.disc, this.speed]) {
      c.plot.setSize({ width: Math.max(240, c.element.clientWidth), height: 150 });
    }
  }
}
