"""Each study's script reruns end to end at a tiny size, so the scripts cannot rot."""

import subprocess
import sys
from pathlib import Path

import pytest

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


@pytest.mark.slow
def test_kd_study_tiny(tmp_path):
    subprocess.run(
        [sys.executable, str(EXPERIMENTS / "kd" / "study.py"), "--scale", "tiny", "--out", str(tmp_path)], check=True
    )
    table = (tmp_path / "results_tiny.md").read_text()
    assert "| student + KD" in table and "| teacher TSM-MobileNetV2 x0.5" in table
    assert (tmp_path / "kd_tiny.png").stat().st_size > 0
    assert len(list((tmp_path / "runs" / "tiny").glob("*/metrics.json"))) == 7
