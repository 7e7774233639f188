"""HMDB51 (Serre lab, Brown University): 51 actions, 6,766 ``.avi`` clips, 3 splits.

Under root: ``hmdb51_org/<class>/<video>.avi`` (the per-class RARs unpacked) and the official
splits ``testTrainMulti_7030_splits/<class>_test_split<N>.txt``: ``<video>.avi <flag>`` lines,
flag 1 = train, 2 = test, 0 = unused in that split.
"""

from __future__ import annotations

from pathlib import Path

from tsm.data.sources.base import Sample, ThreeFoldSource

VIDEOS_DIR = "hmdb51_org"
SPLITS_DIR = "testTrainMulti_7030_splits"
FLAGS = {"train": "1", "test": "2"}


class HMDB51(ThreeFoldSource):
    """HMDB51 split ``fold`` (1, 2 or 3); val and test are both the fold's test videos. Classes are
    the sorted class names of the split files (as many as there are files)."""

    name = "hmdb51"

    def load(self) -> list[Sample]:
        if self.part not in FLAGS:
            raise ValueError(f"{self.name}: split names must be 'train' or 'test', got {self.part!r}")
        suffix = f"_test_split{self.fold}.txt"
        folder = self.root / SPLITS_DIR
        # by class name: a file name's "_test_split" would sort "climb_stairs" before "climb"
        files = sorted(folder.glob(f"*{suffix}"), key=lambda p: p.name[: -len(suffix)]) if folder.is_dir() else []
        self.classes_from = self.samples_from = f"{folder}/*{suffix}"
        if not files:
            raise FileNotFoundError(
                f"{self.name}: no {SPLITS_DIR}/<class>{suffix} under {self.root}; {self.split_hint(self.split)}"
            )
        self.classes = tuple(path.name[: -len(suffix)] for path in files)
        samples = []
        for label, (name, path) in enumerate(zip(self.classes, files, strict=True)):
            for where, text in self.lines(path):
                video, _, flag = text.rpartition(" ")
                if not video or flag not in ("0", "1", "2"):
                    self.reject(where, f"expected '<video> <flag>' with flag 0, 1 or 2, got {text!r}")
                elif flag == FLAGS[self.part]:
                    samples.append(Sample(Path(video).stem, self.media_path(f"{VIDEOS_DIR}/{name}/{video}"), label))
        return samples
