"""Bad data under ``data.on_error``: raise names the file and reason; skip drops, counts and logs."""

import json
import re

import hydra
import pytest
import pytorch_lightning as pl
import torch
from conftest import compose_train
from fixtures_video import FDR, frame_numbers, make_jester, make_sthv2, run_fast_dev

from tsm.data.datamodule import SKIPPED_FILE, ClipDataModule
from tsm.data.dataset import collate_skipping
from tsm.data.datasets import Jester, SomethingV2
from tsm.data.decode import DataError
from tsm.training.task import train

UNREADABLE = "truncated video|cannot open video"  # how much of the header survives decides which


def truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    return path


def empty(folder):
    for frame in folder.iterdir():
        frame.unlink()
    return folder


def datamodule(source, num_classes, tmp_path, on_error, **kw):
    sizes = {"num_segments": 4, "crop_size": 16, "scale_size": 16, "batch_size": 2, **kw}
    return ClipDataModule(source, num_classes, on_error=on_error, log_dir=str(tmp_path / "run"), **sizes)


@pytest.fixture
def broken_sthv2(tmp_path):
    """Something V2 whose validation video 21 (second of two) is truncated."""
    root = make_sthv2(tmp_path / "sthv2")
    truncate(root / "20bn-something-something-v2" / "21.webm")
    return root


@pytest.fixture
def broken_jester(tmp_path):
    """Jester whose validation clip 6 (second of two) has an empty frame folder."""
    root = make_jester(tmp_path / "jester")
    empty(root / "20bn-jester-v1" / "6")
    return root


def source_of(root):
    if (root / "jester-v1-labels.csv").exists():
        return (lambda split: Jester(root, split, frames=True)), 27
    return (lambda split: SomethingV2(root, split)), 174


@pytest.mark.parametrize(("fixture", "reason"), [("broken_sthv2", UNREADABLE), ("broken_jester", "empty frame")])
def test_raise_names_the_file_and_the_reason(fixture, reason, request, tmp_path):
    root = request.getfixturevalue(fixture)
    data = datamodule(*source_of(root), tmp_path, "raise")
    data.dataset("val")[0]  # the good one
    with pytest.raises(DataError, match=reason) as error:
        data.dataset("val")[1]
    assert error.value.path.endswith(("21.webm", "20bn-jester-v1/6"))


@pytest.mark.parametrize(("fixture", "bad"), [("broken_sthv2", "21.webm"), ("broken_jester", "20bn-jester-v1/6")])
def test_skip_drops_the_sample_and_logs_it(fixture, bad, request, tmp_path):
    root = request.getfixturevalue(fixture)
    data = datamodule(*source_of(root), tmp_path, "skip", num_workers=1)
    data.dataset("val")[0]  # read in this process first: the forked worker must not inherit a stuck decoder state
    batches = [data.on_before_batch_transfer(batch, 0) for batch in data.val_dataloader()]
    assert len(batches) == 1 and len(batches[0]) == 3
    clips, labels, indices = batches[0]
    assert indices.tolist() == [0] and clips.shape[0] == labels.shape[0] == 1  # dropped, not replaced
    assert data.skipped["val"] == 1
    (line,) = (tmp_path / "run" / SKIPPED_FILE).read_text().splitlines()
    split, path, reason = line.split("\t")
    assert split == "val" and path.endswith(bad) and reason


def test_a_batch_with_no_readable_sample_becomes_empty_and_is_recorded(broken_sthv2, tmp_path):
    data = datamodule(*source_of(broken_sthv2), tmp_path, "skip")
    item = data.dataset("val")[1]
    batch = collate_skipping([item, item], split="val")
    assert data.on_before_batch_transfer(batch, 0) == () and data.skipped["val"] == 2
    assert len((tmp_path / "run" / SKIPPED_FILE).read_text().splitlines()) == 2


def test_unknown_label_at_parse_time(tmp_path):
    root = make_jester(tmp_path / "jester")
    csv = root / "jester-v1-validation.csv"
    csv.write_text(csv.read_text() + "9;Flying Kites\n")
    with pytest.raises(DataError, match=r"jester-v1-validation.csv:3: label 'Flying Kites' is not a class"):
        Jester(root, "val", frames=True)
    source = Jester(root, "val", frames=True, on_error="skip")
    assert len(source) == 2 and source.skipped == [(f"{csv}:3", "label 'Flying Kites' is not a class of jester")]
    data = datamodule(lambda split: Jester(root, split, frames=True, on_error="skip"), 27, tmp_path, "skip")
    data.dataset("val")
    assert "jester-v1-validation.csv:3\tlabel 'Flying Kites'" in (tmp_path / "run" / SKIPPED_FILE).read_text()


def test_fewer_frames_than_segments_repeat_frames(tmp_path):
    root = make_jester(tmp_path / "jester")
    for k in range(4, 13):
        (root / "20bn-jester-v1" / "5" / f"{k:05d}.jpg").unlink()
    source = Jester(root, "val", frames=True)
    data = datamodule(lambda split: source, 27, tmp_path, "raise", num_segments=8)
    indices = data.sampler(source.num_frames(0), False, None)
    assert source.num_frames(0) == 3 and indices == [0, 0, 0, 1, 1, 2, 2, 2]
    assert frame_numbers(source.read(0, indices)) == indices
    assert data.dataset("val")[0][0].shape[0] == 8


def test_training_run_skips_counts_and_reports(broken_sthv2, tmp_path):
    run = tmp_path / "run"
    metrics = run_fast_dev("sthv2", broken_sthv2, run, "data.on_error=skip")
    assert metrics["val/skipped"] == 1 and metrics["test/skipped"] == 1 and metrics["train/skipped"] == 0
    lines = (run / SKIPPED_FILE).read_text().splitlines()
    assert [line.split("\t")[0] for line in lines] == ["val", "test"]
    assert all(re.search(rf"21.webm\t({UNREADABLE})", line) for line in lines)
    assert json.loads((run / "metrics.json").read_text()) == metrics


def test_training_run_stops_under_raise(broken_sthv2, tmp_path):
    with pytest.raises(DataError, match=rf"21.webm: ({UNREADABLE})"):
        run_fast_dev("sthv2", broken_sthv2, tmp_path / "run")


def test_skip_run_with_batch_size_one_survives_unreadable_batches(tmp_path):
    """Every training clip unreadable, one of two validation/test clips too, one clip per batch: training
    finishes, every skipped batch is counted, and skipped steps leave the weights exactly as they were."""
    root = make_jester(tmp_path / "jester")
    for clip in ("1", "2", "3", "4", "6"):
        empty(root / "20bn-jester-v1" / clip)
    fdr_free = [o for o in FDR if o != "debug=fdr"]
    overrides = ["data=jester", f"data.root={root}", *fdr_free, "data.batch_size=1", "data.num_workers=0"]
    overrides += ["data.on_error=skip", "trainer.max_epochs=1"]
    cfg = compose_train(overrides, tmp_path / "run")
    metrics = train(cfg)
    assert metrics["train/skipped"] == 4 and metrics["val/skipped"] == 1 and metrics["test/skipped"] == 1
    assert metrics["test/acc"] in (0.0, 1.0)  # the one readable test clip was scored
    pl.seed_everything(cfg.seed, workers=True)
    initial = hydra.utils.instantiate(cfg.model).net.state_dict()
    saved = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert all(torch.equal(saved[f"net.{k}"], v) for k, v in initial.items())
