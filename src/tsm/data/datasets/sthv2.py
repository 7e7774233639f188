"""Something-Something V2 (now distributed by Qualcomm): 174 classes, 220,847 VP9 webm videos.

Under root: ``something-something-v2-labels.json`` (``{"<class>": "<index>"}``),
``something-something-v2-{train,validation}.json`` (lists of ``{"id", "label", "template",
"placeholders"}``), ``something-something-v2-test.json`` (``[{"id"}]``) and the videos
``20bn-something-something-v2/<id>.webm``.
"""

from __future__ import annotations

import json
import re

from tsm.data.datasets.base import Sample, VideoSource, symmetric_map

PREFIX = "something-something-v2"
VIDEOS_DIR = "20bn-something-something-v2"
# Label indices a horizontal flip swaps: pushing / pulling something from left to right and
# from right to left, and turning the camera left / right while filming something.
FLIP_PAIRS = ((86, 87), (93, 94), (166, 167))


def class_key(text: str) -> str:
    """Compare templates and class names without brackets, case or repeated spaces:
    ``"Putting [something] onto [something]"`` matches ``"Putting something onto something"``."""
    return re.sub(r"\s+", " ", text.replace("[", "").replace("]", "")).strip().lower()


class SomethingV2(VideoSource):
    """Something-Something V2; an entry's class is its ``template`` with the brackets dropped."""

    name = "sthv2"
    default_splits = {"train": "train", "val": "validation", "test": "validation"}

    def load(self) -> list[Sample]:
        with open(self.annotation(f"{PREFIX}-labels.json"), encoding="utf-8") as file:
            indices = {name: int(index) for name, index in json.load(file).items()}
        self.classes = tuple(sorted(indices, key=indices.__getitem__))
        if sorted(indices.values()) != list(range(len(indices))):
            raise ValueError(f"{PREFIX}-labels.json: indices are not 0..{len(indices) - 1}")
        if len(self.classes) <= max(max(pair) for pair in FLIP_PAIRS):
            raise ValueError(f"{PREFIX}-labels.json has {len(self.classes)} classes, Something-Something V2 has 174")
        self.flip_label_map = symmetric_map(FLIP_PAIRS)
        lookup = {class_key(name): index for name, index in indices.items()}
        path = self.annotation(f"{PREFIX}-{self.part}.json")
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
