"""fp32 / fp16 / int8 TSM on this CPU: agreement, accuracy, size and speed, from one checkpoint.

    python -m experiments.quantization.study [--ckpt PATH] [--clips 300] [--repeats 50] [--out experiments/quantization]

1. TSM-MobileNetV2 x0.5, the edge model, trained from scratch with the causal shift,
   ``python src/train.py model.backbone=mobilenetv2_050 model/shift=causal seed=1``
   (run into ``<out>/runs/causal`` and reused; ``--ckpt`` names another checkpoint).
2. ``python src/export.py`` of it in each mode and precision at its trained size, as users run it:
   int8 calibrated on 64 unaugmented training clips; every file compared with the fp32 export on
   ``--clips`` validation clips (top-1 agreement, both accuracies, sizes, latencies).
3. Per-frame latency at 224x224 (batch 1, onnxruntime, interleaved): the stream file in each precision
   beside the plain 2D network of the same weights (one frame, no shift) in fp32 and int8, and the
   node census of the graphs onnxruntime runs (which ops stay float).

Writes ``results.md`` and ``results.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from experiments.common import EXPORT_SCRIPT, interleaved, machine, noise_clips, plain_2d, run_forked, run_train, shown
from tsm.export import to_onnx
from tsm.models.checkpoints import load_recognizer
from tsm.quantize import calibration_feeds, node_census, report_file, to_fp16, to_int8
from tsm.streaming.runtime import ort_session

HERE = Path(__file__).resolve().parent
EXPORTS = [("stream", "fp16"), ("stream", "int8"), ("clip", "int8")]


def trained_checkpoint(out: Path, extra: list[str]) -> Path:
    run_dir = out / "runs" / "causal"
    # the edge model whose int8 deployment is the question
    run_train(["model.backbone=mobilenetv2_050", "model/shift=causal", "seed=1", *extra], run_dir)
    return run_dir / "checkpoints" / "last.ckpt"


def exported(ckpt: Path, out: Path, mode: str, precision: str, clips: int, extra: list[str]) -> dict:
    """``src/export.py`` at the checkpoint's own size; its report."""
    path = out / f"{mode}_{precision}.onnx"
    argv = [f"ckpt_path={ckpt}", f"mode={mode}", f"precision={precision}", f"out={path}", f"compare.clips={clips}"]
    run_forked(EXPORT_SCRIPT, [*argv, f"hydra.run.dir={out}", *extra])
    return json.loads(report_file(path).read_text())


def kernel_share(path: Path, feed: dict[str, np.ndarray], runs: int = 30) -> dict[str, float]:
    """ms per run that onnxruntime's profiler gives each kind of kernel of ``path``: convolutions split
    into depthwise (one input channel per group) and dense ones, everything else by op type."""
    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "profile")
        options.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        for _ in range(runs):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
        depthwise = set()
        for node in onnx.load(options.optimized_model_filepath).graph.node:
            groups = next((a.i for a in node.attribute if a.name == "group"), 1)
            if "Conv" in node.op_type and groups > 1:
                depthwise.add(node.name)
    times: dict[str, float] = {}
    for event in events:
        if event.get("cat") != "Node" or not event["name"].endswith("_kernel_time"):
            continue
        name, op = event["name"].removesuffix("_kernel_time"), event["args"]["op_name"]
        kind = f"{op} depthwise" if name in depthwise else f"{op} dense" if "Conv" in op else op
        times[kind] = times.get(kind, 0.0) + event["dur"] / 1e3 / runs
    return dict(sorted(times.items(), key=lambda kv: -kv[1]))


