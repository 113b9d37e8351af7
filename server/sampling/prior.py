"""The prior over images: the paper's white L2, or a spectral, colour-decorrelated Gaussian.

**The spectral prior.** With ``prior="spectral"`` the regularizer is

    R(x) = -(lambda / 2) x^T Sigma^{-1} x,      Sigma = L L^T,   L = C (x) S,

a Gaussian prior with covariance `Sigma / lambda`. `S` filters each channel in the frequency
domain by the amplitude

    s(f) = 1 / max(|f|, f_min)^alpha,       f_min = 1 / max(H, W),   |f| in cycles per pixel,

(Lucent's `fft_image` uses alpha = 1, natural photographs have amplitude spectra near 1/|f|),
and `C` mixes three channels by a colour decorrelation matrix (the one Lucid measured on
ImageNet). Both are normalized so that `trace(Sigma) = d`, the number of pixels times channels:
`s` has mean square 1 over the full frequency plane, `C` has Frobenius norm sqrt(3). So lambda
keeps its meaning in total power: under the prior alone `E ||x||^2 = d T / lambda`, as under
the white prior, and only how that power is spread over frequencies and colours changes.
``prior="white"`` is `Sigma = I`: the paper's L2, sampled exactly as before.

**Matched preconditioning.** A constant preconditioner changes how fast a chain moves, not what
it samples, and without one the low frequencies the prior lets grow by `s(f)^2` would relax
`s(f)^2` times more slowly than the high ones. With the constant `M = Sigma` the Langevin step
on `E(x) = f(x) / sigma_u - (lambda / 2) x^T Sigma^{-1} x` reads

    x <- x + beta Sigma grad_x E(x) + sqrt(2 beta T) Sigma^{1/2} xi
       = x + beta (Sigma grad_x f(x) / sigma_u - lambda x) + sqrt(2 beta T) L xi,

the drift filtered by `s^2` (and `C C^T`), the noise by `s` (and `C`); for a constant symmetric
positive definite M the stationary law stays exactly `exp(E / T)`. The sampler runs it in the
coordinates `z = L^{-1} x`: there the step is the white sampler's on the energy
`f(L z) / sigma_u - (lambda / 2) ||z||^2`, whose gradient is `L^T grad_x f - lambda z`, and
`x = L z` maps it back (`L Sigma^{-1} ... `: multiply the z-step by L). So everything proved
for the white sampler holds as it is: MALA's test, replica exchange, the unit scale (sigma_u is
the RMS of `||L^T grad_x f||`) and the closed forms. Momentum carries over because L is linear
and constant: with `v_x = L v_z`,

    v_x <- gamma v_x + beta Sigma grad_x E(x) + sqrt(2 (1 - gamma) beta T) L xi,   x <- x + v_x,

the heavy-ball step preconditioned by Sigma, whose stationary law is the same.

For a linear unit `f(x) = w.x` (absolute scale) the stationary law is `N(Sigma w / lambda,
T Sigma / lambda)`, and at T = 0 the optimum is `Sigma w / lambda`: the paper's section 4.1
check, smoothed by the prior (`tests/test_prior.py`).

All FFT work is batched on the chains' device (`torch.fft.rfft2`/`irfft2`, orthonormal).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from ldam.errors import UserError
from ldam.wire.settings import PRIORS

__all__ = ["PRIORS", "PriorError", "SpectralBasis", "amplitude", "high_frequency_share"]
# Lucid's colour decorrelation matrix (the square root of the colour covariance of ImageNet),
# rows the RGB outputs, columns the decorrelated components; normalized in `colour_matrix`.
COLOUR_CORRELATION = (
    (0.26, 0.09, 0.02),
    (0.27, 0.00, -0.05),
    (0.27, -0.09, 0.03),
)


class PriorError(UserError):
    """A prior that cannot be used on these inputs; the message is one sentence."""


def frequency_radius(height: int, width: int) -> Tensor:
    """`[H, W]` float64: each 2-D DFT bin's frequency radius |f| in cycles per pixel, in the
    full plane's `fftfreq` order (Nyquist = 0.5 along an axis)."""
    fy = torch.fft.fftfreq(height, dtype=torch.float64).view(-1, 1)
    fx = torch.fft.fftfreq(width, dtype=torch.float64).view(1, -1)
    return torch.sqrt(fy * fy + fx * fx)


def amplitude(height: int, width: int, decay: float) -> Tensor:
    """`[H, W // 2 + 1]` float64: `s(f) = 1 / max(|f|, 1 / max(H, W))^decay` on `rfft2`'s half
    plane, normalized so that the mean of `s^2` over the full plane is 1 (so the prior's
    total variance equals the white prior's). `decay` 0 is white."""
    radius = frequency_radius(height, width).clamp_min(1.0 / max(height, width))
    s = radius.pow(-float(decay))
    s = s / s.pow(2).mean().sqrt()
    return s[:, : width // 2 + 1].contiguous()


def colour_matrix() -> Tensor:
    """`[3, 3]` float64: the colour decorrelation matrix C scaled to Frobenius norm sqrt(3),
    so `trace(C C^T) = 3` (a white prior's per-pixel colour variance in all)."""
    c = torch.tensor(COLOUR_CORRELATION, dtype=torch.float64)
    return c * (math.sqrt(3.0) / torch.linalg.matrix_norm(c))


def check_prior(prior: str, input_shape: Sequence[int]) -> None:
    """Refuse a spectral prior on inputs with no spatial axes (`PriorError`, field `prior`)."""
    if prior == "spectral" and (len(input_shape) != 3 or min(input_shape[1:]) < 2):
        raise PriorError(
            "prior spectral needs images with two spatial axes of at least 2 pixels, got input "
            f"shape {list(input_shape)}; use prior white for vector inputs.",
            "prior",
        )


class _Synthesize(torch.autograd.Function):
    """`x = L z` with the backward `L^T g` written out (one filter each way, no autograd
    through the complex FFTs)."""

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx, z: Tensor, basis: SpectralBasis
    ) -> Tensor:  # type: ignore[override]
        ctx.basis = basis  # type: ignore[attr-defined]
        return basis.synthesize(z)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, g: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        return ctx.basis.adjoint(g), None  # type: ignore[attr-defined]


