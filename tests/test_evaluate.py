"""The multi-view test protocol and the eval task's outputs."""

import csv
import json

import numpy as np
import pytest
import torch

from tests.helpers.config import compose_train, tiny_checkpoint
from tests.helpers.videos import make_jester
from tsm.data.sampling import FrameSampler, segment_indices
from tsm.data.transforms import crop_views
from tsm.evaluate import accuracy_metrics, check_recorded_inputs, evaluate, report, score_videos, view_classes
from tsm.training.resume import RunDirInUse


def test_one_segment_clip_is_the_centre_sampling():
    rng = np.random.default_rng(0)
    for frames in (5, 8, 37, 300):
        assert FrameSampler(8, "segment", 8).clips(frames, 1) == [segment_indices(frames, 8, False, rng)]


@pytest.mark.parametrize("mode", ["segment", "dense"])
def test_clips_spread_over_the_video_and_stay_in_bounds(mode):
    clips = FrameSampler(8, mode, 4).clips(100, 3)
    assert len(clips) == 3 and all(len(c) == 8 for c in clips)
    assert all(0 <= i < 100 for c in clips for i in c)
    assert clips[0] != clips[1] != clips[2]
    assert FrameSampler(8, mode, 4).clips(3, 2)[0][-1] < 3  # short videos repeat frames


def test_three_crops_cover_the_long_side_at_full_resolution():
    clip = torch.arange(40, dtype=torch.uint8).view(1, 1, 1, 40).expand(2, 3, 20, 40).contiguous()
    views = crop_views(clip, 3, crop_size=16, scale_size=20)
    assert [v.shape for v in views] == [(2, 3, 20, 20)] * 3
    assert views[0][0, 0, 0, 0] == 0 and views[2][0, 0, 0, -1] == 39 and views[1][0, 0, 0, 0] == 10


def test_ten_crops_are_five_and_their_flips():
    clip = torch.randint(0, 255, (2, 3, 24, 32), dtype=torch.uint8)
    views = crop_views(clip, 10, crop_size=16, scale_size=24)
    assert len(views) == 10 and views[0].shape == (2, 3, 16, 16)
    for a, b in zip(views[:5], views[5:], strict=True):
        assert torch.equal(a.flip(-1), b)
    with pytest.raises(ValueError, match="num_crops"):
        crop_views(clip, 4, 16, 24)


class FixedLogits(torch.nn.Module):
    """Returns the first pixel of each clip's first frame as logits (so views choose their scores)."""

    def forward(self, clips):
        return clips[:, 0, :, 0, 0]


@pytest.mark.parametrize("average", ["softmax", "logits"])
def test_scores_average_views(average):
    views = torch.randn(2, 4, 1, 3, 2, 2)  # 2 videos, 4 views, 1 frame, 3 classes
    loader = [(views, torch.tensor([0, 2]), torch.tensor([0, 1]))]
    scores, labels, _ = score_videos(FixedLogits(), loader, average)
    per_view = views[:, :, 0, :, 0, 0].double()
    expected = (per_view.softmax(-1) if average == "softmax" else per_view).mean(1)
    torch.testing.assert_close(scores.double(), expected, rtol=1e-6, atol=1e-6)


class Gestures:
    name, classes = "gestures", ("left", "right", "up")
    flip_label_map, no_flip_classes = {0: 1, 1: 0}, frozenset()


def test_mirrored_views_are_scored_as_the_mirror_classes():
    """Ten crops mirror five: a mirrored "left" clip is a "right" one. Before, its scores were averaged as they
    were, against the labels the data's flip map swaps in training."""
    order = view_classes(Gestures(), num_clips=2, num_crops=10)
    views = torch.randn(2, 20, 1, 3, 2, 2)  # 2 videos, 2 clips x 10 crops, 1 frame, 3 classes
    scores, _, _ = score_videos(
        FixedLogits(), [(views, torch.tensor([0, 2]), torch.tensor([0, 1]))], "softmax", "cpu", order
    )
    per_view = views[:, :, 0, :, 0, 0].double().softmax(-1)
    mirrored = [v % 10 >= 5 for v in range(20)]
    expected = torch.stack([per_view[:, v, [1, 0, 2]] if m else per_view[:, v] for v, m in enumerate(mirrored)], 1)
    torch.testing.assert_close(scores.double(), expected.mean(1), rtol=1e-6, atol=1e-6)
    assert view_classes(Gestures(), num_clips=2, num_crops=3) is None


def test_ten_crops_are_refused_where_mirrored_clips_have_no_class():
    v1 = Gestures()
    v1.name, v1.flip_allowed = "sthv1", False
    with pytest.raises(ValueError, match="test.num_crops=10 mirrors half of the views, and sthv1's .* known flip"):
        view_classes(v1, 1, 10)
    lone = Gestures()
    lone.flip_label_map, lone.no_flip_classes = {}, frozenset({0})
    with pytest.raises(ValueError, match="'left' have no mirror class in the labels\\): use test.num_crops=3 or 1"):
        view_classes(lone, 1, 10)


