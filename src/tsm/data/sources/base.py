"""What every public-dataset reader shares: split names, sample lookup, frame counting, reading, bad lines.

A reader parses its publisher's annotation files into :class:`Sample` s in ``load`` and leaves the
rest (videos or frame folders, frame counts, the ``on_error`` policy for annotation lines) to
:class:`VideoSource`. Its face is the *video source* that :class:`tsm.data.datamodule.ClipDataModule` uses.
"""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tsm.checks import check_counts
from tsm.data.decode import VIDEO_SUFFIXES, DataError, check_on_error, read_video, video_num_frames
from tsm.data.frame_folders import count_frames, frame_template_parts, read_frames

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Sample:
    """One clip: its id, the video file or frame folder it is read from, its label (-1: unlabeled)
    and, when the annotations state it, its frame count."""

    video_id: str
    path: Path
    label: int
    num_frames: int | None = None


class VideoSource:
    """A public dataset's ``split`` (train, val or test) read from ``root`` in its publisher's layout.

    ``splits`` maps train/val/test to the publisher's split names (subclasses give defaults).
    ``frames=True`` reads pre-extracted JPEG folders named ``frame_template`` (numbered from
    ``frame_start``) instead of videos: the folder of ``a/b.mp4`` is ``a/b`` under ``frames_root``
    (default: ``root``). ``on_error`` decides what an unusable annotation line does: ``raise``
    (naming the file and line) or ``skip`` (kept in :attr:`skipped` for the run's log).
    """

    name = "dataset"
    default_splits: Mapping[str, str] = {"train": "train", "val": "val", "test": "test"}
    frames_only = False  # the publisher distributes JPEG frames, no videos
    flip_allowed = True  # False: direction classes without a known flip map, so no horizontal flip
    flip_label_map: dict[int, int] | None = None  # label swaps of the flip pairs whose two classes are present
    no_flip_classes: frozenset[int] = frozenset()  # classes whose mirror class is absent: never flipped

    def __init__(
        self,
        root: str | os.PathLike,
        split: str,
        splits: Mapping[str, str] | None = None,
        frames: bool = False,
        frame_template: str = "{:05d}.jpg",
        frame_start: int = 1,
        frames_root: str | os.PathLike | None = None,
        on_error: str = "raise",
    ) -> None:
        splits = dict(splits or self.default_splits)
        if split not in SPLITS or split not in splits:
            raise ValueError(f"{self.name}: split {split!r} must be one of {SPLITS} and named in splits={splits}")
        check_on_error(on_error)
        if self.frames_only and not frames:
            raise ValueError(f"{self.name} is distributed as JPEG frames: data.frames must be true")
        if frames:
            frame_template_parts(frame_template)
            check_counts({"frame_start": frame_start}, minimum=0)
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.name}: data.root={str(root)!r} is not a directory (see docs/datasets.md)")
        self.split = split
        self.splits = splits
        self.part = splits[split]
        self.frames = frames
        self.frame_template = frame_template
        self.frame_start = frame_start
        self.frames_root = Path(frames_root).expanduser() if frames_root else self.root
        self.on_error = on_error
        self.skipped: list[tuple[str, str]] = []
        self.classes: tuple[str, ...] = ()
        self.classes_from = ""  # the file (or setting) the classes are read from, for messages
        self.samples_from: str | os.PathLike = self.root  # the file (or folder) of the split's samples, for messages
        self.samples = self.load()
        if not self.samples:
            first = f"; {len(self.skipped)} skipped, the first {': '.join(self.skipped[0])}" if self.skipped else ""
            raise DataError(self.samples_from, f"{self.name} {split} ({self.part!r}) has no usable samples{first}")
        self._frame_counts: dict[int, int] = {}

    def load(self) -> list[Sample]:
        """Parse the annotations of split :attr:`part`; set :attr:`classes`."""
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.samples)

    def video_id(self, index: int) -> str:
        return self.samples[index].video_id

    def label(self, index: int) -> int:
        return self.samples[index].label

    def path(self, index: int) -> Path:
        """The video file or frame folder of sample ``index``."""
        return self.samples[index].path

    def num_frames(self, index: int) -> int:
        """Frames of sample ``index``: from the annotations, else counted (once per process)."""
        sample = self.samples[index]
        if sample.num_frames:
            return sample.num_frames
        if index not in self._frame_counts:
            if self.frames:
                count = count_frames(sample.path, self.frame_template, self.frame_start)
            else:
                count = video_num_frames(sample.path)
            self._frame_counts[index] = count
        return self._frame_counts[index]

    def read(self, index: int, indices: list[int]) -> torch.Tensor:
        """Frames ``indices`` (0-based) of sample ``index`` as uint8 ``(T, H, W, 3)``."""
        path = self.samples[index].path
        if self.frames:
            return read_frames(path, indices, self.frame_template, self.frame_start)
        return read_video(path, indices, num_frames=self.samples[index].num_frames)

    # Helpers for load().

    def media_path(self, video: str | os.PathLike) -> Path:
        """Where the clip whose video is ``video`` (relative to root) is read from: the video, or
        its frame folder (the video path without its suffix, under ``frames_root``)."""
        video = Path(video)
        if not self.frames:
            return self.root / video
        return self.frames_root / (video.with_suffix("") if video.suffix.lower() in VIDEO_SUFFIXES else video)

    def annotation(self, *candidates: str, split: str | None = None) -> Path:
        """The first of ``candidates`` (paths under root) that exists; the error lists them all and,
        for the annotation file of ``split``, says which override selects another split."""
        for name in candidates:
            if (self.root / name).is_file():
                return self.root / name
        hint = f"; {self.split_hint(split)}" if split else ""
        raise FileNotFoundError(f"{self.name} {self.split}: none of {list(candidates)} under {self.root}{hint}")

    def split_hint(self, split: str) -> str:
        """The override that reads ``split`` (train, val or test) from another of the publisher's splits."""
        now, val = self.splits[split], self.splits.get("val")
        example = f", e.g. data.source.splits.{split}={val}" if split == "test" and val != now else ""
        return f"data.source.splits.{split}=<name> reads another split instead of {now!r}{example}"

    def lines(self, path: Path) -> Iterator[tuple[str, str]]:
        """``(where, text)`` of the non-empty lines of an annotation file, ``where`` being ``file:line``."""
        for number, line in enumerate(io.StringIO(read_text(path), newline=None), 1):
            if line.strip():
                yield f"{path}:{number}", line.strip()

    def reject(self, where: str, reason: str) -> None:
        """An unusable annotation entry: raise under ``on_error=raise``, else remember it as skipped."""
        if self.on_error == "raise":
            raise DataError(where, reason)
        self.skipped.append((where, reason))

    def class_index(self, name: str, lookup: Mapping[str, int], where: str, key: str | None = None) -> int | None:
        """The index of class ``name`` (looked up as ``key``, default ``name``), or None after :meth:`reject`."""
        index = lookup.get(name if key is None else key)
        if index is None:
            self.reject(where, f"label {name!r} is not a class of {self.name} (classes from {self.classes_from})")
        return index


