"""Which torch device a run uses: the one rule for `--device` on every command."""

from __future__ import annotations

import torch

from ldam.errors import UserError

NO_CUDA = "--device cuda was asked for, but this machine has no CUDA device; use --device cpu."


def pick_device(name: str) -> torch.device:
    """`auto` is CUDA when available, else the CPU; asking for CUDA without it is a
    `UserError` (field ``device``)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise UserError(f"--device must be auto, cpu or cuda, not {name!r}.", "device") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(NO_CUDA, "device")
    return device
