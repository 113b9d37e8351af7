// The page: wires the stream, the controls and the charts; draws the panels; status line.

import { Charts } from "./charts.js";
import { Controls } from "./controls.js";
import { Diagnostics } from "./diagnostics.js";
import { Stream } from "./stream.js";
import { Timeline } from "./timeline.js";

const panelsBox = document.getElementById("panels");
const message = document.getElementById("message");
// What tests and curious users can read: the newest frame header and counts.
const debug = (window.ldam = { header: null, framesShown: 0, state: null, metrics: null, errors: [] });

const stream = new Stream({
  onFrame: drawFrame,
  onMessage: handleMessage,
  onOpen: () => setWorker("connected", "connected"),
  onClose: () => setWorker("offline", "disconnected: reconnecting"),
});
const controls = new Controls((msg) => stream.send(msg));
const charts = new Charts();
const timeline = new Timeline((msg) => stream.send(msg));
const diagnostics = new Diagnostics();

// --- frames ----------------------------------------------------------------------------

function panelElement(index) {
  let figure = panelsBox.children[index];
  if (!figure) {
    figure = document.createElement("figure");
    figure.className = "panel";
    const canvas = document.createElement("canvas");
    canvas.setAttribute("role", "img");
    const caption = document.createElement("figcaption");
    figure.append(canvas, caption);
    panelsBox.append(figure);
  }
  return figure;
}

function drawFrame(header, bitmaps) {
  while (panelsBox.children.length > bitmaps.length) panelsBox.lastElementChild.remove();
  panelsBox.dataset.count = String(bitmaps.length);
  // Wide grids (one row of units) read better stacked than side by side.
  const wide = bitmaps[0].width > 1.6 * bitmaps[0].height;
  panelsBox.classList.toggle("stacked", wide);
  bitmaps.forEach((bitmap, i) => {
    const figure = panelElement(i);
    const canvas = figure.querySelector("canvas");
    if (canvas.width !== bitmap.width || canvas.height !== bitmap.height) {
      canvas.width = bitmap.width;
      canvas.height = bitmap.height;
    }
    canvas.getContext("2d").drawImage(bitmap, 0, 0);
    const panel = header.panels[i];
    canvas.setAttribute("aria-label", `Samples of ${panel.label}: ${panel.target}`);
    const info = debug.info?.panels?.find((p) => p.label === panel.label);
    const shown = timeline.describe(panel.label, info?.step ?? null);
    text2(figure.querySelector("figcaption"), `${shown} · ${panel.target}`);
    diagnostics.layout(figure, i, panel, debug.state?.params?.layout);
  });
  debug.header = header;
  debug.framesShown += 1;
  document.body.dataset.frameSeq = String(header.seq);
  document.body.dataset.version = String(header.version);
  text("status-version", `v${header.version} · step ${header.step}`);
}

// --- messages --------------------------------------------------------------------------

function handleMessage(msg) {
  switch (msg.type) {
    case "state":
      debug.state = msg;
      controls.configure(msg.settings);
      controls.setState(msg.params, msg.version, msg.defaults);
      controls.applyUrl();
      if (debug.info) timeline.patchPicker(debug.info, msg.params);
      break;
    case "info":
      debug.info = msg;
      controls.setInfo(msg);
      diagnostics.setInfo(msg);
      timeline.patchPicker(msg, controls.params);
      text("status-device", `device ${msg.device ?? "—"}`);
      break;
    case "timeline":
      debug.timeline = msg;
      timeline.update(msg);
      break;
    case "metrics":
      debug.metrics = msg;
      controls.setMetrics(msg);
      showMetrics(msg);
      break;
    case "status":
      showStatus(msg);
      break;
    case "error":
      debug.errors.push(msg);
      flash(msg.message);
      break;
  }
}

