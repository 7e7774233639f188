"""Export a checkpoint to ONNX (onnxruntime), LiteRT (TFLite) or a TVM library and verify it against PyTorch:
``python src/export.py ckpt_path=... mode=clip|stream format=onnx|tflite|tvm precision=fp32|fp16|int8``.

fp16 (ONNX) and int8 files are made from the fp32 export (kept beside them as ``<out>.fp32.onnx`` or
``.fp32.tflite``): int8 is calibrated on ``calibration.clips`` unaugmented clips of the checkpoint's own
training data (the data config it records; ``+data.root=DIR`` if that data has moved, ``+data=NAME`` names
another). Both are then compared with the
fp32 file on ``compare.clips`` validation clips: agreement, both accuracies, sizes and latencies, printed and
written to ``<out>.report.json``. A TVM library (stream mode, fp32 or int8) is compiled from the ONNX file of its
precision, written beside it (``model.so.onnx`` for ``out=model.so``, and ``model.so.fp32.onnx``; see
:func:`compile_tvm` for what an int8 one is compared with). A file an export fails on is removed, with its report.
"""

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import hydra
import rich
from omegaconf import DictConfig, OmegaConf

from tsm.checks import check_counts
from tsm.export import to_onnx
from tsm.files import Signature, file_signature, write_text_atomic
from tsm.models.checkpoints import load_recognizer
from tsm.quantize import (
    NO_CALIBRATION_CLIPS,
    calibration_data,
    clips_of,
    compare,
    report_file,
    to_fp16,
    to_int8,
)

# the precisions each format= writes, and its files' suffix
FORMATS = {"onnx": ("fp32", "fp16", "int8"), "tflite": ("fp32", "int8"), "tvm": ("fp32", "int8")}
SUFFIXES = {"onnx": ".onnx", "tflite": ".tflite", "tvm": ".so"}
SPLITS = ("train", "val", "test")  # calibration.split, compare.split


@hydra.main(version_base="1.3", config_path="../conf", config_name="export")
def main(cfg: DictConfig) -> None:
    if cfg.format not in FORMATS:
        raise ValueError(f"format={cfg.format!r} is not supported; choose one of {', '.join(FORMATS)}")
    if cfg.precision not in FORMATS[cfg.format]:
        raise ValueError(f"format={cfg.format} takes precision={'|'.join(FORMATS[cfg.format])}, got {cfg.precision!r}")
    if cfg.precision == "int8" and not cfg.calibration.clips > 0:  # before minutes of conversion
        raise ValueError(NO_CALIBRATION_CLIPS)
    if cfg.precision != "fp32" and not cfg.compare.clips > 0:
        raise ValueError(f"compare.clips={cfg.compare.clips}: precision={cfg.precision} is compared with fp32 on "
                         "validation clips; give at least 1")  # fmt: skip
    if cfg.num_segments is not None:
        check_counts({"num_segments": cfg.num_segments}, group="")
    check_counts({"clips": cfg.calibration.clips}, group="calibration")
    check_counts({"clips": cfg.compare.clips}, group="compare")
    check_counts({"trials": cfg.tuning.trials}, minimum=0, group="tuning")
    for key in ("calibration", "compare"):
        if cfg[key].split not in SPLITS:
            raise ValueError(f"{key}.split must be one of {', '.join(SPLITS)}, got {cfg[key].split!r}")
    if cfg.format != "tvm" and cfg.target != "x86":
        raise ValueError(f"target={cfg.target} is a TVM library's CPU: set format=tvm, or leave target unset")
    if cfg.get("data") and "_target_" not in cfg.data and set(cfg.data) != {"root"}:
        raise ValueError(
            f"data={OmegaConf.to_container(cfg.data)} names no dataset: give +data=NAME (a config in conf/data) with "
            "data.root=DIR, +data.root=DIR alone (the data the checkpoint records, moved there), or no data"
        )
    suffix = SUFFIXES[cfg.format]
    if cfg.out and Path(cfg.out).is_dir():
        raise ValueError(f"out={cfg.out} is a folder: name the file to write, e.g. out={cfg.out}/model{suffix}")
    if cfg.out and Path(cfg.out).suffix != suffix:  # the runners pick the runtime by the file's suffix
        raise ValueError(
            f"out={cfg.out}: format={cfg.format} writes a {suffix} file; name it "
            f"{Path(cfg.out).with_suffix(suffix).name}, or choose the format= its name says"
        )
    if cfg.format == "tvm":  # before the ONNX export and the calibration: a wrong key fails at once
        from tsm.tvm_export import TARGETS, check_tuning

        if cfg.target not in TARGETS:
            raise ValueError(f"target={cfg.target!r} is not known; choose one of {', '.join(TARGETS)}")
        if cfg.mode != "stream":
            raise ValueError(f"format=tvm compiles stream-mode files; got mode={cfg.mode}: set mode=stream")
        check_tuning(cfg.target, cfg.tuning.trials, cfg.tuning.log)
    model = load_recognizer(cfg.ckpt_path, num_segments=cfg.num_segments or 8)
    if cfg.num_segments is not None and model.num_segments != cfg.num_segments:  # it was ignored, without a word
        raise ValueError(
            f"num_segments={cfg.num_segments}: {cfg.ckpt_path} records {model.num_segments} frames per clip, which "
            "its export keeps (num_segments applies to released .pth files, which do not record it)"
        )
    out = Path(cfg.out or f"{cfg.paths.output_dir}/model_{cfg.mode}_{cfg.precision}{suffix}")
    with removed_if_replaced(out):
        export(cfg, model, out)
    if cfg.precision == "fp32":  # an earlier export's report describes another file
        report_file(out).unlink(missing_ok=True)


