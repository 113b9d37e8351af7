"""`index.html`: a static gallery of an atlas that opens from the file system, no server.

The manifest's units are embedded in the page as JSON (a browser may not read a neighbouring
`atlas.json` from a `file://` page), and the images are the unit PNGs beside it. The page
shows thumbnails, sorts them by mean activation or split R-hat, and enlarges a unit on click.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from ldam.atlas.files import atomic_write

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>ldam atlas: {title}</title>
<style>
body {{ font: 14px system-ui, sans-serif; margin: 16px; background: #f6f6f4; color: #222; }}
header {{ display: flex; gap: 16px; align-items: baseline; flex-wrap: wrap; }}
#grid {{ display: grid; grid-template-columns: repeat(auto-fill, minmax(180px, 1fr)); gap: 10px; margin-top: 12px; }}
figure {{ margin: 0; background: #fff; border: 1px solid #ddd; border-radius: 4px; padding: 6px; cursor: zoom-in; }}
figure img {{ width: 100%; image-rendering: pixelated; display: block; }}
figcaption {{ font-size: 12px; margin-top: 4px; }}
.bad {{ color: #a33; }}
#big {{ position: fixed; inset: 0; background: rgba(0,0,0,.8); display: none; align-items: center; justify-content: center; flex-direction: column; color: #fff; }}
#big.open {{ display: flex; }}
#big img {{ max-width: 92vw; max-height: 80vh; image-rendering: pixelated; background: #fff; }}
</style>
</head>
<body>
<header>
<h1>{title}</h1>
<span id="count"></span>
<label>sort by <select id="sort">
<option value="unit">unit</option>
<option value="activation">mean activation (high first)</option>
<option value="rhat">split R-hat (worst first)</option>
</select></label>
</header>
<p>{subtitle}</p>
<div id="grid"></div>
<div id="big" role="dialog" aria-modal="true"><img alt=""><p id="big-caption"></p></div>
<script id="atlas-data" type="application/json">{data}</script>
<script>
"use strict";
const atlas = JSON.parse(document.getElementById("atlas-data").textContent);
const grid = document.getElementById("grid");
const big = document.getElementById("big");
const fmt = (v, d) => (v === null || v === undefined ? "n/a" : Number(v).toFixed(d));
function caption(u) {{
  if (u.dead) return `unit ${{u.unit}} · dead: no gradient at any start`;
  return `unit ${{u.unit}} · activation ${{fmt(u.mean_activation, 3)}} · scale ${{fmt(u.scale, 3)}} · R-hat ${{fmt(u.rhat, 2)}} · ESS ${{fmt(u.ess, 0)}} · modes ${{u.modes ?? "n/a"}} · Vendi ${{fmt(u.vendi, 1)}}`;
}}
function order(key) {{
  const units = atlas.units.slice();
  const value = (u) => (key === "activation" ? -(u.mean_activation ?? -Infinity)
    : key === "rhat" ? -(u.rhat ?? Infinity) : u.unit);
  return units.sort((a, b) => value(a) - value(b) || a.unit - b.unit);
}}
function draw() {{
  const units = order(document.getElementById("sort").value);
  grid.replaceChildren(...units.map((u) => {{
    const fig = document.createElement("figure");
    fig.dataset.unit = u.unit;
    const img = document.createElement("img");
    img.src = atlas.base + u.png;
    img.alt = `unit ${{u.unit}}`;
    img.loading = "lazy";
    const cap = document.createElement("figcaption");
    cap.textContent = caption(u);
    if (u.dead || (u.rhat !== null && u.rhat > 1.1)) cap.classList.add("bad");
    fig.append(img, cap);
    if (u.live) {{
      const link = document.createElement("a");
      link.href = u.live;
      link.className = "live";
      link.textContent = "sample live";
      link.addEventListener("click", (e) => e.stopPropagation());
      fig.append(link);
    }}
    fig.addEventListener("click", () => {{
      big.querySelector("img").src = atlas.base + u.png;
      document.getElementById("big-caption").textContent = caption(u);
      big.classList.add("open");
    }});
    return fig;
  }}));
  document.getElementById("count").textContent = `${{atlas.units.length}} units`;
}}
big.addEventListener("click", () => big.classList.remove("open"));
document.addEventListener("keydown", (e) => {{ if (e.key === "Escape") big.classList.remove("open"); }});
document.getElementById("sort").addEventListener("change", draw);
draw();
</script>
</body>
</html>
"""


# How the subtitle names the view the PNGs are drawn in (`ldam.wire.views`; an atlas made
# before the view was recorded is symmetric).
_VIEW_WORDS = {
    "symmetric": "grey = 0",
    "input": "in the network's input space (de-normalized)",
}


def gallery_html(
    manifest: dict[str, Any], live: dict[int, str] | None = None, base: str = ""
) -> str:
    """The gallery page for `manifest`; `live` maps units to a dashboard URL that samples the
    unit live with the atlas's settings (the dashboard's Atlas view), None for the static page;
    `base` goes before the image paths (``/atlas/`` in the dashboard, "" beside the files)."""
    checkpoint = Path(manifest["checkpoint"]["path"]).name
    title = f"{checkpoint} · {manifest['layer']}"
    s = manifest["settings"]
    subtitle = (
        f"{len(manifest['units'])} of {manifest['units_in_layer']} units · {s['chains']} chains "
        f"per unit · {s['steps']} steps · T = {s['temperature']} · step {s['step_size']} · "
        f"L2 {s['l2_weight']} · seed {s['seed']}. Each image: the window means (top row) and the "
        f"last samples (bottom row), {_VIEW_WORDS.get(manifest.get('view'), _VIEW_WORDS['symmetric'])}."
    )
    units = [{**e, "live": (live or {}).get(e["unit"])} for e in manifest["units"]]
    data = {"units": units, "layer": manifest["layer"], "base": base}
    # `</` inside the JSON would end the script element early.
    text = json.dumps(data).replace("</", "<\\/")
    return _PAGE.format(title=html.escape(title), subtitle=html.escape(subtitle), data=text)


def write_gallery(out: Path, manifest: dict[str, Any]) -> Path:
    """Write `out/index.html` for `manifest` (atomically) and return its path."""
    page = gallery_html(manifest)
    path = out / "index.html"
    atomic_write(path, lambda tmp: tmp.write_text(page, encoding="utf-8"))
    return path
