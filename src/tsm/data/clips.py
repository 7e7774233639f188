"""Datasets over a video source: training/validation clips, and the multi-view test's views.

A *video source* is anything with ``classes``, ``__len__``, ``video_id(i)``, ``num_frames(i)``,
``label(i)`` and ``read(i, indices) -> uint8 (T, H, W, C)``, optionally ``flip_label_map``
and ``flip_allowed``: the synthetic generator and the readers of the public datasets
(:mod:`tsm.data.sources`) all present that face.

Bad data (:class:`~tsm.data.decode.DataError`) follows ``on_error``: ``raise`` stops with the file
and the reason; ``skip`` returns a :class:`Skipped` marker that :func:`collate_skipping` drops
from the batch, never substituting another sample.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

from tsm.data.decode import DataError, check_on_error
from tsm.data.sampling import FrameSampler
from tsm.data.transforms import ClipTransform, channel_stats, crop_views, normalize


@dataclass(frozen=True)
class Skipped:
    """A sample that could not be read under ``on_error=skip``: what the collate drops and reports."""

    index: int
    path: str
    reason: str


def collate_skipping(batch: Sequence[tuple | Skipped], split: str) -> tuple:
    """Collate the readable samples; the skipped ones ride along as ``(split, path, reason)`` tuples.
    A batch of which no sample could be read is ``(skipped,)``: it reaches the model as an empty batch,
    which the training module skips (on every DDP rank at once)."""
    kept = [item for item in batch if not isinstance(item, Skipped)]
    skipped = [(split, item.path, item.reason) for item in batch if isinstance(item, Skipped)]
    return (*default_collate(kept), skipped) if kept else (skipped,)


class ClipDataset(Dataset):
    """Item ``i``: ``(clip (T, C, H, W) float, label, i)`` with fresh randomness per draw in
    training and a fixed, seed-determined view otherwise. With a ``teacher_sampler`` (distillation)
    the clip is a pair ``(student clip, teacher clip)``: frames decoded once for both, one crop and
    flip for both; with ``cached_teacher`` a pair ``(student clip, class permutation)``
    (:meth:`ClipTransform.class_permutation`)."""

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
        # teacher logits come from a cache of the unaugmented view: items carry, instead of a teacher
        # clip, the class permutation that maps them onto this clip's flip
        self.cached_teacher = False

    def __len__(self) -> int:
        return len(self.source)

    def _rng(self, index: int) -> np.random.Generator:
        if self.train:  # torch's generator is seeded by seed_everything and per DataLoader worker
            return np.random.default_rng(int(torch.randint(2**62, ())))
        return np.random.default_rng([self.seed, index])

    def __getitem__(
        self, key: int | tuple[int, int, int]
    ) -> tuple[torch.Tensor | tuple[torch.Tensor, torch.Tensor], int, int] | Skipped:
        """Item ``key``: an index, or ``(index, frames, crop)`` for a clip of another shape (multigrid)."""
        index, frames_per_clip, crop = key if isinstance(key, tuple) else (key, None, None)
        sampler = self.sampler.with_segments(frames_per_clip) if frames_per_clip else self.sampler
        rng = self._rng(index)
        try:
            num_frames = self.source.num_frames(index)
            indices = sampler(num_frames, self.train, rng)
            teacher = self.teacher_sampler(num_frames, self.train, rng) if self.teacher_sampler else []
            label = self.source.label(index)
            wanted = sorted(set(indices) | set(teacher))  # each frame decoded once for both views
            decoded = self.source.read(index, wanted)
        except DataError as err:
            if self.on_error == "raise":
                raise
            return Skipped(index, err.path, err.reason)
        row = {frame: i for i, frame in enumerate(wanted)}
        frames = decoded[[row[i] for i in indices + teacher]]
        clip, label, flipped = self.transform.augment(frames, label, rng, crop)  # one crop and flip for all
        if teacher:
            clip = (clip[: len(indices)], clip[len(indices) :])
        elif self.cached_teacher:
            perm = self.transform.class_permutation(len(self.source.classes), flipped)
            clip = (clip, perm)
        return clip, label, index


class MultiViewDataset(Dataset):
    """Item ``i``: ``(views (V, T, C, S, S) float normalised, label, i)`` with V = clips x crops; under
    ``on_error=skip`` a video that cannot be read is a :class:`Skipped` marker, as in :class:`ClipDataset`."""

    def __init__(
        self,
        source: Any,
        num_segments: int,
        num_clips: int,
        num_crops: int,
        crop_size: int,
        scale_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        mode: str = "segment",
        stride: int = 8,
        on_error: str = "raise",
    ) -> None:
        self.source = source
        self.on_error = check_on_error(on_error)
        self.sampler = FrameSampler(num_segments, mode, stride, group="test")
        self.num_clips = num_clips
        self.num_crops = num_crops
        self.crop_size = crop_size
        self.scale_size = scale_size
        self.mean, self.std = channel_stats(mean, std)

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int] | Skipped:
        try:
            clips = self.sampler.clips(self.source.num_frames(index), self.num_clips)
            wanted = sorted({i for clip in clips for i in clip})  # decode each frame once for all clips
            frames = self.source.read(index, wanted).permute(0, 3, 1, 2)
        except DataError as err:
            if self.on_error == "raise":
                raise
            return Skipped(index, err.path, err.reason)
        position = {frame: row for row, frame in enumerate(wanted)}
        views = []
        for clip in clips:
            views += crop_views(frames[[position[i] for i in clip]], self.num_crops, self.crop_size, self.scale_size)
        return normalize(torch.stack(views), self.mean, self.std), self.source.label(index), index
