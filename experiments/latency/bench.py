"""What the streaming shift really costs, and clip throughput of the MobileNetV2 student vs ResNet50.

    python -m experiments.latency.bench [--repeats 20] [--size 224] [--out experiments/latency/results.md]

Per-frame latency at batch 1: streaming TSM-MobileNetV2 (causal shift, 10 cached buffers) vs the plain
2D MobileNetV2 it is made of (same weights, no shift), in eager PyTorch and in onnxruntime (buffers
kept bound inside onnxruntime by tsm.streaming.runtime, and, for comparison, fed as NumPy arrays through
``session.run``), timed interleaved in one run. Clip throughput (8 frames): TSM-MobileNetV2 vs TSM-ResNet50.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
from pathlib import Path

import onnxruntime as ort
import torch

from experiments.common import interleaved, plain_2d
from tsm.export import to_onnx
from tsm.models import build_recognizer
from tsm.streaming.model import StreamingTSM
from tsm.streaming.runtime import OnnxStreamSession, buffer_zeros, ort_session, read_metadata

CAUSAL = {"fold_div": 8, "direction": "causal", "place": "residual", "blocks": "all"}
BIDIRECTIONAL = {**CAUSAL, "direction": "bidirectional"}


def per_frame(repeats: int, size: int, workdir: Path) -> dict[str, float]:
    tsm = build_recognizer("mobilenetv2_100", 27, 8, shift=CAUSAL).eval()
    plain = plain_2d(tsm, "mobilenetv2_100")  # the 2D network: one frame, no shift
    stream = StreamingTSM.from_model(tsm)
    frame = torch.randn(1, 3, size, size)
    stream_file = to_onnx(tsm, workdir / "stream.onnx", mode="stream", input_size=size)
    plain_file = to_onnx(plain, workdir / "plain.onnx", mode="clip", input_size=size)
    stream_session, plain_session = ort_session(stream_file), ort_session(plain_file)
    bound_stream = OnnxStreamSession(stream_file)
    feed_stream = {"frame": frame.numpy(), **buffer_zeros(read_metadata(stream_file), 1)}
    feed_plain = {"clip": frame[:, None].numpy()}
    eager = {"eager_tsm_stream": lambda: stream.step(frame), "eager_plain_2d": lambda: plain(frame[:, None])}
    ort_fns = {
        "ort_tsm_stream": lambda: bound_stream.step(feed_stream["frame"]),
        "ort_numpy_feeds_tsm_stream": lambda: stream_session.run(None, feed_stream),
        "ort_plain_2d": lambda: plain_session.run(None, feed_plain),
    }
    return by_runtime(eager, ort_fns, repeats)


def clip_throughput(repeats: int, size: int, workdir: Path) -> dict[str, float]:
    clip = torch.randn(1, 8, 3, size, size)
    eager, ort_fns = {}, {}
    for name, backbone in (("mobilenetv2", "mobilenetv2_100"), ("resnet50", "resnet50")):
        model = build_recognizer(backbone, 400, 8, shift=BIDIRECTIONAL).eval()
        session = ort_session(to_onnx(model, workdir / f"{name}.onnx", mode="clip", input_size=size))
        eager[f"eager_{name}"] = lambda model=model: model(clip)
        ort_fns[f"ort_{name}"] = lambda s=session: s.run(None, {"clip": clip.numpy()})
    return by_runtime(eager, ort_fns, repeats)


def by_runtime(eager: dict, ort_fns: dict, repeats: int) -> dict[str, float]:
    """Interleaved timings within each runtime, one runtime after the other: PyTorch's OpenMP threads
    spin for a while after each call and would slow an onnxruntime call that follows at once."""
    return {**interleaved(eager, repeats), **interleaved(ort_fns, repeats)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("results.md"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        frame = per_frame(args.repeats, args.size, Path(tmp))
        clip = clip_throughput(max(args.repeats // 4, 3), args.size, Path(tmp))
    lines = [
        f"Machine: {platform.machine()}, {torch.get_num_threads()} torch threads, onnxruntime {ort.__version__}, "
        f"torch {torch.__version__}; input {args.size}x{args.size}, batch 1, median of interleaved repeats.",
        "",
        "Per frame (streaming TSM-MobileNetV2 vs the plain 2D MobileNetV2 with the same weights):",
        "",
        "| runtime | plain 2D ms | streaming TSM ms | TSM / plain |",
        "|---|---|---|---|",
    ]
    runtimes = {
        "eager PyTorch": ("eager_plain_2d", "eager_tsm_stream"),
        "onnxruntime, buffers bound (tsm.streaming.runtime)": ("ort_plain_2d", "ort_tsm_stream"),
        "onnxruntime, buffers as NumPy feeds": ("ort_plain_2d", "ort_numpy_feeds_tsm_stream"),
    }
    for runtime, (plain_key, tsm_key) in runtimes.items():
        plain, tsm = frame[plain_key], frame[tsm_key]
        lines.append(f"| {runtime} | {plain:.2f} | {tsm:.2f} | {tsm / plain:.3f} |")
    lines += [
        "",
        "Clip throughput (8 frames per clip):",
        "",
        "| runtime | TSM-MobileNetV2 clips/s | TSM-ResNet50 clips/s | ratio (published: 4.1x) |",
        "|---|---|---|---|",
    ]
    for runtime in ("eager", "ort"):
        mbv2, r50 = 1e3 / clip[f"{runtime}_mobilenetv2"], 1e3 / clip[f"{runtime}_resnet50"]
        lines.append(f"| {runtime} | {mbv2:.2f} | {r50:.2f} | {mbv2 / r50:.2f}x |")
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.write_text(text)


if __name__ == "__main__":
    main()
