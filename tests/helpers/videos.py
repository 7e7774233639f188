"""Tiny datasets in each publisher's layout, built in a temporary folder by the tests themselves.

Every frame ``i`` of a video or frame folder is a solid gray of ``STEP * i``, which survives
H.264, VP9, MPEG-4 and JPEG compression, so :func:`frame_numbers` tells exactly which frames
a reader returned.
"""

from __future__ import annotations

import csv
import json
from functools import partial
from pathlib import Path

import av
import numpy as np
import torch
from PIL import Image

from tests.helpers.config import compose_train
from tsm.data.sources import HMDB51, UCF101, Custom, Jester, Kinetics400, SomethingV1, SomethingV2
from tsm.training.task import train

STEP = 8  # gray level per frame number: up to 32 frames
SIZE = (32, 24)  # width, height
CODECS = {".mp4": ("libx264", "mp4"), ".webm": ("libvpx-vp9", "webm"), ".avi": ("mpeg4", "avi")}
JESTER_CLASSES = (
    "Doing other things", "Drumming Fingers", "No gesture", "Pulling Hand In", "Pulling Two Fingers In",
    "Pushing Hand Away", "Pushing Two Fingers Away", "Rolling Hand Backward", "Rolling Hand Forward", "Shaking Hand",
    "Sliding Two Fingers Down", "Sliding Two Fingers Left", "Sliding Two Fingers Right", "Sliding Two Fingers Up",
    "Stop Sign", "Swiping Down", "Swiping Left", "Swiping Right", "Swiping Up", "Thumb Down", "Thumb Up",
    "Turning Hand Clockwise", "Turning Hand Counterclockwise", "Zooming In With Full Hand",
    "Zooming In With Two Fingers", "Zooming Out With Full Hand", "Zooming Out With Two Fingers",
)  # fmt: skip


def gray(i: int) -> np.ndarray:
    """Frame ``i``: ``(H, W, 3)`` uint8 of gray level ``STEP * i``."""
    return np.full((SIZE[1], SIZE[0], 3), STEP * i, np.uint8)


def frame_numbers(frames: torch.Tensor) -> list[int]:
    """Which frames a ``(T, H, W, 3)`` clip of :func:`gray` frames holds."""
    return [round(float(frame.float().mean()) / STEP) for frame in frames]


def write_video(path: Path, num_frames: int = 12, fps: int = 12, gop: int = 8) -> Path:
    """A video of :func:`gray` frames; the codec follows the suffix (H.264 mp4, VP9 webm, MPEG-4 avi).
    A keyframe every ``gop`` frames and none elsewhere (no scene-cut keyframes)."""
    codec, container_format = CODECS[path.suffix]
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format=container_format) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = *SIZE, "yuv420p"
        stream.codec_context.gop_size = gop
        if codec != "libvpx-vp9":
            stream.options = {"sc_threshold": "0"}  # no extra keyframes where the gray level jumps
        for i in range(num_frames):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(gray(i), format="rgb24")))
        container.mux(stream.encode())
    return path


