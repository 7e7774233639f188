"""Clip datasets over a video source, and the LightningDataModule that serves them.

A *video source* is anything with ``classes``, ``__len__``, ``video_id(i)``, ``num_frames(i)``,
``label(i)`` and ``read(i, indices) -> uint8 (T, H, W, C)``, optionally ``flip_label_map``
and ``flip_allowed``: the synthetic generator and the readers of the public datasets
(:mod:`tsm.data.datasets`) all present that face.

Bad data (:class:`~tsm.data.decode.DataError`) follows ``on_error``: ``raise`` stops with the
file and the reason; ``skip`` drops the sample from its batch, never substituting another, logs
it to ``skipped_samples.txt`` in ``log_dir`` and reports the count at the end of each epoch.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_warn
from torch.utils.data import DataLoader, Dataset, default_collate

from tsm.data.decode import DataError, check_on_error
from tsm.data.distributed import eval_sampler
from tsm.data.sampling import FrameSampler
from tsm.data.transforms import IMAGENET_MEAN, IMAGENET_STD, ClipTransform

log = logging.getLogger(__name__)
SKIPPED_FILE = "skipped_samples.txt"


@dataclass(frozen=True)
class Skipped:
    """A sample that could not be read under ``on_error=skip``: what the collate drops and reports."""

    index: int
    path: str
    reason: str


def collate_skipping(batch: Sequence[tuple | Skipped], split: str) -> tuple:
    """Collate the readable samples; the skipped ones ride along as ``(split, path, reason)`` tuples."""
    kept = [item for item in batch if not isinstance(item, Skipped)]
    skipped = [(split, item.path, item.reason) for item in batch if isinstance(item, Skipped)]
    if not kept:
        raise DataError(skipped[0][1], f"all {len(batch)} samples of a {split} batch failed; first: {skipped[0][2]}")
    return (*default_collate(kept), skipped)


class ClipDataset(Dataset):
    """Item ``i``: ``(clip (T, C, H, W) float, label, i)`` with fresh randomness per draw in
    training and a fixed, seed-determined view otherwise. With a ``teacher_sampler`` (distillation)
    the clip is a pair ``(student clip, teacher clip)``: frames decoded once for both, one crop and
    flip for both."""

    def __init__(
        self,
        source: Any,
        sampler: FrameSampler,
        transform: ClipTransform,
        train: bool,
        seed: int = 0,
        on_error: str = "raise",
        teacher_sampler: FrameSampler | None = None,
    ) -> None:
        self.source = source
        self.sampler = sampler
        self.teacher_sampler = teacher_sampler
        self.transform = transform
        self.train = train
        self.seed = seed
        self.on_error = check_on_error(on_error)

    def __len__(self) -> int:
        return len(self.source)

    def _rng(self, index: int) -> np.random.Generator:
        if self.train:  # torch's generator is seeded by seed_everything and per DataLoader worker
            return np.random.default_rng(int(torch.randint(2**62, ())))
        return np.random.default_rng([self.seed, index])

    def __getitem__(self, index: int) -> tuple[torch.Tensor | tuple[torch.Tensor, torch.Tensor], int, int] | Skipped:
        rng = self._rng(index)
        try:
            num_frames = self.source.num_frames(index)
            indices = self.sampler(num_frames, self.train, rng)
            teacher = self.teacher_sampler(num_frames, self.train, rng) if self.teacher_sampler else []
            wanted = sorted(set(indices) | set(teacher))  # each frame decoded once for both views
            decoded = self.source.read(index, wanted)
        except DataError as err:
            if self.on_error == "raise":
                raise
            return Skipped(index, err.path, err.reason)
        row = {frame: i for i, frame in enumerate(wanted)}
        frames = decoded[[row[i] for i in indices + teacher]]
        clip, label = self.transform(frames, self.source.label(index), rng)  # one crop and flip for all
        if teacher:
            clip = (clip[: len(indices)], clip[len(indices) :])
        return clip, label, index


class ClipDataModule(pl.LightningDataModule):
    """Train/val/test clip loaders over ``source(split=...)``, with sampling and transforms from config.

    ``root``, ``frames``, ``frame_template`` and ``split`` (the fold of three-split datasets) are
    the dataset keys users set as ``data.<key>``; the source config interpolates them.
    ``log_dir`` (the run directory) receives ``skipped_samples.txt`` and ``missing_<split>.txt``.
    """

    def __init__(
        self,
        source: Callable[..., Any],
        num_classes: int,
        num_segments: int = 8,
        crop_size: int = 224,
        scale_size: int = 256,
        batch_size: int = 8,
        num_workers: int = 0,
        root: str | None = None,
        frames: bool = False,
        frame_template: str | None = None,
        split: int | None = None,
        sampling: Mapping[str, Any] | None = None,
        augment: Mapping[str, Any] | None = None,
        mean: tuple[float, ...] = IMAGENET_MEAN,
        std: tuple[float, ...] = IMAGENET_STD,
        seed: int = 0,
        pin_memory: bool = False,
        on_error: str = "raise",
        log_dir: str | None = None,
        teacher_view: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.source = source
        self.num_classes = num_classes
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.root = root
        self.frames = frames
        self.frame_template = frame_template
        self.split = split
        self.seed = seed
        self.pin_memory = pin_memory
        self.on_error = check_on_error(on_error)
        self.log_dir = Path(log_dir) if log_dir else None
        self.sampler = FrameSampler(num_segments, **dict(sampling or {}))
        # distillation: the teacher's own frames of each training video, e.g. 32 consecutive ones for I3D
        view = dict(teacher_view or {})
        self.teacher_sampler = FrameSampler(view.pop("num_frames"), **view) if view else None
        self.crop_size = crop_size
        self.scale_size = scale_size
        self.augment = dict(augment or {})
        self.norm = {"mean": tuple(mean), "std": tuple(std)}
        self.datasets: dict[str, ClipDataset] = {}
        self.skipped: Counter[str] = Counter()  # per split, since its last epoch-end report

    def dataset(self, split: str) -> ClipDataset:
        """The clip dataset of ``split`` (train, val or test), built on first use."""
        if split not in self.datasets:
            source = self.source(split=split)
            if len(source.classes) != self.num_classes:
                raise ValueError(
                    f"data.num_classes={self.num_classes} but the {split} source has {len(source.classes)} classes"
                )
            self._report_source(split, source)
            train = split == "train"
            augment = dict(self.augment) if train else {}
            if train and not getattr(source, "flip_allowed", True) and augment.get("flip", True):
                log.info("horizontal flip off: %s has direction classes and no flip label map", type(source).__name__)
                augment["flip"] = False
            transform = ClipTransform(
                train,
                self.crop_size,
                self.scale_size,
                flip_label_map=getattr(source, "flip_label_map", None),
                **augment,
                **self.norm,
            )
            teacher = self.teacher_sampler if train else None  # the teacher only takes part in the training loss
            self.datasets[split] = ClipDataset(
                source, self.sampler, transform, train, self.seed, self.on_error, teacher
            )
        return self.datasets[split]

    def teacher_view_loader(self) -> DataLoader:
        """The training videos in the teacher's fixed view (its frames sampled as for evaluation, centre
        crop, no flip), for caching the teacher's logits; batches are ``(clips, labels, indices)``."""
        train = self.dataset("train")
        transform = ClipTransform(False, self.crop_size, self.scale_size, **self.norm)
        sampler = self.teacher_sampler or self.sampler
        dataset = ClipDataset(train.source, sampler, transform, False, self.seed, self.on_error)
        collate = self._collate("teacher view")
        return DataLoader(dataset, batch_size=self.batch_size, num_workers=self.num_workers, collate_fn=collate)

    def _collate(self, split: str) -> Callable[[Sequence[Any]], tuple] | None:
        """Under ``on_error=skip`` the collate that drops unreadable samples; else PyTorch's default."""
        return partial(collate_skipping, split=split) if self.on_error == "skip" else None

    def teacher_view_key(self) -> dict[str, Any]:
        """What defines the teacher's fixed view: a cache of its logits is valid only for the same view."""
        sampler = self.teacher_sampler or self.sampler
        return {
            "frames": (sampler.num_segments, sampler.mode, sampler.stride),
            "crop_size": self.crop_size,
            "scale_size": self.scale_size,
            **{k: list(v) for k, v in self.norm.items()},
        }

    def drop_teacher_view(self) -> None:
        """Training items carry the student's clip only (the teacher's logits come from a cache)."""
        self.teacher_sampler = None
        if "train" in self.datasets:
            self.datasets["train"].teacher_sampler = None

    def video_ids(self, split: str) -> list[str]:
        """The video ids of ``split``, in dataset index order."""
        source = self.dataset(split).source
        return [source.video_id(i) for i in range(len(source))]

    def _report_source(self, split: str, source: Any) -> None:
        """Log annotation entries the source skipped and list the videos it lacks (Kinetics) in the run directory."""
        for where, reason in getattr(source, "skipped", ()):
            self.record_skipped(split, where, reason)
        if getattr(source, "skipped", ()):
            rank_zero_warn(f"{split}: {len(source.skipped)} annotation entries skipped (on_error=skip)")
        missing = getattr(source, "missing", ())
        if missing and self.log_dir:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            (self.log_dir / f"missing_{split}.txt").write_text("".join(f"{name}\n" for name in missing))

    def record_skipped(self, split: str, path: str, reason: str) -> None:
        """Log one skipped sample (or annotation entry) and append it to ``skipped_samples.txt``."""
        log.warning("skipped %s sample %s: %s", split, path, reason)
        if self.log_dir:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            with open(self.log_dir / SKIPPED_FILE, "a", encoding="utf-8") as file:
                file.write(f"{split}\t{path}\t{reason}\n")

    def setup(self, stage: str | None = None) -> None:
        splits = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}.get(stage, ("train", "val", "test"))
        for split in splits:
            self.dataset(split)
        trainer = self.trainer
        if self.on_error == "skip" and trainer and not any(isinstance(c, SkippedReport) for c in trainer.callbacks):
            trainer.callbacks.append(SkippedReport())  # LightningDataModule has no epoch-end hook of its own

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Under ``on_error=skip``: record the samples the collate dropped, pass the batch on without them."""
        if self.on_error != "skip":
            return batch
        *batch, skipped = batch
        for split, path, reason in skipped:
            self.skipped[split] += 1
            self.record_skipped(split, path, reason)
        return tuple(batch)

    def _loader(self, split: str) -> DataLoader:
        dataset = self.dataset(split)
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=split == "train",
            # under DDP, evaluation sees every video once (Lightning's train sampler pads, harmlessly)
            sampler=None if split == "train" else eval_sampler(dataset),
            drop_last=split == "train",
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=self.pin_memory,
            collate_fn=self._collate(split),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")


class SkippedReport(pl.Callback):
    """Reports the samples skipped in each train/val/test epoch: a warning and the metric ``<split>/skipped``."""

    def _report(self, trainer: pl.Trainer, pl_module: pl.LightningModule, split: str) -> None:
        data = trainer.datamodule
        count, data.skipped[split] = data.skipped[split], 0  # batches of a split only come within its epochs
        if count:
            where = data.log_dir / SKIPPED_FILE if data.log_dir else "the log"
            rank_zero_warn(f"{count} {split} samples skipped this epoch (on_error=skip), listed in {where}")
        pl_module.log(f"{split}/skipped", float(count), reduce_fx="sum", sync_dist=True)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._report(trainer, pl_module, "train")

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._report(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._report(trainer, pl_module, "test")
