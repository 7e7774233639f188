"""fp16 and int8 versions of an exported ONNX file (clip or stream mode), and how they compare with it.

int8: onnxruntime's static quantization in QDQ format, uint8 activations and int8 weights (per output
channel, symmetric): the pair whose integer kernels onnxruntime has on x86 (VNNI) and ARM (dot
product). The weights use 7 bits of the int8 range ([-64, 64], onnxruntime's ``reduce_range``): x86
CPUs without VNNI (AVX2 only) multiply uint8 by int8 in pairs summed into int16 (``vpmaddubsw``),
which saturates for 8-bit weights (255 x 127 x 2 > 32767) and then gives other logits than VNNI, SSE
or the browser; with 7 bits they compute the same integers (tested; onnxruntime's ARM kernels give
close but not equal logits for either width: experiments/quantization). When a session loads the
file, onnxruntime fuses each DequantizeLinear -> op -> QuantizeLinear into one integer op (QLinearConv,
QLinearAdd, QGemm, ...): :func:`node_census` lists what it runs. The convolutions that read the frame stay
float32, and a stream file's buffers are uint8 in NHWC layout, reset to their zero point (:mod:`tsm.int8_graph`
says why: both make the file faster). Calibration (min-max) reads clips of the model's own training data,
unaugmented; a stream file is calibrated on whole clips streamed frame by frame, its shift buffers carried from
frame to frame by the fp32 file, so they hold the values a stream holds.

fp16: weights and compute in half precision for GPUs; inputs and outputs stay float32 (a cast at
each), so every runtime of this project feeds all three precisions the same way. onnxruntime's
CPU provider runs it too (slower than fp32: it is for checking, not for speed).

Both record ``tsm_precision`` and ``tsm_calibration`` (JSON) beside the fp32 file's metadata.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx
import onnxruntime as ort

from tsm.benchmark import median_ms
from tsm.data.clips import Skipped
from tsm.files import atomic_open
from tsm.int8_graph import compact, frame_convolutions, integer_buffers
from tsm.metadata import BUFFERS_KEY, CALIBRATION_KEY, DATA_KEY, MODE_KEY, PRECISION_KEY, metadata_json, read_info
from tsm.streaming.sessions import open_clip, open_stream, read_file_metadata

if TYPE_CHECKING:
    from tsm.data.datamodule import ClipDataModule

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "int8")
WEIGHT_RANGES = {7: "[-64, 64] (reduce_range)", 8: "[-127, 127]"}  # int8 weight values for each weight_bits
NO_CALIBRATION_CLIPS = (
    "int8 needs calibration clips and got none: set calibration.clips >= 1 (e.g. calibration.clips=64) "
    "and a calibration.split that has clips"
)


def file_mode(path: str | Path) -> str:
    """``clip`` or ``stream``, from the file's ``tsm_mode`` metadata (an ONNX, LiteRT or TVM file)."""
    mode = read_file_metadata(path).get(MODE_KEY)
    if mode not in ("clip", "stream"):
        raise ValueError(f"{path} is not an export of this project (tsm_mode={mode!r})")
    return mode


