"""Each publisher's layout: parsing, label mapping, frame folders, flips, and per dataset a
fast_dev_run train and an evaluation with 2 clips x 3 crops."""

import csv
import json
import logging
from functools import partial

import hydra
import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from PIL import Image

from tests.helpers.config import compose_train
from tests.helpers.videos import (
    FDR,
    JESTER_CLASSES,
    KINETICS_CLASSES,
    STEP,
    frame_numbers,
    kinetics_name,
    make_hmdb51,
    make_jester,
    make_kinetics,
    make_list,
    make_sthv1,
    make_sthv2,
    make_tree,
    make_ucf101,
    run_fast_dev,
    sthv2_classes,
    write_frames,
    write_video,
)
from tsm.data.datamodule import ClipDataModule
from tsm.data.sources import HMDB51, UCF101, Custom, Jester, Kinetics400, SomethingV1, SomethingV2
from tsm.evaluate import evaluate
from tsm.imagenet import MEAN, STD
from tsm.training.task import instantiate_data

SPLITS = ("train", "val", "test")


def labels(source):
    return [source.classes[source.label(i)] if source.label(i) >= 0 else None for i in range(len(source))]


def test_jester_and_sthv1_csv(tmp_path):
    root = make_jester(tmp_path / "jester")
    train, val = Jester(root, "train", frames=True), Jester(root, "val", frames=True)
    assert train.classes == JESTER_CLASSES
    assert [train.video_id(i) for i in range(4)] == ["1", "2", "3", "4"]
    assert labels(train) == ["Drumming Fingers", "No gesture", "Doing other things", "Drumming Fingers"]
    assert train.path(0) == root / "20bn-jester-v1" / "1"
    assert [val.video_id(i) for i in range(len(val))] == ["5", "6"]  # test defaults to validation too
    unlabeled = Jester(root, "test", frames=True, splits={"train": "train", "val": "validation", "test": "test"})
    assert [unlabeled.label(i) for i in range(len(unlabeled))] == [-1, -1]
    assert train.num_frames(0) == 12 and frame_numbers(train.read(0, [0, 11, 3])) == [0, 11, 3]
    with pytest.raises(ValueError, match="data.frames must be true"):
        Jester(root, "train")
    v1 = SomethingV1(make_sthv1(tmp_path / "v1"), "train", frames=True)
    assert len(v1.classes) == 174 and v1.path(0) == tmp_path / "v1" / "20bn-something-something-v1" / "1"
    assert v1.flip_allowed is False and v1.flip_label_map is None


def test_jester_and_sthv1_number_classes_as_the_official_tsm_code_does(tmp_path):
    """In the sorted order of their names, whatever the labels file's line order (before: its line order, so the
    released Jester and Something-V1 weights' classes were read scrambled). The official online demo's list:
    class 16 is Swiping Left."""
    jester = Jester(make_jester(tmp_path / "jester", classes=JESTER_CLASSES[::-1]), "train", frames=True)
    assert jester.classes == JESTER_CLASSES and jester.classes[16] == "Swiping Left"
    written = (tmp_path / "jester" / "jester-v1-train.csv").read_text().splitlines()
    assert labels(jester) == [line.split(";")[1] for line in written]
    shuffled = ("b;c", "B", "a b", "a")
    v1 = SomethingV1(make_sthv1(tmp_path / "v1", classes=shuffled), "train", frames=True)
    assert v1.classes == ("B", "a", "a b", "b;c")  # Python's sorted, as the official tools/gen_label_sthv1.py


def test_jester_flip_pairs_are_the_horizontal_ones(tmp_path):
    source = Jester(make_jester(tmp_path), "train", frames=True)
    pairs = {source.classes[a]: source.classes[b] for a, b in source.flip_label_map.items()}
    assert pairs == {
        "Swiping Left": "Swiping Right",
        "Swiping Right": "Swiping Left",
        "Sliding Two Fingers Left": "Sliding Two Fingers Right",
        "Sliding Two Fingers Right": "Sliding Two Fingers Left",
        "Turning Hand Clockwise": "Turning Hand Counterclockwise",
        "Turning Hand Counterclockwise": "Turning Hand Clockwise",
    }


