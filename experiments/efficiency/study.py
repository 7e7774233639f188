"""Parameters, MACs and CPU throughput of I3D, TSN-ResNet50, TSM-ResNet50 and TSM-MobileNetV2.

    python -m experiments.efficiency.study [--size 224] [--repeats 5] [--out experiments/efficiency]

Clips of 8 frames (I3D also at its usual 16), batch 1; MACs of convolutions and linear layers
(tsm.benchmark.count); eager PyTorch and onnxruntime clips per second, timed interleaved in one run.
Writes results.md and efficiency.png (MACs vs onnxruntime throughput).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import onnxruntime as ort
import torch
from matplotlib.figure import Figure

from experiments.common import machine
from experiments.latency.bench import by_runtime
from tsm.benchmark import count
from tsm.export import ort_session, to_onnx
from tsm.models import build_recognizer
from tsm.models.i3d import I3D

TSM = {"fold_div": 8, "direction": "bidirectional", "place": "residual", "blocks": "all"}


def models(classes: int) -> dict[str, tuple[torch.nn.Module, int]]:
    """name -> (model, frames per clip)."""
    return {
        "I3D (16 frames)": (I3D(classes).eval(), 16),
        "I3D (8 frames)": (I3D(classes).eval(), 8),
        "TSN-ResNet50": (build_recognizer("resnet50", classes, 8).eval(), 8),
        "TSM-ResNet50": (build_recognizer("resnet50", classes, 8, shift=TSM).eval(), 8),
        "TSM-MobileNetV2": (build_recognizer("mobilenetv2_100", classes, 8, shift=TSM).eval(), 8),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--classes", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    args = parser.parse_args()
    rows, eager, ort_fns = {}, {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (model, frames) in models(args.classes).items():
            shape = (1, frames, 3, args.size, args.size)
            rows[name] = count(model, shape)
            clip = torch.randn(*shape)
            path = Path(tmp) / f"{len(rows)}.onnx"
            if isinstance(model, I3D):
                torch.onnx.export(model, (clip,), str(path), input_names=["clip"], dynamo=False)
            else:
                to_onnx(model, path, mode="clip", input_size=args.size)
            session = ort_session(path)
            eager[f"eager {name}"] = lambda model=model, clip=clip: model(clip)
            ort_fns[f"ort {name}"] = lambda s=session, clip=clip: s.run(None, {"clip": clip.numpy()})
        times = by_runtime(eager, ort_fns, args.repeats)
    write_report(args, rows, times)


def write_report(args: argparse.Namespace, rows: dict, times: dict) -> None:
    r50, mbv2 = rows["TSM-ResNet50"], rows["TSM-MobileNetV2"]
    lines = [
        f"{args.size}x{args.size}, {args.classes} classes, batch 1; {machine()}, onnxruntime {ort.__version__}; "
        f"median of {args.repeats} interleaved runs.",
        "",
        "| model | params (M) | GMACs per clip | eager clips/s | onnxruntime clips/s |",
        "|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        eager, onnx = 1e3 / times[f"eager {name}"], 1e3 / times[f"ort {name}"]
        lines.append(f"| {name} | {row['params'] / 1e6:.2f} | {row['macs'] / 1e9:.2f} | {eager:.2f} | {onnx:.2f} |")
    speed = times["ort TSM-ResNet50"] / times["ort TSM-MobileNetV2"]
    lines += [
        "",
        "| ratio, TSM-ResNet50 / TSM-MobileNetV2 | measured | published (MobileVFX report) |",
        "|---|---|---|",
        f"| parameters | {r50['params'] / mbv2['params']:.1f}x | 9.9x |",
        f"| MACs | {r50['macs'] / mbv2['macs']:.1f}x | 3.4x (FLOPs) |",
        f"| onnxruntime throughput (MobileNetV2 / ResNet50) | {speed:.1f}x | 4.1x |",
        "",
        f"TSM adds no MACs over TSN: {rows['TSM-ResNet50']['macs'] == rows['TSN-ResNet50']['macs']} "
        f"({rows['TSN-ResNet50']['macs'] / 1e9:.2f} vs {rows['TSM-ResNet50']['macs'] / 1e9:.2f} GMACs).",
    ]
    (args.out / "results.md").write_text("\n".join(lines) + "\n")
    fig = Figure(figsize=(8, 3.2))
    cost, speed = fig.subplots(1, 2, sharey=True)
    names = list(rows)[::-1]  # first model on top
    y = range(len(names))
    cost.barh(y, [rows[n]["macs"] / 1e9 for n in names], color="tab:gray")
    cost.set_yticks(y, names)
    cost.set_xlabel("GMACs per clip")
    for runtime, offset, color in (("eager", -0.2, "tab:blue"), ("ort", 0.2, "tab:orange")):
        rates = [1e3 / times[f"{runtime} {n}"] for n in names]
        label = "eager PyTorch" if runtime == "eager" else "onnxruntime"
        speed.barh([i + offset for i in y], rates, height=0.4, color=color, label=label)
    speed.set_xlabel("clips/s on this CPU (batch 1)")
    speed.legend(loc="upper right")
    fig.suptitle(f"Cost and CPU throughput per clip, {args.size}x{args.size}")
    fig.tight_layout()
    fig.savefig(args.out / "efficiency.png", dpi=120)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
