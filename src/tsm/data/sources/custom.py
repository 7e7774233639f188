"""Custom data: TSM list files, or a class-per-folder tree of videos.

``format=list``: ``splits`` names list files under root with ``<path> <num_frames> <label>`` lines
(TSM's format): ``path`` (relative to root, or absolute) is a frame folder, or a video with
``frames=false``; labels are 0-based integers, named by ``class_names`` (a file under root, one
name a line) if given. The classes are those of ``class_names``, else ``num_classes`` of them, else
as many as the train list's highest label + 1.

``format=tree``: ``splits`` names folders under root holding ``<class>/<video>`` (or
``<class>/<frame folder>/`` with ``frames=true``); the classes are the sorted folder names of
the train folder, so every split agrees on them.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from tsm.data.decode import VIDEO_SUFFIXES, DataError
from tsm.data.sources.base import Sample, VideoSource, plain_int, unique_classes

log = logging.getLogger(__name__)

FORMATS = ("list", "tree")
DEFAULT_SPLITS = {
    "list": {"train": "train.txt", "val": "val.txt", "test": "val.txt"},
    "tree": {"train": "train", "val": "val", "test": "val"},
}
MAX_INFERRED_CLASSES = 100_000  # classes counted from the labels: a stray huge label is not a billion classes


class Custom(VideoSource):
    """User data in one of :data:`FORMATS`; ``flip_allowed`` says whether a horizontal flip keeps labels valid."""

    name = "custom"

    def __init__(
        self,
        root: str | os.PathLike,
        split: str,
        format: str = "list",
        num_classes: int | None = None,
        class_names: str | None = None,
        flip_allowed: bool = True,
        **kwargs: Any,
    ) -> None:
        if format not in FORMATS:
            raise ValueError(f"custom data: data.source.format must be one of {FORMATS}, got {format!r}")
        self.format = format
        self.num_classes = num_classes
        self.class_names = class_names
        self.flip_allowed = flip_allowed
        self.default_splits = DEFAULT_SPLITS[format]
        super().__init__(root, split, **kwargs)

    def load(self) -> list[Sample]:
        return self._load_list() if self.format == "list" else self._load_tree()

    def _list_classes(self) -> tuple[str, ...]:
        """The class names of list data, from ``class_names``, ``num_classes`` or the train list's labels."""
        if self.class_names:
            self.classes_from = str(self.annotation(self.class_names))
            return unique_classes(self.lines(Path(self.classes_from)))
        if self.num_classes:
            self.classes_from = "data.num_classes"
            return tuple(str(i) for i in range(self.num_classes))
        train = self.annotation(self.splits["train"], split="train")
        self.classes_from = f"the labels of {train}"
        labels = ((plain_int(text.rsplit(maxsplit=1)[-1]), where) for where, text in self.lines(train))
        top, where = max(((label, where) for label, where in labels if label is not None), default=(-1, ""))
        if top >= MAX_INFERRED_CLASSES:
            raise DataError(where, f"label {top} would make over {MAX_INFERRED_CLASSES} classes: set data.num_classes")
        return tuple(str(i) for i in range(top + 1))

    def _load_list(self) -> list[Sample]:
        self.classes = self._list_classes()
        self.samples_from = self.annotation(self.part, split=self.split)
        samples = []
        for where, text in self.lines(self.samples_from):
            parts = text.rsplit(maxsplit=2)
            frames = plain_int(parts[1]) if len(parts) == 3 else None
            if not frames:
                self.reject(where, "expected '<path> <num_frames> <label>' with num_frames >= 1")
                continue
            label = plain_int(parts[2])
            if label is None or label >= len(self.classes):
                self.reject(where, f"label {parts[2]!r} is not in 0..{len(self.classes) - 1} ({self.classes_from})")
                continue
            media = Path(parts[0]) if Path(parts[0]).is_absolute() else self.root / parts[0]
            samples.append(Sample(parts[0], media, label, frames))
        return samples

    def _load_tree(self) -> list[Sample]:
        folders = {split: self.root / name for split, name in self.splits.items()}
        for split in dict.fromkeys(("train", self.split)):
            if not folders[split].is_dir():
                raise FileNotFoundError(f"custom tree data: no folder {folders[split]}; {self.split_hint(split)}")
        self.classes = tuple(sorted(entry.name for entry in os.scandir(folders["train"]) if entry.is_dir()))
        self.classes_from = str(folders["train"])
        self.samples_from = folders[self.split]
        lookup = {name: i for i, name in enumerate(self.classes)}
        samples, left_out = [], []
        for class_dir in sorted(os.scandir(folders[self.split]), key=lambda entry: entry.name):
            if not class_dir.is_dir():
                left_out.append(class_dir.name)
                continue
            label = self.class_index(class_dir.name, lookup, class_dir.path)
            if label is None:  # a class the train folder lacks, skipped under data.on_error=skip (and reported)
                continue
            for entry in sorted(os.scandir(class_dir.path), key=lambda entry: entry.name):
                if entry.is_dir() if self.frames else Path(entry.name).suffix.lower() in VIDEO_SUFFIXES:
                    samples.append(Sample(f"{class_dir.name}/{entry.name}", Path(entry.path), label))
                else:
                    left_out.append(f"{class_dir.name}/{entry.name}")
        if left_out:
            wanted = "frame folders" if self.frames else f"videos ({', '.join(VIDEO_SUFFIXES)})"
            log.warning(
                "%s: %d entries are not <class>/<%s> and are left out: %s",
                folders[self.split],
                len(left_out),
                wanted,
                ", ".join(left_out[:5]) + (", ..." if len(left_out) > 5 else ""),
            )
        return samples
