"""Label sets from the data: data.num_classes left out (null) takes the count from each dataset's
label files, subsets of a publisher's classes work, flips swap only pairs that are both present,
and missing split files say which override reads another split."""

import logging

import hydra
import numpy as np
import pytest
import torch
import yaml

from tests.helpers.config import compose_train
from tests.helpers.videos import (
    STHV2_FLIP_CLASSES,
    make_hmdb51,
    make_jester,
    make_kinetics,
    make_list,
    make_sthv1,
    make_sthv2,
    make_tree,
    make_ucf101,
    run_fast_dev,
)
from tsm.data.sources import Jester, SomethingV2
from tsm.training.module import TSMLitModule
from tsm.training.task import instantiate_data

JESTER_SUBSET = ("Doing other things", "Drumming Fingers", "No gesture", "Thumb Up")
LONE_MIRROR = ("Doing other things", "Swiping Left", "Sliding Two Fingers Left", "Sliding Two Fingers Right")
STHV2_SUBSET = (  # the three classes the fixture's templates name, one lone mirror, one present pair
    "Moving something 0 times",
    STHV2_FLIP_CLASSES[93],
    "Moving something 1 times",
    STHV2_FLIP_CLASSES[167],
    "Moving something 2 times",
    STHV2_FLIP_CLASSES[166],
)
UCF_SUBSET = ("ApplyEyeMakeup", "Basketball", "HandstandPushups")
SUBSETS = {  # data=<name>: builder of a copy with a few classes, extra overrides, its class count
    "jester": (lambda root: make_jester(root, classes=JESTER_SUBSET), [], 4),
    "sthv1": (lambda root: make_sthv1(root, tuple(f"Moving something {i} times" for i in range(5))), [], 5),
    "sthv2": (lambda root: make_sthv2(root, STHV2_SUBSET), [], 6),
    "kinetics400": (make_kinetics, [], 3),
    "ucf101": (lambda root: make_ucf101(root, UCF_SUBSET), [], 3),
    "hmdb51": (make_hmdb51, [], 2),
    "list": (make_list, [], 3),
    "tree": (make_tree, ["data.source.format=tree", "data.frames=false"], 2),
}


def data_config(name, root, run_dir, *overrides):
    config = "list" if name == "tree" else name
    return compose_train([f"data={config}", f"data.root={root}", "data.num_workers=0", *overrides], run_dir)


@pytest.mark.parametrize("name", SUBSETS)
def test_class_count_comes_from_the_label_files(name, tmp_path):
    build, overrides, count = SUBSETS[name]
    cfg = data_config(name, build(tmp_path / name), tmp_path / "run", *overrides)
    assert cfg.data.num_classes is None
    data = instantiate_data(cfg)
    assert cfg.data.num_classes == cfg.model.num_classes == data.num_classes == count
    assert all(len(data.dataset(split).source.classes) == count for split in ("train", "val", "test"))
    assert hydra.utils.instantiate(cfg.model).net.num_classes == count


@pytest.mark.parametrize("name", ["jester", "sthv2"])
def test_train_builds_the_model_for_the_subset(name, tmp_path, monkeypatch):
    build, overrides, count = SUBSETS[name]
    built = []
    instantiate = hydra.utils.instantiate
    monkeypatch.setattr(hydra.utils, "instantiate", lambda *a, **k: built.append(instantiate(*a, **k)) or built[-1])
    metrics = run_fast_dev(name, build(tmp_path / name), tmp_path / "run", *overrides)
    (model,) = [item for item in built if isinstance(item, TSMLitModule)]
    assert model.net.num_classes == model.net.fc.out_features == count and np.isfinite(metrics["train/loss"])
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["data"]["num_classes"] == saved["model"]["num_classes"] == count


def test_a_contradicting_num_classes_names_both_counts_and_the_file(tmp_path):
    root = make_jester(tmp_path / "jester", classes=JESTER_SUBSET)
    data = instantiate_data(data_config("jester", root, tmp_path / "run", "data.num_classes=27"))
    message = rf"data.num_classes=27 but {root / 'jester-v1-labels.csv'} names 4 classes .*data.num_classes=4"
    with pytest.raises(ValueError, match=message):
        data.setup("fit")
    kinetics = instantiate_data(
        data_config("kinetics400", make_kinetics(tmp_path / "k"), tmp_path / "r", "data.num_classes=400")
    )
    with pytest.raises(ValueError, match=r"data.num_classes=400 but .*annotations/train.csv names 3 classes"):
        kinetics.dataset("train")


def gradient_clip():
    """4 frames brighter to the right, as uint8 ``(T, H, W, 3)``: a mirrored clip is brighter to the left."""
    row = torch.arange(0, 256, 8, dtype=torch.uint8)
    return row.view(1, 1, 32, 1).expand(4, 24, 32, 3).contiguous()


def test_a_lone_mirror_class_is_never_flipped_and_a_present_pair_swaps(tmp_path, caplog):
    root = make_jester(tmp_path / "jester", classes=LONE_MIRROR, labels=LONE_MIRROR)
    source = Jester(root, "train", frames=True)
    left, right, lone = (source.classes.index(name) for name in LONE_MIRROR[2:] + LONE_MIRROR[1:2])
    assert source.flip_label_map == {left: right, right: left} and source.no_flip_classes == {lone}
    with caplog.at_level(logging.INFO, "tsm.data.datamodule"):
        transform = (
            instantiate_data(data_config("jester", root, tmp_path / "run", "data.crop_size=16"))
            .dataset("train")
            .transform
        )
    assert "swaps Sliding Two Fingers Left <-> Sliding Two Fingers Right" in caplog.text
    assert "never flipped (their mirror class is not in the labels): Swiping Left" in caplog.text
    rng = np.random.default_rng(0)
    for label, flipped_label in ((lone, lone), (left, right), (right, left), (0, 0)):
        seen = set()
        for _ in range(100):
            clip, out = transform(gradient_clip(), label, rng)
            mirrored = bool(clip[..., 0].mean() > clip[..., -1].mean())
            assert out == (flipped_label if mirrored else label)
            seen.add(mirrored)
        assert seen == ({False} if label == lone else {True, False})


def test_sthv2_flip_pairs_are_matched_by_their_text(tmp_path):
    source = SomethingV2(make_sthv2(tmp_path / "sthv2", STHV2_SUBSET), "train")
    assert source.flip_label_map == {3: 5, 5: 3} and source.no_flip_classes == {1}
    assert len(source.classes) == 6


def test_kinetics_tests_on_val_and_a_missing_split_names_the_override(tmp_path):
    root = make_kinetics(tmp_path / "k400")
    (root / "annotations" / "test.csv").unlink()
    data = instantiate_data(data_config("kinetics400", root, tmp_path / "run"))
    assert data.video_ids("test") == data.video_ids("val") and len(data.video_ids("test")) == 2
    missing = instantiate_data(data_config("kinetics400", root, tmp_path / "run", "data.source.splits.test=test"))
    with pytest.raises(FileNotFoundError, match=r"test.csv.*data.source.splits.test=val"):
        missing.dataset("test")
    jester = make_jester(tmp_path / "jester")
    (jester / "jester-v1-validation.csv").unlink()
    with pytest.raises(FileNotFoundError, match=r"jester-v1-validation.csv.*data.source.splits.val=<name>"):
        Jester(jester, "val", frames=True)
