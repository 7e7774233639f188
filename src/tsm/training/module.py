"""The LightningModule: a recognizer, its loss, metrics, optimizer groups and schedule."""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities.warnings import PossibleUserWarning
from torch import nn
from torchmetrics import MaxMetric, MeanMetric
from torchmetrics.classification import MulticlassConfusionMatrix

from tsm.distill.loss import kd_loss
from tsm.distill.teacher import Distiller
from tsm.errors import DataError
from tsm.metadata import DATA_KEY, INFO_KEY
from tsm.metrics import classification_metrics
from tsm.models.checkpoints import architecture
from tsm.models.checkpoints import init_from as load_weights
from tsm.models.clip_length import clip_length
from tsm.models.factory import build_recognizer
from tsm.training.multigrid import MultigridSchedule, multigrid_lr, rank_clips
from tsm.training.optim import (
    build_optimizer,
    check_recipe,
    param_groups,
    scaled_lr,
    schedule_factor,
    scheduler_steps,
    starts_from_weights,
    warmup_schedule,
)
from tsm.training.rng import RNG_KEY, rng_states, set_rng_states

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
HISTORY_KEY = "tsm_history"
# Lightning asks for sync_dist=True on every epoch-level value logged under DDP; this module's are
# synced already when logged (see _log_epoch_metrics), so the advice would only add a reduction.
warnings.filterwarnings("ignore", r"It is recommended to use `self.log\('(train|val|test|time)/", PossibleUserWarning)


def recipe(settings: Mapping[str, Any] | None, key: str) -> Mapping[str, Any]:
    """``model.<key>``, which has no defaults of its own here: ``conf/model/tsm.yaml`` is where they live."""
    if settings is None:
        raise ValueError(f"model.{key} is not set: pass the recipe of conf/model/tsm.yaml (its {key} block)")
    return settings