def test_sthv2_templates_match_labels_and_flip_map(tmp_path):
    root = make_sthv2(tmp_path)
    train = SomethingV2(root, "train")
    assert train.classes == sthv2_classes()
    # templates "moving  [Something] 1 times" match the class "Moving something 1 times"
    assert labels(train) == ["Moving something 1 times", "Moving something 2 times", "Moving something 0 times"] + [
        "Moving something 1 times"
    ]
    assert train.path(0) == root / "20bn-something-something-v2" / "10.webm"
    assert train.num_frames(0) == 12 and frame_numbers(train.read(1, [5, 0])) == [5, 0]
    assert train.flip_label_map == {86: 87, 87: 86, 93: 94, 94: 93, 166: 167, 167: 166}
    test = SomethingV2(root, "test", splits={"train": "train", "val": "validation", "test": "test"})
    assert [test.label(i) for i in range(len(test))] == [-1]


def test_kinetics_flat_and_class_folders_and_missing_videos(tmp_path, caplog):
    root = make_kinetics(tmp_path)
    with caplog.at_level(logging.INFO, "tsm.data.sources.kinetics"):
        train = Kinetics400(root, "train")
        val = Kinetics400(root, "val")
    assert train.classes == val.classes == tuple(sorted(KINETICS_CLASSES))
    assert len(train) == 6 and train.missing == [kinetics_name("gone0000001", 0)]
    assert "kinetics400 train: 6 of 7 videos found, 1 missing" in caplog.text
    assert labels(val) == ["abseiling", "air drumming"] and val.missing == []
    assert val.path(1).parent.name == "air_drumming"  # validate.csv, videos in val/<class>/
    assert frame_numbers(val.read(0, [11, 2])) == [11, 2]


def test_ucf101_and_hmdb51_official_splits(tmp_path):
    ucf = tmp_path / "ucf"
    make_ucf101(ucf)
    train, test = UCF101(ucf, "train", fold=1), UCF101(ucf, "test", fold=1)
    assert train.classes == ("ApplyEyeMakeup", "HandstandPushups")
    assert labels(train) == ["ApplyEyeMakeup"] * 2 + ["HandstandPushups"] * 2
    assert test.video_id(1) == "v_HandStandPushups_g01_c01.avi" and test.label(1) == 1
    assert UCF101(ucf, "val", fold=1).samples == test.samples
    with pytest.raises(ValueError, match="data.split must be 1, 2 or 3"):
        UCF101(ucf, "train", fold=4)
    hmdb = make_hmdb51(tmp_path / "hmdb")
    train, test = HMDB51(hmdb, "train"), HMDB51(hmdb, "test")
    assert train.classes == ("brush_hair", "cartwheel")
    names = ("climb_stairs", "climb", "kick_ball", "kick")  # by class name, not by split file name
    assert HMDB51(make_hmdb51(tmp_path / "hmdb_names", names), "train").classes == tuple(sorted(names))
    assert [train.video_id(i) for i in range(len(train))] == [
        "brush_hair_0",
        "brush_hair_1",
        "cartwheel_0",
        "cartwheel_1",
    ]
    assert labels(test) == ["brush_hair", "cartwheel"]  # flag 0 videos are in neither
    assert frame_numbers(test.read(1, [0, 6])) == [0, 6]


def test_list_files_and_folder_trees(tmp_path):
    root = make_list(tmp_path / "list")
    train = Custom(root, "train", num_classes=3, frames=True, frame_template="img_{:05d}.jpg")
    assert [train.label(i) for i in range(4)] == [0, 1, 2, 0] and train.classes == ("0", "1", "2")
    assert train.num_frames(0) == 12 and frame_numbers(train.read(3, [1, 10])) == [1, 10]
    (root / "names.txt").write_text("a\nb\nc\n")
    assert Custom(root, "val", class_names="names.txt", frames=True).classes == ("a", "b", "c")
    tree = make_tree(tmp_path / "tree")
    train, val = Custom(tree, "train", format="tree"), Custom(tree, "val", format="tree")
    assert train.classes == ("jump", "run") and labels(val) == ["jump", "run"]
    assert frame_numbers(val.read(1, [3])) == [3]
    with pytest.raises(ValueError, match="data.source.format must be one of \\('list', 'tree'\\), got 'csv'"):
        Custom(tree, "train", format="csv")


