"""The 20BN CSV format of Jester V1 and Something-Something V1 (now distributed by Qualcomm).

Under root: ``<prefix>-labels.csv`` (one class name a line, in label order),
``<prefix>-{train,validation,test}.csv`` (``id;label`` lines, test ``id`` only) and JPEG frames
``<frames_dir>/<id>/00001.jpg`` (1-indexed, five digits).
"""

from __future__ import annotations

from tsm.data.datasets.base import Sample, VideoSource, flip_labels, unique_classes


class TwentyBNCsv(VideoSource):
    """A 20BN CSV dataset; subclasses name the file prefix and the frames folder."""

    prefix = ""
    frames_dir = ""
    frames_only = True
    default_splits = {"train": "train", "val": "validation", "test": "validation"}

    def load(self) -> list[Sample]:
        labels_file = self.annotation(f"{self.prefix}-labels.csv")
        self.classes = unique_classes(self.lines(labels_file))
        self.classes_from = str(labels_file)
        lookup = {name: i for i, name in enumerate(self.classes)}
        self.samples_from = self.annotation(f"{self.prefix}-{self.part}.csv", split=self.split)
        samples = []
        for where, text in self.lines(self.samples_from):
            video_id, labelled, name = text.partition(";")
            label = self.class_index(name, lookup, where) if labelled or self.part != "test" else -1
            if label is not None:
                samples.append(Sample(video_id, self.media_path(f"{self.frames_dir}/{video_id}"), label))
        return samples


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


class SomethingV1(TwentyBNCsv):
    """Something-Something V1: 174 object interactions, 108,499 clips of JPEG frames.

    Several classes are left/right mirrors of each other and no flip map for V1's labels is
    established, so horizontal flipping is disabled (``flip_allowed = False``).
    """

    name = "sthv1"
    prefix = "something-something-v1"
    frames_dir = "20bn-something-something-v1"
    flip_allowed = False
