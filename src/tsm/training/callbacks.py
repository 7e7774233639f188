"""Callbacks the configs register (``conf/callbacks/``)."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_warn

from tsm.data.datamodule import SKIPPED_FILE


class SkippedReport(pl.Callback):
    """Under ``data.on_error=skip``, reports the samples skipped in each train/val/test epoch: a warning
    and the metric ``<split>/skipped``. Does nothing for data read with ``on_error=raise``."""

    def _report(self, trainer: pl.Trainer, pl_module: pl.LightningModule, split: str) -> None:
        data = trainer.datamodule
        if getattr(data, "on_error", None) != "skip":
            return
        count, data.skipped[split] = data.skipped[split], 0  # batches of a split only come within its epochs
        # Summed over the processes here, a callback hook every rank runs, not by sync_dist=True: Lightning
        # runs that reduction lazily, for the first reader of the logged metrics, which may be a
        # rank-0-only hook (the progress bar). Anything a rank-0-only hook does must be free of collectives.
        total = trainer.strategy.reduce(torch.tensor(float(count), device=pl_module.device), reduce_op="sum")
        if total:
            where = data.log_dir / SKIPPED_FILE if data.log_dir else "the log"
            rank_zero_warn(f"{int(total)} {split} samples skipped this epoch (on_error=skip), listed in {where}")
        pl_module.log(f"{split}/skipped", total)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._report(trainer, pl_module, "train")

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._report(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._report(trainer, pl_module, "test")