def test_a_folder_tree_reads_every_video_and_names_what_it_leaves_out(tmp_path, caplog):
    """.mpg and .3gp videos, and files that are no class's videos, were left out without a word."""
    tree = make_tree(tmp_path / "tree")
    write_video(tree / "val" / "jump" / "old.mp4").rename(tree / "val" / "jump" / "old.mpg")  # read by content
    (tree / "val" / "jump" / "notes.txt").write_text("shot in 2019")
    write_video(tree / "val" / "loose.mp4")
    with caplog.at_level(logging.WARNING):
        val = Custom(tree, "val", format="tree")
    assert [val.video_id(i) for i in range(len(val))] == ["jump/jump0.mp4", "jump/old.mpg", "run/run0.mp4"]
    assert (
        "2 entries are not <class>/<videos (.mp4" in caplog.text
        and "left out: jump/notes.txt, loose.mp4" in caplog.text
    )


def test_video_datasets_read_frame_folders_when_asked(tmp_path):
    root = make_ucf101(tmp_path / "ucf")
    frames_root = tmp_path / "frames"
    source = UCF101(root, "test", frames=True, frame_template="img_{:05d}.jpg", frames_root=frames_root)
    assert source.path(0) == frames_root / "UCF-101" / "ApplyEyeMakeup" / "v_ApplyEyeMakeup_g01_c01"
    write_frames(source.path(0), 20, "img_{:05d}.jpg")
    assert source.num_frames(0) == 20 and frame_numbers(source.read(0, [19, 0])) == [19, 0]
    kinetics = make_kinetics(tmp_path / "k400", missing=())
    write_frames(kinetics / "val" / "abseiling" / kinetics_name("valid0000000", 0), 5)
    val = Kinetics400(kinetics, "val", frames=True, frame_template="{:05d}.jpg")
    assert len(val) == 1 and val.missing == [kinetics_name("valid0000001", 10)]
    assert frame_numbers(val.read(0, [4])) == [4]


