"""The discriminator regularizer on real colour photographs: D's held-out accuracy and the
spectrum of the samples at w = 0 and w = 0.5, beside the photographs'.

The photo net (`tests.photos.train_photo_net`, a small colour CNN that tells which of
scikit-image's photographs a 48x48 patch comes from) is sampled at one logit; D learns patches
of the training photographs against its chains at w = 0, is judged on patches of a held-out
photograph and on fresh chains, then goes on training online while chains from the same seed
run at w = 0.5 (`tests.photos.disc_on_photos`). The spectrum is `high_frequency_share` (the
share of power above half the Nyquist radius): photographs about 0.06, white noise 0.81.

Each row is a name and `SamplerConfig` overrides (`ROWS`; adding a row is one line);
`--extra 'key=value ...'` is applied to every row. Needs the `test` extra (scikit-image). Run:

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.bench_photos [--chains 16] [--steps 200] \
        [--unit 0] [--seed 0] [--extra 'temperature=0.002 l2_weight=0.02']
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
import time

import torch

from ldam.sampling.prior import high_frequency_share
from ldam.sampling.sampler import SamplerConfig
from tests.photos import PHOTOGRAPHS, disc_on_photos, photo_patches, train_photo_net

# (name, SamplerConfig overrides as 'key=value ...'), each row on the same net, D and seeds.
ROWS = [
    ("white", ""),
    ("spectral alpha 1", "prior=spectral prior_decay=1.0"),
]


def parse_overrides(text: str) -> dict[str, object]:
    """`'key=value ...'` as SamplerConfig overrides: numbers as int or float, `none` as None,
    `true`/`false` as booleans, anything else as text. Raises SystemExit with one sentence
    for a word without `=` or a key SamplerConfig does not have."""
    fields = {f.name for f in dataclasses.fields(SamplerConfig)}
    overrides: dict[str, object] = {}
    for word in text.split():
        key, sep, value = word.partition("=")
        if not sep:
            raise SystemExit(f"{word!r} is not key=value.")
        if key not in fields:
            raise SystemExit(f"{key!r} is not a SamplerConfig setting.")
        overrides[key] = _value(value)
    return overrides


def _value(text: str) -> object:
    lowered = text.lower()
    if lowered in ("none", "true", "false"):
        return {"none": None, "true": True, "false": False}[lowered]
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chains", type=int, default=16)
    parser.add_argument("--steps", type=int, default=200, help="sampler steps per run")
    parser.add_argument("--unit", type=int, default=0, help=f"logit of {', '.join(PHOTOGRAPHS)}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--extra", default="", help="'key=value ...' for every row")
    args = parser.parse_args(argv)
    words = sys.argv[1:] if argv is None else argv
    print(
        " ".join(
            [
                "$ OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.bench_photos",
                *map(shlex.quote, words),
            ]
        )
    )
    extra = parse_overrides(args.extra)
    rows = [(name, {**parse_overrides(text), **extra}) for name, text in ROWS]
    torch.set_num_threads(1)
    start = time.perf_counter()
    net = train_photo_net(48, seed=args.seed)
    print(
        f"photo net: 48x48 colour CNN over {len(PHOTOGRAPHS)} photographs, held-out patch "
        f"accuracy {net.held_out_accuracy:.3f} (trained in {time.perf_counter() - start:.1f} s); "
        f"unit fc:{args.unit} ({PHOTOGRAPHS[args.unit]}), {args.chains} chains, {args.steps} steps"
    )
    photos = float(high_frequency_share(photo_patches(1000, 48, args.seed + 3)).median())
    print(f"photographs' median high-frequency share: {photos:.3f} (white noise: 0.81)")
    header = (
        f"{'row':<10} {'D real':>7} {'D gen':>7} {'hf w=0':>7} {'hf w=.5':>7} {'x w=0':>7} "
        f"{'x w=.5':>7} {'act 0':>7} {'act w=0':>8} {'act w=.5':>8} {'s':>5}  overrides"
    )
    print("D real / D gen: D's accuracy on a held-out photograph's patches / on fresh chains;")
    print("hf: median high-frequency share of window means; x: of the final samples; act: logit")
    print(header)
    for name, overrides in rows:
        begun = time.perf_counter()
        run = disc_on_photos(net, args.unit, args.chains, args.steps, args.seed, extra=overrides)
        print(
            f"{name:<10} {run.acc_real:>7.3f} {run.acc_generated:>7.3f} "
            f"{run.hf_window_means[0.0]:>7.3f} {run.hf_window_means[0.5]:>7.3f} "
            f"{run.hf_samples[0.0]:>7.3f} {run.hf_samples[0.5]:>7.3f} "
            f"{run.activation_start:>7.2f} {run.activation[0.0]:>8.2f} {run.activation[0.5]:>8.2f} "
            f"{time.perf_counter() - begun:>5.0f}  "
            + " ".join(f"{k}={v}" for k, v in overrides.items()),
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
