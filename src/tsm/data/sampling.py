"""Which frames of a video make a clip: TSN segments or a dense window (0-based indices).

One sampler serves training (random), validation (the centre) and the multi-view test
(``num_clips`` fixed clips spread over the video, the first of one being the centre clip).
"""

from __future__ import annotations

import numpy as np

from tsm.checks import check_counts

MODES = ("segment", "dense")


def segment_indices(
    num_frames: int, num_segments: int, train: bool, rng: np.random.Generator, clip: int = 0, num_clips: int = 1
) -> list[int]:
    """TSN sampling: split the video into ``num_segments`` equal segments and take one frame of each:
    at random in training, otherwise ``(clip + 0.5) / num_clips`` of the way through each segment
    (its centre for a single clip). Videos shorter than ``num_segments`` repeat frames in order."""
    if num_frames < 1:
        raise ValueError(f"cannot sample from a video with {num_frames} frames")
    edges = np.linspace(0, num_frames, num_segments + 1)
    starts, ends = edges[:-1], edges[1:]
    fraction = rng.random(num_segments) if train else (clip + 0.5) / num_clips
    picks = starts + fraction * (ends - starts)
    return np.minimum(np.floor(picks).astype(int), num_frames - 1).tolist()


def dense_indices(
    num_frames: int,
    num_segments: int,
    stride: int,
    train: bool,
    rng: np.random.Generator,
    clip: int = 0,
    num_clips: int = 1,
) -> list[int]:
    """Dense sampling: ``num_segments`` frames ``stride`` apart inside one window, placed at random in
    training, centred for a single evaluation clip, and with starts evenly spread from the first to
    the last possible one for ``num_clips`` > 1; indices past the end wrap around."""
    if num_frames < 1:
        raise ValueError(f"cannot sample from a video with {num_frames} frames")
    window = num_segments * stride
    slack = max(num_frames - window, 0)
    if train:
        start = int(rng.integers(slack + 1))
    else:
        start = slack // 2 if num_clips == 1 else int(np.linspace(0, slack, num_clips)[clip])
    return [(start + i * stride) % num_frames for i in range(num_segments)]


class FrameSampler:
    """Picks clip frame indices; the mode and its numbers come from config (``group``: ``data.sampling``,
    ``data.teacher_view`` or ``test``, named in errors)."""

    def __init__(self, num_segments: int, mode: str = "segment", stride: int = 8, group: str = "data.sampling") -> None:
        if mode not in MODES:
            raise ValueError(f"{group}.mode must be one of {MODES}, got {mode!r}")
        check_counts({"stride": stride}, group=group)
        self.num_segments = num_segments
        self.mode = mode
        self.stride = stride

    def __call__(
        self, num_frames: int, train: bool, rng: np.random.Generator, clip: int = 0, num_clips: int = 1
    ) -> list[int]:
        """One clip: random in training, else clip ``clip`` of ``num_clips`` fixed ones."""
        if self.mode == "segment":
            return segment_indices(num_frames, self.num_segments, train, rng, clip, num_clips)
        return dense_indices(num_frames, self.num_segments, self.stride, train, rng, clip, num_clips)

    def with_segments(self, num_segments: int) -> FrameSampler:
        """The same sampling at ``num_segments`` frames per clip over the same span (multigrid's shorter
        clips): segments cover the whole video anyway; a dense window keeps its length, its stride grows."""
        stride = max(1, self.stride * self.num_segments // num_segments)
        return FrameSampler(num_segments, self.mode, stride)

    def clips(self, num_frames: int, num_clips: int) -> list[list[int]]:
        """The ``num_clips`` fixed evaluation clips of a video (the multi-view test's temporal views)."""
        unused = np.random.default_rng(0)  # evaluation sampling draws nothing
        return [self(num_frames, False, unused, k, num_clips) for k in range(num_clips)]
