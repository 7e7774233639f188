"""Which frames of a video make a clip: TSN segments or a dense window (0-based indices)."""

from __future__ import annotations

import numpy as np

MODES = ("segment", "dense")


def segment_indices(num_frames: int, num_segments: int, train: bool, rng: np.random.Generator) -> list[int]:
    """TSN sampling: split the video into ``num_segments`` equal segments and take one frame
    of each, random in training and the segment centre otherwise. Videos shorter than
    ``num_segments`` repeat frames in order."""
    if num_frames < 1:
        raise ValueError(f"cannot sample from a video with {num_frames} frames")
    edges = np.linspace(0, num_frames, num_segments + 1)
    if train:
        starts, ends = edges[:-1], edges[1:]
        picks = starts + rng.random(num_segments) * (ends - starts)
    else:
        picks = (edges[:-1] + edges[1:]) / 2
    return np.minimum(np.floor(picks).astype(int), num_frames - 1).tolist()


def dense_indices(num_frames: int, num_segments: int, stride: int, train: bool, rng: np.random.Generator) -> list[int]:
    """Dense sampling: ``num_segments`` frames ``stride`` apart inside one window, placed at
    random in training and centred otherwise; indices past the end wrap around."""
    if num_frames < 1:
        raise ValueError(f"cannot sample from a video with {num_frames} frames")
    window = num_segments * stride
    slack = max(num_frames - window, 0)
    start = int(rng.integers(slack + 1)) if train else slack // 2
    return [(start + i * stride) % num_frames for i in range(num_segments)]


class FrameSampler:
    """Picks clip frame indices for a split; the mode and its numbers come from config."""

    def __init__(self, num_segments: int, mode: str = "segment", stride: int = 8) -> None:
        if mode not in MODES:
            raise ValueError(f"data.sampling.mode must be one of {MODES}, got {mode!r}")
        self.num_segments = num_segments
        self.mode = mode
        self.stride = stride

    def __call__(self, num_frames: int, train: bool, rng: np.random.Generator) -> list[int]:
        if self.mode == "segment":
            return segment_indices(num_frames, self.num_segments, train, rng)
        return dense_indices(num_frames, self.num_segments, self.stride, train, rng)