def read_text(path: Path) -> str:
    """An annotation file's text: UTF-8, with or without a byte-order mark; other bytes are a
    :class:`DataError` at their line."""
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = err.object[: err.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}", f"not UTF-8 text ({err.reason} at byte {err.start})") from err


def read_json(path: Path) -> Any:
    """An annotation file's JSON (UTF-8, see :func:`read_text`); invalid JSON, or an object with a key
    twice (which JSON readers settle by keeping either), is a :class:`DataError`."""
    try:
        return json.loads(read_text(path), object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}:{err.lineno}", f"invalid JSON: {err.msg} (column {err.colno})") from err
    except (ValueError, RecursionError) as err:  # a number of over 4300 digits, arrays nested too deep
        raise DataError(path, f"invalid JSON: {err}") from err
    except _RepeatedKey as err:
        raise DataError(path, f"key {err.args[0]!r} appears twice in one object") from err


class _RepeatedKey(Exception):
    """A JSON object's key seen twice (``args[0]``)."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            raise _RepeatedKey(key)
        found[key] = value
    return found


def plain_int(text: str) -> int | None:
    """``text`` as a non-negative integer if it is 1 to 18 ASCII digits, else None: ``str.isdigit``
    also takes ``'²'`` and ``'٣'``, and ``int`` refuses over 4300 digits."""
    return int(text) if 0 < len(text) <= 18 and text.isascii() and text.isdigit() else None


def unique_classes(named: Iterable[tuple[str, str]], key: Callable[[str], str] = str) -> tuple[str, ...]:
    """The class names of ``(where, name)`` pairs in their order; a name met twice (compared as ``key``)
    is a :class:`DataError` at its second ``where``."""
    first: dict[str, str] = {}
    names = []
    for where, name in named:
        if key(name) in first:
            raise DataError(where, f"class {name!r} is already named at {first[key(name)]}")
        first[key(name)] = where
        names.append(name)
    return tuple(names)


class ThreeFoldSource(VideoSource):
    """A dataset with three official train/test splits (UCF101, HMDB51): ``fold`` (``data.split``)
    picks one, and val is the same as test (the fold's test part)."""

    default_splits = {"train": "train", "val": "test", "test": "test"}

    def __init__(self, root: str | os.PathLike, split: str, fold: int = 1, **kwargs: Any) -> None:
        if fold not in (1, 2, 3):
            raise ValueError(f"{self.name}: data.split must be 1, 2 or 3, got {fold!r}")
        self.fold = fold
        super().__init__(root, split, **kwargs)

    def split_hint(self, split: str) -> str:
        return f"data.split=1|2|3 selects another official split (now {self.fold})"


def flip_labels(
    classes: Sequence[str], pairs: Sequence[tuple[str, str]], key: Callable[[str], str] = str
) -> tuple[dict[int, int], frozenset[int]]:
    """From pairs of class names that a horizontal flip turns into each other (compared as ``key``):
    the label map of the pairs with both classes in ``classes``, and the classes whose mirror is
    absent (a flipped clip of one would belong to no class: it is never flipped)."""
    index = {key(name): i for i, name in enumerate(classes)}
    found = [[index.get(key(name)) for name in pair] for pair in pairs]
    present = [(a, b) for a, b in found if a is not None and b is not None]
    lone = frozenset(i for pair in found if None in pair for i in pair if i is not None)
    return symmetric_map(present), lone


def symmetric_map(pairs: Sequence[tuple[int, int]]) -> dict[int, int]:
    """Each label of each pair mapped to the other: a flip label map from its pairs."""
    return {a: b for pair in pairs for a, b in (pair, pair[::-1])}