class TSMLitModule(pl.LightningModule):
    """Trains a recognizer built by :func:`tsm.models.build_recognizer` from the ``model.*`` config."""

    def __init__(
        self,
        backbone: str,
        num_classes: int,
        num_segments: int,
        shift: Mapping[str, Any] | None = None,
        pretrained: bool = False,
        pretrained_file: str | None = None,
        dropout: float = 0.5,
        temporal_pool: bool = False,
        partial_bn: bool = False,
        label_smoothing: float = 0.0,
        channels_last: bool = False,
        optimizer: Mapping[str, Any] | None = None,
        scheduler: Mapping[str, Any] | None = None,
        distill: Mapping[str, Any] | None = None,
        init_from: str | None = None,
        backbone_args: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        check_recipe(optimizer, scheduler, label_smoothing, dropout)
        self.save_hyperparameters()
        self.net = build_recognizer(
            backbone,
            num_classes,
            num_segments,
            shift=shift,
            pretrained=pretrained,
            dropout=dropout,
            pretrained_file=pretrained_file,
            temporal_pool=temporal_pool,
            partial_bn=partial_bn,
            backbone_args=backbone_args,
        )
        if init_from is not None:
            load_weights(self.net, init_from)
        if channels_last:
            self.net.to(memory_format=torch.channels_last)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        self.distill = dict(distill or {"kind": "none"})
        # A plain object, not a submodule: the teacher is not trained, not optimised, not saved.
        self.distiller = Distiller(self.distill, num_classes) if self.distill["kind"] != "none" else None
        # ModuleDict keys may not shadow Module attributes such as ``train``: suffix them.
        self.metrics = nn.ModuleDict({f"{split}_metrics": classification_metrics(num_classes) for split in SPLITS})
        self.losses = nn.ModuleDict({f"{split}_loss": MeanMetric() for split in SPLITS})
        self.val_acc_best = MaxMetric()
        self.test_confusion = MulticlassConfusionMatrix(num_classes)
        self.test_confusion_matrix: torch.Tensor | None = None  # of the last test epoch, synced
        self.history: list[dict[str, Any]] = []  # synced per-epoch loss and top-1 of train and val
        self._skip_step = False  # this training step's batch could not be read on some rank

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        return self.net(clips)

    @property
    def teacher(self) -> nn.Module | None:
        """The frozen teacher while it is needed (None without distillation, or once its logits are cached)."""
        return self.distiller.teacher if self.distiller else None

    def on_fit_start(self) -> None:
        if self.distiller is not None:
            self.distiller.prepare(self.trainer, self.device, next(self.net.parameters()).dtype)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Make the checkpoint self-describing (:mod:`tsm.models.checkpoints`): the network's info, the
        data's class names, frames, input size and normalisation, and the data config it was trained on."""
        data = getattr(self.trainer, "datamodule", None)
        described = data.describe() if hasattr(data, "describe") else {}
        arch = architecture(self.hparams)
        checkpoint[INFO_KEY] = {"backbone": arch["backbone"], "shift": arch.get("shift"), **described}
        if getattr(data, "config", None) is not None:
            checkpoint[DATA_KEY] = data.config
        checkpoint[HISTORY_KEY] = list(self.history)
        checkpoint[RNG_KEY] = rng_states()  # a resumed run draws what an uninterrupted one would

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        source = getattr(self._trainer, "ckpt_path", None) or "the resumed checkpoint"
        history = checkpoint.get(HISTORY_KEY, [])
        if not (isinstance(history, list) and all(isinstance(epoch, dict) for epoch in history)):
            raise DataError(source, f"its {HISTORY_KEY} is not a list of per-epoch records")
        self.history = list(history)  # a resumed run's curves start at epoch 0
        for row in self.history:  # val/acc_best over the epochs before the resume too (a metric's state is not saved)
            if row.get("split") == "val" and isinstance(row.get("acc"), float):
                self.val_acc_best.update(torch.tensor(row["acc"], device=self.device))
        if RNG_KEY in checkpoint:
            try:
                set_rng_states(checkpoint[RNG_KEY])
            except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as err:
                raise DataError(
                    source, f"its {RNG_KEY} holds no generator states this run can restore ({err})"
                ) from err

    def _loss(
        self, logits: torch.Tensor, labels: torch.Tensor, teacher_clips: torch.Tensor, indices: torch.Tensor, split: str
    ) -> torch.Tensor:
        if self.distiller is None or split != "train":
            return self.criterion(logits, labels)
        total, hard, soft = kd_loss(
            logits,
            self.distiller.targets(teacher_clips, indices),
            labels,
            self.distill["alpha"],
            self.distill["temperature"],
            self.hparams.label_smoothing,
        )
        self.log_dict({"train/loss_ce": hard.detach(), "train/loss_kd": soft.detach()}, on_step=True, on_epoch=True)
        return total

    def _step(self, batch: Sequence[Any], split: str) -> torch.Tensor:
        """``batch``: (clips, labels, indices); clips may be a (student, teacher) pair of views."""
        clips, labels, indices = batch[0], batch[1], batch[2]
        student_clips, teacher_clips = clips if isinstance(clips, (tuple, list)) else (clips, clips)
        with clip_length(self.net, student_clips.shape[1]):  # multigrid's clips may be shorter
            logits = self(student_clips)
        loss = self._loss(logits, labels, teacher_clips, indices, split)
        self.losses[f"{split}_loss"].update(loss.detach(), weight=len(labels))  # a mean over clips, not batches
        self.metrics[f"{split}_metrics"].update(logits.detach(), labels)
        if split == "test":
            self.test_confusion.update(logits.detach(), labels)
        # No metric object goes to self.log: Lightning would compute it, a sync across processes, for
        # whoever reads the logged metrics first, such as the progress bar on rank 0 alone (see
        # _log_epoch_metrics). The epoch loss is computed and logged there with the other metrics.
        if split == "train":
            self.log("train/loss_step", loss.detach(), on_step=True, on_epoch=False, prog_bar=True)
        return loss

    def _log_epoch_metrics(self, split: str) -> dict[str, torch.Tensor]:
        """Compute, log and reset the epoch's metrics and mean loss, synced across processes.

        Under DDP, ``compute`` is a collective (torchmetrics gathers every state from every rank), so
        it belongs here, in a LightningModule epoch-end hook that every rank runs, in the same order.
        Anything a rank-0-only hook does must be free of collectives: the progress bar's hooks run on
        rank 0 alone and read every logged value (``trainer.progress_bar_metrics`` computes all of
        them, on the bar or not), so only plain tensors, already synced here, are logged. A metric
        object passed to ``self.log`` would instead be computed, and synced, by its first reader: the
        Rich bar's ``on_train_epoch_end`` on rank 0 while rank 1 was in this hook, which put the gloo
        collectives out of step. Not ``sync_dist=True`` either: that reduction also runs lazily, at
        the first read, and the values are global already.
        """
        values = self.metrics[f"{split}_metrics"].compute()
        loss = self.losses[f"{split}_loss"].compute()
        self.metrics[f"{split}_metrics"].reset()
        self.losses[f"{split}_loss"].reset()
        self.log_dict({f"{split}/{k}": v for k, v in values.items()}, prog_bar=split != "test")
        self.log(f"{split}/loss", loss)
        if split != "test" and not self.trainer.sanity_checking:
            row = {"split": split, "epoch": self.current_epoch, "loss": loss.item(), "acc": values["acc"].item()}
            self.history.append(row)
        return values

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        """Under ``data.on_error=skip`` a batch of which no sample could be read arrives empty; the step is
        then skipped on every rank, which all decide together here (one small all-reduce per step, only
        under skip: every rank runs this hook, so the collective is entered by all)."""
        empty = len(batch) == 0
        if getattr(self.trainer.datamodule, "on_error", "raise") == "skip":
            empty = self.trainer.strategy.reduce_boolean_decision(empty, all=False)
        self._skip_step = empty

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        if self._skip_step:
            # A zero loss that reaches every parameter keeps DDP's gradient all-reduce in step on all
            # ranks; on_before_optimizer_step then drops the (zero) gradients so the optimizer moves nothing.
            return sum(p.sum() for p in self.net.parameters() if p.requires_grad) * 0.0
        return self._step(batch, "train")

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # With accumulated gradients the skipped micro-batch added zeros; only a lone one is dropped whole.
        if self._skip_step and self.trainer.accumulate_grad_batches == 1:
            optimizer.zero_grad(set_to_none=True)  # optimizers leave parameters without gradients alone

    def validation_step(self, batch, batch_idx: int) -> None:
        if batch:  # empty: no sample of it could be read (data.on_error=skip)
            self._step(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        if batch:
            self._step(batch, "test")

    def on_train_epoch_end(self) -> None:
        self._log_epoch_metrics("train")

    def on_train_start(self) -> None:
        self._train_started = time.perf_counter()

    def on_validation_epoch_end(self) -> None:
        values = self._log_epoch_metrics("val")
        if not self.trainer.sanity_checking:
            self.val_acc_best(values["acc"])
            self.log("val/acc_best", self.val_acc_best.compute(), prog_bar=True)
            if hasattr(self, "_train_started"):  # seconds since this process started training: time to accuracy
                self.log("time/train_s", time.perf_counter() - self._train_started)

    def on_test_epoch_end(self) -> None:
        self._log_epoch_metrics("test")
        self.test_confusion_matrix = self.test_confusion.compute().cpu()  # every rank: a collective under DDP
        self.test_confusion.reset()

    def configure_optimizers(self) -> dict[str, Any]:
        batch = recipe(self.hparams.optimizer, "optimizer")["batch_size"]
        sched = recipe(self.hparams.scheduler, "scheduler")
        optimizer = self.recipe_optimizer(batch * self.trainer.world_size * self.trainer.accumulate_grad_batches)
        multigrid = getattr(self.trainer.datamodule, "multigrid", None)
        if multigrid is not None:
            return {"optimizer": optimizer, "lr_scheduler": self._multigrid_schedule(optimizer, multigrid, sched)}
        total_steps = self.trainer.estimated_stepping_batches
        steps_per_epoch = max(int(total_steps // max(self.trainer.max_epochs, 1)), 1)
        schedule = warmup_schedule(optimizer, int(total_steps), **scheduler_steps(sched, steps_per_epoch))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def recipe_optimizer(self, global_batch: int) -> torch.optim.Optimizer:
        """The recipe's optimizer over the network's parameter groups, its lr scaled to ``global_batch`` clips a
        step; the classifier's lr multipliers are the fine-tuning ones when the weights start from elsewhere."""
        opt = recipe(self.hparams.optimizer, "optimizer")
        lr = scaled_lr(opt["base_lr"], global_batch, opt["base_batch_size"])
        head_mult = opt["head_lr_mult_pretrained" if starts_from_weights(self.hparams) else "head_lr_mult_scratch"]
        groups = param_groups(self.net, lr, opt["weight_decay"], head_mult, opt["bias_lr_mult"])
        return build_optimizer(groups, lr, opt, fused=self._gradient_scaler() is None)

    def _gradient_scaler(self) -> torch.amp.GradScaler | None:
        """The fp16 gradient scaler of the run's precision, if it has one (bf16 and float32 have none)."""
        return getattr(self._trainer.precision_plugin, "scaler", None) if self._trainer is not None else None

    def configure_gradient_clipping(
        self, optimizer: torch.optim.Optimizer, gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:  # fmt: skip
        """Lightning's clipping, done here for a fused optimizer: Lightning's mixed-precision plugin refuses to clip
        for one, because an fp16 scaler's gradients would still be scaled then; ``recipe_optimizer`` fuses only
        where no scaler is."""
        if not (gradient_clip_val and optimizer.defaults.get("fused")):
            return super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)
        params = [p for group in optimizer.param_groups for p in group["params"]]
        if gradient_clip_algorithm == "value":
            torch.nn.utils.clip_grad_value_(params, gradient_clip_val)
        else:
            torch.nn.utils.clip_grad_norm_(params, gradient_clip_val)

    def _multigrid_schedule(self, optimizer: torch.optim.Optimizer, multigrid: MultigridSchedule, sched) -> dict:
        """The recipe's warm-up and decay over epochs done, times the long cycle's linear-scaling factor, per
        optimizer step (epochs differ in their number of batches)."""
        clips = rank_clips(len(self.trainer.datamodule.dataset("train")), self.trainer.world_size)
        accumulate = self.trainer.accumulate_grad_batches
        steps = [math.ceil(len(multigrid.batches(e, clips)) / accumulate) for e in range(self.trainer.max_epochs)]
        per_epoch = 1000  # the epoch-based recipe at a fine resolution
        factor = schedule_factor(self.trainer.max_epochs * per_epoch, **scheduler_steps(sched, per_epoch))
        lr = multigrid_lr(lambda epochs: factor(int(epochs * per_epoch)), multigrid, steps)
        return {"scheduler": torch.optim.lr_scheduler.LambdaLR(optimizer, lr), "interval": "step"}
