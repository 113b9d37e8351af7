"""The README's pictures of issue 18: window means of each layer's units, from the atlases that
`python -m benchmarks.bench_scale --out DIR` keeps.

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.bench_scale --out /tmp/scale
    .venv/bin/python -m benchmarks.scale_figures /tmp/scale docs/images/scale_lenet.png \\
        --rows conv1,conv2,fc1,fc2
    .venv/bin/python -m benchmarks.scale_figures /tmp/scale docs/images/scale_zoo.png \\
        --rows torchvision-resnet18,torchvision-vit_ti_16,timm-convnext_atto

One row per atlas: the first chain's window mean of up to `--units` units, each image on the
paper's symmetric scale (grey = 0), so a row of noise looks like noise.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from ldam.sampling.images import display_grid, to_pil


def row_images(atlas: Path, units: int) -> torch.Tensor:
    """The first chain's window mean of the first `units` units of the atlas in `atlas`."""
    manifest = json.loads((atlas / "atlas.json").read_text())
    images = []
    for entry in sorted(manifest["units"], key=lambda e: e["unit"])[:units]:
        with np.load(atlas / entry["npz"]) as data:
            images.append(torch.from_numpy(data["window_mean"][0]))
    return torch.stack(images)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", help="the --out folder of bench_scale")
    parser.add_argument("png", help="the picture to write")
    parser.add_argument("--rows", required=True, help="comma list of atlas folder names")
    parser.add_argument("--units", type=int, default=8)
    parser.add_argument("--zoom", type=int, default=3, help="pixels per image pixel")
    args = parser.parse_args()
    rows = [row_images(Path(args.folder) / name, args.units) for name in args.rows.split(",")]
    side = max(r.shape[-1] for r in rows)
    padded = []
    for r in rows:  # every row the same image size (nearest-neighbour), so one grid holds all
        r = torch.nn.functional.interpolate(r, size=(side, side), mode="nearest")
        if r.shape[1] == 1 and any(x.shape[1] == 3 for x in rows):
            r = r.repeat(1, 3, 1, 1)
        if r.shape[0] < args.units:
            r = torch.cat([r, torch.zeros(args.units - r.shape[0], *r.shape[1:])])
        padded.append(r)
    grid = to_pil(display_grid(torch.cat(padded), args.units))
    grid = grid.resize((grid.width * args.zoom, grid.height * args.zoom), resample=0)
    Path(args.png).parent.mkdir(parents=True, exist_ok=True)
    grid.save(args.png, optimize=True)
    print(f"wrote {args.png}: {len(rows)} rows of {args.units} units")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
