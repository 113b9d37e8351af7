"""Transformation robustness: each chain's image seen through a small random affine map.

**What is sampled.** With transforms on, the chains sample the energy

    f̄(x) = E_τ[ f(τ(x)) ],

the unit's energy averaged over τ, a small random affine map of the image: a translation
uniform in `±SHIFT * size` pixels per axis, a zoom `s` uniform in `SCALE` and a rotation
uniform in `±ROTATION` degrees, both about the image centre. An image that drives the unit
only at one exact placement scores low under f̄, so the samples are the images that keep
driving it when moved a little (Lucid's "transformation robustness").

**Why one τ per chain per step is enough.** Resampling an image by a fixed map is linear in
its pixels, `τ(x) = T_τ x` (bilinear weights, reflection at the borders), so

    ∇_x f(τ(x)) = T_τ^T ∇f(τ(x)),      E_τ[ T_τ^T ∇f(T_τ x) ] = ∇f̄(x):

one random τ per chain per step, shared by all the energy terms of that chain, gives an
unbiased stochastic gradient of f̄. That is what stochastic-gradient Langevin dynamics (SGLD,
Welling and Teh 2011) was made for: the stationary law is that of f̄, `p(x) ∝ exp(f̄(x) / T)`
with the same prior, not that of f. The gradient's own noise adds to the injected noise a
variance of order `β^2` per step against its `2 β T`, so it costs a discretization bias of the
order of the step size `β`, as in SGLD, beside the one the plain step already has. A Metropolis
test (MALA) would need f̄ itself, which one τ does not give, so it is exact only for f.

**Conventions** (pixel coordinates, x to the right, y down, row 0 at the top as displayed):
a shift `(dx, dy)` moves the content `dx` pixels right and `dy` pixels down (`torch.roll` by
`(dy, dx)` over `(H, W)`, away from the borders); a positive angle turns the content
counter-clockwise as displayed (90 degrees is `torch.rot90(x, 1, dims=(-2, -1))`); a scale
`s > 1` zooms in, magnifying the content `s` times about the centre. Content at pixel offset
`P` from the centre lands at `s R(angle) P + shift`.

All the rows are transformed by one batched `F.affine_grid` + `F.grid_sample`; draws use the
caller's generator on the chains' device, with no host sync and no loop over rows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ldam.errors import UserError

# Smallest image height and width the transforms accept: below it a 1-pixel shift or a 10%
# zoom is no longer "small".
MIN_SIZE = 8
# Translation: uniform in ±SHIFT * size pixels per axis (7 px at 224, 1.5 px at 48).
SHIFT = 1 / 32
# Zoom: uniform in this range; s > 1 magnifies the content.
SCALE = (0.9, 1.1)
# Rotation: uniform in ±ROTATION degrees, counter-clockwise as displayed when positive.
ROTATION = 10.0


class TransformError(UserError):
    """Transforms that cannot be used on these inputs; the message is one sentence."""


def check_transforms(input_shape: Sequence[int]) -> None:
    """Refuse inputs that are not `(C, H, W)` images of at least `MIN_SIZE` pixels a side
    (`TransformError`, field `transforms`)."""
    shape = [int(n) for n in input_shape]
    if len(shape) != 3:
        got = f"input shape {shape}"
    elif min(shape[1:]) < MIN_SIZE:
        got = f"{shape[1]}x{shape[2]}"
    else:
        return
    raise TransformError(
        f"transforms need images of at least {MIN_SIZE}x{MIN_SIZE} pixels, got {got}; "
        "set transforms off.",
        "transforms",
    )


def affine_theta(shift: Tensor, scale: Tensor, angle: Tensor, height: int, width: int) -> Tensor:
    """`[rows, 2, 3]`: the `F.affine_grid` matrices (align_corners=False) of the maps that send
    content at pixel offset `P` from the centre to `s R(angle) P + shift`.

    Args:
        shift: `[rows, 2]` pixels `(x right, y down)`.
        scale: `[rows]` zoom factors (s > 1 magnifies).
        angle: `[rows]` degrees, counter-clockwise as displayed.
        height, width: the image size H, W in pixels.

    The grid asks, for each output point `Q`, where to read the input: `P = R(-angle) (Q -
    shift) / s`. In normalized coordinates `u = D^{-1} P` with `D = diag(W / 2, H / 2)` (one
    pixel is `2 / W` wide and `2 / H` tall), so the matrix is
    `[D^{-1} R(-angle) D / s | -D^{-1} R(-angle) shift / s]`; without the `D` a rotation of a
    non-square image would shear it.
    """
    radians = angle * (math.pi / 180.0)
    cos, sin = torch.cos(radians) / scale, torch.sin(radians) / scale
    # R(-angle) / s in (x right, y down): R(a) = [[cos a, sin a], [-sin a, cos a]] turns
    # (1, 0) towards (0, -1), up the screen, which is counter-clockwise as displayed.
    half_w, half_h = width / 2.0, height / 2.0
    a = torch.stack(
        [
            torch.stack([cos, -sin * (half_h / half_w)], dim=-1),
            torch.stack([sin * (half_w / half_h), cos], dim=-1),
        ],
        dim=-2,
    )
    dx, dy = shift[:, 0], shift[:, 1]
    b = torch.stack([-(cos * dx - sin * dy) / half_w, -(sin * dx + cos * dy) / half_h], dim=-1)
    return torch.cat([a, b.unsqueeze(-1)], dim=-1)


class RandomTransforms:
    """One random affine map τ_r per row `r` of a batch of `[rows, C, H, W]` images.

    Holds the current parameters (`shift [rows, 2]`, `scale [rows]`, `angle [rows]`), the
    `affine_grid` matrices and the sampling grid `[rows, H, W, 2]` they give; `draw` and `set`
    rebuild them, `__call__` only resamples. Starts at the identity.
    """

    def __init__(
        self,
        rows: int,
        input_shape: Sequence[int],
        generator: torch.Generator,
        device: torch.device | str,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        """Transforms for `rows` images of `input_shape` `(C, H, W)`, drawn from `generator`
        (which lives on `device`); `TransformError` when `check_transforms` refuses the shape."""
        check_transforms(input_shape)
        self.rows = int(rows)
        self.height, self.width = int(input_shape[1]), int(input_shape[2])
        self.generator = generator
        self.device = torch.device(device)
        self.dtype = dtype
        self.shift = torch.zeros(self.rows, 2, device=self.device, dtype=dtype)
        self.scale = torch.ones(self.rows, device=self.device, dtype=dtype)
        self.angle = torch.zeros(self.rows, device=self.device, dtype=dtype)
        # `[2]` pixels (x, y): made once here, so that `draw` copies nothing from the host.
        self._shift_limit = torch.tensor(
            [SHIFT * self.width, SHIFT * self.height], device=self.device, dtype=dtype
        )
        self.theta: Tensor | None = None
        self.grid: Tensor | None = None

    @property
    def is_identity(self) -> bool:
        """True when every row's τ is the identity (`__call__` returns its input)."""
        return self.grid is None

    def identity(self) -> None:
        """Make every row's τ the identity."""
        self.shift.zero_()
        self.scale.fill_(1.0)
        self.angle.zero_()
        self.theta = None
        self.grid = None

    def draw(self) -> None:
        """A fresh τ for every row: shift uniform in `±SHIFT * (W, H)` pixels, scale uniform in
        `SCALE`, angle uniform in `±ROTATION` degrees (one `torch.rand` on the device)."""
        u = torch.rand(self.rows, 4, generator=self.generator, device=self.device, dtype=self.dtype)
        low, high = SCALE
        self._build(
            shift=(2.0 * u[:, :2] - 1.0) * self._shift_limit,
            scale=low + (high - low) * u[:, 2],
            angle=(2.0 * u[:, 3] - 1.0) * ROTATION,
        )

    def set(self, shift: Tensor, scale: Tensor, angle: Tensor) -> None:
        """Explicit parameters, broadcast to every row: `shift [rows, 2]` pixels `(x right,
        y down)`, `scale [rows]`, `angle [rows]` degrees counter-clockwise (for tests and for
        reproducing a step)."""
        self._build(
            shift=torch.as_tensor(shift).expand(self.rows, 2),
            scale=torch.as_tensor(scale).expand(self.rows),
            angle=torch.as_tensor(angle).expand(self.rows),
        )

    def _build(self, shift: Tensor, scale: Tensor, angle: Tensor) -> None:
        """Store the parameters and rebuild the matrices and the grid from them."""
        self.shift = shift.to(self.device, self.dtype).clone()
        self.scale = scale.to(self.device, self.dtype).clone()
        self.angle = angle.to(self.device, self.dtype).clone()
        self.theta = affine_theta(self.shift, self.scale, self.angle, self.height, self.width)
        # The grid does not depend on the channels, so it is built for one and shared by all.
        size = [self.rows, 1, self.height, self.width]
        self.grid = F.affine_grid(self.theta, size, align_corners=False)

    def __call__(self, x: Tensor) -> Tensor:
        """`[rows, C, H, W] -> [rows, C, H, W]`: `τ_r(x_r)` for every row `r` (bilinear,
        reflected at the borders), differentiable in `x`; `x` itself while `is_identity`."""
        if self.grid is None:
            return x
        expected = (self.rows, self.height, self.width)
        if x.dim() != 4 or (x.shape[0], x.shape[2], x.shape[3]) != expected:
            raise ValueError(
                f"transforms expect images [{self.rows}, C, {self.height}, {self.width}], "
                f"got {list(x.shape)}."
            )
        grid = self.grid if self.grid.dtype == x.dtype else self.grid.to(x.dtype)
        return F.grid_sample(
            x, grid, mode="bilinear", padding_mode="reflection", align_corners=False
        )
