"""The LightningModule: a recognizer, its loss, metrics, optimizer groups and schedule."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn
from torchmetrics import MaxMetric, MeanMetric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from tsm.distill import i3d_input, kd_loss, load_teacher
from tsm.distill_cache import compute_logits, file_digest, load_or_build
from tsm.models import build_recognizer
from tsm.optim import build_optimizer, param_groups, scaled_lr, warmup_schedule
from tsm.weights import init_from as load_weights

SPLITS = ("train", "val", "test")
# The TSM paper's recipe; conf/model/*.yaml restates it, these serve Python users.
DEFAULT_OPTIMIZER = {
    "base_lr": 0.01,
    "base_batch_size": 64,
    "batch_size": 8,
    "momentum": 0.9,
    "nesterov": False,
    "weight_decay": 5e-4,
    "bias_lr_mult": 2.0,
    "head_lr_mult_pretrained": {"weight": 5.0, "bias": 10.0},
    "head_lr_mult_scratch": {"weight": 1.0, "bias": 2.0},
}
DEFAULT_SCHEDULER = {"name": "cosine", "warmup_epochs": 0, "milestones": [], "gamma": 0.1, "min_lr_ratio": 0.0}


def _metrics(num_classes: int) -> MetricCollection:
    return MetricCollection(
        {
            "acc": MulticlassAccuracy(num_classes, average="micro"),
            "acc_top5": MulticlassAccuracy(num_classes, top_k=min(5, num_classes), average="micro"),
            "mean_class_acc": MulticlassAccuracy(num_classes, average="macro"),
        },
        # Compute groups merge metrics whose states match after the first batch: top-1 and top-5 do
        # when that batch is all correct, and would then share one state for the whole epoch.
        compute_groups=False,
    )


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
        optimizer: Mapping[str, Any] = DEFAULT_OPTIMIZER,
        scheduler: Mapping[str, Any] = DEFAULT_SCHEDULER,
        distill: Mapping[str, Any] | None = None,
        init_from: str | None = None,
    ) -> None:
        super().__init__()
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
        )
        if init_from is not None:
            load_weights(self.net, init_from)
        if channels_last:
            self.net.to(memory_format=torch.channels_last)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        self.distill = dict(distill or {"kind": "none"})
        # Kept outside the registered modules: not trained, not in the optimizer, not in checkpoints.
        self._teacher: list[nn.Module] = []
        if self.distill["kind"] != "none":
            self._teacher.append(load_teacher(self.distill["kind"], self.distill["teacher_ckpt"], num_classes))
        self._cached_logits: torch.Tensor | None = None  # (training videos, classes) under distill.cache
        if self.distill.get("teacher_input") == "i3d":
            # the data's normalisation, undone for I3D teachers; buffers follow the module's device, unsaved
            for name in ("mean", "std"):
                value = torch.tensor(self.distill[name], dtype=torch.float32).view(1, 1, 3, 1, 1)
                self.register_buffer(f"teacher_{name}", value, persistent=False)
        # ModuleDict keys may not shadow Module attributes such as ``train``: suffix them.
        self.metrics = nn.ModuleDict({f"{split}_metrics": _metrics(num_classes) for split in SPLITS})
        self.losses = nn.ModuleDict({f"{split}_loss": MeanMetric() for split in SPLITS})
        self.val_acc_best = MaxMetric()

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        return self.net(clips)

    @property
    def teacher(self) -> nn.Module | None:
        return self._teacher[0] if self._teacher else None

    @property
    def distilling(self) -> bool:
        return self.teacher is not None or self._cached_logits is not None

    def on_fit_start(self) -> None:
        if self.teacher is not None:
            dtype = next(self.net.parameters()).dtype
            self.teacher.to(device=self.device, dtype=dtype).eval()
            if self.distill.get("cache"):
                self._cache_teacher_logits()

    def _cache_teacher_logits(self) -> None:
        """Teacher logits of every training video in its fixed view, from ``distill.cache_file`` or
        computed now (on rank 0, the others wait and read the file); training then skips the teacher."""
        data = self.trainer.datamodule
        if not hasattr(data, "teacher_view_loader"):
            raise TypeError("model.distill.cache=true needs a ClipDataModule (the teacher's fixed view comes from it)")
        key = {"teacher_sha256": file_digest(self.distill["teacher_ckpt"]), "view": data.teacher_view_key()}
        ids = data.video_ids("train")

        def build() -> torch.Tensor:
            batches = (data.on_before_batch_transfer(batch, 0) for batch in data.teacher_view_loader())
            return compute_logits(self._teacher_logits, batches, len(ids), self.hparams.num_classes, self.device)

        if self.trainer.is_global_zero:
            self._cached_logits = load_or_build(self.distill["cache_file"], key, ids, build)
        self.trainer.strategy.barrier("teacher logit cache")
        if not self.trainer.is_global_zero:  # rank 0 has written the file
            self._cached_logits = load_or_build(self.distill["cache_file"], key, ids, build)
        data.drop_teacher_view()
        self._teacher.clear()  # its work is done: free the memory

    def _teacher_logits(self, clips: torch.Tensor) -> torch.Tensor:
        """The frozen teacher's logits for its view of the batch."""
        if self.distill["teacher_input"] == "i3d":
            clips = i3d_input(clips, self.teacher_mean, self.teacher_std)
        with torch.inference_mode():
            logits = self.teacher(clips)
        return logits.clone()  # a normal tensor again, usable as a target under autograd

    def _teacher_targets(self, teacher_clips: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """The teacher's logits for a training batch: looked up in the cache, or computed."""
        if self._cached_logits is None:
            return self._teacher_logits(teacher_clips)
        logits = self._cached_logits[indices.cpu()]
        if logits.isnan().any():
            raise RuntimeError(
                f"no cached teacher logits for training videos {indices[logits.isnan().any(1)].tolist()}: "
                "their teacher view could not be read (see skipped_samples.txt)"
            )
        return logits.to(self.device)

    def _loss(
        self, logits: torch.Tensor, labels: torch.Tensor, teacher_clips: torch.Tensor, indices: torch.Tensor, split: str
    ) -> torch.Tensor:
        if not self.distilling or split != "train":
            return self.criterion(logits, labels)
        total, hard, soft = kd_loss(
            logits,
            self._teacher_targets(teacher_clips, indices),
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
        logits = self(student_clips)
        loss = self._loss(logits, labels, teacher_clips, indices, split)
        self.losses[f"{split}_loss"].update(loss.detach(), weight=len(labels))  # a mean over clips, not batches
        self.metrics[f"{split}_metrics"].update(logits.detach(), labels)
        # The epoch mean syncs across processes when computed: keep it off the progress bar, whose hooks
        # run on rank 0 alone (a collective there puts DDP out of step); the bar shows the step loss.
        self.log(f"{split}/loss", self.losses[f"{split}_loss"], on_step=False, on_epoch=True)
        if split == "train":
            self.log("train/loss_step", loss.detach(), on_step=True, on_epoch=False, prog_bar=True)
        return loss

    def _log_epoch_metrics(self, split: str) -> dict[str, torch.Tensor]:
        values = self.metrics[f"{split}_metrics"].compute()
        self.metrics[f"{split}_metrics"].reset()
        self.log_dict({f"{split}/{k}": v for k, v in values.items()}, prog_bar=split != "test")
        return values

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._step(batch, "test")

    def on_train_epoch_end(self) -> None:
        self._log_epoch_metrics("train")

    def on_validation_epoch_end(self) -> None:
        values = self._log_epoch_metrics("val")
        if not self.trainer.sanity_checking:
            self.val_acc_best(values["acc"])
            self.log("val/acc_best", self.val_acc_best.compute(), prog_bar=True)

    def on_test_epoch_end(self) -> None:
        self._log_epoch_metrics("test")

    def configure_optimizers(self) -> dict[str, Any]:
        opt, sched = self.hparams.optimizer, self.hparams.scheduler
        global_batch = opt["batch_size"] * self.trainer.world_size * self.trainer.accumulate_grad_batches
        lr = scaled_lr(opt["base_lr"], global_batch, opt["base_batch_size"])
        hp = self.hparams
        pretrained = hp.pretrained or hp.pretrained_file is not None or hp.init_from is not None
        head_mult = opt["head_lr_mult_pretrained" if pretrained else "head_lr_mult_scratch"]
        groups = param_groups(self.net, lr, opt["weight_decay"], head_mult, opt["bias_lr_mult"])
        optimizer = build_optimizer(groups, lr, opt)
        total_steps = self.trainer.estimated_stepping_batches
        steps_per_epoch = max(int(total_steps // max(self.trainer.max_epochs, 1)), 1)
        schedule = warmup_schedule(
            optimizer,
            total_steps=int(total_steps),
            warmup_steps=int(sched["warmup_epochs"] * steps_per_epoch),
            name=sched["name"],
            milestones=tuple(int(e * steps_per_epoch) for e in sched["milestones"]),
            gamma=sched["gamma"],
            min_lr_ratio=sched["min_lr_ratio"],
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
