"""Cluster helpers: SLURM detection without Lightning's own requeue, W&B sweep groups, sweeps of DDP jobs.

Who requeues: submitit (``hydra/launcher=slurm``) catches USR2 before the time limit, requeues the
job and resubmits the same Hydra job; Lightning's requeue (USR1) is configured off. The requeued
job finds its run directory again (the sweep directory is fixed at submission, a plain run's is
named by ``SLURM_JOB_ID``) and resumes from its newest readable checkpoint there (:mod:`tsm.training.resume`).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, ListConfig, open_dict
from pytorch_lightning.plugins.environments import SLURMEnvironment


def cluster_plugins(auto_requeue: bool = False) -> list[SLURMEnvironment]:
    """Inside a SLURM job step: Lightning's SLURM environment (one process per task, none spawned),
    with its own requeue on or off; elsewhere no plugin, and Lightning launches the processes."""
    if SLURMEnvironment.detect():
        return [SLURMEnvironment(auto_requeue=auto_requeue)]
    return []


def sweep_group(task_name: str, sweep_dir: str) -> str:
    """The W&B group of a sweep's jobs: the task, the sweep directory's name and a digest of its absolute path,
    so that two sweeps in directories of one name (``logs/a/sweep``, ``logs/b/sweep``) do not share a group."""
    path = Path(sweep_dir).resolve()
    return f"{task_name}-{path.name}-{hashlib.sha1(str(path).encode()).hexdigest()[:6]}"


def group_sweep_runs(cfg: DictConfig) -> None:
    """In a Hydra multirun, put every job's W&B run in one group named after the sweep (unless set)."""
    wandb = (cfg.get("logger") or {}).get("wandb")
    if wandb is None or not HydraConfig.initialized():
        return
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return
    with open_dict(wandb):
        if wandb.get("group") is None:
            wandb.group = sweep_group(cfg.task_name, hydra_cfg.sweep.dir)
        wandb.name = f"{cfg.task_name}-{hydra_cfg.job.num}"


def processes_per_job(trainer: DictConfig) -> int:
    """How many processes Lightning runs a job in: ``trainer.devices`` (a count, a list, or ``auto``/-1: every
    GPU) times ``trainer.num_nodes``."""
    devices = trainer.get("devices", 1)
    if isinstance(devices, list | ListConfig):
        count = len(devices)
    elif str(devices) in ("auto", "-1"):
        count = torch.cuda.device_count() if trainer.get("accelerator") in ("gpu", "cuda", "auto") else 1
    else:
        count = int(devices)
    return max(count, 1) * int(trainer.get("num_nodes") or 1)


def check_sweep_launcher(cfg: DictConfig) -> None:
    """Refuse a multirun of DDP jobs through Hydra's basic launcher (outside SLURM): Lightning starts a job's
    other ranks by running this command again, and each reruns the whole sweep into a sweep directory of its
    own."""
    if not HydraConfig.initialized() or SLURMEnvironment.detect():
        return
    hydra_cfg = HydraConfig.get()
    basic = str(hydra_cfg.launcher.get("_target_", "")).endswith("BasicLauncher")
    processes = processes_per_job(cfg.trainer)
    if hydra_cfg.mode == RunMode.MULTIRUN and basic and processes > 1:
        raise ValueError(
            f"-m with trainer.devices x trainer.num_nodes = {processes} processes per job: Hydra's basic launcher "
            "cannot host DDP jobs (each rank would rerun the sweep); sweep them through hydra/launcher=slurm, or run "
            "the jobs one at a time without -m"
        )