@pytest.mark.parametrize("build", [make_jester, make_sthv2])
def test_clips_hold_the_sampled_frames(build, tmp_path):
    root = build(tmp_path / "data")
    source = (lambda split: Jester(root, split, frames=True)) if build is make_jester else partial(SomethingV2, root)
    data = ClipDataModule(source, len(source("val").classes), num_segments=4, crop_size=16, scale_size=16)

    def frames_of(clip):  # undo the normalisation: every frame is one gray level
        gray = clip[:, 0].mean((1, 2)) * STD[0] + MEAN[0]
        return (gray * 255 / STEP).round().int().tolist()

    assert frames_of(data.dataset("val")[0][0]) == [1, 4, 7, 10]  # segment centres of 12 frames
    for _ in range(5):  # training: one random frame in each segment of 3
        picked = frames_of(data.dataset("train")[0][0])
        assert [frame // 3 for frame in picked] == [0, 1, 2, 3]


def test_datamodule_flips_with_label_swap_and_honours_flip_allowed(tmp_path):
    root = make_jester(tmp_path / "jester", labels=("Swiping Left",))
    frame = Image.fromarray(np.repeat(np.arange(0, 256, 8, dtype=np.uint8), 3).reshape(1, 32, 3).repeat(24, 0))
    for i in range(1, 5):  # brighter to the right
        for k in range(1, 13):
            frame.save(root / "20bn-jester-v1" / str(i) / f"{k:05d}.jpg")
    data = ClipDataModule(lambda split: Jester(root, split, frames=True), 27, num_segments=2, crop_size=16)
    seen = set()
    for _ in range(24):
        clip, label, _ = data.dataset("train")[0]
        mirrored = bool(clip[..., 0].mean() > clip[..., -1].mean())
        assert JESTER_CLASSES[label] == ("Swiping Right" if mirrored else "Swiping Left")
        seen.add(mirrored)
    assert seen == {True, False}
    v1 = ClipDataModule(lambda split: SomethingV1(make_sthv1(tmp_path / "v1"), split, frames=True), 174)
    assert v1.dataset("train").transform.flip is False and data.dataset("train").transform.flip is True


DATASETS = {  # data=<name>: builder, extra overrides (data.num_classes comes from the label files)
    "jester": (make_jester, []),
    "sthv1": (make_sthv1, []),
    "sthv2": (make_sthv2, []),
    "kinetics400": (make_kinetics, []),
    "ucf101": (make_ucf101, ["data.split=1"]),
    "hmdb51": (make_hmdb51, []),
    "list": (make_list, []),
}


@pytest.mark.parametrize("name", DATASETS)
def test_fast_dev_run_trains_on_each_dataset(name, tmp_path):
    build, overrides = DATASETS[name]
    metrics = run_fast_dev(name, build(tmp_path / name), tmp_path / "run", *overrides)
    assert np.isfinite(metrics["train/loss"]) and 0 <= metrics["test/acc"] <= 1


def random_checkpoint(name: str, root, path, overrides: list[str]):
    """A checkpoint file as src/train.py writes them, of the model the dataset's config builds (random weights)."""
    cfg = compose_train([f"data={name}", f"data.root={root}", *FDR, *overrides], path.parent)
    instantiate_data(cfg)  # data.num_classes from the label files
    model = hydra.utils.instantiate(cfg.model)
    state = {"pytorch-lightning_version": pl.__version__, "hyper_parameters": dict(model.hparams)}
    torch.save({**state, "state_dict": model.state_dict()}, path)
    return path


@pytest.mark.parametrize("name", DATASETS)
def test_eval_two_clips_three_crops_on_each_dataset(name, tmp_path):
    build, overrides = DATASETS[name]
    root = build(tmp_path / name)
    ckpt = random_checkpoint(name, root, tmp_path / "model.ckpt", overrides)
    data = [
        f"data={name}",
        f"data.root={root}",
        "data.crop_size=32",
        "data.scale_size=40",
        "data.num_segments=4",
        "data.num_workers=0",
    ]
    run = tmp_path / "eval"
    views = ["test.num_clips=2", "test.num_crops=3", "device=cpu"]
    metrics = evaluate(compose_train([f"ckpt_path={ckpt}", *data, *overrides, *views], run, config_name="eval"))
    source = hydra.utils.instantiate(compose_train([*data, *overrides], run).data).source(split="test")
    assert metrics["test/videos"] == len(source) > 0
    assert json.loads((run / "metrics.json").read_text()) == metrics
    if metrics["test/labelled_videos"]:
        rows = list(csv.reader(open(run / "predictions.csv")))
        assert [r[0] for r in rows[1:]] == [source.video_id(i) for i in range(len(source))]
        assert 0 <= metrics["test/acc"] <= 1
    else:  # Jester and Something-Something publish their test splits without labels
        lines = (run / "submission.csv").read_text().splitlines()
        assert [line.split(";")[0] for line in lines] == [source.video_id(i) for i in range(len(source))]


def test_fast_dev_run_on_a_folder_tree_and_kinetics_missing_list(tmp_path):
    tree = make_tree(tmp_path / "tree")
    tree_overrides = ["data.num_classes=2", "data.frames=false", "data.source.format=tree"]
    assert np.isfinite(run_fast_dev("list", tree, tmp_path / "tree_run", *tree_overrides)["train/loss"])
    run_fast_dev("kinetics400", make_kinetics(tmp_path / "k400"), tmp_path / "k400_run", "data.num_classes=3")
    assert (tmp_path / "k400_run" / "missing_train.txt").read_text() == kinetics_name("gone0000001", 0) + "\n"
