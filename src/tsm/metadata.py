"""The keys under which this project's files describe themselves: checkpoints (``.ckpt``) and exported
models (ONNX and LiteRT metadata), and the checks of what an exported file declares. One definition, read by
the writers and the readers alike; needs neither PyTorch nor a runtime."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tsm.errors import DataError

INFO_KEY = "tsm_info"  # what using the model needs: class names, frames, input size, scale size, mean, std
DATA_KEY = "tsm_data"  # checkpoints: the resolved data config the model was trained on
MODE_KEY = "tsm_mode"  # exported files: "clip" or "stream"
BUFFERS_KEY = "tsm_buffers"  # stream files: the shift buffers' names, shapes and (int8 ONNX files) uint8 zero points
PRECISION_KEY = "tsm_precision"  # exported files: fp32, fp16 or int8
CALIBRATION_KEY = "tsm_calibration"  # int8 files: the data they were calibrated on


def metadata_json(metadata: Mapping[str, str], key: str, path: str | Path) -> Any:
    """The JSON value of metadata ``key``; a missing key or invalid JSON is a :class:`DataError` naming the file
    and the key."""
    if key not in metadata:
        raise DataError(path, f"no metadata {key}")
    try:
        return json.loads(metadata[key])
    except (ValueError, RecursionError) as err:
        raise DataError(path, f"metadata {key} is not valid JSON: {err}") from err


def read_info(metadata: Mapping[str, str], path: str | Path) -> dict[str, Any]:
    """The ``tsm_info`` an export recorded; raises for files exported before it existed."""
    if INFO_KEY not in metadata:
        raise ValueError(
            f"{path} has no {INFO_KEY} metadata (class names, input size, normalisation): export it again "
            "with src/export.py from its checkpoint"
        )
    info = metadata_json(metadata, INFO_KEY, path)
    if not isinstance(info, dict):
        raise DataError(path, f"metadata {INFO_KEY} is not a JSON object")
    check_info(info, path)
    return info


def positive_int(value: Any) -> bool:
    return type(value) is int and value > 0


def finite_numbers(value: Any, count: int) -> bool:
    return (
        isinstance(value, list)
        and len(value) == count
        and all(type(x) in (int, float) and math.isfinite(x) for x in value)
    )


def check_info(
    info: Mapping[str, Any], path: str | Path, num_classes: int | None = None, frame: Sequence[int] | None = None
) -> None:
    """Refuse a ``tsm_info`` (of a checkpoint or an exported file) that would feed or name the network wrongly:
    class names (as many as ``num_classes``), a frame count, an input size (the graph's ``frame`` height and
    width) and scale size in pixels, three finite means and three positive stds."""

    def refuse(key: str, why: str) -> None:
        raise DataError(path, f"{INFO_KEY} {key} {why}")

    names = info.get("class_names")
    if not (isinstance(names, list) and names and all(isinstance(name, str) for name in names)):
        refuse("class_names", f"is not a list of names: {str(names)[:80]}")
    if num_classes is not None and len(names) != num_classes:
        refuse("class_names", f"names {len(names)} classes, and the network has {num_classes}")
    for key in ("num_segments", "scale_size"):
        if key in info and not positive_int(info[key]):
            refuse(key, f"is not a positive integer: {info[key]!r}")
    size = info.get("input_size")
    sides = [size, size] if type(size) is int else size
    if not (isinstance(sides, list) and len(sides) == 2 and all(positive_int(side) for side in sides)):
        refuse("input_size", f"is not a side or [height, width] in pixels: {size!r}")
    if "scale_size" in info and info["scale_size"] > 4 * max(sides):  # exports keep 256/224 of the input size
        refuse("scale_size", f"is {info['scale_size']}, over 4 times the input size {size!r}")
    if frame is not None and list(frame) != sides:
        refuse("input_size", f"is {size!r}, and the graph's frame is {frame[0]}x{frame[1]}")
    for key in ("mean", "std"):
        if not finite_numbers(info.get(key), 3):
            refuse(key, f"is not three finite numbers: {info.get(key)!r}")
    if not all(x > 0 for x in info["std"]):
        refuse("std", f"must be positive: {info['std']!r}")


# why a checkpoint's class names can be the data's in another order
REORDERED_CLASSES = (
    "Jester, Something-V1 and HMDB51 number theirs by name, as the official TSM code does; a checkpoint trained "
    "before that change (docs/changelog.md) numbers them otherwise"
)


def classes_reordered(recorded: Sequence[str], classes: Sequence[str]) -> bool:
    """Whether a checkpoint's class names are the data's in another order."""
    return list(recorded) != list(classes) and sorted(recorded) == sorted(classes)


def check_stream_mode(metadata: Mapping[str, str], path: str | Path) -> None:
    """Refuse a file a stream runner cannot run: a clip-mode export (it takes whole clips), or one recording no mode."""
    if metadata.get(MODE_KEY) != "stream":
        raise ValueError(
            f"{path} is not a stream-mode export (tsm_mode={metadata.get(MODE_KEY)!r}): export the checkpoint with "
            "src/export.py mode=stream (a causal model)"
        )


def check_class_order(recorded: Sequence[str] | None, classes: Sequence[str], named: str) -> None:
    """Refuse a checkpoint (``named``: the key and file, ``ckpt_path=PATH``) recording the data's class names in
    another order: its classifier's rows would be read as other classes. ``recorded`` None: it records none."""
    if recorded and classes_reordered(recorded, classes):
        raise ValueError(
            f"{named} numbers the data's classes in another order: {REORDERED_CLASSES}, and cannot go on with this data"
        )


