"""The multi-view test protocol: several clips per video times several crops per clip.

Clips: ``num_clips`` fixed temporal samplings spread over the video (segment mode: the frame
picked in each segment moves across the segment; dense mode: the window start moves across the
video). Crops: 1 (centre), 3 (left/centre/right along the long side, ``scale_size`` square, the
full-resolution protocol) or 10 (four corners and centre, each also flipped, ``crop_size`` square).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.transforms.v2 import functional as TF

CROP_COUNTS = (1, 3, 10)


def clip_indices(num_frames: int, num_segments: int, num_clips: int, mode: str, stride: int) -> list[list[int]]:
    """Frame indices of each of ``num_clips`` evaluation clips (0-based, deterministic)."""
    if num_frames < 1:
        raise ValueError(f"cannot sample from a video with {num_frames} frames")
    clips = []
    for k in range(num_clips):
        if mode == "segment":
            tick = num_frames / num_segments
            offset = tick * (k + 0.5) / num_clips
            clips.append([min(int(offset + tick * s), num_frames - 1) for s in range(num_segments)])
        elif mode == "dense":
            window = num_segments * stride
            starts = np.linspace(0, max(num_frames - window, 0), num_clips)
            clips.append([(int(starts[k]) + i * stride) % num_frames for i in range(num_segments)])
        else:
            raise ValueError(f"test sampling mode must be 'segment' or 'dense', got {mode!r}")
    return clips


def crop_views(clip: torch.Tensor, num_crops: int, crop_size: int, scale_size: int) -> list[torch.Tensor]:
    """Spatial views of a uint8 clip ``(T, C, H, W)`` after resizing its short side to ``scale_size``."""
    if num_crops not in CROP_COUNTS:
        raise ValueError(f"test.num_crops must be one of {CROP_COUNTS}, got {num_crops}")
    clip = TF.resize(clip, [scale_size], antialias=True)
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


class MultiViewDataset(Dataset):
    """Item ``i``: ``(views (V, T, C, S, S) float normalised, label, i)`` with V = clips x crops."""

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
    ) -> None:
        self.source = source
        self.num_segments = num_segments
        self.num_clips = num_clips
        self.num_crops = num_crops
        self.crop_size = crop_size
        self.scale_size = scale_size
        self.mode = mode
        self.stride = stride
        self.mean = torch.tensor(mean).view(1, 3, 1, 1)
        self.std = torch.tensor(std).view(1, 3, 1, 1)

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        clips = clip_indices(self.source.num_frames(index), self.num_segments, self.num_clips, self.mode, self.stride)
        wanted = sorted({i for clip in clips for i in clip})  # decode each frame once for all clips
        frames = self.source.read(index, wanted).permute(0, 3, 1, 2)
        position = {frame: row for row, frame in enumerate(wanted)}
        views = []
        for clip in clips:
            views += crop_views(frames[[position[i] for i in clip]], self.num_crops, self.crop_size, self.scale_size)
        stacked = torch.stack(views).float().div_(255)
        return (stacked - self.mean) / self.std, self.source.label(index), index
