"""The 20BN CSV format that Jester V1 and Something-Something V1 share (now distributed by Qualcomm).

Under root: ``<prefix>-labels.csv`` (one class name a line),
``<prefix>-{train,validation,test}.csv`` (``id;label`` lines, test ``id`` only) and JPEG frames
``<frames_dir>/<id>/00001.jpg`` (1-indexed, five digits).

Classes are numbered in the sorted order of their names, as the official TSM code numbers them
(``tools/gen_label_sthv1.py``, for Jester too) and its released Jester and Something-V1 weights
do, not in the labels file's line order.
"""

from __future__ import annotations

from tsm.data.sources.base import Sample, VideoSource, unique_classes


class TwentyBNCsv(VideoSource):
    """A 20BN CSV dataset; subclasses name the file prefix and the frames folder."""

    prefix = ""
    frames_dir = ""
    frames_only = True
    default_splits = {"train": "train", "val": "validation", "test": "validation"}

    def load(self) -> list[Sample]:
        labels_file = self.annotation(f"{self.prefix}-labels.csv")
        self.classes = tuple(sorted(unique_classes(self.lines(labels_file))))
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
