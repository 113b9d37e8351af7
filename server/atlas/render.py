"""Rendering one batch of units: one sampler batch of `chains` chains per unit, then one PNG
and one npz per unit, each written atomically.

A `Renderer` loads the model once (a Ray actor keeps one for its life). The npz holds the keys
`ldam sample` writes, for the unit's chains alone: `samples` are x after every
`record_every`-th step from the first one after which all of the unit's chains are burned in.
"""

from __future__ import annotations

import io
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ldam.atlas.files import atomic_write, unit_files
from ldam.atlas.plan import Job, unit_seed
from ldam.models.loading import load_checkpoint
from ldam.sampling.diagnostics import unit_diagnostics
from ldam.sampling.diversity import BLOCKS, unit_diversity
from ldam.sampling.energy import ActivationTerm, L2Term
from ldam.sampling.images import display_grid, to_pil
from ldam.sampling.sampler import Sampler, SamplerConfig
from ldam.sampling.targets import Target
from ldam.wire.targets import ChainTargets


@dataclass(frozen=True)
class Rendered:
    """One unit's manifest entry and its files (path relative to the atlas folder -> bytes)."""

    entry: dict[str, Any]
    files: dict[str, bytes]


def write_rendered(out: Path, rendered: Rendered) -> None:
    """Write a unit's files into the atlas folder `out`, each atomically."""
    for rel, data in rendered.files.items():
        atomic_write(out / rel, lambda tmp, data=data: tmp.write_bytes(data))


