"""Callbacks the configs register (``conf/callbacks/``): skipped-sample reports and the run's PNGs."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_warn

from tsm.data.datamodule import SKIPPED_FILE
from tsm.plots import plot_confusion, plot_learning_curves


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


class RunPlots(pl.Callback):
    """Writes ``learning_curves.png`` (train/val loss and top-1 per epoch) after fitting and
    ``confusion_test.png`` (with class names) after testing, into ``out_dir`` (the run directory).
    Rank 0 alone draws: the values were synced by the module's epoch-end hooks, no collective here."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = Path(out_dir)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        history = getattr(pl_module, "history", None)
        if trainer.is_global_zero and history:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            plot_learning_curves(history, self.out_dir / "learning_curves.png")

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        matrix = getattr(pl_module, "test_confusion_matrix", None)
        if not trainer.is_global_zero or matrix is None:
            return
        data = trainer.datamodule
        classes = data.describe()["class_names"] if hasattr(data, "describe") else [str(i) for i in range(len(matrix))]
        accuracy = matrix.diag().sum() / max(int(matrix.sum()), 1)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        title = f"test: {int(matrix.sum())} clips, top-1 {accuracy:.3f}"
        plot_confusion(matrix, classes, self.out_dir / "confusion_test.png", title)
