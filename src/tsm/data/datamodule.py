"""Clip datasets over a video source, and the LightningDataModule that serves them.

A *video source* is anything with ``__len__``, ``video_id(i)``, ``num_frames(i)``,
``label(i)`` and ``read(i, indices) -> uint8 (T, H, W, C)``: the synthetic generator
and the readers of the public datasets all present that face.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from tsm.data.sampling import FrameSampler
from tsm.data.transforms import IMAGENET_MEAN, IMAGENET_STD, ClipTransform


class ClipDataset(Dataset):
    """Item ``i``: ``(clip (T, C, H, W) float, label, i)`` with fresh randomness per draw in
    training and a fixed, seed-determined view otherwise."""

    def __init__(self, source: Any, sampler: FrameSampler, transform: ClipTransform, train: bool, seed: int = 0):
        self.source = source
        self.sampler = sampler
        self.transform = transform
        self.train = train
        self.seed = seed

    def __len__(self) -> int:
        return len(self.source)

    def _rng(self, index: int) -> np.random.Generator:
        if self.train:  # torch's generator is seeded by seed_everything and per DataLoader worker
            return np.random.default_rng(int(torch.randint(2**62, ())))
        return np.random.default_rng([self.seed, index])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        rng = self._rng(index)
        indices = self.sampler(self.source.num_frames(index), self.train, rng)
        frames = self.source.read(index, indices)
        clip, label = self.transform(frames, self.source.label(index), rng)
        return clip, label, index


class ClipDataModule(pl.LightningDataModule):
    """Train/val/test clip loaders over ``source(split=...)``, with sampling and transforms from config."""

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
        sampling: Mapping[str, Any] | None = None,
        augment: Mapping[str, Any] | None = None,
        mean: tuple[float, ...] = IMAGENET_MEAN,
        std: tuple[float, ...] = IMAGENET_STD,
        seed: int = 0,
        pin_memory: bool = False,
    ) -> None:
        super().__init__()
        self.source = source
        self.num_classes = num_classes
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.root = root
        self.seed = seed
        self.pin_memory = pin_memory
        self.sampler = FrameSampler(num_segments, **dict(sampling or {}))
        self.crop_size = crop_size
        self.scale_size = scale_size
        self.augment = dict(augment or {})
        self.norm = {"mean": tuple(mean), "std": tuple(std)}
        self.datasets: dict[str, ClipDataset] = {}

    def dataset(self, split: str) -> ClipDataset:
        """The clip dataset of ``split`` (train, val or test), built on first use."""
        if split not in self.datasets:
            source = self.source(split=split)
            if len(source.classes) != self.num_classes:
                raise ValueError(
                    f"data.num_classes={self.num_classes} but the {split} source has {len(source.classes)} classes"
                )
            train = split == "train"
            transform = ClipTransform(
                train,
                self.crop_size,
                self.scale_size,
                flip_label_map=getattr(source, "flip_label_map", None),
                **(self.augment if train else {}),
                **self.norm,
            )
            self.datasets[split] = ClipDataset(source, self.sampler, transform, train, self.seed)
        return self.datasets[split]

    def setup(self, stage: str | None = None) -> None:
        splits = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}.get(stage, ("train", "val", "test"))
        for split in splits:
            self.dataset(split)

    def _loader(self, split: str) -> DataLoader:
        return DataLoader(
            self.dataset(split),
            batch_size=self.batch_size,
            shuffle=split == "train",
            drop_last=split == "train",
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=self.pin_memory,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

