"""UCF101 (UCF Center for Research in Computer Vision): 101 actions, 13,320 ``.avi`` videos, 3 splits.

Under root: ``UCF-101/<Class>/v_<Class>_gXX_cYY.avi`` and the official split lists
``ucfTrainTestlist/classInd.txt`` (``<index> <Class>``, 1-based), ``trainlist0N.txt``
(``<Class>/<video>.avi <index>``) and ``testlist0N.txt`` (``<Class>/<video>.avi``).
"""

from __future__ import annotations

from pathlib import Path

from tsm.data.sources.base import Sample, ThreeFoldSource, plain_int, unique_classes
from tsm.errors import DataError

VIDEOS_DIR = "UCF-101"
LISTS_DIR = "ucfTrainTestlist"


class UCF101(ThreeFoldSource):
    """UCF101 split ``fold`` (1, 2 or 3); val and test are both the fold's test list. The classes are
    those of ``classInd.txt`` (any subset, numbered from 1 in its order); a video's class is its
    folder, matched ignoring case (the files spell some differently)."""

    name = "ucf101"

    def load(self) -> list[Sample]:
        class_file = self.annotation(f"{LISTS_DIR}/classInd.txt")
        self.classes = self._classes(class_file)
        self.classes_from = str(class_file)
        lookup = {name.lower(): i for i, name in enumerate(self.classes)}
        self.samples_from = self.annotation(f"{LISTS_DIR}/{self.part}list{self.fold:02d}.txt", split=self.split)
        samples = []
        for where, text in self.lines(self.samples_from):
            video = text.split()[0]
            folder = video.split("/")[0]
            label = self.class_index(folder, lookup, where, key=folder.lower())
            if label is not None:
                samples.append(Sample(video.rsplit("/", 1)[-1], self.media_path(f"{VIDEOS_DIR}/{video}"), label))
        return samples

    def _classes(self, class_file: Path) -> tuple[str, ...]:
        """The names of ``classInd.txt``'s ``<index> <class>`` lines in index order; an index, or a name
        in any case (the folders are matched ignoring case), met twice is an error."""
        numbered: dict[int, tuple[str, str]] = {}
        for where, text in self.lines(class_file):
            parts = text.split(maxsplit=1)
            index = plain_int(parts[0]) if len(parts) == 2 else None
            if index is None:
                raise DataError(where, "expected '<index> <class>' with an integer index")
            if index in numbered:
                raise DataError(where, f"index {index} is already used at {numbered[index][0]}")
            numbered[index] = (where, parts[1])
        names = unique_classes(numbered.values(), key=str.lower)
        return tuple(name for _, name in sorted(zip(numbered, names, strict=True)))
