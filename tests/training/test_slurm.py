"""``hydra/launcher=slurm`` on a real one-node SLURM cluster: a DDP sweep, and a requeued job that resumes."""

import csv
import json
import os
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch

from tests.helpers import ROOT
from tests.helpers.config import TINY, hydra_run_dir
from tests.helpers.slurm import SlurmCluster, start_cluster, unavailable_reason

# one xdist worker runs the tests that start several processes each (SLURM daemons, DDP ranks, sweeps)
pytestmark = pytest.mark.xdist_group("processes")

# two CPU tasks per job (DDP over gloo), resources this machine has, W&B off to keep the jobs short
ON_SLURM = [
    *TINY,
    "hydra/launcher=slurm",
    "trainer=ddp",
    "trainer.devices=2",
    "+trainer.enable_progress_bar=false",
    "data.num_workers=0",
    "logger=csv",
    "hydra.launcher.gpus_per_node=null",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=1",
    "hydra.launcher.timeout_min=10",
]


def test_run_dir_is_named_by_the_slurm_job_id(monkeypatch):
    """A requeued job (same job id) and every task of it find one run directory; elsewhere a timestamp."""
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    assert hydra_run_dir() == "logs/train/runs/4242"
    monkeypatch.delenv("SLURM_JOB_ID")
    assert hydra_run_dir() != "logs/train/runs/4242"


def test_processes_per_job_counts_devices_and_nodes():
    from omegaconf import OmegaConf

    from tsm.training.cluster import processes_per_job

    def count(**trainer):
        return processes_per_job(OmegaConf.create(trainer))

    assert count(devices=1) == 1 and count(devices=2, num_nodes=3) == 6 and count(devices=[0, 1]) == 2
    assert count(devices="auto", accelerator="cpu") == 1 and count(devices=-1, accelerator="cpu", num_nodes=2) == 2
    assert count(devices="auto", accelerator="gpu") == max(torch.cuda.device_count(), 1)


@pytest.fixture(scope="module")
def slurm(tmp_path_factory) -> SlurmCluster:
    reason = unavailable_reason()
    if reason:
        if os.environ.get("CI") and os.geteuid() == 0 and shutil.which("apt-get"):
            pytest.fail(f"CI can install SLURM and must run these tests: {reason}")
        warnings.warn(f"SLURM tests skipped: {reason}", stacklevel=1)  # shown without -rs
        pytest.skip(reason)
    cluster = start_cluster(tmp_path_factory.mktemp("slurm"))
    try:
        yield cluster
    finally:
        cluster.stop()


def multirun(slurm: SlurmCluster, sweep_dir: Path, *overrides: str) -> subprocess.Popen:
    """Submit ``src/train.py -m`` through submitit; the submitting process waits for its jobs.

    Its output goes to ``submit.log`` beside ``sweep_dir``; the jobs find ``tests/`` on PYTHONPATH.
    """
    command = [sys.executable, str(ROOT / "src" / "train.py"), "-m", *ON_SLURM, *overrides]
    command.append(f"hydra.sweep.dir={sweep_dir}")
    env = {**slurm.env, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    with open(sweep_dir.parent / "submit.log", "w") as log:
        return subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def finish(proc: subprocess.Popen, sweep_dir: Path, timeout: float) -> str:
    """Wait for the submitting process (killed by pid if it overruns); its output."""
    try:
        proc.wait(timeout=timeout)
    finally:
        kill(proc)
    return (sweep_dir.parent / "submit.log").read_text()


def kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def task_logs(sweep_dir: Path) -> list[str]:
    """What each SLURM task of the sweep wrote (stdout and stderr), over all its attempts."""
    outs = sorted(sweep_dir.glob(".submitit/*/*_log.out"))
    return [path.read_text() + path.with_suffix(".err").read_text() for path in outs]


@pytest.mark.slow
def test_sweep_of_two_ddp_jobs(slurm, tmp_path):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    output = finish(multirun(slurm, sweep, "model.shift.fold_div=4,8"), sweep, timeout=400)
    for job in ("0", "1"):
        assert "val/acc_best" in json.loads((sweep / job / "metrics.json").read_text()), output[-5000:]
    logs = task_logs(sweep)
    assert len(logs) == 4  # two jobs of two SLURM tasks each
    for rank in (0, 1):  # SLURM started both ranks of each job; Lightning spawned none
        assert sum(f"GLOBAL_RANK: {rank}, MEMBER: {rank + 1}/2" in log for log in logs) == 2


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.5)


@pytest.mark.slow
def test_requeued_job_resumes_from_its_checkpoint(slurm, tmp_path):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    proc = multirun(
        slurm,
        sweep,
        "trainer.max_epochs=2",
        "test=false",
        "+callbacks.pace._target_=tests.helpers.slurm.SlowFirstAttempt",
        "+callbacks.pace.seconds=120",
    )
    last = sweep / "0" / "checkpoints" / "last.ckpt"
    try:
        wait_for(lambda: last.is_file() or proc.poll() is not None, 300, "no checkpoint after the first epoch")
        assert proc.poll() is None, "the sweep ended before the requeue"
        (job_id,) = slurm.run("squeue", "-h", "-o", "%i").split()
        slurm.run("scontrol", "requeue", job_id)
        wait_for(lambda: "PENDING" in slurm.run("squeue", "-h", "-o", "%T"), 60, "job not requeued")
        slurm.run("scontrol", "update", f"JobId={job_id}", "StartTime=now")  # SLURM would wait two minutes
    except BaseException:
        kill(proc)
        raise
    output = finish(proc, sweep, timeout=400)
    assert (sweep / "0" / "metrics.json").is_file(), output[-5000:]
    assert [p.name for p in sweep.iterdir() if p.is_dir() and p.name != ".submitit"] == ["0"]  # one run dir
    state = torch.load(last, map_location="cpu", weights_only=False)
    # saved at the end of the second epoch, which Lightning numbers 1; 8 clips, global batch 2 x 2
    assert state["epoch"] == 1 and state["global_step"] == 2 * (8 // 4)
    assert state["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"] == 2
    assert any(f"Restoring states from the checkpoint path at {last}" in log for log in task_logs(sweep))
    attempts = sorted((sweep / "0" / "csv").glob("version_*/metrics.csv"))  # one CSV log per attempt
    assert [validated_epochs(path) for path in attempts] == [{0}, {1}]  # the requeued job went on with epoch 1


def validated_epochs(metrics_csv: Path) -> set[int]:
    """The epochs a CSV log holds validation results of."""
    with open(metrics_csv) as file:
        return {int(row["epoch"]) for row in csv.DictReader(file) if row["val/acc"]}