Node = tuple[str, list]  # a graph input's or output's name and shape (ints, dimension names or None)


def fixed_shape(node: Node, path: str | Path) -> list[int]:
    """A graph input's or output's shape without the batch; a size that is not fixed is a :class:`DataError`."""
    name, shape = node
    if not all(type(size) is int for size in shape[1:]):
        raise DataError(path, f"graph {name!r} has no fixed shape after the batch: {shape}")
    return shape[1:]


def buffer_shapes(
    metadata: Mapping[str, str], inputs: list[Node], outputs: list[Node], path: str | Path
) -> list[list[int]]:
    """The shapes (without the batch) of a stream file's buffer ``inputs``, which its buffer ``outputs`` and
    its ``tsm_buffers`` must state too: crafted metadata cannot decide how much memory the runner allocates."""
    graph = [[node[0], fixed_shape(node, path)] for node in inputs]
    try:
        declared = [[b["name"], b["shape"][1:]] for b in metadata_json(metadata, BUFFERS_KEY, path)]
    except (TypeError, KeyError) as err:
        raise DataError(path, f"metadata {BUFFERS_KEY} is not a list of {{name, shape}} objects") from err
    if declared != graph:
        raise DataError(path, f"metadata {BUFFERS_KEY} does not match the graph's buffer inputs {graph}")
    if [fixed_shape(node, path) for node in outputs] != [shape for _, shape in graph]:
        raise DataError(path, f"the graph's buffer outputs {[name for name, _ in outputs]} do not match its inputs")
    return [shape for _, shape in graph]


BUFFER_TYPES = {"float32": "tensor(float)", "uint8": "tensor(uint8)"}  # tsm_buffers dtype -> onnxruntime's type name


def buffer_fills(metadata: Mapping[str, str], path: str | Path) -> list[tuple[str, int]]:
    """Each buffer's dtype and the value of its reset state, from ``tsm_buffers``: float32 zeros, or (int8 ONNX
    files) uint8 filled with the ``zero_point`` its entry states; anything else is a :class:`DataError`."""
    fills = []
    for entry in metadata_json(metadata, BUFFERS_KEY, path):
        if not isinstance(entry, dict):
            raise DataError(path, f"metadata {BUFFERS_KEY} is not a list of {{name, shape}} objects")
        dtype, zero_point = entry.get("dtype", "float32"), entry.get("zero_point", 0)
        if not isinstance(dtype, str) or dtype not in BUFFER_TYPES:
            known = list(BUFFER_TYPES)
            raise DataError(path, f"metadata {BUFFERS_KEY} has a buffer of dtype {dtype!r}; known: {known}")
        if dtype == "float32" and "zero_point" in entry:
            raise DataError(path, f"metadata {BUFFERS_KEY} has a float32 buffer with a zero_point: only uint8 has one")
        if type(zero_point) is not int or not 0 <= zero_point <= 255:
            raise DataError(path, f"metadata {BUFFERS_KEY}: a uint8 buffer's zero_point must be an int in 0..255")
        fills.append((dtype, zero_point))
    return fills
