"""Is a ``model.compile`` switch worth having? torch.compile vs eager for the default model, one run.

    python -m experiments.compile.bench [--backbone resnet10t_050] [--size 64] [--batch 16] [--steps 10] [--out DIR]

Times, for the default model (TSM over ResNet10-T x0.5, in-place shift, 8 frames, the default run's batch): the first
compiled training step (compilation included), then the median training step (forward, backward,
SGD) of eager and compiled, and checks that the compiled logits equal the eager ones. Writes
``results.md`` with the machine.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from experiments.common import machine
from tsm.benchmark import median_ms
from tsm.models import build_recognizer


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, clips: torch.Tensor, labels: torch.Tensor):
    optimizer.zero_grad(set_to_none=True)
    loss = torch.nn.functional.cross_entropy(model(clips), labels)
    loss.backward()
    optimizer.step()
    return loss


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backbone", default="resnet10t_050", help="timm name (default: the default model's)")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    args = parser.parse_args()
    torch.manual_seed(0)
    eager = build_recognizer(args.backbone, 9, 8, shift={"place": "inplace"})
    clips = torch.randn(args.batch, 8, 3, args.size, args.size)
    labels = torch.randint(9, (args.batch,))
    compiled = torch.compile(eager)
    optimizer = torch.optim.SGD(eager.parameters(), lr=1e-3, momentum=0.9)

    start = time.perf_counter()
    train_step(compiled, optimizer, clips, labels)
    first_s = time.perf_counter() - start
    compiled_ms = median_ms(lambda: train_step(compiled, optimizer, clips, labels), repeats=args.steps)
    eager_ms = median_ms(lambda: train_step(eager, optimizer, clips, labels), repeats=args.steps)
    eager.eval()
    with torch.no_grad():
        reference, got = eager(clips), compiled(clips)
    error = ((got - reference).abs().max() / reference.abs().max()).item()
    lines = [
        f"# torch.compile vs eager: one training step of TSM over {args.backbone}",
        "",
        f"`python -m experiments.compile.bench --backbone {args.backbone} --size {args.size} --batch {args.batch} "
        f"--steps {args.steps}`",
        f"(in-place shift, 8 frames at {args.size}x{args.size}, batch {args.batch}, SGD; {machine()})",
        "",
        "| | eager | compiled |",
        "|---|---|---|",
        f"| first step (compilation included) | | {first_s:.1f} s |",
        f"| median step | {eager_ms:.0f} ms | {compiled_ms:.0f} ms ({eager_ms / compiled_ms:.2f}x eager's speed) |",
        f"| eval logits, max relative difference to eager | | {error:.1e} |",
        "",
    ]
    (args.out / "results.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
