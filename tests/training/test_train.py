"""The train task end to end on tiny synthetic data: metrics.json, checkpoints, resume, loggers."""

import csv
import json

import pytest
import torch
from PIL import Image

from tests.helpers.config import compose_train
from tsm.training.task import train


def test_fast_dev_run_writes_metrics(tmp_path, tiny_overrides):
    cfg = compose_train(["debug=fdr", "logger=csv", *tiny_overrides], tmp_path)
    metrics = train(cfg)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved == metrics
    assert 0.0 <= saved["val/acc"] <= 1.0 and 0.0 <= saved["test/acc"] <= 1.0
    assert (tmp_path / "config.yaml").is_file()


@pytest.mark.slow
def test_two_epochs_checkpoint_resume_and_wandb_offline(tmp_path, tiny_overrides):
    first = compose_train(["trainer.max_epochs=1", *tiny_overrides], tmp_path / "a")
    metrics = train(first)
    assert {"val/acc", "val/acc_best", "test/acc"} <= set(metrics)
    last = tmp_path / "a" / "checkpoints" / "last.ckpt"
    assert last.is_file()
    assert list((tmp_path / "a" / "wandb").glob("offline-run-*")), "W&B offline run missing"
    assert "teacher" not in "".join(torch.load(last, weights_only=False)["state_dict"])

    resumed = compose_train(
        [*tiny_overrides, "trainer.max_epochs=2", f"ckpt_path={last}", "test=false"], tmp_path / "b"
    )
    train(resumed)
    state = torch.load(tmp_path / "b" / "checkpoints" / "last.ckpt", weights_only=False)
    assert state["epoch"] == 1 and state["global_step"] == 2 * (8 // 2)  # two epochs of 4 steps in all
    rows = list(csv.DictReader(open(next((tmp_path / "b" / "csv").glob("version_*/metrics.csv")))))
    assert {r["epoch"] for r in rows} - {""} == {"1"}  # the resumed run trained only the second epoch
    # the PNGs a person looks at: curves over both epochs (the first restored from the checkpoint), confusion
    history = state["tsm_history"]
    assert [(r["split"], r["epoch"]) for r in history] == [("val", 0), ("train", 0), ("val", 1), ("train", 1)]
    for png in (tmp_path / "a" / "learning_curves.png", tmp_path / "a" / "confusion_test.png"):
        assert Image.open(png).size[0] > 300
    assert (tmp_path / "b" / "learning_curves.png").is_file() and not (tmp_path / "b" / "confusion_test.png").exists()
