"""Kinetics-400 (DeepMind; videos mirrored by the CVDF): 400 classes of 10-second YouTube clips.

Under root: annotation CSVs with the header ``label,youtube_id,time_start,time_end,split``
(``train.csv``, ``val.csv`` or ``validate.csv``, ``test.csv``, at root or in ``annotations/``)
and the videos ``<youtube_id>_<time_start:06d>_<time_end:06d>.mp4`` in ``train/``, ``val/``
(or ``validate/``), ``test/``, flat or in per-class folders. Every copy lacks some videos
(taken off YouTube): they are counted, logged and listed in :attr:`Kinetics400.missing`.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import re
from pathlib import Path

from tsm.data.decode import VIDEO_SUFFIXES, DataError
from tsm.data.sources.base import Sample, VideoSource, read_text

log = logging.getLogger(__name__)
# Publisher split name -> the names its CSV and video folder go by in the various copies.
ALIASES = {"val": ("val", "validate"), "validate": ("val", "validate")}
CLIP_NAME = re.compile(r".+_\d{6}_\d{6}\Z")
COLUMNS = {"youtube_id", "time_start", "time_end"}  # of every CSV; the train CSV (the classes) also needs label
SECONDS = re.compile(r"([0-9]{1,9})(\.[0-9]*)?")  # a time: ASCII digits, whole seconds kept


def clip_key(row: dict[str | None, str | None]) -> str | None:
    """The clip name ``<youtube_id>_<start:06d>_<end:06d>`` of a CSV row; None if the row has fewer or
    more fields than the header, no youtube_id, or times that are not non-negative numbers."""
    if None in row or None in row.values() or not row["youtube_id"]:
        return None
    start, end = (SECONDS.fullmatch(row[column]) for column in ("time_start", "time_end"))
    return f"{row['youtube_id']}_{int(start[1]):06d}_{int(end[1]):06d}" if start and end else None


class Kinetics400(VideoSource):
    """Kinetics-400; classes are the sorted label names of the train CSV, so all splits agree (a copy
    with a few classes has a few). Most copies have no test.csv: test reads val by default."""

    name = "kinetics400"
    default_splits = {"train": "train", "val": "val", "test": "val"}

    def load(self) -> list[Sample]:
        names = ALIASES.get(self.part, (self.part,))
        self.samples_from, rows = self._rows(self.split)
        self.classes_from, train_rows = (self.samples_from, rows) if self.split == "train" else self._rows("train")
        self.classes = tuple(sorted({row["label"] for _, row in train_rows if row.get("label")}))
        lookup = {name: i for i, name in enumerate(self.classes)}
        found = self._scan(names)
        samples, self.missing = [], []
        for where, row in rows:
            key = clip_key(row)
            if key is None:
                self.reject(where, f"malformed row {row}")
                continue
            if self.split == "train" and not row["label"]:
                self.reject(where, "no label in a train row")
                continue
            label = self.class_index(row["label"], lookup, where) if row.get("label") else -1
            if label is None:
                continue
            if key in found:
                samples.append(Sample(key, found[key], label))
            else:
                self.missing.append(key)
        total = len(samples) + len(self.missing)
        report = log.warning if self.missing else log.info
        report(
            "%s %s: %d of %d videos found, %d missing", self.name, self.split, len(samples), total, len(self.missing)
        )
        return samples

    def _rows(self, split: str) -> tuple[str, list[tuple[str, dict[str, str]]]]:
        """The annotation CSV of ``split`` (train, val or test) and its rows as ``(file:line, row)``."""
        names = ALIASES.get(self.splits[split], (self.splits[split],))
        candidates = (f"{folder}{name}.csv" for name in names for folder in ("annotations/", ""))
        path = self.annotation(*candidates, split=split)
        reader = csv.DictReader(io.StringIO(read_text(path), newline=""))
        try:
            missing = (COLUMNS | ({"label"} if split == "train" else set())) - set(reader.fieldnames or ())
            if missing:
                where = f"{path}:{max(reader.line_num, 1)}"
                raise DataError(where, f"header {reader.fieldnames} lacks {','.join(sorted(missing))}")
            return str(path), [(f"{path}:{reader.line_num}", row) for row in reader]
        except csv.Error as err:
            raise DataError(f"{path}:{reader.line_num}", f"malformed CSV: {err}") from err

    def _scan(self, names: tuple[str, ...]) -> dict[str, Path]:
        """Clip name -> video (or frame folder) in the split's folder, flat or one class folder down."""
        folders = [self.media_path(name) for name in names if self.media_path(name).is_dir()]
        if not folders:
            log.warning("%s %s: no folder %s under %s", self.name, self.split, list(names), self.frames_root)
        found: dict[str, Path] = {}
        for folder in folders:
            for entry in os.scandir(folder):
                inner = [entry] if self._clip_name(entry) else os.scandir(entry.path) if entry.is_dir() else ()
                for clip in inner:
                    name = self._clip_name(clip)
                    if name:
                        found[name] = Path(clip.path)
        return found

    def _clip_name(self, entry: os.DirEntry) -> str | None:
        """The clip name of a video file (or, with frames, a frame folder) named like a clip, else None."""
        if self.frames:
            name, usable = entry.name, entry.is_dir()
        else:
            name, suffix = os.path.splitext(entry.name)
            usable = entry.is_file() and suffix.lower() in VIDEO_SUFFIXES
        return name if usable and CLIP_NAME.match(name) else None
