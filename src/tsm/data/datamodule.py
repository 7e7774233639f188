"""The LightningDataModule: train/val/test clip loaders over a video source (:mod:`tsm.data.clips`).

Bad data under ``on_error=skip``: the sample is dropped from its batch, logged to
``skipped_samples.txt`` in ``log_dir``, and counted per split for the ``SkippedReport`` callback
(:mod:`tsm.training.callbacks`), which reports the count at the end of each epoch.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.utilities import rank_zero_warn
from torch.utils.data import DataLoader, RandomSampler

from tsm import imagenet
from tsm.checks import check_counts
from tsm.data.clips import ClipDataset, collate_skipping
from tsm.data.decode import check_on_error
from tsm.data.distributed import eval_sampler
from tsm.data.multigrid_sampler import MultigridBatchSampler
from tsm.data.sampling import FrameSampler
from tsm.data.transforms import ClipTransform, check_crop, check_normalisation, scale_for
from tsm.errors import DataError
from tsm.files import write_text_atomic
from tsm.training.multigrid import MultigridSchedule, rank_clips

log = logging.getLogger(__name__)
SKIPPED_FILE = "skipped_samples.txt"


class ClipDataModule(pl.LightningDataModule):
    """Train/val/test clip loaders over ``source(split=...)``, with sampling and transforms from config.

    ``root``, ``frames``, ``frame_template``, ``frame_start`` and ``split`` (the fold of three-split datasets) are
    the dataset keys users set as ``data.<key>``; the source config interpolates them.
    ``log_dir`` (the run directory) receives ``skipped_samples.txt`` and ``missing_<split>.txt``.
    ``num_classes`` None (``data.num_classes: null``) takes the count from the train source's labels;
    ``scale_size`` None resizes frames to :func:`~tsm.data.transforms.scale_for` ``(crop_size)``.
    """

    def __init__(
        self,
        source: Callable[..., Any],
        num_classes: int | None = None,
        num_segments: int = 8,
        crop_size: int = 224,
        scale_size: int | None = None,
        batch_size: int = 8,
        num_workers: int = 0,
        root: str | None = None,
        frames: bool = False,
        frame_template: str | None = None,
        frame_start: int = 1,
        split: int | None = None,
        sampling: Mapping[str, Any] | None = None,
        augment: Mapping[str, Any] | None = None,
        mean: tuple[float, ...] = imagenet.MEAN,
        std: tuple[float, ...] = imagenet.STD,
        seed: int = 0,
        pin_memory: bool = False,
        on_error: str = "raise",
        log_dir: str | None = None,
        teacher_view: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        check_counts({"num_segments": num_segments, "crop_size": crop_size, "batch_size": batch_size})
        check_counts({"scale_size": scale_size} if scale_size is not None else {})
        check_counts({"num_classes": num_classes} if num_classes is not None else {})
        check_counts({"num_workers": num_workers}, minimum=0)
        self.source = source
        self._num_classes = num_classes  # None: from the train source's label files (:attr:`num_classes`)
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.root = root
        self.frames = frames
        self.frame_template = frame_template
        self.frame_start = frame_start
        self.split = split
        self.seed = seed
        self.pin_memory = pin_memory
        self.on_error = check_on_error(on_error)
        self.log_dir = Path(log_dir) if log_dir else None
        self.sampler = FrameSampler(num_segments, **dict(sampling or {}))
        # distillation: the teacher's own frames of each training video, e.g. 32 consecutive ones for I3D
        view = dict(teacher_view or {})
        self.teacher_sampler = None
        if view:
            if "num_frames" not in view:
                raise ValueError(f"data.teacher_view needs num_frames (the teacher's frames per clip), got {view}")
            check_counts({"num_frames": view["num_frames"]}, group="data.teacher_view")
            self.teacher_sampler = FrameSampler(view.pop("num_frames"), **view, group="data.teacher_view")
        self.crop_size = crop_size
        self.scale_size = scale_for(crop_size) if scale_size is None else scale_size
        check_crop(crop_size, self.scale_size)
        check_normalisation(mean, std)
        self.augment = dict(augment or {})
        self.norm = {"mean": tuple(mean), "std": tuple(std)}
        self.datasets: dict[str, ClipDataset] = {}
        self.skipped: Counter[str] = Counter()  # per split, since its last epoch-end report
        self.config: dict[str, Any] | None = None  # the resolved data config, set by the train task
        # multigrid training (tsm.training.multigrid): training batches of the shapes of each epoch
        self.multigrid: MultigridSchedule | None = None

    @property
    def num_classes(self) -> int:
        """``data.num_classes`` if given, else the number of classes in the train source's label files."""
        return self._num_classes or len(self.dataset("train").source.classes)

    def dataset(self, split: str) -> ClipDataset:
        """The clip dataset of ``split`` (train, val or test), built on first use."""
        if split not in self.datasets:
            source = self.source(split=split)
            if self._num_classes or split != "train":
                self._check_classes(split, source)
            self.report_source(split, source)
            train = split == "train"
            augment = self._flip_settings(source) if train else {}
            transform = ClipTransform(train, self.crop_size, self.scale_size, **augment, **self.norm)
            teacher = self.teacher_sampler if train else None  # the teacher only takes part in the training loss
            self.datasets[split] = ClipDataset(
                source, self.sampler, transform, train, self.seed, self.on_error, teacher
            )
        return self.datasets[split]

    def unaugmented(self, split: str) -> ClipDataset:
        """Clips of ``split`` (train included) as evaluation sees them: the middle frame of each segment,
        centre crop, no flip (int8 calibration on training clips, :mod:`tsm.quantize`)."""
        if split != "train":
            return self.dataset(split)
        source = self.dataset(split).source
        transform = ClipTransform(False, self.crop_size, self.scale_size, **self.norm)
        return ClipDataset(source, self.sampler, transform, False, self.seed, self.on_error)

    def _check_classes(self, split: str, source: Any) -> None:
        """The classes of ``split`` must be as many as ``data.num_classes`` (or the train source's)."""
        expected, found = self.num_classes, len(source.classes)
        if found == expected:
            return
        named = getattr(source, "classes_from", "") or f"the {split} source"
        where = f"{named} names {found} classes (read for the {split} split)"
        if not self._num_classes:
            raise ValueError(f"the train source has {expected} classes but {where}")
        raise ValueError(
            f"data.num_classes={expected} but {where}; set data.num_classes={found} "
            "or leave it out (null) to take the count from the label files"
        )

    def _flip_settings(self, source: Any) -> dict[str, Any]:
        """The training augmentation with the source's flip label map and the classes never flipped; logs both."""
        augment = dict(self.augment)
        name = type(source).__name__
        if not getattr(source, "flip_allowed", True) and augment.get("flip", True):
            log.info("horizontal flip off: %s has direction classes and no flip label map", name)
            augment["flip"] = False
        flip_map, lone = getattr(source, "flip_label_map", None) or {}, getattr(source, "no_flip_classes", ())
        if augment.get("flip", True):
            pairs = sorted({tuple(sorted(pair)) for pair in flip_map.items()})
            swaps = "; ".join(f"{source.classes[a]} <-> {source.classes[b]}" for a, b in pairs)
            log.info("%s: horizontal flip %s", name, f"swaps {swaps}" if swaps else "keeps every label")
            if lone:
                never = ", ".join(source.classes[i] for i in sorted(lone))
                log.info("%s: never flipped (their mirror class is not in the labels): %s", name, never)
        return {**augment, "flip_label_map": flip_map, "no_flip_classes": lone}

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
        """Training items carry the student's clip and the class permutation of its flip, no teacher clip (the
        teacher's logits come from a cache of the unaugmented view)."""
        self.teacher_sampler = None
        train = self.dataset("train")
        train.teacher_sampler, train.cached_teacher = None, True

    def describe(self) -> dict[str, Any]:
        """What a model trained on this data needs to be used without it: class names, frames per clip,
        input size and normalisation (recorded in checkpoints, see :mod:`tsm.models.checkpoints`)."""
        return {
            "class_names": list(self.dataset("train").source.classes),
            "num_segments": self.sampler.num_segments,
            "sampling": {"mode": self.sampler.mode, "stride": self.sampler.stride},
            "input_size": self.crop_size,
            "scale_size": self.scale_size,
            **{k: list(v) for k, v in self.norm.items()},
        }

    def video_ids(self, split: str) -> list[str]:
        """The video ids of ``split``, in dataset index order."""
        source = self.dataset(split).source
        return [source.video_id(i) for i in range(len(source))]

    def report_source(self, split: str, source: Any) -> None:
        """Log annotation entries the source skipped and list the videos it lacks (Kinetics) in the run directory."""
        for where, reason in getattr(source, "skipped", ()):
            self.record_skipped(split, where, reason)
        if getattr(source, "skipped", ()):
            rank_zero_warn(f"{split}: {len(source.skipped)} annotation entries skipped (on_error=skip)")
        missing = getattr(source, "missing", ())
        if missing and self.log_dir:
            write_text_atomic(self.log_dir / f"missing_{split}.txt", "".join(f"{name}\n" for name in missing))

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

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Under ``on_error=skip``: record the samples the collate dropped, pass the batch on without them."""
        if self.on_error != "skip":
            return batch
        *batch, skipped = batch
        for split, path, reason in skipped:
            self.skipped[split] += 1
            self.record_skipped(split, path, reason)
        return tuple(batch)

    def check_labelled(self, split: str) -> None:
        """Training validates and tests on labelled videos: refuse a ``split`` with unlabelled ones (a publisher's
        test set), naming its key and ``src/eval.py``, which predicts them."""
        source = self.dataset(split).source
        unlabelled = sum(source.label(i) < 0 for i in range(len(source)))
        if unlabelled:
            raise DataError(
                getattr(source, "samples_from", f"the {split} split"),
                f"{unlabelled} of its {len(source)} {split} videos have no label, and train.py "
                f"{'validates' if split == 'val' else 'tests'} on labelled ones only: set data.source.splits.{split} "
                f"to a labelled split{' (or test=false)' if split == 'test' else ''}, and predict these with "
                f"python src/eval.py ... data.source.splits.test={getattr(source, 'part', split)}",
            )

    def _loader(self, split: str) -> DataLoader:
        dataset = self.dataset(split)
        if split != "train":
            self.check_labelled(split)
        if split == "train":
            self._check_a_batch_fits(len(dataset))
        if split == "train" and self.multigrid is not None:
            return self._multigrid_loader(dataset)
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

    def _check_a_batch_fits(self, clips: int) -> None:
        """Training drops an epoch's last incomplete batch: with fewer training clips per process than a batch (or,
        under multigrid, than an epoch's first batch), every batch would be dropped and nothing trained."""
        processes = self.trainer.world_size if self.trainer is not None else 1
        per_process = rank_clips(clips, processes)
        share = f"the {per_process} training clips each of {processes} processes gets" if processes > 1 else ""
        if self.multigrid is not None:
            schedule = self.multigrid
            firsts = [schedule.batch_shapes(epoch)[0] for epoch in range(schedule.max_epochs)]
            empty = [epoch for epoch, first in enumerate(firsts) if first.batch > per_process]  # no batch fits
            if empty:
                first = firsts[empty[0]]
                raise ValueError(
                    f"multigrid: epoch {empty[0]}'s first batch of {first.batch} clips ({first.frames} frames, "
                    f"{first.crop} pixels) is larger than {share or f'the {clips} training clips'}: {len(empty)} of "
                    f"{schedule.max_epochs} epochs would train nothing; lower data.batch_size (the coarse batches "
                    "scale with it)"
                )
        elif per_process < self.batch_size:
            raise ValueError(
                f"data.batch_size={self.batch_size} is larger than {share or f'the {clips} training clips'}: "
                "every batch would be dropped as incomplete and nothing trained; lower data.batch_size"
            )

    def _multigrid_loader(self, dataset: ClipDataset) -> DataLoader:
        """This epoch's training batches (the trainer reloads the loaders every epoch under multigrid)."""
        epoch = self.trainer.current_epoch if self.trainer is not None else 0
        return DataLoader(
            dataset,
            batch_sampler=MultigridBatchSampler(RandomSampler(dataset), self.multigrid, epoch),
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            collate_fn=self._collate("train"),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")
