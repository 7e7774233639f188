"""20BN-Jester V1, in the 20BN CSV format (:mod:`tsm.data.sources.twentybn`)."""

from __future__ import annotations

from tsm.data.sources.base import Sample, flip_labels
from tsm.data.sources.twentybn import TwentyBNCsv


class Jester(TwentyBNCsv):
    """20BN-Jester V1: 27 hand gestures, 148,092 clips of JPEG frames at 12 fps.

    A horizontal flip swaps the left/right gestures and the sense of turning. Rolling forward or
    backward, pushing and pulling (depth), up/down and zooming look the same mirrored. A labels
    file with one class of a pair but not the other never flips that class's clips.
    """

    name = "jester"
    prefix = "jester-v1"
    frames_dir = "20bn-jester-v1"
    flip_pairs = (
        ("Swiping Left", "Swiping Right"),
        ("Sliding Two Fingers Left", "Sliding Two Fingers Right"),
        ("Turning Hand Clockwise", "Turning Hand Counterclockwise"),
    )

    def load(self) -> list[Sample]:
        samples = super().load()
        self.flip_label_map, self.no_flip_classes = flip_labels(self.classes, self.flip_pairs)
        return samples