class SpectralBasis:
    """The linear map `x = L z`, `L = C (x) S` (see the module docstring), for images of
    `input_shape` `(C, H, W)`; C is applied when there are 3 channels, S always.

    `synthesize` is L, `adjoint` is L^T (S is a real even filter, so symmetric), `analyze` is
    L^{-1}; `__call__` is L differentiable in z (its backward is L^T). Every method takes and
    returns `[N, C, H, W]` tensors on the basis's device."""

    def __init__(
        self,
        input_shape: Sequence[int],
        decay: float | Sequence[float],
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        check_prior("spectral", input_shape)
        channels, height, width = (int(v) for v in input_shape)
        self.shape = (channels, height, width)
        self.device, self.dtype = torch.device(device), dtype
        self.colour = colour_matrix().to(device=device, dtype=dtype) if channels == 3 else None
        self._colour_inverse = (
            torch.linalg.inv(colour_matrix()).to(device=device, dtype=dtype)
            if channels == 3
            else None
        )
        self.set_decay(decay)

    def set_decay(self, decay: float | Sequence[float]) -> None:
        """Use `decay` alpha: one for every image, or one per row of the batches to come (the
        filter `s` is then `[rows, 1, H, W // 2 + 1]`, built once per distinct alpha)."""
        h, w = self.shape[1:]
        decays = [float(decay)] if isinstance(decay, (int, float)) else [float(d) for d in decay]
        if all(d == decays[0] for d in decays):  # one filter broadcast over every row
            decays = decays[:1]
        tables = {d: amplitude(h, w, d) for d in dict.fromkeys(decays)}
        s = torch.stack([tables[d] for d in decays]).unsqueeze(1)
        self.decay: float | list[float] = decays[0] if len(decays) == 1 else decays
        self.s = s.to(device=self.device, dtype=self.dtype)

    def _gain(self, rows: slice | None) -> Tensor:
        """The filter `s` for a batch: every row's, or those of `rows` (a slice of the rows
        `set_decay` was given, e.g. the shown chains among replicas)."""
        s = self.s
        return s if rows is None or s.shape[0] == 1 else s[rows]

    def _filter(self, x: Tensor, gain: Tensor) -> Tensor:
        """Each channel of `x` filtered by the real half-plane `gain [.., H, W // 2 + 1]`."""
        h, w = self.shape[1:]
        spectrum = torch.fft.rfft2(x, norm="ortho")
        return torch.fft.irfft2(spectrum * gain, s=(h, w), norm="ortho")

    @staticmethod
    def _mix(x: Tensor, matrix: Tensor | None) -> Tensor:
        """`x`'s channels mixed by `matrix [3, 3]` (out = matrix @ in per pixel)."""
        if matrix is None:
            return x
        return torch.einsum("oc,nchw->nohw", matrix, x)

    def synthesize(self, z: Tensor, rows: slice | None = None) -> Tensor:
        """`x = L z = C S z`."""
        return self._mix(self._filter(z, self._gain(rows)), self.colour)

    def adjoint(self, g: Tensor, rows: slice | None = None) -> Tensor:
        """`L^T g = S C^T g`."""
        colour_t = self.colour.t() if self.colour is not None else None
        return self._filter(self._mix(g, colour_t), self._gain(rows))

    def analyze(self, x: Tensor, rows: slice | None = None) -> Tensor:
        """`z = L^{-1} x = S^{-1} C^{-1} x`."""
        return self._filter(self._mix(x, self._colour_inverse), 1.0 / self._gain(rows))

    def __call__(self, z: Tensor) -> Tensor:
        """`L z`, differentiable in `z` (every row's filter)."""
        return _Synthesize.apply(z, self)  # type: ignore[no-any-return]


def high_frequency_share(images: Tensor) -> Tensor:
    """Per image of `images [N, C, H, W]`: the share of its spectral power above half the
    Nyquist radius (|f| > 0.25 cycles per pixel), each channel's mean removed and channels
    summed, `[N]` float64; NaN for a constant image. White noise puts about 81% there at
    48x48 (the share of such bins), photographs 10%."""
    x = images.double()
    x = x - x.mean(dim=(-2, -1), keepdim=True)
    power = torch.fft.fft2(x).abs().pow(2).sum(1)  # [N, H, W]
    high = frequency_radius(*images.shape[-2:]).to(power.device) > 0.25
    return power[:, high].sum(1) / power.flatten(1).sum(1)
