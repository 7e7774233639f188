"""Clip transforms: training augmentation (one crop and flip decision for all frames of a clip),
the one evaluation preprocessing (short side to ``scale_size``, centre crop), the multi-view test's
crops, and normalisation.

Frames come in as uint8 ``(T, H, W, C)`` and leave as float ``(T, C, crop, crop)``.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence

import numpy as np
import torch
from torchvision.transforms.v2 import functional as TF

from tsm import imagenet
from tsm.checks import check_counts

CROP_COUNTS = (1, 3, 10)


def scale_for(crop_size: int) -> int:
    """The short side a frame is resized to before a ``crop_size`` crop: 256 for 224, as TSM evaluates."""
    return round(crop_size * 256 / 224)


def check_crop(crop_size: int, scale_size: int, keys: str = "data") -> None:
    """A crop must fit in the resized frame; ``keys`` names the config group in the error."""
    if crop_size > scale_size:
        raise ValueError(
            f"{keys}.crop_size={crop_size} is larger than {keys}.scale_size={scale_size}, the short side the frames "
            f"are resized to before cropping: set {keys}.scale_size >= {crop_size}, or null ({scale_for(crop_size)})"
        )


def normalize(clip: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 ``(..., C, H, W)`` to float in [0, 1], then ``(x - mean) / std`` per channel."""
    return (clip.float().div_(255) - mean) / std


def check_normalisation(mean: Sequence[float], std: Sequence[float]) -> None:
    """``data.mean`` and ``data.std``: three finite numbers each (R, G, B), the std's positive."""
    for key, values in (("mean", mean), ("std", std)):
        try:
            numbers = [float(v) for v in values]
        except (TypeError, ValueError):
            numbers = []
        if len(numbers) != 3 or not all(math.isfinite(v) and (key == "mean" or v > 0) for v in numbers):
            kind = "positive numbers" if key == "std" else "numbers"
            raise ValueError(f"data.{key} must be 3 {kind} (R, G, B), got {values!r}")


def check_augment(scales: Sequence[float], max_distort: int) -> None:
    """``data.augment``: crop ``scales`` (fractions of the short side) in (0, 1], at least one; ``max_distort``
    scale steps between the crop's two sides, >= 0."""
    if not scales or not all(isinstance(s, (int, float)) and 0 < s <= 1 for s in scales):
        raise ValueError(f"data.augment.scales must be one or more fractions in (0, 1], got {scales!r}")
    check_counts({"max_distort": max_distort}, minimum=0, group="data.augment")


