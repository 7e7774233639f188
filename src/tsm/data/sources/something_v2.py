"""Something-Something V2 (now distributed by Qualcomm): 174 classes, 220,847 VP9 webm videos.

Under root: ``something-something-v2-labels.json`` (``{"<class>": "<index>"}``),
``something-something-v2-{train,validation}.json`` (lists of ``{"id", "label", "template",
"placeholders"}``), ``something-something-v2-test.json`` (``[{"id"}]``) and the videos
``20bn-something-something-v2/<id>.webm``.
"""

from __future__ import annotations

import re
from pathlib import Path

from tsm.data.sources.base import Sample, VideoSource, flip_labels, plain_int, read_json, unique_classes
from tsm.errors import DataError

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
        self.classes = self._classes(labels_file)
        self.classes_from = str(labels_file)
        self.flip_label_map, self.no_flip_classes = flip_labels(self.classes, FLIP_PAIRS, key=class_key)
        lookup = {class_key(name): index for index, name in enumerate(self.classes)}
        path = self.samples_from = self.annotation(f"{PREFIX}-{self.part}.json", split=self.split)
        entries = read_json(path)
        if not isinstance(entries, list):
            raise DataError(path, f"expected a JSON list of entries, got {type(entries).__name__}")
        samples = []
        for number, entry in enumerate(entries, 1):
            where = f"{path} entry {number}"
            if not isinstance(entry, dict) or not isinstance(entry.get("id"), (str, int)):
                self.reject(where, 'expected an object with an "id" (string or number)')
                continue
            video_id = str(entry["id"])
            where += f" (id {video_id})"
            template = entry.get("template", "")
            if self.part == "test":
                label = -1
            elif isinstance(template, str):
                label = self.class_index(template, lookup, where, key=class_key(template))
            else:
                self.reject(where, f"template {template!r} is not a string")
                continue
            if label is not None:
                samples.append(Sample(video_id, self.media_path(f"{VIDEOS_DIR}/{video_id}.webm"), label))
        return samples

    def _classes(self, labels_file: Path) -> tuple[str, ...]:
        """The class names of the labels JSON (``{"<class>": "<index>"}``) in label order: indices 0..N-1,
        each name once (compared as :func:`class_key`, as templates are)."""
        labels = read_json(labels_file)
        if not isinstance(labels, dict):
            raise DataError(labels_file, f"expected a JSON object of class -> index, got {type(labels).__name__}")
        numbered: dict[int, tuple[str, str]] = {}
        for number, (name, index) in enumerate(labels.items(), 1):
            where = f"{labels_file} entry {number}"
            label = index if type(index) is int else plain_int(index) if isinstance(index, str) else None
            if label is None:
                raise DataError(where, f"index {index!r} of {name!r} is not an integer")
            numbered[label] = (where, name)
        if sorted(numbered) != list(range(len(labels))):
            raise DataError(labels_file, f"indices are not 0..{len(labels) - 1}")
        return unique_classes((numbered[i] for i in range(len(labels))), key=class_key)
