"""Which backbone should I use? Size, compute and CPU speed of the smallest member of each timm family.

    python -m experiments.backbones.study [--size 224] [--frames 8] [--repeats 5] [--out experiments/backbones]

For each backbone, as a TSM recognizer (the placement the family takes: the residual shift, MobileOne's
on the block input) of 27 classes: parameters and MACs of a clip of ``--frames`` frames (and that TSN
has the same), batch-1 clip latency in eager PyTorch and in onnxruntime, and the streaming model's
per-frame latency in onnxruntime (causal shift, buffers bound inside onnxruntime). Counted and timed
as deployed: re-parameterised (MobileOne, GhostNetV3) as ``src/export.py`` does. Writes ``results.md`` and
``backbones.png`` (per-frame streaming latency against MACs per frame).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import onnxruntime as ort
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from experiments.common import interleaved, machine
from tsm.benchmark import count
from tsm.export import ort_session, to_onnx
from tsm.models import build_recognizer
from tsm.models.factory import for_deployment
from tsm.streaming.runtime import OnnxStreamSession

# family -> its smallest timm member (the project's from-scratch default first, as the reference)
BACKBONES = {
    "ResNet10-T x0.5 (default)": "resnet10t_050",
    "MobileNetV2 x0.5": "mobilenetv2_050",
    "MobileNetV4 conv small": "mobilenetv4_conv_small",
    "MobileNetV4 hybrid medium": "mobilenetv4_hybrid_medium",
    "MobileOne S0": "mobileone_s0",
    "GhostNet x0.5": "ghostnet_050",
    "GhostNetV2 x1.0": "ghostnetv2_100",
    "GhostNetV3 x0.5": "ghostnetv3_050",
    "RegNetX 200MF": "regnetx_002",
    "RegNetY 200MF": "regnety_002",
    "EfficientNetV2 B0": "tf_efficientnetv2_b0",
    "ConvNeXt atto": "convnext_atto",
    "ConvNeXt-V2 atto": "convnextv2_atto",
    "ViT-Tiny/16 (DeiT-Tiny)": "vit_tiny_patch16_224",
}
CLASSES = 27


def recognizer(backbone: str, frames: int, size: int, direction: str | None) -> torch.nn.Module:
    """TSM (``direction``) or TSN (None) over ``backbone`` for ``size`` frames, random weights, eval mode."""
    place = "inplace" if backbone.startswith("mobileone") else "residual"
    shift = None if direction is None else {"direction": direction, "place": place}
    args = {"img_size": size} if backbone.startswith("vit") else {}
    return build_recognizer(backbone, CLASSES, frames, shift=shift, backbone_args=args).eval()


def measure(backbone: str, frames: int, size: int, repeats: int, workdir: Path) -> dict[str, float]:
    # counted and timed as deployed: MobileOne's and GhostNetV3's branches folded
    tsm = for_deployment(recognizer(backbone, frames, size, "causal"))
    shape = (1, frames, 3, size, size)
    tsm_count = count(tsm, shape)
    tsn_count = count(for_deployment(recognizer(backbone, frames, size, None)), shape)
    if tsm_count != tsn_count:
        raise AssertionError(f"{backbone}: TSM {tsm_count} differs from TSN {tsn_count}")
    clip = torch.randn(shape)
    clip_session = ort_session(to_onnx(tsm, workdir / f"{backbone}_clip.onnx", mode="clip", input_size=size))
    stream = OnnxStreamSession(to_onnx(tsm, workdir / f"{backbone}_stream.onnx", mode="stream", input_size=size))
    frame = clip[:, 0].numpy()
    eager = interleaved({"eager": lambda: tsm(clip)}, repeats)
    onnx = interleaved(
        {"ort_clip": lambda: clip_session.run(None, {"clip": clip.numpy()}), "ort_frame": lambda: stream.step(frame)},
        repeats,
    )
    return {**tsm_count, **eager, **onnx}


def plot(rows: dict[str, dict[str, float]], frames: int, path: Path) -> None:
    fig = Figure(figsize=(7.5, 4.8))
    renderer = FigureCanvasAgg(fig).get_renderer()
    ax = fig.subplots()
    points = {name: (row["macs"] / frames / 1e6, row["ort_frame"]) for name, row in rows.items()}
    for name, (x, y) in points.items():
        ax.scatter(x, y, color="tab:red" if "default" in name else "tab:blue")
    ax.set_xscale("log")
    ax.set_xlabel("MMACs per frame (log scale)")
    ax.set_ylabel("streaming ms per frame (onnxruntime)")
    ax.set_title("TSM backbones on this CPU (batch 1)")
    ax.grid(alpha=0.3)
    fig.tight_layout()  # before the labels: their overlaps are checked where they will be drawn
    widest = max(x for x, _ in points.values())
    placed = []  # display-space boxes of the labels drawn so far
    for name, (x, y) in sorted(points.items(), key=lambda item: item[1][1]):
        left = x > widest / 2  # the right end's labels go to the left of their points
        label = ax.annotate(
            name,
            (x, y),
            fontsize=7,
            xytext=(-5 if left else 5, -9),
            textcoords="offset points",
            ha="right" if left else "left",
        )
        # move a label up by about its height until it overlaps none drawn before it
        while any(label.get_window_extent(renderer).overlaps(box) for box in placed):
            label.xyann = (label.xyann[0], label.xyann[1] + 8)
        placed.append(label.get_window_extent(renderer))
    fig.savefig(path, dpi=130)


def read_results(path: Path) -> dict[str, dict[str, float]]:
    """The rows of a results.md this script wrote: what the plot needs."""
    rows = {}
    for line in path.read_text().splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 8 and cells[1].startswith("`"):
            rows[cells[0]] = {"macs": float(cells[3]) * 1e9, "ort_frame": float(cells[7])}
    return rows


def report(rows: dict[str, dict[str, float]], args: argparse.Namespace) -> str:
    lines = [
        f"Command: `python -m experiments.backbones.study --size {args.size} --frames {args.frames} "
        f"--repeats {args.repeats}`",
        "",
        f"Machine: {machine()}, onnxruntime {ort.__version__}; TSM (causal shift) at {args.frames}x{args.size}, "
        "batch 1, random weights, median of interleaved repeats. TSN has the same parameters and MACs (checked).",
        "",
        "| backbone | timm name | params (M) | GMACs per clip | eager ms per clip | onnxruntime ms per clip "
        "| onnxruntime clips/s | streaming ms per frame |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        lines.append(
            f"| {name} | `{BACKBONES[name]}` | {row['params'] / 1e6:.2f} | {row['macs'] / 1e9:.2f} | "
            f"{row['eager']:.1f} | {row['ort_clip']:.1f} | {1e3 / row['ort_clip']:.1f} | {row['ort_frame']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--only", nargs="*", help="timm names to measure (default: all)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    parser.add_argument("--plot-only", action="store_true", help="redraw the plot from results.md, measure nothing")
    args = parser.parse_args()
    if args.plot_only:
        plot(read_results(args.out / "results.md"), args.frames, args.out / "backbones.png")
        return
    chosen = {k: v for k, v in BACKBONES.items() if not args.only or v in args.only}
    rows = {}
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        # the first measurement of a process pays one-time costs (thread pools, kernel caches): it was up
        # to 3x the same backbone's time measured later, so a throwaway one goes first
        measure(next(iter(chosen.values())), args.frames, args.size, 1, Path(tmp))
        for name, backbone in chosen.items():
            rows[name] = measure(backbone, args.frames, args.size, args.repeats, Path(tmp))
            print(name, rows[name], flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    text = report(rows, args)
    (args.out / "results.md").write_text(text)
    plot(rows, args.frames, args.out / "backbones.png")
    print(text)


if __name__ == "__main__":
    main()
