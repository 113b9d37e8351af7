// The websocket to the server: frames in (binary, acknowledged), JSON messages in and out.
//
// A binary frame is: 4-byte big-endian header length, the JSON header, then the JPEG bytes of
// each panel (header.panels[i].bytes long). The server sends a new frame only while fewer than
// two are unacknowledged, so this page acknowledges a frame once it is drawn: a slow page gets
// fewer frames, never old ones.

const RECONNECT_MS = [250, 500, 1000, 2000, 4000];

export class Stream {
  /**
   * @param {object} handlers  onFrame(header, bitmaps) -> void, onMessage(obj), onOpen(), onClose()
   */
  constructor(handlers) {
    this.handlers = handlers;
    this.ws = null;
    this.attempt = 0;
    this.pending = null; // the newest frame waiting to be drawn
    this.drawing = false;
    this.framesShown = 0;
    this.shownTimes = [];
  }

  connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const ws = new WebSocket(`${scheme}://${location.host}/ws`, ["ldam"]);
    ws.binaryType = "arraybuffer";
    ws.onopen = () => {
      this.attempt = 0;
      this.handlers.onOpen?.();
    };
    ws.onmessage = (event) => {
      if (typeof event.data === "string") {
        this.handlers.onMessage?.(JSON.parse(event.data));
      } else {
        this.receiveFrame(event.data);
      }
    };
    ws.onclose = () => {
      this.handlers.onClose?.();
      const delay = RECONNECT_MS[Math.min(this.attempt, RECONNECT_MS.length - 1)];
      this.attempt += 1;
      setTimeout(() => this.connect(), delay);
    };
    this.ws = ws;
  }

  send(message) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify(message));
      return true;
    }
    return false;
  }

  receiveFrame(buffer) {
    const view = new DataView(buffer);
    const length = view.getUint32(0);
    const header = JSON.parse(new TextDecoder().decode(new Uint8Array(buffer, 4, length)));
    let offset = 4 + length;
    const blobs = header.panels.map((panel) => {
      const blob = new Blob([new Uint8Array(buffer, offset, panel.bytes)], { type: "image/jpeg" });
      offset += panel.bytes;
      return blob;
    });
    if (this.pending) {
      // A newer frame replaces one not yet drawn; it still counts as seen for the server.
      this.send({ type: "ack", seq: this.pending.header.seq });
    }
    this.pending = { header, blobs };
    if (!this.drawing) this.drawNext();
  }

  async drawNext() {
    this.drawing = true;
    while (this.pending) {
      const { header, blobs } = this.pending;
      this.pending = null;
      try {
        const bitmaps = await Promise.all(blobs.map((b) => createImageBitmap(b)));
        this.handlers.onFrame(header, bitmaps);
        bitmaps.forEach((b) => b.close());
        this.framesShown += 1;
        this.shownTimes.push(performance.now());
      } catch (err) {
        console.warn("ldam: a frame could not be decoded", err);
      }
      this.send({ type: "ack", seq: header.seq });
    }
    this.drawing = false;
  }

  /** Frames drawn per second over the last two seconds. */
  framesPerSecond() {
    const now = performance.now();
    this.shownTimes = this.shownTimes.filter((t) => now - t < 2000);
    return this.shownTimes.length / 2;
  }
}
