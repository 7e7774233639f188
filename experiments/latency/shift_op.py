"""Temporal shift cost relative to a plain clone() of the same tensor, forward and backward.

    python -m experiments.latency.shift_op [--repeats 30] [--threads 1] [--out experiments/latency/shift_op.md]

Three ways of shifting are timed in one run, interleaved:
  clone   - x.clone(): one read and one write of the tensor, the floor for any shift that
            returns a new tensor;
  naive   - zeros_like + three slice copies (the obvious version, two passes over memory);
  tsm     - tsm.shift.temporal_shift;
and the shift's forward plus backward (the backward is the opposite shift: one more pass). Each tensor
is timed in float32 and in bf16 (what bf16-mixed training shifts), in contiguous (NCHW) and in
channels_last (NHWC) memory, where a channel slice is a short strided run per pixel; the clone and the
incoming gradient keep the input's dtype and memory format. One thread by default: on shared cores a
second thread waiting at a parallel barrier makes the timings of one run disagree with the next.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import torch

from tsm.shift import temporal_shift

# (name, N*T, C, H, W): TSM block inputs of 2 clips x 8 frames.
SHAPES = [
    ("resnet50 layer1 (56x56x256)", 16, 256, 56, 56),
    ("resnet50 layer3 (14x14x1024)", 16, 1024, 14, 14),
    ("mobilenetv2 block (28x28x32)", 16, 32, 28, 28),
]


def naive_shift(x: torch.Tensor, t: int, fold_div: int = 8) -> torch.Tensor:
    clips = x.view(x.shape[0] // t, t, *x.shape[1:])
    fold = x.shape[1] // fold_div
    out = torch.zeros_like(clips)
    # (frames written, frames read, channels): the first fold from t+1, the second from t-1, the rest as they are
    moves = [
        (slice(None, -1), slice(1, None), slice(0, fold)),
        (slice(1, None), slice(None, -1), slice(fold, 2 * fold)),
        (slice(None), slice(None), slice(2 * fold, None)),
    ]
    for written, read, channels in moves:
        out[:, written, channels] = clips[:, read, channels]
    return out.view_as(x)


def timed(fn, repeats: int) -> list[float]:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


# (dtype, memory format) of the shifted tensor
LAYOUTS = {
    "float32 NCHW": (torch.float32, torch.contiguous_format),
    "float32 NHWC": (torch.float32, torch.channels_last),
    "bf16 NCHW": (torch.bfloat16, torch.contiguous_format),
    "bf16 NHWC": (torch.bfloat16, torch.channels_last),
}


def bench_shape(nt: int, c: int, h: int, w: int, repeats: int, layout: str) -> dict[str, float]:
    dtype, memory_format = LAYOUTS[layout]
    x = torch.randn(nt, c, h, w).to(dtype).contiguous(memory_format=memory_format)
    grad = torch.randn_like(x)
    xg = x.clone().requires_grad_(True)
    fns = {
        "clone": lambda: x.clone(),
        "naive": lambda: naive_shift(x, 8),
        "tsm": lambda: temporal_shift(x, 8),
        "tsm_fwd_bwd": lambda: torch.autograd.grad(temporal_shift(xg, 8), xg, grad),
    }
    samples: dict[str, list[float]] = {k: [] for k in fns}
    names = list(fns)
    for r in range(repeats):  # interleaved, so that drifts of the machine hit every variant alike, and
        for name in names[r % len(names) :] + names[: r % len(names)]:  # rotated: none always runs first
            samples[name] += timed(fns[name], 1)
    clone = samples.pop("clone")
    # each variant against the clone of the same round, then the median over rounds
    ratios = {k: statistics.median(t / c for t, c in zip(v, clone, strict=True)) for k, v in samples.items()}
    return {"clone_ms": statistics.median(clone) * 1e3, **ratios}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("shift_op.md"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    lines = [
        f"Command: `python -m experiments.latency.shift_op --repeats {args.repeats} --threads {args.threads}`",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}; clone: median of {args.repeats} interleaved rounds; ratios: median over the "
        "rounds of the ratio within a round.",
        "",
        "| tensor | layout | clone ms | naive / clone | tsm / clone | tsm forward+backward / clone (ideal 2) |",
        "|---|---|---|---|---|---|",
    ]
    for name, *shape in SHAPES:
        for layout in LAYOUTS:
            m = bench_shape(*shape, repeats=args.repeats, layout=layout)
            lines.append(
                f"| {name} | {layout} | {m['clone_ms']:.2f} | {m['naive']:.2f} | {m['tsm']:.2f} | "
                f"{m['tsm_fwd_bwd']:.2f} |"
            )
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.write_text(text)


if __name__ == "__main__":
    main()
