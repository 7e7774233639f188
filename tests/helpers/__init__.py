"""What the tests share: configs, generated videos and datasets, random weights, a SLURM cluster, Chromium."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository
