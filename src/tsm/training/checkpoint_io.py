"""Checkpoints written atomically: Lightning's ``torch.save`` checkpoint IO through :func:`tsm.files.atomic_open`.

Lightning's own writes the file in place (a kill mid-write leaves a truncated ``last.ckpt`` that every
later resume fails on). This one writes a temporary file beside it, fsyncs it and renames it over the old.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.plugins.io import TorchCheckpointIO

from tsm.files import atomic_open


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose saves replace the old file whole or not at all (local paths)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None or "://" in str(path):  # remote file systems: Lightning's own write
            return super().save_checkpoint(checkpoint, path, storage_options)
        with atomic_open(path) as file:
            torch.save(checkpoint, file)


def use_atomic_checkpoints(trainer: pl.Trainer) -> None:
    """Give ``trainer`` the atomic checkpoint IO, unless a config chose another than Lightning's default."""
    if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
        trainer.strategy.checkpoint_io = AtomicCheckpointIO()