def test_mean_class_accuracy_averages_over_the_classes_that_have_videos():
    """A class predicted but without test videos (a label subset, missing videos, skipped ones) counted as 0
    before: 0.5 here instead of 0.75."""
    one_hot = torch.nn.functional.one_hot(torch.tensor([0, 2, 1, 1]), 27).float()
    assert accuracy_metrics(one_hot, torch.tensor([0, 0, 1, 1]))["test/mean_class_acc"] == pytest.approx(0.75)
    generator = torch.Generator().manual_seed(0)
    scores, labels = torch.randn(61, 9, generator=generator), torch.randint(0, 6, (61,), generator=generator)
    predicted = scores.argmax(1)
    present = sorted(set(labels.tolist()))
    expected = sum((predicted[labels == c] == c).double().mean().item() for c in present) / len(present)
    assert accuracy_metrics(scores, labels)["test/mean_class_acc"] == pytest.approx(expected, rel=1e-6)


def test_unlabelled_videos_give_a_submission_file(tmp_path):
    scores = torch.tensor([[0.1, 0.9], [0.8, 0.2]])
    metrics = report(scores, torch.tensor([-1, -1]), ["a", "b"], ["left", "right"], tmp_path)
    assert (tmp_path / "submission.csv").read_text() == "a;right\nb;left\n"
    assert metrics["test/labelled_videos"] == 0 and "test/acc" not in metrics


@pytest.mark.slow
def test_eval_task_two_clips_three_crops(tmp_path, tiny_overrides):
    ckpt = tiny_checkpoint(tmp_path, [])

    data_overrides = [o for o in tiny_overrides if o.startswith("data.")]
    cfg = compose_train(
        [f"ckpt_path={ckpt}", "test.num_clips=2", "test.num_crops=3", *data_overrides],
        tmp_path / "eval",
        config_name="eval",
    )
    metrics = evaluate(cfg)
    assert 0 <= metrics["test/acc"] <= 1 and metrics["test/videos"] == 4
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text()) == metrics
    rows = list(csv.reader(open(tmp_path / "eval" / "predictions.csv")))
    assert len(rows) == 1 + 4 and rows[0][0] == "id"
    confusion = list(csv.reader(open(tmp_path / "eval" / "confusion.csv")))
    assert len(confusion) == 1 + 9 and sum(int(x) for row in confusion[1:] for x in row[1:]) == 4
    assert (tmp_path / "eval" / "confusion.png").stat().st_size > 0
    with pytest.raises(RunDirInUse, match=r"already holds results \(confusion.csv, metrics.json, predictions.csv\)"):
        evaluate(cfg)  # into a directory holding a report (a training run's): refused, not overwritten

    with pytest.raises(ValueError, match="data.num_segments=8"):
        evaluate(compose_train([f"ckpt_path={ckpt}", "data.num_segments=8"], tmp_path / "bad", config_name="eval"))
    other_mean = [f"ckpt_path={ckpt}", *data_overrides, "data.mean=[0.5,0.5,0.5]"]
    with pytest.raises(ValueError, match=r"trained with mean \[0.485, 0.456, 0.406\], data.mean=\[0.5, 0.5, 0.5\]"):
        evaluate(compose_train(other_mean, tmp_path / "mean", config_name="eval"))
    segments = [o for o in data_overrides if o.startswith("data.num_segments=")]
    jester = [f"ckpt_path={ckpt}", "data=jester", f"data.root={make_jester(tmp_path / 'jester')}", *segments]
    with pytest.raises(ValueError, match="the test data 27: give the data it was trained on \\(data=NAME data.root"):
        evaluate(compose_train(jester, tmp_path / "jester_eval", config_name="eval"))


