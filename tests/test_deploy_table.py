"""experiments/deploy/table.py at its tiny size: every row is there, with sane numbers or the reason it has none."""

import re

import pytest

from experiments.deploy.report import COLUMNS, ORDER
from tests.helpers.scripts import run_forked

MODELS = ("default (TSM-ResNet10-T x0.5)", "TSM-MobileNetV2 x1.0")


@pytest.mark.slow
def test_tiny_table_has_every_row_with_sane_numbers(tmp_path):
    run_forked("experiments.deploy.table", ["--tiny", "--out", tmp_path], timeout=600)
    text = (tmp_path / "results_tiny.md").read_text()
    assert not (tmp_path / "results.md").exists() and (tmp_path / "deploy_tiny.png").stat().st_size > 0
    assert COLUMNS in text and "Load average" in text and "ai-edge-litert" in text
    lines = [line.strip("|").split("|") for line in text.splitlines() if line.startswith("| ")]
    rows = {tuple(cell.strip() for cell in cells[:3]): [cell.strip() for cell in cells[3:]] for cells in lines}
    for model in MODELS:
        for runtime, precision in ORDER:
            median, p95, ratio, mb, agreement, note = rows[model, runtime, precision]
            if runtime in ("TVM", "TVM tuned", "onnxruntime-web"):  # skipped at --tiny, with the reason written
                assert median == "-" and note.startswith("skipped at --tiny"), note
                continue
            assert 0 < float(median) <= float(p95) and 0.2 < float(ratio) < 20 and float(mb) > 0.1
            assert 0 <= float(agreement) <= 1
            if precision == "fp32":
                assert float(agreement) == 1.0
        assert re.search(rf"- {re.escape(model)}: fastest \S+ \S+ [\d.]+ ms", text)
