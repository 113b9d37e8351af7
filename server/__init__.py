"""ldam: Langevin Dynamics Activation Maximization, streamed live to the browser.

The import package maps the repository's folders: ``ldam.sampling`` (the sampler side, torch),
``ldam.worker`` (the worker process), ``ldam.wire`` (what both processes share, no torch),
``ldam.web`` (the web server, no torch), ``ldam.cli`` (the ``ldam`` command) and
``ldam.models`` (networks, checkpoint loading, data, the bundled checkpoints). Importing
``ldam`` itself imports no torch, so the web server's process stays torch-free:
``ldam.save_checkpoint`` (`ldam.models.saving.save_checkpoint`) is imported on first use.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["save_checkpoint"]


def __getattr__(name: str) -> Any:
    # A training script's `ldam.save_checkpoint(...)` pulls in torch only then (PEP 562).
    if name == "save_checkpoint":
        from ldam.models.saving import save_checkpoint

        return save_checkpoint
    raise AttributeError(f"module 'ldam' has no attribute {name!r}")