class Renderer:
    """Renders batches of units of `job` (torch pinned to `job.settings.threads` threads)."""

    def __init__(self, job: Job) -> None:
        torch.set_num_threads(job.settings.threads)
        self.job = job
        self.loaded = load_checkpoint(
            job.checkpoint,
            arch=job.arch,
            input_shape=job.input_shape,
            trust=job.trust,
            metadata=job.metadata,
        )
        self.module = self.loaded.module.to(job.device)

    def check(self) -> int:
        """The layer's unit count, with one forward (raises `TargetError` for a bad layer)."""
        from ldam.sampling.targets import list_layers

        s = self.job.settings
        Target(
            self.module,
            f"{self.job.layer}:0",
            1,
            batch_size=self.loaded.batch_size,
            input_shape=self.loaded.input_shape,
            layout=s.layout,
        )
        for info in list_layers(
            self.module, self.loaded.input_shape, self.loaded.batch_size, s.layout
        ):
            if info.name == self.job.layer or (not info.name and self.job.layer == "output"):
                return info.units
        return 0

    def render(self, units: list[int]) -> list[Rendered]:
        """Sample `units` (a contiguous range) in one batch; returns each unit's manifest
        entry and file contents, in unit order (the caller writes them, so a worker on
        another machine needs no shared folder)."""
        job, s = self.job, self.job.settings
        k = s.chains
        chains = k * len(units)
        # Unit by unit, k chains each: the contiguous groups `group_seeds` seeds.
        per_chain = [unit for unit in units for _ in range(k)]
        target = Target(
            self.module,
            ChainTargets.on_layer(job.layer, per_chain),
            batch_size=self.loaded.batch_size,
            layout=s.layout,
        )
        config = SamplerConfig(
            chains=chains,
            **s.sampler_settings(),
            group_seeds=[unit_seed(s.seed, u) for u in units],
            # A dead unit (no gradient at any start) gets sigma 1 and is marked; the rest go on.
            dead_scale=1.0,
            device=job.device,
        )
        sampler = Sampler([ActivationTerm(target), L2Term()], self.loaded.input_shape, config)
        started = time.perf_counter()
        activations, burned, snapshots = [], [], []
        for t in range(s.steps):
            info = sampler.step()
            activations.append(info.activation.detach().clone())
            burned.append(info.burned_in.clone())
            if (t + 1) % s.record_every == 0:
                snapshots.append((t, sampler.x.detach().to("cpu", copy=True)))
        activation = torch.stack(activations).float().cpu().numpy()
        burned_in = torch.stack(burned).cpu().numpy()
        seconds = time.perf_counter() - started
        final = sampler.x.detach().float().cpu().numpy()
        mean = sampler.mean().detach().float().cpu().numpy()
        window_mean = sampler.window_mean().detach().float().cpu().numpy()
        blocks = sampler.window_blocks(BLOCKS)
        burn_in_step = sampler.burn_in_step.cpu().numpy().astype(np.int64)
        resets = sampler.resets.cpu().numpy().astype(np.int64)
        tuning = sampler.unit_tuning()
        entries = []
        for g, unit in enumerate(units):
            rows = slice(g * k, (g + 1) * k)
            # The unit's modes and Vendi score over its chains' window blocks.
            (diverse,) = unit_diversity(blocks[:, rows], [unit] * k)
            entries.append(
                self._write_unit(
                    unit,
                    activation[:, rows],
                    burned_in[:, rows],
                    [(t, x[rows].numpy()) for t, x in snapshots],
                    final[rows],
                    mean[rows],
                    window_mean[rows],
                    burn_in_step[rows],
                    resets[rows],
                    seconds / len(units),
                    tuning[unit],
                    diverse,
                )
            )
        return entries

    def _write_unit(
        self,
        unit: int,
        activation: np.ndarray,
        burned_in: np.ndarray,
        snapshots: list[tuple[int, np.ndarray]],
        final: np.ndarray,
        mean: np.ndarray,
        window_mean: np.ndarray,
        burn_in_step: np.ndarray,
        resets: np.ndarray,
        seconds: float,
        tuning: dict[str, Any],
        diverse: dict[str, Any],
    ) -> Rendered:
        s = self.job.settings
        all_in = burned_in.all(axis=1)
        record_from = int(np.argmax(all_in)) if all_in.any() else None
        kept = [x for t, x in snapshots if record_from is not None and t >= record_from]
        shape = tuple(self.loaded.input_shape)
        samples = np.stack(kept) if kept else np.zeros((0, s.chains, *shape), np.float32)
        (diag,) = unit_diagnostics(activation, burn_in_step, [unit] * s.chains)
        diag["modes"], diag["vendi"] = diverse["modes"], diverse["vendi"]
        params = {
            "checkpoint": str(Path(self.job.checkpoint).resolve()),
            "format": self.loaded.format,
            "input_shape": list(shape),
            "target": f"{self.job.layer}:{unit}",
            "units_per_chain": [unit] * s.chains,
            **{k: v for k, v in s.as_json().items() if k not in ("threads", "batch_units")},
            "unit_seed": unit_seed(s.seed, unit),
            "record_from_step": record_from,
            "device": self.job.device,
            "seconds": seconds,
            "diagnostics": [diag],
            # The unit's own scale sigma_u and its adapted step (`ldam.sampling.scale`).
            "scale": tuning["scale"],
            "step_size": tuning["step_size"],
            "dead": tuning["dead"],
        }
        png_rel, npz_rel = unit_files(unit)
        arrays = {
            "samples": samples.astype(np.float32),
            "final": final,
            "mean": mean,
            "window_mean": window_mean,
            "activation": activation,
            "burn_in_step": burn_in_step,
            "resets": resets,
            "params": np.array(json.dumps(params, default=float)),
        }

        npz = io.BytesIO()
        np.savez(npz, **arrays)
        # The paper's grid: the window means in the first row, the last samples below.
        grid = torch.from_numpy(np.concatenate([window_mean, final]))
        png = io.BytesIO()
        to_pil(display_grid(grid, s.chains, s.view, self.loaded.normalization)).save(
            png, format="PNG"
        )
        post = activation[record_from:] if record_from is not None else activation[-1:]
        burned_steps = [int(b) for b in burn_in_step]
        entry = {
            "unit": unit,
            "png": png_rel,
            "npz": npz_rel,
            "mean_activation": float(np.mean(post)),
            "rhat": _finite(diag.get("rhat")),
            "ess": _finite(diag.get("ess")),
            # How many different images its chains hold (`ldam.sampling.diversity`; null:
            # a chain's window never filled).
            "modes": diverse["modes"],
            "vendi": diverse["vendi"],
            "burn_in_steps": burned_steps,
            "burned_in_chains": sum(1 for b in burned_steps if b >= 0),
            "record_from_step": record_from,
            "resets": int(resets.sum()),
            "scale": tuning["scale"],
            "step_size": tuning["step_size"],
            "dead": tuning["dead"],
            # With replicas: the frozen ladder's per-pair swap acceptance and round trips.
            "swap_acceptance": tuning.get("swap_acceptance"),
            "round_trips": tuning.get("round_trips"),
        }
        return Rendered(entry, {png_rel: png.getvalue(), npz_rel: npz.getvalue()})


def _finite(value: float | None) -> float | None:
    """JSON has no NaN: an undefined diagnostic is null."""
    return value if value is not None and np.isfinite(value) else None
