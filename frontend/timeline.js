// The run's timeline (`ldam serve --watch DIR`): every checkpoint of the run with its step and
// time, newest first, marked with what the panels show. "Show" puts one in the main panel with
// the same seeds (the run is then no longer followed), "Compare" holds one in the compare panel
// (newest against a chosen one while the main panel follows), "Follow newest" goes back to
// following the run.

function clock(seconds) {
  const d = new Date(seconds * 1000);
  const two = (n) => String(n).padStart(2, "0");
  return `${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}`;
}

function el(tag, attrs = {}, text = "") {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  if (text) node.textContent = text;
  return node;
}

export class Timeline {
  /** @param {(msg: object) => void} send */
  constructor(send) {
    this.send = send;
    this.box = document.getElementById("timeline");
    this.data = null;
  }

  /** The `timeline` message. */
  update(msg) {
    this.data = msg;
    const box = this.box;
    box.hidden = false;
    const head = el("div", { class: "timeline-head" });
    head.append(el("h2", {}, "Run"), el("span", { class: "folder", title: msg.folder }, msg.folder));
    const mode = msg.following ? "following the newest" : `showing ${msg.main ?? "—"} (pinned)`;
    head.append(el("span", { class: "mode", id: "timeline-mode" }, mode));
    if (!msg.following) {
      const follow = el("button", { type: "button", id: "timeline-follow" }, "Follow newest");
      follow.addEventListener("click", () => this.send({ type: "set", checkpoint: "" }));
      head.append(follow);
    }
    if (msg.compare) {
      const drop = el("button", { type: "button", id: "timeline-uncompare" }, "No compare");
      drop.addEventListener("click", () => this.send({ type: "set", compare: "" }));
      head.append(drop);
    }
    const children = [head];
    if (msg.note) children.push(el("p", { class: "warning", id: "timeline-note" }, msg.note));
    const list = el("ol", { class: "timeline-list", reversed: "" });
    for (const item of [...msg.checkpoints].reverse()) list.append(this.row(item, msg));
    children.push(list);
    box.replaceChildren(...children);
  }

  row(item, msg) {
    const li = el("li", { "data-name": item.name, "data-state": item.state });
    const step = item.step === null ? "—" : String(item.step);
    li.append(
      el("span", { class: "step" }, `step ${step}`),
      el("time", { class: "time", datetime: new Date(item.time * 1000).toISOString() }, clock(item.time)),
      el("span", { class: "name" }, item.name),
    );
    const marks = [];
    if (item.name === msg.main) marks.push("main");
    if (item.name === msg.compare) marks.push("compare");
    if (item.name === msg.newest) marks.push("newest");
    if (item.state === "writing") marks.push("being written");
    if (item.state === "failed") marks.push("failed");
    li.append(el("span", { class: "marks" }, marks.join(" · ")));
    if (item.state === "ready" || item.state === "failed") {
      const what = `step ${step} (${item.name})`;
      const show = el("button", { type: "button", "aria-label": `Show ${what} in the main panel` }, "Show");
      show.addEventListener("click", () => this.send({ type: "set", checkpoint: item.name }));
      const compare = el("button", { type: "button", "aria-label": `Compare with ${what}` }, "Compare");
      compare.addEventListener("click", () => this.send({ type: "set", compare: item.name }));
      li.append(show, compare);
    }
    if (item.error) li.append(el("p", { class: "error" }, item.error));
    return li;
  }

  /** The caption's checkpoint part for a panel showing file `label`: its step (from the
   * checkpoint's metadata, else its name) and whether it is the run's newest. */
  describe(label, metadataStep) {
    const item = this.data?.checkpoints?.find((c) => c.name === label);
    const step = metadataStep ?? item?.step ?? null;
    const parts = [label];
    if (step !== null) parts.push(`step ${step}`);
    if (this.data && label === this.data.newest) parts[parts.length - 1] += " (newest)";
    return parts.join(" · ");
  }

  /** With --watch the checkpoint picker's "" entry means: follow the run's newest file. */
  patchPicker(info, params) {
    if (!info.watch) return;
    const select = document.getElementById("checkpoint");
    let option = [...select.options].find((o) => o.value === "");
    if (!option) {
      option = new Option("", "");
      select.prepend(option);
    }
    option.textContent = "newest (follow the run)";
    if (params && document.activeElement !== select) select.value = params.checkpoint ?? "";
  }
}