def to_fp16(source: str | Path, target: str | Path) -> Path:
    """Write the half-precision version of the fp32 file ``source`` to ``target``."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(source)), keep_io_types=True)
    _set_metadata(model, "fp16", {"io": "float32", "compute": "float16"})
    with atomic_open(target) as file:
        onnx.save(model, file)
    return Path(target)


def to_int8(
    source: str | Path, target: str | Path, clips: Iterable[np.ndarray], description: dict, weight_bits: int = 7
) -> Path:
    """Write the int8 version of the fp32 file ``source`` to ``target``, calibrated on ``clips``
    (``(T, 3, H, W)`` float32 each, normalised as the model expects); ``description`` (where the clips
    came from) is recorded with the quantization settings in ``tsm_calibration``. ``weight_bits=8``
    uses the whole int8 range (for comparison: AVX2-only x86 CPUs saturate on it)."""
    if weight_bits not in WEIGHT_RANGES:
        raise ValueError(f"weight_bits must be one of {sorted(WEIGHT_RANGES)}, got {weight_bits!r}")
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quant_pre_process, quantize_static

    clips = calibration_clips(clips)
    with tempfile.TemporaryDirectory() as tmp:
        prepared, quantized = Path(tmp) / "prepared.onnx", Path(tmp) / "quantized.onnx"
        quant_pre_process(str(source), str(prepared))  # shape inference and graph folding, as onnxruntime advises
        quantize_static(
            str(prepared),
            str(quantized),
            _Feeds(calibration_feeds(source, clips)),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
            reduce_range=weight_bits == 7,
            calibrate_method=CalibrationMethod.MinMax,
            nodes_to_exclude=frame_convolutions(onnx.load(str(prepared))),
        )
        model = onnx.load(str(quantized))  # target is written once, whole, below
    settings = {
        "format": "QDQ",
        "activations": "uint8, per tensor",
        "weights": f"int8 in {WEIGHT_RANGES[weight_bits]}, per output channel, symmetric",
        "float32": "the convolutions that read the frame",
        "method": "minmax",
        "clips": len(clips),
        **description,
    }
    model.metadata_props.clear()
    model.metadata_props.extend(onnx.load(str(source), load_external_data=False).metadata_props)
    metadata = {entry.key: entry.value for entry in model.metadata_props}
    if metadata.get(MODE_KEY) == "stream":
        spec = integer_buffers(model, metadata_json(metadata, BUFFERS_KEY, source))
        _set_entry(model, BUFFERS_KEY, json.dumps(spec))
        settings["buffers"] = "uint8 in NHWC layout, in their activation's quantization; reset to its zero point"
    compact(model)
    _set_metadata(model, "int8", settings)
    with atomic_open(target) as file:
        onnx.save(model, file)
    return Path(target)


def calibration_clips(clips: Iterable[np.ndarray]) -> list[np.ndarray]:
    """``clips`` as a list; raises naming the keys to change when there is none to calibrate on."""
    clips = list(clips)
    if not clips:
        raise ValueError(NO_CALIBRATION_CLIPS)
    return clips


def _set_metadata(model: onnx.ModelProto, precision: str, calibration: dict) -> None:
    _set_entry(model, PRECISION_KEY, precision)
    _set_entry(model, CALIBRATION_KEY, json.dumps(calibration))


def _set_entry(model: onnx.ModelProto, key: str, value: str) -> None:
    entry = next((e for e in model.metadata_props if e.key == key), None) or model.metadata_props.add()
    entry.key, entry.value = key, value


def spread(count: int, total: int) -> list[int]:
    """``count`` indices spread evenly over ``range(total)`` (every class of an ordered split is met)."""
    return sorted({int(i) for i in np.linspace(0, total - 1, min(count, total))})


def moved(recorded: dict, root: str) -> dict:
    """A recorded data config with its ``root`` (and its source's, where it is the same folder) replaced."""
    source = dict(recorded.get("source") or {})
    if recorded.get("root") is not None and source.get("root") == recorded["root"]:
        source["root"] = root
    return {**recorded, "root": root, **({"source": source} if source else {})}


def calibration_data(ckpt_path: str | Path, fp32_file: str | Path, data: dict | None = None) -> ClipDataModule:
    """The data the checkpoint records (or ``data``: the user's own resolved data config from the command line
    or ``conf/``, or only its ``root``, where the recorded data now lies), cropped to the exported file's input
    size (a square of its longer side: :func:`clips_of` crops a non-square one), unshuffled, read in this process."""
    from tsm.data.recorded import datamodule_from_record
    from tsm.models.checkpoints import data_config

    info = read_info(read_file_metadata(fp32_file), fp32_file)
    side = max(height_width(info["input_size"]))  # the file's info, read once
    fitted = {"crop_size": side, "scale_size": max(side, info["scale_size"]), "log_dir": None, "num_workers": 0}
    if data is not None and "_target_" in data:  # the user's own config, not a file's: instantiated as Hydra does
        import hydra

        return hydra.utils.instantiate(data | fitted)
    # read from the checkpoint: data, never instantiated (tsm.data.recorded)
    recorded = data_config(ckpt_path) if data is None else moved(data_config(ckpt_path), data["root"])
    root = recorded.get("root")
    if root is not None and not Path(str(root)).expanduser().is_dir():
        where = f"+data.root={root!r} is" if data is not None else f"{ckpt_path} records its data at {root!r},"
        raise FileNotFoundError(
            f"{where} not a directory here: give +data.root=DIR where that data lies now, or another dataset with "
            "+data=NAME data.root=DIR"
        )
    return datamodule_from_record(recorded | fitted, str(ckpt_path), DATA_KEY)


def height_width(input_size: int | Sequence[int]) -> tuple[int, int]:
    """``(height, width)`` of a recorded ``input_size`` (a side, or ``[height, width]``)."""
    return (input_size, input_size) if isinstance(input_size, int) else (int(input_size[0]), int(input_size[1]))


def frame_size(path: str | Path) -> tuple[int, int]:
    """``(height, width)`` of the frames an exported file takes."""
    return height_width(read_info(read_file_metadata(path), path)["input_size"])


def clips_of(
    data: ClipDataModule, split: str, count: int, fitted_to: str | Path | None = None
) -> tuple[list[np.ndarray], list[int]]:
    """``count`` unaugmented clips of ``split`` and their labels; centre-cropped to the frame size of the exported
    file ``fitted_to`` (a non-square one: :func:`calibration_data` crops squares of its longer side)."""
    dataset = data.unaugmented(split)
    height, width = frame_size(fitted_to) if fitted_to is not None else (None, None)
    clips, labels = [], []
    for index in spread(count, len(dataset)):
        item = dataset[index]
        if isinstance(item, Skipped):  # data.on_error=skip
            log.warning("skipped %s clip %d: %s: %s", split, index, item.path, item.reason)
            continue
        clip, label, _ = item
        if height is not None:
            top, left = (clip.shape[-2] - height) // 2, (clip.shape[-1] - width) // 2
            clip = clip[..., top : top + height, left : left + width]
        clips.append(np.ascontiguousarray(clip.numpy()))
        labels.append(label)
    return clips, labels


def calibration_feeds(fp32_path: str | Path, clips: Iterable[np.ndarray]) -> Iterator[dict[str, np.ndarray]]:
    """The inputs the file sees for ``clips``: one feed per clip (clip files), or one per frame with the
    buffers the fp32 file (ONNX or LiteRT) carries from the frame before (stream files)."""
    if file_mode(fp32_path) == "clip":
        yield from ({"clip": clip[None]} for clip in clips)
        return
    session = open_stream(fp32_path)
    for clip in clips:
        session.reset()
        for frame in clip:
            yield {"frame": frame[None], **session.buffers()}
            session.step(frame[None])


class _Feeds:
    """onnxruntime's calibration reader protocol over an iterator of feeds."""

    def __init__(self, feeds: Iterator[dict[str, np.ndarray]]) -> None:
        self.feeds = feeds

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.feeds, None)


