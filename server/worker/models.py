"""The worker's loaded models: a small cache, and the rule of which files may be trusted."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from ldam.errors import UserError
from ldam.models.loading import LoadedModel, load_checkpoint

# Models kept loaded, so that switching back and forth between checkpoints is instant.
MODEL_CACHE = 4


class ModelCache:
    """Checkpoints loaded on `device`, the newest `MODEL_CACHE` kept.

    `trusted_paths` are the operator's own files (named on the command line): with
    `trust_checkpoint` only they may be read as full pickles, never a file picked in the
    browser. `beat` is called around each load, which can take seconds.
    """

    def __init__(
        self,
        device: torch.device,
        trust_checkpoint: bool,
        trusted_paths: tuple[str | None, ...],
        beat: Callable[[], None] = lambda: None,
    ) -> None:
        self.device = device
        self.trust_checkpoint = trust_checkpoint
        self.trusted = {str(Path(p).resolve()) for p in trusted_paths if p is not None}
        self.beat = beat
        self.models: dict[str, LoadedModel] = {}

    def is_trusted(self, path: str) -> bool:
        """Whether `path` may be loaded as a full pickle (`--trust-checkpoint` and named by
        the operator)."""
        return self.trust_checkpoint and str(Path(path).resolve()) in self.trusted

    def load(self, path: str, field: str) -> LoadedModel:
        """The model in `path`, loaded once; a `UserError` naming `field` when it cannot be."""
        if path not in self.models:
            self.beat()
            try:
                loaded = load_checkpoint(path, trust=self.is_trusted(path))
            except UserError as err:
                raise UserError(str(err), field) from None
            finally:
                self.beat()
            loaded.module.to(self.device)
            if len(self.models) >= MODEL_CACHE:
                self.models.pop(next(iter(self.models)))
            self.models[path] = loaded
        return self.models[path]