function showMetrics(m) {
  const fps = stream.framesPerSecond();
  text("status-steps", `${m.steps_per_s.toFixed(0)} steps/s`);
  text("status-fps", `${fps.toFixed(0)} frames/s (worker ${m.frames_per_s.toFixed(0)})`);
  text("status-burnin", `burn-in ${m.burned_in}/${m.chains}`);
  text("status-resets", `resets ${m.resets}`);
  const d = m.disc;
  const discError = document.getElementById("disc-error");
  const restart = document.getElementById("disc-restart");
  const failed = Boolean(d && d.error);
  discError.hidden = !failed && !(m.disc_note);
  discError.textContent = failed ? d.error : m.disc_note || "";
  restart.hidden = !failed;
  document.getElementById("shake").classList.toggle("active", Boolean(m.shaking));
  diagnostics.update(m.diagnostics, panelsBox.children);
  charts.add(m, fps);
}

function showStatus(s) {
  const label = {
    running: "worker running",
    starting: "worker starting",
    restarting: `worker restarting (restart ${s.restarts})`,
    failed: "worker failed",
    waiting: "waiting for a checkpoint",
  }[s.worker] ?? s.worker;
  setWorker(s.worker, label);
  text("status-clients", `clients ${s.clients}`);
  if (s.error) flash(s.error);
}

function setWorker(state, label) {
  const pill = document.getElementById("status-worker");
  pill.dataset.state = state;
  pill.textContent = label;
}

function text(id, value) {
  text2(document.getElementById(id), value);
}

function text2(el, value) {
  if (el.textContent !== value) el.textContent = value;
}

let flashTimer = null;
function flash(textValue) {
  message.textContent = textValue;
  message.hidden = false;
  clearTimeout(flashTimer);
  flashTimer = setTimeout(() => { message.hidden = true; }, 6000);
}

// --- download --------------------------------------------------------------------------

function downloadPng() {
  const canvases = [...panelsBox.querySelectorAll("canvas")];
  if (!canvases.length) return;
  // Integer upscaling keeps pixels square and crisp in the saved file.
  const scale = Math.max(1, Math.floor(768 / Math.max(...canvases.map((c) => c.height))));
  const gap = canvases.length > 1 ? 8 * scale : 0;
  const out = document.createElement("canvas");
  out.width = canvases.reduce((w, c) => w + c.width * scale, 0) + gap * (canvases.length - 1);
  out.height = Math.max(...canvases.map((c) => c.height)) * scale;
  const ctx = out.getContext("2d");
  ctx.imageSmoothingEnabled = false;
  ctx.fillStyle = "#808080";
  ctx.fillRect(0, 0, out.width, out.height);
  let x = 0;
  for (const c of canvases) {
    ctx.drawImage(c, x, 0, c.width * scale, c.height * scale);
    x += c.width * scale + gap;
  }
  out.toBlob((blob) => {
    const link = document.createElement("a");
    const p = debug.state?.params;
    link.download = `ldam-${p?.layer || "grid"}-${p?.unit ?? 0}-step${debug.header?.step ?? 0}.png`;
    link.href = URL.createObjectURL(blob);
    link.click();
    setTimeout(() => URL.revokeObjectURL(link.href), 1000);
  }, "image/png");
}

document.getElementById("download").addEventListener("click", downloadPng);

// --- keyboard --------------------------------------------------------------------------

document.addEventListener("keydown", (event) => {
  const tag = event.target.tagName;
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  if (tag === "INPUT" && event.target.type !== "range" && event.target.type !== "checkbox") return;
  if (tag === "SELECT" || tag === "TEXTAREA") return;
  const actions = {
    " ": () => controls.togglePause(),
    r: () => stream.send({ type: "reset" }),
    s: () => stream.send({ type: "shake" }),
    a: () => controls.toggleAverage(),
    v: () => controls.toggleView(),
    "/": () => document.getElementById("layer-filter").focus(),
    d: () => downloadPng(),
    "[": () => controls.stepUnit(-1),
    "]": () => controls.stepUnit(1),
    "?": () => document.getElementById("help").showModal(),
  };
  const action = actions[event.key];
  if (action) {
    event.preventDefault();
    action();
  }
});

setInterval(() => text("status-fps", `${stream.framesPerSecond().toFixed(0)} frames/s` +
  (debug.metrics ? ` (worker ${debug.metrics.frames_per_s.toFixed(0)})` : "")), 1000);

stream.connect();
