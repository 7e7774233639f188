"""Hydra multiruns of the train task: one directory per job, W&B groups, failures, the Optuna sweeper."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers import ROOT
from tests.helpers.config import TINY
from tsm.training.cluster import sweep_group

# one xdist worker runs the tests that start several processes each (SLURM daemons, DDP ranks, sweeps)
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("processes")]


def multirun(sweep_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    """``src/train.py -m`` with the tiny data in a subprocess, jobs under ``sweep_dir``."""
    command = [sys.executable, str(ROOT / "src" / "train.py"), "-m", *TINY, *overrides, f"hydra.sweep.dir={sweep_dir}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # idle-spinning OpenMP threads slow a busy 2-core box tenfold
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def wandb_log(job_dir: Path) -> str:
    """The debug log of the job's one offline W&B run."""
    (run,) = (job_dir / "wandb").glob("offline-run-*")
    return (run / "logs" / "debug.log").read_text()


def test_four_jobs_in_their_own_directories_one_wandb_group(tmp_path):
    sweep = tmp_path / "sweep"
    done = multirun(sweep, "model.shift.fold_div=4,8", "model.shift.place=residual,inplace")
    assert done.returncode == 0, done.stderr[-5000:]
    jobs = [sweep / str(num) for num in range(4)]
    shifts = set()
    for job in jobs:
        assert "val/acc_best" in json.loads((job / "metrics.json").read_text())
        config = yaml.safe_load((job / "config.yaml").read_text())
        shifts.add((config["model"]["shift"]["fold_div"], config["model"]["shift"]["place"]))
        assert config["logger"]["wandb"]["group"] == sweep_group("train", str(sweep))
        (run_file,) = (job / "wandb").glob("offline-run-*/run-*.wandb")
        assert sweep_group("train", str(sweep)).encode() in run_file.read_bytes()  # as W&B recorded the run
    assert shifts == {(4, "residual"), (4, "inplace"), (8, "residual"), (8, "inplace")}


def test_a_failed_job_stops_no_other_and_every_wandb_run_is_finished(tmp_path):
    sweep = tmp_path / "sweep"
    # two classes for nine-class data: job 0 fails in its first step, after W&B started
    done = multirun(sweep, "model.num_classes=2,9")
    assert done.returncode != 0 and "out of bounds" in done.stderr
    assert not (sweep / "0" / "metrics.json").exists()
    assert (sweep / "1" / "metrics.json").is_file()
    assert "got exitcode: 1" in wandb_log(sweep / "0")
    assert "got exitcode: 0" in wandb_log(sweep / "1")  # its own run: job 0's was closed


def test_sweeps_in_directories_of_one_name_get_groups_of_their_own(tmp_path):
    first, second = sweep_group("train", str(tmp_path / "a" / "sweep")), sweep_group("train", str(tmp_path / "b/sweep"))
    assert first != second and first.startswith("train-sweep-") and second.startswith("train-sweep-")
    assert sweep_group("train", str(tmp_path / "a" / "sweep")) == first  # every job (and requeue) of one sweep


def test_a_local_sweep_of_ddp_jobs_is_refused_before_any_rank_starts(tmp_path):
    """Before, each job's second rank (Lightning reruns the command to start it) reran the whole sweep into a
    sweep directory of its own, and the command exited 0."""
    sweep = tmp_path / "sweep"
    done = multirun(sweep, "trainer=ddp", "trainer.devices=2", "trainer.accelerator=cpu", "seed=1,2", "debug=fdr")
    assert done.returncode != 0 and "Hydra's basic launcher cannot host DDP jobs" in done.stderr
    assert "through hydra/launcher=slurm" in done.stderr
    assert not list(sweep.glob("*/checkpoints")) and not list(sweep.glob("*/run.json"))


def test_optuna_search_optimizes_the_returned_metric(tmp_path):
    sweep = tmp_path / "sweep"
    done = multirun(
        sweep, "hparams_search=shift_optuna", "hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=2", "logger=csv"
    )
    assert done.returncode == 0, done.stderr[-5000:]
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    values = [json.loads((sweep / str(num) / "metrics.json").read_text())["val/acc_best"] for num in range(2)]
    assert results["best_value"] == pytest.approx(max(values))
    assert set(results["best_params"]) == {"model.shift.fold_div", "model.shift.place", "model.optimizer.base_lr"}