def write_frames(folder: Path, num_frames: int = 12, template: str = "{:05d}.jpg", start: int = 1) -> Path:
    """A folder of :func:`gray` JPEG frames named ``template`` numbered from ``start``."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(num_frames):
        Image.fromarray(gray(i)).save(folder / template.format(i + start), quality=95)
    return folder


def write_lines(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines))
    return path


def make_twentybn(
    root: Path, prefix: str, frames_dir: str, classes: tuple[str, ...], labels: tuple[str, ...] = ()
) -> Path:
    """Jester / Something V1 layout: 4 train, 2 validation, 2 test clips of 12 JPEG frames, labelled
    in turn with ``labels`` (default: the first three classes)."""
    labels = labels or classes[:3]
    write_lines(root / f"{prefix}-labels.csv", list(classes))
    splits = {"train": [1, 2, 3, 4], "validation": [5, 6], "test": [7, 8]}
    for part, ids in splits.items():
        named = [f"{i}" if part == "test" else f"{i};{labels[i % len(labels)]}" for i in ids]
        write_lines(root / f"{prefix}-{part}.csv", named)
        for i in ids:
            write_frames(root / frames_dir / str(i))
    return root


def make_jester(root: Path, labels: tuple[str, ...] = (), classes: tuple[str, ...] = JESTER_CLASSES) -> Path:
    return make_twentybn(root, "jester-v1", "20bn-jester-v1", classes, labels)


def make_sthv1(root: Path, classes: tuple[str, ...] = ()) -> Path:
    return make_twentybn(root, "something-something-v1", "20bn-something-something-v1", classes or sthv2_classes())


STHV2_FLIP_CLASSES = {  # the publisher's labels of the classes a horizontal flip swaps
    86: "Pulling something from left to right",
    87: "Pulling something from right to left",
    93: "Pushing something from left to right",
    94: "Pushing something from right to left",
    166: "Turning the camera left while filming something",
    167: "Turning the camera right while filming something",
}


def sthv2_classes() -> tuple[str, ...]:
    """174 class names: made up (differing in case and spacing from their templates) but for the
    publisher's flip classes, at their labels."""
    return tuple(STHV2_FLIP_CLASSES.get(i, f"Moving something {i} times") for i in range(174))


def make_sthv2(root: Path, classes: tuple[str, ...] = ()) -> Path:
    """Something V2 layout: labels JSON (``classes``, default :func:`sthv2_classes`), split JSONs
    (templates with brackets of classes 0-2), VP9 webm videos."""
    classes = classes or sthv2_classes()
    root.mkdir(parents=True, exist_ok=True)
    (root / "something-something-v2-labels.json").write_text(json.dumps({c: str(i) for i, c in enumerate(classes)}))
    splits = {"train": ["10", "11", "12", "13"], "validation": ["20", "21"], "test": ["30"]}
    for part, ids in splits.items():
        entries = [
            {"id": i}
            if part == "test"
            else {"id": i, "label": "x", "template": f"moving  [Something] {int(i) % 3} times"}
            for i in ids
        ]
        (root / f"something-something-v2-{part}.json").write_text(json.dumps(entries))
        for i in ids:
            write_video(root / "20bn-something-something-v2" / f"{i}.webm")
    return root


KINETICS_CLASSES = ("abseiling", "air drumming", "zumba")


def kinetics_name(youtube_id: str, start: int) -> str:
    return f"{youtube_id}_{start:06d}_{start + 10:06d}"


