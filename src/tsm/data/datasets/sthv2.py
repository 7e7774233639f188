"""Something-Something V2 (now distributed by Qualcomm): 174 classes, 220,847 VP9 webm videos.

Under root: ``something-something-v2-labels.json`` (``{"<class>": "<index>"}``),
``something-something-v2-{train,validation}.json`` (lists of ``{"id", "label", "template",
"placeholders"}``), ``something-something-v2-test.json`` (``[{"id"}]``) and the videos
``20bn-something-something-v2/<id>.webm``.
"""

from __future__ import annotations

import json
import re

from tsm.data.datasets.base import Sample, VideoSource, flip_labels

PREFIX = "something-something-v2"
VIDEOS_DIR = "20bn-something-something-v2"
# Classes a horizontal flip swaps (labels 86/87, 93/94 and 166/167 of the publisher's 174),
# matched by their text so that a labels file with a subset of the classes keeps them right.
FLIP_PAIRS = (
    ("Pulling something from left to right", "Pulling something from right to left"),
    ("Pushing something from left to right", "Pushing something from right to left"),
    ("Turning the camera left while filming something", "Turning the camera right while filming something"),
)


def class_key(text: str) -> str:
    """Compare templates and class names without brackets, case or repeated spaces:
    ``"Putting [something] onto [something]"`` matches ``"Putting something onto something"``."""
    return re.sub(r"\s+", " ", text.replace("[", "").replace("]", "")).strip().lower()


class SomethingV2(VideoSource):
    """Something-Something V2; an entry's class is its ``template`` with the brackets dropped. The
    labels JSON may hold any subset of the 174 classes, indexed 0..N-1."""

    name = "sthv2"
    default_splits = {"train": "train", "val": "validation", "test": "validation"}

    def load(self) -> list[Sample]:
        labels_file = self.annotation(f"{PREFIX}-labels.json")
        with open(labels_file, encoding="utf-8") as file:
            indices = {name: int(index) for name, index in json.load(file).items()}
        self.classes = tuple(sorted(indices, key=indices.__getitem__))
        self.classes_from = str(labels_file)
        if sorted(indices.values()) != list(range(len(indices))):
            raise ValueError(f"{labels_file}: indices are not 0..{len(indices) - 1}")
        self.flip_label_map, self.no_flip_classes = flip_labels(self.classes, FLIP_PAIRS, key=class_key)
        lookup = {class_key(name): index for name, index in indices.items()}
        path = self.annotation(f"{PREFIX}-{self.part}.json", split=self.split)
        with open(path, encoding="utf-8") as file:
            entries = json.load(file)
        samples = []
        for number, entry in enumerate(entries, 1):
            video_id = str(entry["id"])
            where = f"{path} entry {number} (id {video_id})"
            if self.part == "test":
                label = -1
            else:
                template = entry.get("template", "")
                label = self.class_index(template, lookup, where, key=class_key(template))
            if label is not None:
                samples.append(Sample(video_id, self.media_path(f"{VIDEOS_DIR}/{video_id}.webm"), label))
        return samples
