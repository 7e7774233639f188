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
    assert "only a full-size CUDA run writes experiments/gpu/results.md" in capsys.readouterr().err
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert parse([]).out == RESULTS and parse(["--tiny"]).out is None
    assert parse(["--parts", "stream", "step", "loader", "runs"]).out == RESULTS
    # rerunning some parts keeps the other parts' figures in results.md
    assert parse(["--parts", "runs", "stream"]).out == RESULTS.with_name("results_runs_stream.md")
    with pytest.raises(SystemExit):
        parse(["--tiny", "--out", "experiments/gpu/results.md"])


def test_the_batch_search_keeps_what_fitted_when_a_larger_batch_fails_otherwise():
    from experiments.gpu.step import largest_batch

    def at(limit: int, error: Exception):
        def build(batch: int):
            def step():
                if batch > limit:
                    raise error

            return step

        return build

    assert largest_batch(at(8, torch.OutOfMemoryError("CUDA out of memory")), 2, 64) == "8 (16 ran out of memory)"
    assert largest_batch(at(8, RuntimeError("cuDNN error")), 2, 64) == "8 (16 failed: RuntimeError)"
    assert largest_batch(at(1, torch.OutOfMemoryError("CUDA out of memory")), 2, 64) == "< 2 (2 ran out of memory)"
    assert largest_batch(at(99, RuntimeError("never")), 2, 8) == ">= 8 (--max-batch 8)"


def test_the_ddp_run_says_why_it_cannot_run_inside_a_slurm_job(monkeypatch):
    from experiments.gpu.runs import ddp_missing

    nccl = [] if torch.distributed.is_nccl_available() else ["this torch has no NCCL"]
    monkeypatch.delenv("SLURM_NTASKS", raising=False)
    assert ddp_missing(1) == ["1 GPUs, DDP over NCCL needs 2 or more", *nccl] and ddp_missing(2) == nccl
    monkeypatch.setenv("SLURM_NTASKS", "1")
    slurm = "inside a SLURM job Lightning waits for srun's processes: run the check outside sbatch"
    assert ddp_missing(2) == [*nccl, slurm]
