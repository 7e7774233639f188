"""Compile a stream-mode ONNX file with Apache TVM into one deployable library, for this CPU or a 64-bit ARM board.

The official online TSM demo compiled its ONNX file with TVM for a Jetson Nano and a Raspberry Pi 4: here
``target=x86`` builds for this machine's CPU, ``cortex-a72`` (Raspberry Pi 4) and ``cortex-a57`` (Jetson
Nano's CPU) cross-compile with ``aarch64-linux-gnu-gcc`` (Debian: ``gcc-aarch64-linux-gnu``). The batch is
fixed at 1 and the library carries the ONNX file's ``tsm_*`` metadata in a VM function, ``tsm_metadata``
(:mod:`tsm.streaming.tvm_runtime` runs it). ``trials`` > 0 tunes each operator task with that many MetaSchedule
trials on this machine (x86 only: tuning measures candidates on the CPU that runs them; :mod:`tsm.tvm_tuning`) and
keeps the log in ``log_dir``; a later export with the same ``log_dir`` reuses it, tuning only the tasks it lacks. Needs
``apache-tvm`` (``requirements-edge.txt``). An int8 ONNX file (:func:`tsm.quantize.to_int8`) compiles to an int8
library: its quantized convolutions run on integers (:mod:`tsm.tvm_int8`; the frame's stays float, as in the file),
its buffers stay uint8.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from tsm.errors import DataError
from tsm.export import relative_error
from tsm.files import atomic_open
from tsm.metadata import BUFFERS_KEY, MODE_KEY, PRECISION_KEY, metadata_json, read_info
from tsm.streaming.runtime import read_metadata
from tsm.streaming.tvm_runtime import METADATA_FUNCTION
from tsm.tvm_int8 import integer_convolutions, quantized_convolutions
from tsm.tvm_tuning import TUNING_RECORDS, tuned

# target name -> (llvm triple, CPU); x86's CPU is this machine's
TARGETS = {
    "x86": (None, None),
    "cortex-a72": ("aarch64-linux-gnu", "cortex-a72"),
    "cortex-a57": ("aarch64-linux-gnu", "cortex-a57"),
}
CROSS_COMPILER = "aarch64-linux-gnu-gcc"


def llvm_target(name: str):
    """The TVM target for ``name`` (a key of :data:`TARGETS`)."""
    import tvm
    from tvm.target import codegen

    if name not in TARGETS:
        raise ValueError(f"target={name!r} is not known; choose one of {', '.join(TARGETS)}")
    triple, cpu = TARGETS[name]
    if triple is None:
        return tvm.target.Target({"kind": "llvm", "mcpu": codegen.llvm_get_system_cpu(), "num-cores": os.cpu_count()})
    return tvm.target.Target({"kind": "llvm", "mtriple": triple, "mcpu": cpu, "mattr": ["+neon"], "num-cores": 4})


def check_tuning(target: str, trials: int, log_dir: str | Path | None) -> None:
    """Refuse a tuning that cannot run or does not apply: trials or a log (measured here) for a cross-compiled
    target, or a log folder without a log to reuse."""
    if trials and target != "x86":
        raise ValueError(f"tuning.trials={trials} tunes on this machine's CPU: set tuning.trials=0 for target={target}")
    if log_dir is not None and target != "x86":
        raise ValueError(
            f"tuning.log={log_dir} holds schedules measured on this machine's CPU, not a {target}'s: leave it unset "
            f"for target={target}"
        )
    if log_dir is not None and not trials and not (Path(log_dir) / TUNING_RECORDS).is_file():
        raise FileNotFoundError(
            f"tuning.log={log_dir} holds no MetaSchedule log ({TUNING_RECORDS}): set tuning.trials=N to tune into it"
        )


def to_tvm(
    onnx_path: str | Path, path: str | Path, target: str = "x86", trials: int = 0, log_dir: str | Path | None = None
) -> Path:
    """Compile the stream-mode ONNX file ``onnx_path`` into the TVM library ``path`` for ``target``."""
    import onnx
    import tvm
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx

    metadata = read_metadata(onnx_path)
    if metadata.get(MODE_KEY) != "stream":
        raise ValueError(
            f"format=tvm compiles stream-mode files; {onnx_path} is {metadata.get(MODE_KEY)!r}: set mode=stream"
        )
    check_tuning(target, trials, log_dir)
    spec = metadata_json(metadata, BUFFERS_KEY, onnx_path)
    side = read_info(metadata, onnx_path)["input_size"]
    height, width = (side, side) if isinstance(side, int) else side
    shapes = {"frame": [1, 3, height, width], **{b["name"]: [1, *b["shape"][1:]] for b in spec}}
    module = from_onnx(onnx.load(str(onnx_path)), shape_dict=shapes, keep_params_in_input=False)
    if metadata.get(PRECISION_KEY) == "int8":
        module, rewritten = integer_convolutions(module)
        left = quantized_convolutions(module["main"])
        if left or not rewritten:
            raise DataError(
                onnx_path,
                f"an int8 file with {left} quantized convolutions TVM cannot run on integers ({rewritten} it can): "
                "tsm.tvm_int8 takes the convolutions of tsm.quantize.to_int8's files",
            )
    described = {key: value for key, value in metadata.items() if key.startswith("tsm_")}
    module[METADATA_FUNCTION] = relax.Function([], relax.StringImm(json.dumps(described))).with_attr(
        "global_symbol", METADATA_FUNCTION
    )
    llvm = llvm_target(target)
    if trials or log_dir is not None:
        module = tuned(module, llvm, trials, log_dir or Path(path).with_suffix(".tuning"))
    executable = tvm.compile(module, target=llvm)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    compiler = {} if target == "x86" else {"cc": CROSS_COMPILER}
    tmp = path.with_name(f".{path.name}.building.so")
    try:
        executable.export_library(str(tmp), **compiler)
        with atomic_open(path) as file:
            file.write(tmp.read_bytes())
    finally:
        tmp.unlink(missing_ok=True)
    return path


def compare_with_onnx(library: str | Path, onnx_path: str | Path, frames: np.ndarray) -> float:
    """The largest relative error of the library's per-frame logits against onnxruntime's on ``frames``
    ``(N, 1, 3, H, W)`` (x86 libraries: they run here)."""
    from tsm.streaming.runtime import OnnxStreamSession
    from tsm.streaming.tvm_runtime import TvmStreamSession

    tvm_session, ort_session = TvmStreamSession(library), OnnxStreamSession(onnx_path)
    error = 0.0
    for frame in frames:
        got, expected = tvm_session.step(frame), ort_session.step(frame)
        error = max(error, relative_error(got, expected))
    return error