def latency_at(ckpt: Path, size: int, repeats: int, workdir: Path) -> tuple[dict[str, float], dict[str, dict]]:
    """Per-frame ms of the stream file in each precision and of the plain 2D model (fp32, int8) at ``size``,
    interleaved; and the node census of each int8 graph."""
    model = load_recognizer(ckpt)
    files = {"stream fp32": to_onnx(model, workdir / "stream_fp32.onnx", mode="stream", input_size=size)}
    files["plain 2D fp32"] = to_onnx(
        plain_2d(model, model.info["backbone"]), workdir / "plain_fp32.onnx", mode="clip", input_size=size
    )
    # timing only: the speed of the integer kernels does not depend on the calibrated scales
    calibration = noise_clips(size, 8)
    files["stream fp16"] = to_fp16(files["stream fp32"], workdir / "stream_fp16.onnx")
    files["stream int8"] = to_int8(files["stream fp32"], workdir / "stream_int8.onnx", calibration, {"data": "noise"})
    plain_clips = [clip[:1] for clip in calibration]
    files["plain 2D int8"] = to_int8(
        files["plain 2D fp32"], workdir / "plain_int8.onnx", plain_clips, {"data": "noise"}
    )
    streams = [name for name in files if name.startswith("stream")]
    feeds = {name: next(calibration_feeds(files[name], calibration[:1])) for name in streams}  # a first frame
    feeds["plain 2D fp32"] = feeds["plain 2D int8"] = {"clip": calibration[0][None, :1]}
    sessions = {name: ort_session(path) for name, path in files.items()}
    fns = {name: (lambda s=sessions[name], f=feeds[name]: s.run(None, f)) for name in files}
    census = {name: dict(node_census(path)) for name, path in files.items() if "int8" in name}
    sizes = {name: path.stat().st_size / 2**20 for name, path in files.items()}
    kernels = {name: kernel_share(files[name], feeds[name]) for name in ("stream fp32", "stream int8")}
    return interleaved(fns, repeats), {"census": census, "mb": sizes, "kernels": kernels}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ckpt", type=Path, default=None)
    parser.add_argument("--clips", type=int, default=300, help="validation clips each file is compared on")
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 64], help="frame sides timed")
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument("--extra", nargs="*", default=[], help="overrides added to training and export (tests)")
    args = parser.parse_args()
    ckpt = args.ckpt or trained_checkpoint(args.out, args.extra)
    files = args.out / "runs" / "exports"
    reports = {
        f"{mode} {precision}": exported(ckpt, files, mode, precision, args.clips, []) for mode, precision in EXPORTS
    }
    timing = {}
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            timing[size] = latency_at(ckpt, size, args.repeats, Path(tmp) / str(size))
    result = {
        "machine": machine(),
        "ckpt": str(ckpt),
        "reports": reports,
        "timing": {str(k): v for k, v in timing.items()},
    }
    (args.out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "results.md").write_text(report(result, args) + "\n")
    print(report(result, args))


def report(result: dict, args: argparse.Namespace) -> str:
    ckpt = shown(result["ckpt"])
    lines = [
        f"Command: `python -m experiments.quantization.study`; {result['machine']}, onnxruntime {ort.__version__}, "
        f"{os.cpu_count()} threads; checkpoint `{ckpt}`.",
        "",
        f"## Agreement with fp32 on {args.clips} validation clips, at the trained size (`src/export.py`'s report)",
        "",
        "| file | top-1 agreement | top-1 | fp32 top-1 | MB | fp32 MB | size ratio | ms | fp32 ms | latency ratio |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in result["reports"].items():
        lines.append(
            f"| {name} | {r['agreement']:.3f} | {r['top1']:.3f} | {r['fp32_top1']:.3f} | {r['mb']:.2f} "
            f"| {r['fp32_mb']:.2f} | {r['size_ratio']:.2f}x | {r['ms']:.2f} | {r['fp32_ms']:.2f} "
            f"| {r['latency_ratio']:.2f}x |"
        )
    for size, (ms, extra) in result["timing"].items():
        base = ms["stream fp32"]
        lines += [
            "",
            f"## Per frame at {size}x{size} (batch 1, median of {args.repeats} interleaved runs)",
            "",
            "| model | ms per frame | / streaming fp32 | MB |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {name} | {value:.2f} | {value / base:.2f}x | {extra['mb'][name]:.2f} |" for name, value in ms.items()
        ]
        for name, census in extra["census"].items():
            ops = ", ".join(f"{op} {n}" for op, n in sorted(census.items(), key=lambda kv: -kv[1]))
            lines.append(f"\nNodes onnxruntime runs for {name}: {ops}.")
        lines += ["", "Kernel time per frame from onnxruntime's profiler (ms; profiling adds its own overhead):", ""]
        for name, kernels in extra["kernels"].items():
            lines.append(f"- {name}: " + ", ".join(f"{kind} {ms:.2f}" for kind, ms in kernels.items() if ms >= 0.01))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
