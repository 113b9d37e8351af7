"""The worker's loaded models: a small cache, and the rule of which files may be trusted."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch

from ldam.errors import UserError
from ldam.metadata import MetadataOverride
from ldam.models.loading import LoadedModel, load_checkpoint

# Models kept loaded, so that switching back and forth between checkpoints is instant.
MODEL_CACHE = 4


class ModelCache:
    """Checkpoints loaded on `device`, the newest `MODEL_CACHE` kept.

    `trusted_paths` are the operator's own files (named on the command line): with
    `trust_checkpoint` only they may be read as full pickles, never a file picked in the
    browser. `beat` is called around each load, which can take seconds. `arch` and
    `input_shape` (``--arch``, ``--input-shape``) apply to every state-dict file loaded,
    `metadata` (``--mean``, ``--std``, ``--class-names``) to every file loaded.
    """

    def __init__(
        self,
        device: torch.device,
        trust_checkpoint: bool,
        trusted_paths: tuple[str | None, ...],
        beat: Callable[[], None] = lambda: None,
        arch: str | None = None,
        input_shape: tuple[int, int, int] | None = None,
        metadata: MetadataOverride | None = None,
    ) -> None:
        self.device = device
        self.trust_checkpoint = trust_checkpoint
        self.trusted = {str(Path(p).resolve()) for p in trusted_paths if p is not None}
        self.beat = beat
        self.arch = arch
        self.input_shape = input_shape
        self.metadata = metadata
        self.models: dict[str, LoadedModel] = {}
        self.signatures: dict[str, tuple[int, int] | None] = {}

    def is_trusted(self, path: str) -> bool:
        """Whether `path` may be loaded as a full pickle (`--trust-checkpoint` and named by
        the operator)."""
        return self.trust_checkpoint and str(Path(path).resolve()) in self.trusted

    def load(self, path: str, field: str) -> LoadedModel:
        """The model in `path`, loaded once while the file stays the same (a file rewritten in
        place, as a training run does, is loaded again); a `UserError` naming `field` when it
        cannot be."""
        signature = _signature(path)
        if path not in self.models or self.signatures.get(path) != signature:
            self.beat()
            try:
                loaded = load_checkpoint(
                    path,
                    self.arch,
                    self.input_shape,
                    trust=self.is_trusted(path),
                    metadata=self.metadata,
                )
            except UserError as err:
                # A bad --mean names its flag; anything else about the file names `field`.
                raise UserError(str(err), err.field or field) from None
            finally:
                self.beat()
            loaded.module.to(self.device)
            self.models.pop(path, None)
            if len(self.models) >= MODEL_CACHE:
                oldest = next(iter(self.models))
                self.models.pop(oldest)
                self.signatures.pop(oldest, None)
            self.models[path] = loaded
            self.signatures[path] = signature
        return self.models[path]


def _signature(path: str) -> tuple[int, int] | None:
    # Size and modification time in ns: what changes when a file is written again.
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return (stat.st_size, stat.st_mtime_ns)
