"""The random streams of a sampler's chains, one set per group of chains.

A sampler draws from three streams: initial states and `reset()`, the Langevin noise, and the
spare starts of diverged chains. With one group (the default) all chains share them, the
fastest way to draw. With several groups (`SamplerConfig.group_seeds`), each contiguous group of
chains has streams of its own, seeded as a sampler with that seed alone would seed them, so a
group's draws do not depend on which other groups share its batch: `ldam atlas` batches many
units and still gives each unit the samples it would get alone.
"""

from __future__ import annotations

import torch
from torch import Tensor


def derived_seeds(seed: int) -> tuple[int, int, int, int]:
    """The (init, noise, spare, accept) seeds a sampler derives from its `seed`."""
    seeder = torch.Generator().manual_seed(seed)
    init_seed, noise_seed = torch.randint(0, 2**62, (2,), generator=seeder).tolist()
    # Each later seed is drawn after the earlier ones, which stay what they were before the
    # later streams existed (spare starts, then the Metropolis tests of step adaptation).
    spare_seed = int(torch.randint(0, 2**62, (1,), generator=seeder))
    accept_seed = int(torch.randint(0, 2**62, (1,), generator=seeder))
    return int(init_seed), int(noise_seed), spare_seed, accept_seed


class ChainStreams:
    """Init, noise, spare and accept generators for `chains` chains split into `len(seeds)` equal
    contiguous groups, group g seeded from `seeds[g]` (see `derived_seeds`)."""

    def __init__(self, seeds: list[int], chains: int, device: torch.device) -> None:
        if not seeds or chains % len(seeds):
            raise ValueError(f"{chains} chains cannot be split into {len(seeds)} equal groups.")
        self.size = chains // len(seeds)
        self.groups = len(seeds)
        triples = [derived_seeds(s) for s in seeds]
        self.init = [torch.Generator(device=device).manual_seed(t[0]) for t in triples]
        self.noise = [torch.Generator(device=device).manual_seed(t[1]) for t in triples]
        self.spare = [torch.Generator(device=device).manual_seed(t[2]) for t in triples]
        self.accept = [torch.Generator(device=device).manual_seed(t[3]) for t in triples]

    def fill_noise(self, out: Tensor) -> Tensor:
        """Fill `out [N, ...]` with standard normal noise in place, each group from its stream
        (what `torch.randn` of the group's shape would draw)."""
        if self.groups == 1:
            return out.normal_(generator=self.noise[0])
        for g, gen in enumerate(self.noise):
            out[g * self.size : (g + 1) * self.size].normal_(generator=gen)
        return out

    def uniform(self, out: Tensor) -> Tensor:
        """Fill `out [N]` with uniforms in [0, 1) in place, each group from its `accept`
        stream (the Metropolis tests of step-size adaptation)."""
        if self.groups == 1:
            return out.uniform_(generator=self.accept[0])
        for g, gen in enumerate(self.accept):
            out[g * self.size : (g + 1) * self.size].uniform_(generator=gen)
        return out

    def draw(self, which: str, idx: Tensor, shape: tuple[int, ...], device: torch.device) -> Tensor:
        """Standard normals `[M, *shape]` for the chains `idx [M]` (ascending within each
        group) from the `init` or `spare` streams: each group's rows from its own stream, in
        the order of `idx`."""
        gens = self.init if which == "init" else self.spare
        if self.groups == 1:
            return torch.randn((idx.numel(), *shape), generator=gens[0], device=device)
        out = torch.empty((idx.numel(), *shape), device=device)
        group = torch.div(idx, self.size, rounding_mode="floor").cpu()
        for g in torch.unique(group).tolist():
            rows = (group == g).nonzero().flatten()
            out[rows.to(device)] = torch.randn(
                (rows.numel(), *shape), generator=gens[g], device=device
            )
        return out
