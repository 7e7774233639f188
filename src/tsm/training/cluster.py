"""Cluster helpers: SLURM detection without Lightning's own requeue, W&B sweep groups.

Who requeues: submitit (``hydra/launcher=slurm``) catches USR2 before the time limit, requeues the
job and resubmits the same Hydra job; Lightning's requeue (USR1) is configured off. The requeued
job finds its run directory again (the sweep directory is fixed at submission, a plain run's is
named by ``SLURM_JOB_ID``) and resumes from its newest readable checkpoint there (:mod:`tsm.training.resume`).
"""

from __future__ import annotations

from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, open_dict
from pytorch_lightning.plugins.environments import SLURMEnvironment


def cluster_plugins(auto_requeue: bool = False) -> list[SLURMEnvironment]:
    """Inside a SLURM job step: Lightning's SLURM environment (one process per task, none spawned),
    with its own requeue on or off; elsewhere no plugin, and Lightning launches the processes."""
    if SLURMEnvironment.detect():
        return [SLURMEnvironment(auto_requeue=auto_requeue)]
    return []


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
            wandb.group = f"{cfg.task_name}-{Path(hydra_cfg.sweep.dir).name}"
        wandb.name = f"{cfg.task_name}-{hydra_cfg.job.num}"