def make_kinetics(root: Path, missing: tuple[str, ...] = ("gone0000001",)) -> Path:
    """Kinetics layout: annotations/{train,validate,test}.csv, train/ flat, val/ in class folders.
    The ``missing`` ids are in the train CSV but have no video."""
    rows = {
        "train": [(c, f"train{i:07d}", 10 * i) for i, c in enumerate(KINETICS_CLASSES * 2)],
        "validate": [(c, f"valid{i:07d}", 10 * i) for i, c in enumerate(KINETICS_CLASSES[:2])],
        "test": [(c, f"test{i:08d}", 0) for i, c in enumerate(KINETICS_CLASSES[:1])],
    }
    rows["train"] += [(KINETICS_CLASSES[0], youtube_id, 0) for youtube_id in missing]
    folders = {"train": "train", "validate": "val", "test": "test"}
    for part, entries in rows.items():
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        with open(root / "annotations" / f"{part}.csv", "w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(["label", "youtube_id", "time_start", "time_end", "split"])
            writer.writerows([label, yid, start, start + 10, part] for label, yid, start in entries)
        for label, yid, start in entries:
            if yid not in missing:
                per_class = part == "validate"
                folder = root / folders[part] / (label.replace(" ", "_") if per_class else "")
                write_video(folder / f"{kinetics_name(yid, start)}.mp4")
    return root


def make_ucf101(root: Path, classes: tuple[str, ...] = ("ApplyEyeMakeup", "HandstandPushups")) -> Path:
    """UCF101 layout with the official list files for split 1 (the lists spell a class differently)."""
    write_lines(root / "ucfTrainTestlist" / "classInd.txt", [f"{i + 1} {c}" for i, c in enumerate(classes)])
    train, test = [], []
    for i, name in enumerate(classes):
        spelled = "HandStandPushups" if name == "HandstandPushups" else name
        for group in (8, 9, 1):
            video = f"{name}/v_{spelled}_g{group:02d}_c01.avi"
            write_video(root / "UCF-101" / video)
            (train if group > 1 else test).append(f"{video} {i + 1}" if group > 1 else video)
    write_lines(root / "ucfTrainTestlist" / "trainlist01.txt", train)
    write_lines(root / "ucfTrainTestlist" / "testlist01.txt", test)
    return root


def make_hmdb51(root: Path, classes: tuple[str, ...] = ("brush_hair", "cartwheel")) -> Path:
    """HMDB51 layout: per-class split-1 files with flags 1 (train), 2 (test), 0 (unused)."""
    for name in classes:
        flags = {f"{name}_{k}.avi": flag for k, flag in enumerate((1, 1, 2, 0))}
        write_lines(
            root / "testTrainMulti_7030_splits" / f"{name}_test_split1.txt", [f"{v} {f} " for v, f in flags.items()]
        )
        for video in flags:
            write_video(root / "hmdb51_org" / name / video)
    return root


def make_list(root: Path, num_classes: int = 3) -> Path:
    """TSM list files over ``img_00001.jpg`` frame folders: 4 train and 2 val clips."""
    lines = {"train.txt": [], "val.txt": []}
    for i in range(6):
        write_frames(root / "frames" / f"clip{i}", template="img_{:05d}.jpg")
        lines["train.txt" if i < 4 else "val.txt"].append(f"frames/clip{i} 12 {i % num_classes}")
    for name, entries in lines.items():
        write_lines(root / name, entries)
    return root


def make_named_list(root: Path, classes: tuple[str, ...] = ("walk", "run", "jump")) -> Path:
    """:func:`make_list` with ``classes.txt`` naming its classes."""
    write_lines(make_list(root, len(classes)) / "classes.txt", list(classes))
    return root


def make_tree(root: Path, classes: tuple[str, ...] = ("jump", "run")) -> Path:
    """A class-per-folder tree of mp4 videos: 2 train and 1 val video per class."""
    for name in classes:
        for split, count in (("train", 2), ("val", 1)):
            for k in range(count):
                write_video(root / split / name / f"{name}{k}.mp4")
    return root


# Each reader: the builder of its tiny dataset, and how to open a split of it (``source(root, split, **kw)``).
SOURCES = {
    "jester": (make_jester, partial(Jester, frames=True)),
    "sthv1": (make_sthv1, partial(SomethingV1, frames=True)),
    "sthv2": (make_sthv2, SomethingV2),
    "kinetics": (make_kinetics, Kinetics400),
    "ucf101": (make_ucf101, UCF101),
    "hmdb51": (make_hmdb51, HMDB51),
    "list": (make_list, partial(Custom, frames=True, frame_template="img_{:05d}.jpg")),
    "named_list": (
        make_named_list,
        partial(Custom, frames=True, frame_template="img_{:05d}.jpg", class_names="classes.txt"),
    ),
    "tree": (make_tree, partial(Custom, format="tree")),
}


def annotation_files(root: Path) -> list[Path]:
    """The text files of a dataset built here: its annotations and label files."""
    return sorted(path for path in root.rglob("*") if path.suffix in (".csv", ".txt", ".json"))


# Overrides for a one-batch train on tiny data.
FDR = [
    "debug=fdr",
    "logger=csv",
    "model.backbone=mobilenetv2_050",
    "data.crop_size=32",
    "data.scale_size=32",
    "data.batch_size=2",
    "data.num_segments=4",
    "trainer.accelerator=cpu",
    "callbacks.progress_bar=null",
    "callbacks.model_summary=null",
]


def run_fast_dev(name: str, root: Path, run_dir: Path, *overrides: str) -> dict:
    """``train`` on ``data=<name>`` for one batch of each split; the metrics it writes."""
    train(compose_train([f"data={name}", f"data.root={root}", *FDR, *overrides], run_dir))
    return json.loads((run_dir / "metrics.json").read_text())