def channel_stats(mean: Sequence[float], std: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std as ``(3, 1, 1)`` tensors that broadcast over ``(..., C, H, W)`` clips."""
    return torch.tensor(mean).view(3, 1, 1), torch.tensor(std).view(3, 1, 1)


def eval_resize(clip: torch.Tensor, scale_size: int) -> torch.Tensor:
    """The evaluation resize: the short side of uint8 ``(..., C, H, W)`` frames to ``scale_size``."""
    return TF.resize(clip, [scale_size], antialias=True)


def crop_views(clip: torch.Tensor, num_crops: int, crop_size: int, scale_size: int) -> list[torch.Tensor]:
    """Spatial views of a uint8 clip ``(T, C, H, W)`` after :func:`eval_resize`: 1 (centre ``crop_size``),
    3 (left/centre/right along the long side, ``scale_size`` squares: the full-resolution protocol)
    or 10 (four corners and centre, each also flipped)."""
    if num_crops not in CROP_COUNTS:
        raise ValueError(f"test.num_crops must be one of {CROP_COUNTS}, got {num_crops}")
    clip = eval_resize(clip, scale_size)
    height, width = clip.shape[-2:]
    if num_crops == 1:
        return [TF.center_crop(clip, [crop_size, crop_size])]
    if num_crops == 3:
        side = min(height, width)
        starts = np.linspace(0, max(height, width) - side, 3).astype(int)
        if width >= height:
            return [clip[..., :, s : s + side] for s in starts]
        return [clip[..., s : s + side, :] for s in starts]
    five = TF.five_crop(clip, [crop_size, crop_size])
    return [*five, *(TF.horizontal_flip(c) for c in five)]


def flip_permutation(flip_label_map: Mapping[int, int], num_classes: int) -> torch.Tensor:
    """``perm`` with ``perm[k]`` the class of a clip whose mirror image is of class ``k`` ("swipe left" mirrored is
    "swipe right"): ``scores[..., perm]`` reads a mirrored clip's scores as the clip's own."""
    return torch.tensor([flip_label_map.get(k, k) for k in range(num_classes)])


def mirrored_crops(num_crops: int) -> list[bool]:
    """Which of :func:`crop_views`' views are horizontally flipped: the last five of ten."""
    return [num_crops == 10 and i >= 5 for i in range(num_crops)]


def crop_offsets(width: int, height: int, crop_w: int, crop_h: int) -> list[tuple[int, int]]:
    """The 13 fixed crop positions of TSM's multi-scale crop: centre, corners, edge
    centres and the four quarter points, as (left, top)."""
    sx, sy = (width - crop_w) / 4, (height - crop_h) / 4
    grid = [(0, 0), (4, 0), (0, 4), (4, 4), (2, 2), (0, 2), (4, 2), (2, 4), (2, 0), (1, 1), (3, 1), (1, 3), (3, 3)]
    return [(int(gx * sx), int(gy * sy)) for gx, gy in grid]


def multiscale_crop_box(
    width: int, height: int, crop_size: int, scales: Sequence[float], max_distort: int, rng: np.random.Generator
) -> tuple[int, int, int, int]:
    """A random (left, top, w, h) crop: side lengths from ``scales`` of the short side, the
    two sides at most ``max_distort`` scale steps apart, at one of the 13 fixed positions."""
    base = min(width, height)
    sizes = [int(base * s) for s in scales]
    sizes = [crop_size if abs(s - crop_size) < 3 else s for s in sizes]
    pairs = [(w, h) for i, h in enumerate(sizes) for j, w in enumerate(sizes) if abs(i - j) <= max_distort]
    crop_w, crop_h = pairs[rng.integers(len(pairs))]
    crop_w, crop_h = min(crop_w, width), min(crop_h, height)
    offsets = crop_offsets(width, height, crop_w, crop_h)
    left, top = offsets[rng.integers(len(offsets))]
    return left, top, crop_w, crop_h


class ClipTransform:
    """Training: multi-scale crop, resize to ``crop_size``, horizontal flip with a label map (never
    for labels in ``no_flip_classes``, whose mirror class is absent). Evaluation: resize the short
    side to ``scale_size``, centre crop ``crop_size``.
    """

    def __init__(
        self,
        train: bool,
        crop_size: int,
        scale_size: int,
        scales: Sequence[float] = (1.0, 0.875, 0.75, 0.66),
        max_distort: int = 1,
        flip: bool = True,
        flip_label_map: Mapping[int, int] | None = None,
        no_flip_classes: Collection[int] = (),
        mean: Sequence[float] = imagenet.MEAN,
        std: Sequence[float] = imagenet.STD,
    ) -> None:
        check_augment(scales, max_distort)
        self.train = train
        self.crop_size = crop_size
        self.scale_size = scale_size
        self.scales = tuple(scales)
        self.max_distort = max_distort
        self.flip = flip
        self.flip_label_map = dict(flip_label_map or {})
        self.no_flip_classes = frozenset(no_flip_classes)
        self.mean, self.std = channel_stats(mean, std)

    def __call__(self, frames: torch.Tensor, label: int, rng: np.random.Generator) -> tuple[torch.Tensor, int]:
        clip, label, _ = self.augment(frames, label, rng)
        return clip, label

    def augment(
        self, frames: torch.Tensor, label: int, rng: np.random.Generator, crop_size: int | None = None
    ) -> tuple[torch.Tensor, int, bool]:
        """The clip ``(T, C, H, W)`` normalised, its label, and whether it was flipped; ``crop_size`` (training
        only, multigrid's smaller crops) replaces the configured one."""
        clip = frames.permute(0, 3, 1, 2)  # (T, C, H, W) uint8
        height, width = clip.shape[-2:]
        flipped = False
        if self.train:
            crop = crop_size or self.crop_size
            left, top, w, h = multiscale_crop_box(width, height, crop, self.scales, self.max_distort, rng)
            clip = TF.resized_crop(clip, top, left, h, w, [crop, crop], antialias=True)
            if self.flip and rng.random() < 0.5 and label not in self.no_flip_classes:
                clip, flipped = TF.horizontal_flip(clip), True
                label = self.flip_label_map.get(label, label)
        else:
            (clip,) = crop_views(clip, 1, self.crop_size, self.scale_size)
        return normalize(clip, self.mean, self.std), label, flipped

    def class_permutation(self, num_classes: int, flipped: bool) -> torch.Tensor:
        """For a flipped clip: ``perm`` with ``perm[k]`` the class of the original clip that class ``k``
        of the flipped one corresponds to ("swipe left" mirrored is "swipe right"), so that ``logits[perm]``
        are the original clip's logits seen as the augmented clip's (cached teacher logits, :mod:`tsm.distill`)."""
        return flip_permutation(self.flip_label_map if flipped else {}, num_classes)
