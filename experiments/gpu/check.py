"""Does the project run on a GPU, and how fast? Every GPU-facing part once, sized for 8 minutes of one GPU.

    python -m experiments.gpu.check [--parts step loader runs stream] [--out PATH]
    python -m experiments.gpu.check --tiny --out /tmp/gpu_check.md    # the CPU check CI runs, under a minute

Parts (see README.md): ``step`` times a training step of TSM-ResNet50 and TSM-MobileNetV2 (8 frames at 224) in
fp32, bf16, bf16 + channels_last and compiled, with peak memory and the largest batch; ``loader`` the
datamodule's clips/s by worker count; ``runs`` a fast_dev_run of ``src/train.py`` on one device and under DDP
over NCCL; ``stream`` the per-frame latency of the stream-mode ONNX file in onnxruntime (CPU and CUDA providers)
and TensorRT. What a machine lacks (CUDA, a second GPU, NCCL, a provider, a package) is skipped with the reason
printed. Only a full-size CUDA run writes experiments/gpu/results.md; other runs write ``--out`` if given.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import onnxruntime as ort
import torch

from experiments.common import machine, shown
from experiments.gpu import loader, runs, step, stream
from experiments.gpu.table import Table

RESULTS = Path(__file__).resolve().with_name("results.md")
PARTS = ("step", "loader", "runs", "stream")
# A CPU-sized run: the default model's backbone, 2 frames at 32x32, one repeat, batches up to 4.
TINY = {
    "backbones": ["resnet10t_050"],
    "stream_backbone": "resnet10t_050",
    "frames": 2,
    "size": 32,
    "batch": 2,
    "repeats": 1,
    "warmup": 1,
    "max_batch": 4,
    "workers": [0, 1],
    "clips": 8,
    "stream_frames": 2,
}


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", nargs="+", choices=PARTS)
    parser.add_argument("--tiny", action="store_true", help=f"CPU sizes: {TINY}")
    parser.add_argument("--backbones", nargs="+", default=["resnet50", "mobilenetv2_100"], help="timm names")
    parser.add_argument("--stream-backbone", default="mobilenetv2_100")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=8, help="clips per timed step and per loader batch")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--max-batch", type=int, default=256, help="the batch search's cap")
    parser.add_argument("--workers", nargs="+", type=int, default=[0, 1, 2, 4, 8])
    parser.add_argument("--clips", type=int, default=128, help="clips the loader reads per worker count")
    parser.add_argument("--stream-frames", type=int, default=200, help="frames timed per stream runtime")
    parser.add_argument(
        "--out",
        type=Path,
        help="default on a full-size CUDA run: experiments/gpu/results.md, or results_<parts>.md for some --parts",
    )
    if parser.parse_known_args(argv)[0].tiny:
        parser.set_defaults(**TINY)
    args = parser.parse_args(argv)
    all_parts = args.parts is None or set(args.parts) == set(PARTS)
    args.parts = args.parts or list(PARTS)
    if args.out is None and torch.cuda.is_available() and not args.tiny:
        # some parts rerun: a file of their own, so that results.md keeps the other parts' figures
        args.out = RESULTS if all_parts else RESULTS.with_name(f"results_{'_'.join(args.parts)}.md")
    elif args.out is not None and args.out.resolve() == RESULTS and (args.tiny or not torch.cuda.is_available()):
        parser.error(f"only a full-size CUDA run writes {shown(RESULTS)}, the GPU figures: give another --out")
    return args


def header(argv: list[str], seconds: float) -> str:
    command = shlex.join(["python", "-m", "experiments.gpu.check", *argv])
    if torch.cuda.is_available():
        name, count = torch.cuda.get_device_name(0), torch.cuda.device_count()
        title = f"# GPU check on {name}"
        cudnn = torch.backends.cudnn.version()
        device = f"{count} x {name}; torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {cudnn}"
    else:
        title = "# GPU check: a CPU run, no GPU figures"
        device = "No CUDA device: every figure below was measured on the CPU, and none is a GPU's"
    versions = f"onnxruntime {ort.__version__}; {machine()}"
    return f"{title}\n\n{device}; {versions}.\n\nCommand: `{command}` ({seconds:.0f} s).\n"


def run_part(name: str, make: Callable[[], Table]) -> Table:
    """``make()``'s table with its wall time, or one that says how it failed: a part that cannot start must not
    cost the other parts' figures."""
    start = time.perf_counter()
    try:
        table = make()
    except Exception as error:
        table = Table(name, ["part", "result"])
        table.fail(name, error)
    table.seconds = time.perf_counter() - start
    return table


def main(argv: list[str]) -> None:
    args = parse(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        parts = {
            "step": [lambda: step.timings(args, device), lambda: step.batches(args, device)],
            "loader": [lambda: loader.section(args)],
            "runs": [lambda: runs.section(args, device, Path(tmp))],
            "stream": [lambda: stream.section(args, device, Path(tmp))],
        }
        tables = [run_part(name, make) for name in args.parts for make in parts[name]]
    text = "\n".join([header(argv, time.perf_counter() - start), *(table.markdown() for table in tables)])
    print(f"\n{text}")
    if args.out is None:
        print("results not written: no CUDA device or --tiny, and no --out")
    else:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        print(f"results written to {shown(args.out)}")
    failures = sum(table.failures for table in tables)
    if failures:
        raise SystemExit(f"{failures} measurements failed (tracebacks above)")


if __name__ == "__main__":
    main(sys.argv[1:])
