"""Should onnxruntime's threads spin within a frame? A streamed frame, threads that sleep between nodes against
threads that spin within a run and stop when it returns (``tsm.streaming.runtime.ort_session``).

``python -m experiments.latency.spinning`` writes ``spinning.md`` beside this file. Stream files at 224x224, batch 1,
onnxruntime's default threads (one per core), random weights (norms randomised), fp32 and int8 (calibrated on noise).
Two timings, the sessions interleaved so that machine drift hits all alike: frames ``--gap`` ms apart, as a camera
delivers them (and the CPU the process used in those gaps: spinning threads left running would show there), and
bursts of ``--burst`` frames back to back, as a benchmark or a recorded video runs them.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import onnxruntime as ort
import torch

from experiments.common import interleaved, machine, noise_clips, random_causal_model
from tsm.export import to_onnx
from tsm.quantize import to_int8
from tsm.streaming.runtime import OnnxStreamSession

HERE = Path(__file__).resolve().parent
THREADS = {"sleep between nodes": False, "spin within a run": True}


def paced(steps: dict, frames: int, gap_s: float) -> tuple[dict[str, float], dict[str, float]]:
    """Median ms of each step called once per round, ``gap_s`` of sleep after each call, and the mean CPU the
    process used during those sleeps (cores)."""
    ms: dict[str, list[float]] = {name: [] for name in steps}
    idle: dict[str, list[float]] = {name: [] for name in steps}
    for step in steps.values():
        step()
    for _ in range(frames):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            ms[name].append((time.perf_counter() - start) * 1e3)
            cpu, wall = time.process_time(), time.perf_counter()
            time.sleep(gap_s)
            idle[name].append((time.process_time() - cpu) / (time.perf_counter() - wall))
    return {n: statistics.median(v) for n, v in ms.items()}, {n: statistics.mean(v) for n, v in idle.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", nargs="+", default=["resnet10t_050", "mobilenetv2_050", "mobilenetv2_100"])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--frames", type=int, default=60, help="paced frames per session")
    parser.add_argument("--gap", type=float, default=33.0, help="ms between paced frames (30 fps)")
    parser.add_argument("--burst", type=int, default=50)
    parser.add_argument("--burst-rounds", type=int, default=6)
    parser.add_argument("--out", type=Path, default=HERE / "spinning.md")
    args = parser.parse_args()
    torch.set_num_threads(2)
    clips = noise_clips(args.size, 2)
    frame, rows, load = clips[0][:1], [], os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        for backbone in args.backbones:
            fp32 = to_onnx(random_causal_model(backbone), Path(tmp) / f"{backbone}.onnx", "stream", args.size)
            files = {"fp32": fp32, "int8": to_int8(fp32, fp32.with_stem(f"{backbone}_int8"), clips, {})}
            sessions = {
                (precision, threads): OnnxStreamSession(path, spin_within_run=spin)
                for precision, path in files.items()
                for threads, spin in THREADS.items()
            }
            steps = {key: (lambda s=s: s.step(frame)) for key, s in sessions.items()}
            paced_ms, idle = paced(steps, args.frames, args.gap / 1e3)
            burst_ms = interleaved(steps, args.burst_rounds, burst=args.burst)
            for precision in files:
                sleep, spin = ((precision, threads) for threads in THREADS)
                rows.append(
                    f"| {backbone} | {precision} | {paced_ms[sleep]:.2f} | {paced_ms[spin]:.2f} | "
                    f"{paced_ms[spin] / paced_ms[sleep]:.2f}x | {idle[sleep]:.3f} / {idle[spin]:.3f} | "
                    f"{burst_ms[sleep]:.2f} | {burst_ms[spin]:.2f} | {burst_ms[spin] / burst_ms[sleep]:.2f}x |"
                )
    args.out.write_text(
        f"# onnxruntime's threads: sleeping between nodes or spinning within a run ({args.size}x{args.size} stream "
        "frame, batch 1)\n\n"
        f"`python -m experiments.latency.spinning` on {machine()}, onnxruntime {ort.__version__}, its default "
        f"threads (one per core; load average {load:.2f} at the start). Paced: medians of {args.frames} frames "
        f"{args.gap:.0f} ms apart per session, the sessions interleaved; idle CPU: the cores the process used in "
        f"those gaps. Back to back: medians of {args.burst_rounds} interleaved rounds of {args.burst} frames of each "
        "session in a row. Spinning threads stop when the run returns (`session.force_spinning_stop`).\n\n"
        "| backbone | precision | paced, sleeping ms | paced, spinning ms | ratio | idle CPU (sleeping / spinning) | "
        "back to back, sleeping ms | back to back, spinning ms | ratio |\n"
        "|---|---|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n"
    )
    print(args.out.read_text())


if __name__ == "__main__":
    main()