def clip_logits(path: str | Path, clips: Iterable[np.ndarray]) -> np.ndarray:
    """``(N, K)`` logits of each clip: a clip file's output, or a stream file's per-frame logits
    averaged over the clip's frames (what the causal model computes offline); ONNX, LiteRT or TVM (stream)."""
    if file_mode(path) == "clip":
        run = open_clip(path)
        return np.concatenate([run(clip[None]) for clip in clips])
    stream = open_stream(path)
    out = []
    for clip in clips:
        stream.reset()
        out.append(np.mean([stream.step(frame[None])[0] for frame in clip], axis=0))
    return np.stack(out)


def one_call(path: str | Path, frame_shape: tuple[int, ...]) -> Callable[[], object]:
    """One call of ``path`` at batch 1 in its runtime, ready to time: a clip (clip files), or one step of a
    stream (stream files: the buffers carried as in use); ``frame_shape`` is the input's shape."""
    data = np.random.default_rng(0).standard_normal(frame_shape, np.float32)
    if file_mode(path) == "clip":
        run = open_clip(path)
        return lambda: run(data)
    session = open_stream(path)
    return lambda: session.step(data)


def node_census(path: str | Path, layout: bool = False) -> Counter[str]:
    """The op types of the graph onnxruntime runs for ``path`` (after its graph optimisations and
    fusions), e.g. how many convolutions run as QLinearConv and how many Quantize/Dequantize remain;
    ``layout``: also after the layout passes for this machine's CPU (channels-last kernels, their transposes)."""
    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        # the layout passes after this level target this machine's CPU; the integer fusions happen before
        level = ort.GraphOptimizationLevel
        options.graph_optimization_level = level.ORT_ENABLE_ALL if layout else level.ORT_ENABLE_EXTENDED
        options.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return Counter(node.op_type for node in onnx.load(options.optimized_model_filepath).graph.node)


def report_file(out: str | Path) -> Path:
    """Where ``src/export.py`` writes the report of its fp16 or int8 file ``out``: ``<out>.report.json``, the
    suffix kept, so that the ONNX and the TFLite file of one stem keep a report each."""
    out = Path(out)
    return out.with_name(f"{out.name}.report.json")


def compare(
    fp32_path: str | Path, path: str | Path, clips: list[np.ndarray], labels: list[int], repeats: int = 50
) -> dict[str, float]:
    """``path`` beside the fp32 file of the same model (the one it was made from, or, for a TVM library, the
    fp32 library compiled beside it), on validation ``clips``: top-1 agreement, both top-1 accuracies, both
    sizes (MB) and latencies (ms per clip or per frame), and their ratios."""
    reference, other = clip_logits(fp32_path, clips).argmax(1), clip_logits(path, clips).argmax(1)
    labels_array = np.asarray(labels)
    frame_shape = (1, *clips[0].shape) if file_mode(path) == "clip" else (1, *clips[0].shape[1:])
    calls = {"fp32": one_call(fp32_path, frame_shape), "other": one_call(path, frame_shape)}
    # alternate the two files' timings, so that a change in the machine's load hits both
    ms = {name: [] for name in calls}
    for _ in range(3):
        for name, call in calls.items():
            ms[name].append(median_ms(call, repeats=repeats, warmup=5))
    fp32_ms, other_ms = min(ms["fp32"]), min(ms["other"])
    fp32_mb, other_mb = Path(fp32_path).stat().st_size / 2**20, Path(path).stat().st_size / 2**20
    return {
        "clips": len(clips),
        "agreement": float((reference == other).mean()),
        "fp32_top1": float((reference == labels_array).mean()),
        "top1": float((other == labels_array).mean()),
        "fp32_mb": fp32_mb,
        "mb": other_mb,
        "size_ratio": other_mb / fp32_mb,
        "fp32_ms": fp32_ms,
        "ms": other_ms,
        "latency_ratio": other_ms / fp32_ms,
    }