@contextlib.contextmanager
def removed_if_replaced(out: Path) -> Iterator[None]:
    """An export that fails after writing ``out`` removes it and its report (a file that failed its check or its
    comparison, or has none, is not left to be deployed); one that fails before leaves the earlier file as it was."""
    before = signature(out)
    try:
        yield
    except BaseException:
        if signature(out) != before:
            out.unlink(missing_ok=True)
            report_file(out).unlink(missing_ok=True)
        raise


def signature(path: Path) -> Signature | None:
    """:func:`tsm.files.file_signature`, None for no file."""
    try:
        return file_signature(path)
    except FileNotFoundError:
        return None


def export(cfg: DictConfig, model, out: Path) -> None:
    """Write ``out`` (and the files it is made from), and, for fp16 and int8, their report."""
    fp32_file = out if cfg.precision == "fp32" else out.with_suffix(f".fp32{out.suffix}")
    converted = out  # the file of cfg.precision
    if cfg.format == "tvm":  # TVM compiles an ONNX file of the same precision, written beside the library
        converted = out.with_name(f"{out.name}.onnx")
        fp32_file = converted if cfg.precision == "fp32" else out.with_name(f"{out.name}.fp32.onnx")
    if cfg.format == "tflite":
        from tsm.litert_export import to_tflite, to_tflite_int8

        to_tflite(model, fp32_file, mode=cfg.mode, input_size=cfg.input_size)
    else:
        to_onnx(model, fp32_file, mode=cfg.mode, input_size=cfg.input_size, opset=cfg.opset)
    if cfg.precision != "fp32":
        user_data = OmegaConf.to_container(cfg.data, resolve=True) if cfg.get("data") else None
        data = calibration_data(cfg.ckpt_path, fp32_file, user_data)
        splits = {cfg.compare.split, *([cfg.calibration.split] if cfg.precision == "int8" else [])}
        for split in sorted(splits):  # the splits it reads, and no other (a folder may hold only those)
            check_same_classes(model, list(data.dataset(split).source.classes), cfg.ckpt_path)
    if cfg.precision == "fp16":
        to_fp16(fp32_file, converted)
    elif cfg.precision == "int8":
        clips, _ = clips_of(data, cfg.calibration.split, cfg.calibration.clips, fp32_file)
        calibration = {"split": cfg.calibration.split, "checkpoint": str(cfg.ckpt_path)}
        (to_tflite_int8 if cfg.format == "tflite" else to_int8)(fp32_file, converted, clips, calibration)
    if cfg.format == "tvm":
        fp32_file, converted = compile_tvm(cfg, fp32_file, converted, out)
    if cfg.precision == "fp32":
        return
    clips, labels = clips_of(data, cfg.compare.split, cfg.compare.clips, fp32_file)
    report = {"compared": [fp32_file.name, converted.name], **compare(fp32_file, converted, clips, labels)}
    write_text_atomic(report_file(out), json.dumps(report, indent=2) + "\n")
    unit = "clip" if cfg.mode == "clip" else "frame"
    rich.print(
        f"{converted}: {cfg.precision} beside fp32 ({fp32_file.name}) on {report['clips']} {cfg.compare.split} clips: "
        f"top-1 agreement {report['agreement']:.3f}; top-1 {report['top1']:.3f} vs {report['fp32_top1']:.3f}; "
        f"{report['mb']:.2f} MB vs {report['fp32_mb']:.2f} MB ({report['size_ratio']:.2f}x); "
        f"{report['ms']:.2f} vs {report['fp32_ms']:.2f} ms per {unit} ({report['latency_ratio']:.2f}x)"
    )


def check_same_classes(model, classes: list[str], ckpt_path) -> None:
    """The report's accuracies compare the model's class indices with the data's labels: the data must number the
    checkpoint's classes as it does (``+data=NAME`` may name another dataset)."""
    recorded = model.info.get("class_names")
    if "class_names" in getattr(model, "info_known", ()) and list(recorded) != classes:
        raise ValueError(
            f"the data's {len(classes)} classes ({', '.join(classes[:3])}, ...) are not the {len(recorded)} classes "
            f"{ckpt_path} predicts ({', '.join(recorded[:3])}, ...), in order: give the data it was trained on "
            "(+data.root=DIR where it lies now, or +data=NAME data.root=DIR)"
        )


def compile_tvm(cfg: DictConfig, fp32_onnx: Path, onnx_file: Path, out: Path) -> tuple[Path, Path]:
    """format=tvm: ``onnx_file`` compiled into the library ``out``. Returns the fp32 and the int8 file an int8
    export's report compares: on target=x86 an fp32 library compiled beside it (``<out>.fp32.so``, tuned as the
    int8 one, into the same log) and ``out``; a cross-compiled library does not run here, so for ARM targets the
    ONNX files they are compiled from."""
    from tsm.tvm_export import to_tvm

    log = cfg.tuning.log or (out.with_suffix(".tuning") if cfg.tuning.trials else None)
    to_tvm(onnx_file, out, cfg.target, cfg.tuning.trials, log)
    rich.print(f"{out}: TVM library ({cfg.precision}) for target={cfg.target} (from {onnx_file})")
    if cfg.precision == "fp32" or cfg.target != "x86":
        return fp32_onnx, onnx_file
    return to_tvm(fp32_onnx, out.with_suffix(".fp32.so"), cfg.target, cfg.tuning.trials, log), out


if __name__ == "__main__":
    main()
