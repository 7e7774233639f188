"""Shared pieces of the studies in experiments/: launch training runs, gather their metrics.

Each run is ``python src/train.py`` with overrides and its own ``hydra.run.dir``; a run whose
``metrics.json`` exists is not run again, so a study can be resumed or re-reported cheaply.
"""

from __future__ import annotations

import csv
import json
import platform
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
# Quiet, file-only logging for study runs; the W&B dashboard is for interactive work.
QUIET = ["logger=csv", "callbacks.progress_bar=null", "callbacks.model_summary=null"]


def run_train(overrides: list[str], run_dir: Path) -> dict[str, float]:
    """Train with ``overrides`` into ``run_dir`` (skipped when it already has metrics.json)."""
    metrics_file = run_dir / "metrics.json"
    if not metrics_file.is_file():
        command = [sys.executable, str(ROOT / "src" / "train.py"), *QUIET, *overrides, f"hydra.run.dir={run_dir}"]
        subprocess.run(command, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return json.loads(metrics_file.read_text())


def epoch_curve(run_dir: Path, key: str = "val/acc") -> list[float]:
    """``key`` per epoch from the run's CSV log."""
    with open(next((run_dir / "csv").glob("version_*/metrics.csv"))) as file:
        return [float(r[key]) for r in csv.DictReader(file) if r.get(key)]


def machine() -> str:
    return f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
