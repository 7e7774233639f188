"""UCF101 (UCF Center for Research in Computer Vision): 101 actions, 13,320 ``.avi`` videos, 3 splits.

Under root: ``UCF-101/<Class>/v_<Class>_gXX_cYY.avi`` and the official split lists
``ucfTrainTestlist/classInd.txt`` (``<index> <Class>``, 1-based), ``trainlist0N.txt``
(``<Class>/<video>.avi <index>``) and ``testlist0N.txt`` (``<Class>/<video>.avi``).
"""

from __future__ import annotations

from tsm.data.datasets.base import Sample, ThreeFoldSource

VIDEOS_DIR = "UCF-101"
LISTS_DIR = "ucfTrainTestlist"


class UCF101(ThreeFoldSource):
    """UCF101 split ``fold`` (1, 2 or 3); val and test are both the fold's test list. The classes are
    those of ``classInd.txt`` (any subset, numbered from 1 in its order); a video's class is its
    folder, matched ignoring case (the files spell some differently)."""

    name = "ucf101"

    def load(self) -> list[Sample]:
        class_file = self.annotation(f"{LISTS_DIR}/classInd.txt")
        numbered = dict(text.split(maxsplit=1) for _, text in self.lines(class_file))
        self.classes = tuple(numbered[i] for i in sorted(numbered, key=int))
        self.classes_from = str(class_file)
        lookup = {name.lower(): i for i, name in enumerate(self.classes)}
        samples = []
        for where, text in self.lines(
            self.annotation(f"{LISTS_DIR}/{self.part}list{self.fold:02d}.txt", split=self.split)
        ):
            video = text.split()[0]
            folder = video.split("/")[0]
            label = self.class_index(folder, lookup, where, key=folder.lower())
            if label is not None:
                samples.append(Sample(video.rsplit("/", 1)[-1], self.media_path(f"{VIDEOS_DIR}/{video}"), label))
        return samples
