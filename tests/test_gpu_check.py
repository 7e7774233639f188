"""experiments/gpu/check.py on the CPU at a tiny size: every part it can run runs, every GPU part is skipped with
its reason, and no file claims GPU figures."""

import pytest
import torch

from tests.helpers import ROOT
from tests.helpers.scripts import run_python

RESULTS = ROOT / "experiments" / "gpu" / "results.md"

# No GPU even on a GPU machine; one OpenMP thread, since idle-spinning ones slow a busy 2-core box tenfold.
CPU = {"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
SKIPPED = (
    "Training step | CUDA timings: no CUDA device",
    "Training step | TSM over resnet10t_050, bf16 + channels_last, torch.compile: torch.compile takes minutes",
    "fast_dev_run | DDP over NCCL (trainer=ddp): 0 GPUs",
    "Streaming per frame | onnxruntime CUDAExecutionProvider: no CUDA device",
    "Streaming per frame | TensorRT (torch-tensorrt): no CUDA device",
)
MEASURED = (
    "| TSM over resnet10t_050, fp32 | ",
    "| TSM over resnet10t_050, bf16 + channels_last | ",  # in both step tables
    "| 1 | ",  # loader workers
    "| 1 device (cpu) | ",
    "| onnxruntime CPUExecutionProvider (tsm.open_stream) | ",
)


def modified(path) -> int | None:
    return path.stat().st_mtime_ns if path.exists() else None


@pytest.mark.slow
def test_tiny_cpu_run_skips_each_gpu_part_and_says_it_ran_on_the_cpu(tmp_path):
    before = modified(RESULTS)
    out = tmp_path / "check.md"
    run = run_python(["-m", "experiments.gpu.check", "--tiny", "--out", out], env=CPU)
    skipped = [line for line in run.stdout.splitlines() if line.startswith("skipped: ")]
    for part in SKIPPED:
        assert any(line.startswith(f"skipped: {part}") for line in skipped), part
    text = out.read_text()
    assert text.startswith("# GPU check: a CPU run, no GPU figures\n")
    assert "No CUDA device: every figure below was measured on the CPU, and none is a GPU's" in text
    assert "--tiny" in text and "failed:" not in text
    for row in MEASURED:
        lines = [line for line in text.splitlines() if line.startswith(row)]
        assert lines and not [line for line in lines if "skipped" in line], row
    assert modified(RESULTS) == before  # the GPU figures' file is not touched


def test_only_a_full_size_cuda_run_writes_the_gpu_results(monkeypatch, capsys):
    from experiments.gpu.check import parse

    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert parse([]).out is None and parse(["--tiny"]).out is None
    with pytest.raises(SystemExit):
        parse(["--out", "experiments/gpu/results.md"])
    assert "a CPU run never writes experiments/gpu/results.md" in capsys.readouterr().err
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert parse([]).out == RESULTS and parse(["--tiny"]).out is None
