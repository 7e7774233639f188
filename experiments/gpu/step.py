"""Part "step": one training step of TSM over each backbone in fp32, bf16 autocast, bf16 + channels_last
and compiled: its time and peak memory, and (a table of its own) the largest batch that fits."""

from __future__ import annotations

import argparse
import gc
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
from torch.nn import functional as F

from experiments.gpu.table import Table
from tsm.benchmark import median_ms
from tsm.models import build_recognizer
from tsm.training.optim import build_optimizer

CLASSES = 400  # Kinetics-400's, the TSM paper's
NAMES = {"resnet50": "TSM-ResNet50", "mobilenetv2_100": "TSM-MobileNetV2"}


@dataclass(frozen=True)
class Variant:
    name: str
    bf16: bool = False
    channels_last: bool = False
    compiled: bool = False


VARIANTS = (
    Variant("fp32"),
    Variant("bf16 autocast", bf16=True),
    Variant("bf16 + channels_last", bf16=True, channels_last=True),
    Variant("bf16 + channels_last, torch.compile", bf16=True, channels_last=True, compiled=True),
)


def stepper(backbone: str, variant: Variant, frames: int, size: int, device: torch.device):
    """A function of the batch size giving one training step (forward, cross-entropy, backward, SGD with
    momentum, fused as the recipe builds it) of TSM over timm ``backbone`` (the published residual shift), set up
    as ``variant``, on random clips."""
    torch.manual_seed(0)
    model = build_recognizer(backbone, CLASSES, frames, shift={}).to(device)
    if variant.channels_last:
        model.to(memory_format=torch.channels_last)
    net = torch.compile(model) if variant.compiled else model
    sgd = {"name": "sgd", "momentum": 0.9, "nesterov": False}  # the recipe's, one fused update kernel on a GPU
    optimizer = build_optimizer([{"params": list(model.parameters())}], 1e-3, sgd)

    def at(batch: int) -> Callable[[], None]:
        clips = torch.randn(batch, frames, 3, size, size, device=device)
        labels = torch.randint(CLASSES, (batch,), device=device)

        def step() -> None:
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device.type, torch.bfloat16, enabled=variant.bf16):
                loss = F.cross_entropy(net(clips), labels)
            loss.backward()
            optimizer.step()

        return step

    return at


def release() -> None:
    """Free what a dropped model or a step that ran out of memory left (reference cycles, cached blocks)."""
    gc.collect()
    torch.cuda.empty_cache()


def fits(at: Callable[[int], Callable[[], None]], batch: int) -> bool:
    try:
        at(batch)()
        done = True
    except torch.OutOfMemoryError:
        done = False
    release()
    return done


def largest_batch(at: Callable[[int], Callable[[], None]], start: int, cap: int) -> str:
    """The largest batch, doubling from ``start`` up to ``cap``, whose step fits in memory. Another error at a
    doubled batch (an allocation outside the caching allocator, a cuDNN status, an index past 2**31) ends the
    search too, named, without losing the batches that fitted."""
    if not fits(at, start):
        return f"< {start} ({start} ran out of memory)"
    batch = start
    while batch * 2 <= cap:
        try:
            fitted = fits(at, batch * 2)
        except Exception as error:
            release()
            return f"{batch} ({batch * 2} failed: {type(error).__name__})"
        if not fitted:
            return f"{batch} ({batch * 2} ran out of memory)"
        batch *= 2
    return f">= {batch} (--max-batch {cap})"


def time_step(args: argparse.Namespace, backbone: str, variant: Variant, device: torch.device) -> list[str]:
    step = stepper(backbone, variant, args.frames, args.size, device)(args.batch)
    first_ms = median_ms(step, repeats=1, warmup=0)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    ms = median_ms(step, args.repeats, args.warmup)
    peak = f"{torch.cuda.max_memory_allocated() / 2**30:.2f}" if device.type == "cuda" else "-"
    return [f"{first_ms / 1e3:.1f}", f"{ms:.1f}", f"{args.batch * 1e3 / ms:.1f}", peak]


def label(backbone: str, variant: Variant) -> str:
    return f"{NAMES.get(backbone, f'TSM over {backbone}')}, {variant.name}"


def timings(args: argparse.Namespace, device: torch.device) -> Table:
    note = (
        f"{args.batch} clips of {args.frames} frames at {args.size}x{args.size}, {CLASSES} classes, "
        "SGD with momentum (fused); "
        f"median of {args.repeats} after {args.warmup} warm-up steps (CUDA synchronised); peak memory: "
        "torch.cuda.max_memory_allocated over those steps."
    )
    columns = ["network, variant", "first step (s)", "ms/step", "clips/s", "peak memory (GiB)"]
    table = Table("Training step", columns, note)
    if device.type != "cuda":
        table.skip("CUDA timings", "no CUDA device: the step is timed on the CPU below, at the size given")
    for backbone in args.backbones:
        for variant in VARIANTS:
            if variant.compiled and device.type != "cuda":
                table.skip(
                    label(backbone, variant), "torch.compile takes minutes on the CPU (88 s in experiments/compile)"
                )
            else:
                table.add(label(backbone, variant), lambda b=backbone, v=variant: time_step(args, b, v, device))
            release()
    return table


def batches(args: argparse.Namespace, device: torch.device) -> Table:
    note = (
        f"The training step above, its batch doubled from {args.batch} until torch.OutOfMemoryError or "
        f"--max-batch {args.max_batch}."
    )
    table = Table("Largest training batch", ["network, variant", "clips"], note)
    for backbone in args.backbones:
        for variant in VARIANTS:
            if variant.compiled:
                table.skip(label(backbone, variant), "not searched: each batch size compiles anew")
            else:
                build = partial(stepper, backbone, variant, args.frames, args.size, device)
                table.add(
                    label(backbone, variant), lambda build=build: [largest_batch(build(), args.batch, args.max_batch)]
                )
            release()
    return table
