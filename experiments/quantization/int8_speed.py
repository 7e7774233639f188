"""Does int8 pay on the seeds' edge model? TSM-MobileNetV2 (x1.0, x0.5), causal, streamed frame by frame at
224x224, batch 1, two threads: fp32 against full-integer int8, in LiteRT (XNNPACK) and in onnxruntime.

``python -m experiments.quantization.int8_speed`` writes ``results_int8.md`` beside this file. Random weights (norms
randomised) and random calibration frames: this measures time and size, not accuracy (the export's own report,
``<out>.report.json``, gives agreement and accuracy on a checkpoint's data). The rounds of the files are
interleaved so that a change in the machine's load hits all of them alike, timed two ways: switching file every
frame (``--repeats`` rounds), and in bursts of ``--burst`` frames of one file (``--burst-rounds`` rounds), as a
stream runs one file; a switch can evict the previous file's weights from the caches.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
from pathlib import Path

import torch

from experiments.common import (
    fp32_edge_files,
    int8_edge_files,
    interleaved,
    machine,
    noise_clips,
    random_causal_model,
)
from tsm.streaming.sessions import open_stream

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", nargs="+", default=["mobilenetv2_100", "mobilenetv2_050"])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=60)
    parser.add_argument("--burst", type=int, default=50)
    parser.add_argument("--burst-rounds", type=int, default=6)
    parser.add_argument("--out", type=Path, default=HERE / "results_int8.md")
    args = parser.parse_args()
    torch.set_num_threads(2)
    clips = noise_clips(args.size, 2)
    rows, load = [], os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        for backbone in args.backbones:
            files = fp32_edge_files(random_causal_model(backbone), Path(tmp) / backbone, args.size)
            files |= int8_edge_files(files, clips, {})
            frame = clips[0][:1]
            sessions = {name: open_stream(path) for name, path in files.items()}
            steps = {name: (lambda s=s, f=frame: s.step(f)) for name, s in sessions.items()}
            timings = {
                "every frame": interleaved(steps, args.repeats),
                f"bursts of {args.burst}": interleaved(steps, args.burst_rounds, burst=args.burst),
            }
            mb = {name: path.stat().st_size / 2**20 for name, path in files.items()}
            for runtime in ("LiteRT", "onnxruntime"):
                fp32, int8 = f"{runtime} fp32", f"{runtime} int8"
                for timing, ms in timings.items():
                    rows.append(
                        f"| {backbone} | {runtime} | {timing} | {ms[fp32]:.2f} | {ms[int8]:.2f} | "
                        f"{ms[int8] / ms[fp32]:.2f}x | {mb[fp32]:.2f} | {mb[int8]:.2f} | {mb[int8] / mb[fp32]:.2f}x |"
                    )
    command = "python -m experiments.quantization.int8_speed " + shlex.join(sys.argv[1:])
    args.out.write_text(
        f"# int8 against fp32, per streamed frame ({args.size}x{args.size}, batch 1, two threads)\n\n"
        f"`{command}` on {machine()} (load average {load:.2f} at the start); "
        f"medians of {args.repeats} interleaved rounds switching file every frame, and of {args.burst_rounds} "
        f"interleaved rounds of {args.burst} frames of each file in a row (bursts).\n\n"
        "| backbone | runtime | files switched | fp32 ms | int8 ms | time ratio | fp32 MB | int8 MB | size ratio |\n"
        "|---|---|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n"
    )
    print(args.out.read_text())


if __name__ == "__main__":
    main()