def test_a_test_fed_otherwise_than_the_checkpoint_was_trained_is_refused(caplog):
    """Normalisation and class names the checkpoint records must be the test's (else the accuracy is silently
    wrong); what an older checkpoint does not record (defaults) is not compared; another sampling or crop size is
    logged, not refused, and a segment sampling's unused stride is not compared."""
    from omegaconf import OmegaConf

    info = {"mean": [0.5] * 3, "std": [0.25] * 3, "class_names": ["left", "right", "up"], "input_size": 64}
    info["sampling"] = {"mode": "dense", "stride": 2}
    known, classes = set(info), ["left", "right", "up"]

    def cfg(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), mode="dense", stride=2, crop=64):
        data = {"mean": list(mean), "std": list(std)}
        test = {"split": "val", "mode": mode, "stride": stride, "crop_size": crop}
        return OmegaConf.create({"data": data, "test": test})

    check_recorded_inputs(info, known, cfg(), classes)
    assert not caplog.records
    with pytest.raises(ValueError, match=r"trained with std \[0.25, 0.25, 0.25\], data.std=\[0.2, 0.25, 0.25\]: set"):
        check_recorded_inputs(info, known, cfg(std=(0.2, 0.25, 0.25)), classes)
    with pytest.raises(ValueError, match="2 differ, the first is class 1, 'up' in the data and 'right' in the"):
        check_recorded_inputs(info, known, cfg(), ["left", "up", "right"])
    with pytest.raises(ValueError, match="the same classes in another order: Jester, Something-V1 and HMDB51"):
        check_recorded_inputs(info, known, cfg(), ["left", "up", "right"])
    with pytest.raises(ValueError, match=r"'down' in the data and 'up' in the checkpoint \(another label file\?\)"):
        check_recorded_inputs(info, known, cfg(), ["left", "right", "down"])
    check_recorded_inputs(info, {"sampling"}, cfg(std=(0.2, 0.25, 0.25)), ["left", "up", "right"])  # defaults
    segment = {**info, "sampling": {"mode": "segment", "stride": 8}}
    check_recorded_inputs(segment, known, cfg(mode="segment", stride=3), classes)
    assert not caplog.records
    check_recorded_inputs(info, known, cfg(mode="segment"), classes)
    assert "trained with dense sampling, stride 2" in caplog.text
    caplog.clear()
    check_recorded_inputs(info, known, cfg(crop=224), classes)  # e.g. a README command without data.crop_size
    assert "test.crop_size=224; the checkpoint was trained at 64 (data.crop_size=64 tests at that size)" in caplog.text


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("test.num_clips=0", "test.num_clips must be a positive integer, got 0"),
        ("test.num_clips=-1", "test.num_clips must be a positive integer, got -1"),
        ("test.batch_size=0", "test.batch_size must be a positive integer, got 0"),
        ("test.num_workers=-2", "test.num_workers must be an integer >= 0, got -2"),
        ("test.scale_size=0", "test.scale_size must be a positive integer, got 0"),
        ("test.mode=foo", r"test.mode must be one of \('segment', 'dense'\), got 'foo'"),
        ("device=gpu", "device='gpu' is not a device: use auto, cpu, cuda or cuda:N"),
        (f"device=cuda:{torch.cuda.device_count()}", "this machine has [0-9]+ CUDA GPUs; use device=auto or cpu"),
    ],
)
def test_a_test_setting_out_of_range_is_refused_naming_its_key(tmp_path, override, message):
    """Before the checkpoint is read: test.num_clips=0 reached an interpolation's shape error."""
    cfg = compose_train([f"ckpt_path={tmp_path / 'never_read.ckpt'}", override], tmp_path, config_name="eval")
    with pytest.raises(ValueError, match=message):
        evaluate(cfg)


def test_eval_task_honours_on_error_skip(tmp_path):
    """A truncated validation video: skipped, counted and listed under skip (the other one is scored);
    under raise the run stops naming it."""
    from tests.helpers.videos import make_sthv2
    from tsm.data.datamodule import SKIPPED_FILE
    from tsm.errors import DataError
    from tsm.models import build_recognizer

    root = make_sthv2(tmp_path / "sthv2")
    video = root / "20bn-something-something-v2" / "21.webm"
    video.write_bytes(video.read_bytes()[: video.stat().st_size // 3])
    net = build_recognizer("resnet10t_050", 174, 4)
    state = {f"net.{k}": v for k, v in net.state_dict().items()}
    ckpt = tmp_path / "model.ckpt"
    hparams = {"backbone": "resnet10t_050", "num_classes": 174, "num_segments": 4}
    torch.save({"pytorch-lightning_version": "2.6.0", "hyper_parameters": hparams, "state_dict": state}, ckpt)
    data = ["data=sthv2", f"data.root={root}", "data.num_segments=4", "data.crop_size=32", "data.scale_size=32"]
    cfg = compose_train([f"ckpt_path={ckpt}", *data, "data.on_error=skip"], tmp_path / "skip", config_name="eval")
    metrics = evaluate(cfg)
    assert metrics["test/skipped"] == 1 and metrics["test/videos"] == 1
    (line,) = (tmp_path / "skip" / SKIPPED_FILE).read_text().splitlines()
    assert line.startswith(f"test\t{video}\t")
    assert json.loads((tmp_path / "skip" / "metrics.json").read_text()) == metrics
    with pytest.raises(DataError, match="21.webm"):
        evaluate(compose_train([f"ckpt_path={ckpt}", *data], tmp_path / "raise", config_name="eval"))
    other = video.with_name("20.webm")
    other.write_bytes(other.read_bytes()[: other.stat().st_size // 3])
    with pytest.raises(DataError, match="validation.json: none of its 2 videos could be read"):
        evaluate(
            compose_train([f"ckpt_path={ckpt}", *data, "data.on_error=skip"], tmp_path / "all", config_name="eval")
        )
