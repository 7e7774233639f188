"""DDP on this CPU: training throughput with 1 and 2 gloo processes, and one ResNet-50-sized all-reduce.

    python -m experiments.scaling.ddp_cpu [--steps 8] [--clips 4] [--size 64]

Weak scaling, as on a cluster: every process is one device (one core, one thread) and trains ``--clips``
clips per step (the default model, TSM over ResNet10-T x0.5 with the in-place shift, 8 segments) with
``torch.nn.parallel.DistributedDataParallel`` over gloo. The speed-up is global clips/s over one process's;
the efficiency is the speed-up over the number of processes. The all-reduce is the gradient traffic of
one step of TSM-ResNet50 (24M float32 values, 94 MiB), timed between the processes.
"""

from __future__ import annotations

import argparse
import os
import socket
import time
from contextlib import nullcontext

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from tsm.models import build_recognizer

RESNET50_TSM_PARAMS = 24_000_000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def timed(fn, repeats: int) -> float:
    """Seconds per call, after one warm-up call, all ranks starting together."""
    fn()
    dist.barrier()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    dist.barrier()
    return (time.perf_counter() - start) / repeats


def worker(rank: int, world: int, port: int, args: argparse.Namespace, results: mp.Queue) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    torch.manual_seed(0)
    model = DistributedDataParallel(build_recognizer("resnet10t_050", 9, 8, shift={"place": "inplace"}, dropout=0.0))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    clips = torch.randn(args.clips, 8, 3, args.size, args.size)
    labels = torch.randint(9, (args.clips,))

    def step(sync: bool = True) -> None:
        optimizer.zero_grad()
        with nullcontext() if sync else model.no_sync():
            nn.functional.cross_entropy(model(clips), labels).backward()  # DDP all-reduces the gradients here
        optimizer.step()

    step_s = timed(step, args.steps)
    local_s = timed(lambda: step(sync=False), args.steps)
    gradients = torch.zeros(RESNET50_TSM_PARAMS)
    allreduce_s = timed(lambda: dist.all_reduce(gradients), 3)
    if rank == 0:
        results.put((step_s, local_s, allreduce_s))
    dist.destroy_process_group()


def measure(world: int, args: argparse.Namespace) -> tuple[float, float, float]:
    """Seconds per training step, per step without the gradient all-reduce, per 24M-value all-reduce."""
    results = mp.get_context("spawn").SimpleQueue()
    mp.spawn(worker, args=(world, free_port(), args, results), nprocs=world)
    return results.get()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8, help="timed training steps")
    parser.add_argument("--clips", type=int, default=4, help="clips per process per step")
    parser.add_argument("--size", type=int, default=64, help="frame side in pixels")
    args = parser.parse_args()
    one_s, _, _ = measure(1, args)
    two_s, local_s, allreduce_s = measure(2, args)
    one_rate, two_rate = args.clips / one_s, 2 * args.clips / two_s
    print(f"cores: {os.cpu_count()}, clips per process: {args.clips}, {args.size}x{args.size}, 8 segments")
    print(f"1 process  : {one_s:.3f} s/step, {one_rate:.1f} clips/s")
    print(f"2 processes: {two_s:.3f} s/step, {two_rate:.1f} clips/s ({local_s:.3f} s/step without the all-reduce)")
    print(f"speed-up {two_rate / one_rate:.2f}x, efficiency {two_rate / one_rate / 2:.0%}")
    megabytes = RESNET50_TSM_PARAMS * 4 / 2**20
    print(f"all-reduce of {megabytes:.0f} MiB (24M float32) over 2 gloo processes: {allreduce_s:.3f} s")


if __name__ == "__main__":
    main()
