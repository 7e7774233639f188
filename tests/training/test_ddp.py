"""DDP on the CPU: the default configuration runs under two gloo processes, two processes reach one
process's metrics, and evaluation counts every video once."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from torch.utils.data import DistributedSampler

from tests.helpers import ROOT
from tests.helpers.config import TINY
from tsm.data.distributed import UnpaddedDistributedSampler

# one xdist worker runs the tests that start several processes each (SLURM daemons, DDP ranks, sweeps)
pytestmark = pytest.mark.xdist_group("processes")

VIDEOS = 5  # validation and test videos: odd, so padding two ranks to equal shares would repeat one
# Training that does not depend on how the global batch is split: one step per epoch over the whole
# train set, frames fixed (as many as segments, no augmentation), no dropout, and LayerNorm (ConvNeXt):
# BatchNorm statistics of one batch of 4 clips differ from those of two batches of 2.
SAME_STEPS = [
    *TINY,
    "data.source.sizes.train=4",
    f"data.source.sizes.val={VIDEOS}",
    f"data.source.sizes.test={VIDEOS}",
    "data.source.num_frames=4",
    "data.source.frame_size=32",
    "data.augment.scales=[1.0]",
    "data.augment.max_distort=0",
    "data.augment.flip=false",
    "data.num_workers=0",
    "model.backbone=convnext_atto",
    "model/shift=none",
    "model.dropout=0",
    "trainer.max_epochs=2",
    "+trainer.enable_progress_bar=false",
    "logger=csv",
]


def run_script(run_dir: Path, *overrides: str) -> tuple[dict[str, float], str]:
    """``src/train.py`` with these overrides in a subprocess (as Lightning's DDP launcher needs); its
    metrics and output."""
    command = [sys.executable, str(ROOT / "src" / "train.py"), *overrides, f"hydra.run.dir={run_dir}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # idle-spinning OpenMP threads slow a busy 2-core box tenfold
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-5000:]
    return json.loads((run_dir / "metrics.json").read_text()), output


def run_train(run_dir: Path, *overrides: str) -> tuple[dict[str, float], str]:
    """``src/train.py`` with the training that does not depend on the split of the global batch."""
    return run_script(run_dir, *SAME_STEPS, *overrides)


def test_unpadded_sampler_gives_each_index_to_one_rank():
    data = list(range(VIDEOS))
    shards = [list(UnpaddedDistributedSampler(data, num_replicas=2, rank=rank)) for rank in range(2)]
    assert shards == [[0, 2, 4], [1, 3]]
    assert [len(UnpaddedDistributedSampler(data, num_replicas=2, rank=rank)) for rank in range(2)] == [3, 2]
    padded = [i for rank in range(2) for i in DistributedSampler(data, num_replicas=2, rank=rank, shuffle=False)]
    assert sorted(padded) == [0, 0, 1, 2, 3, 4]  # what it replaces: video 0 counted twice


@pytest.mark.slow
def test_two_gloo_processes_match_one_process(tmp_path):
    one, _ = run_train(tmp_path / "one", "data.batch_size=4")
    two, output = run_train(tmp_path / "two", "trainer=ddp", "trainer.devices=2", "data.batch_size=2")
    assert "MEMBER: 2/2" in output and "distributed_backend=gloo" in output
    # the same global batch, so the same scaled learning rate and the same training
    assert two["lr-SGD/weights"] == pytest.approx(one["lr-SGD/weights"])
    assert two["train/loss"] == pytest.approx(one["train/loss"], rel=1e-4)
    for split in ("val", "test"):
        # a mean over clips (weighted by batch size), so uneven batches per process do not shift it
        assert two[f"{split}/loss"] == pytest.approx(one[f"{split}/loss"], rel=1e-4)
        for name in ("acc", "acc_top5", "mean_class_acc"):
            assert two[f"{split}/{name}"] == pytest.approx(one[f"{split}/{name}"], abs=1e-6), f"{split}/{name}"
        for name in ("acc", "acc_top5"):  # counts out of VIDEOS: a repeated video would make them k/6
            count = two[f"{split}/{name}"] * VIDEOS
            assert count == pytest.approx(round(count), abs=1e-4), f"{split}/{name}"
    assert 0 < two["val/acc_top5"] < 1  # k/5 with 0 < k < 5 is no k'/6: padding would have shown


# The default configuration, as users check a multi-GPU setup: TSM-MobileNetV2 (BatchNorm, shift),
# W&B offline and CSV loggers, the Rich progress bar and model summary, checkpointing on val/acc.
# Only the data are smaller. The Rich bar's hooks run on rank 0 alone: a collective there (a metric
# synced when first read) put the gloo processes out of step ("Received data size doesn't match").
DEFAULT_DDP = ["trainer=ddp", "trainer.devices=2", "trainer.accelerator=cpu", "data.batch_size=2"]
UNEVEN = {"val": 7, "test": 5}  # videos: 4 + 3 and 3 + 2 per process, 2 + 2 and 2 + 1 batches


@pytest.mark.slow
@pytest.mark.parametrize("run", ["fast_dev_run", "epochs"])
def test_default_config_runs_under_ddp(tmp_path, run):
    sizes = ["data.source.sizes.train=8", *(f"data.source.sizes.{split}={n}" for split, n in UNEVEN.items())]
    steps = ["debug=fdr"] if run == "fast_dev_run" else ["trainer.max_epochs=2"]
    metrics, output = run_script(tmp_path, *DEFAULT_DDP, *sizes, *steps)
    assert "MEMBER: 2/2" in output and "distributed_backend=gloo" in output
    assert 0 <= metrics["test/acc"] <= 1 and metrics["test/loss"] > 0
    if run == "epochs":  # fast_dev_run swaps the loggers for a dummy and saves no checkpoint
        assert list((tmp_path / "wandb").glob("offline-run-*")), "W&B offline run missing"
        assert list((tmp_path / "csv").glob("version_*/metrics.csv")), "CSV log missing"
        assert (tmp_path / "checkpoints" / "last.ckpt").exists()
        assert metrics["val/acc_best"] >= metrics["val/acc"]
        for split, videos in UNEVEN.items():  # every video counted once: counts out of 7 and 5
            for name in ("acc", "acc_top5"):
                count = metrics[f"{split}/{name}"] * videos
                assert count == pytest.approx(round(count), abs=1e-4), f"{split}/{name}"


def test_unpadded_sampler_refuses_fewer_samples_than_processes():
    with pytest.raises(ValueError, match="at least one"):
        UnpaddedDistributedSampler(list(range(1)), num_replicas=2, rank=0)
    assert len(UnpaddedDistributedSampler([], num_replicas=2, rank=1)) == 0
