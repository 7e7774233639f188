"""Part "runs": ``python src/train.py debug=fdr`` (fast_dev_run) on one device, and under DDP over NCCL on
every GPU (``trainer=ddp``)."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist

from experiments.common import run_train
from experiments.gpu.loader import data_overrides
from experiments.gpu.table import Table


def fast_dev_run(overrides: list[str], run_dir: Path) -> list[str]:
    start = time.perf_counter()
    metrics = run_train(["debug=fdr", *overrides], run_dir, own_interpreter=True)
    return [f"{time.perf_counter() - start:.0f}", f"{metrics['train/loss']:.3f}", f"{metrics['val/loss']:.3f}"]


def ddp_missing(gpus: int) -> list[str]:
    """Why the DDP run cannot run here (empty when it can)."""
    missing = [f"{gpus} GPUs, DDP over NCCL needs 2 or more"] if gpus < 2 else []
    missing += [] if dist.is_nccl_available() else ["this torch has no NCCL"]
    if "SLURM_NTASKS" in os.environ:  # Lightning then expects SLURM to have started one process per device
        missing.append("inside a SLURM job Lightning waits for srun's processes: run the check outside sbatch")
    return missing


def section(args: argparse.Namespace, device: torch.device, workdir: Path) -> Table:
    note = (
        f"One training, validation and test batch of the default model over `{args.backbones[0]}` on the "
        "loader's synthetic clips, each run a new `python src/train.py` process (experiments.common.run_train), "
        "in bf16-mixed on CUDA."
    )
    table = Table("fast_dev_run", ["run", "wall (s)", "train/loss", "val/loss"], note)
    common = [*data_overrides(args), f"model.backbone={args.backbones[0]}"]
    one = ["trainer=gpu"] if device.type == "cuda" else ["trainer.accelerator=cpu"]
    table.add(f"1 device ({device.type})", lambda: fast_dev_run([*common, *one], workdir / "fdr_one"))
    gpus = torch.cuda.device_count()
    missing = ddp_missing(gpus)
    if missing:
        table.skip("DDP over NCCL (trainer=ddp)", "; ".join(missing))
    else:
        ddp = [*common, "trainer=ddp", f"trainer.devices={gpus}", "trainer.accelerator=gpu"]
        ddp += ["trainer.precision=bf16-mixed"]  # trainer=gpu's, so that the two rows' losses compare
        table.add(f"DDP over NCCL, {gpus} GPUs (trainer=ddp)", lambda: fast_dev_run(ddp, workdir / "fdr_ddp"))
    return table
