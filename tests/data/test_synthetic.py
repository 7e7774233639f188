"""Synthetic gestures: determinism, time-reversed pairs, splits, and the clip pipeline."""

import pytest
import torch

from tsm.data.datamodule import ClipDataModule
from tsm.data.sources.synthetic import CLASSES, FLIP_LABEL_MAP, REVERSED, SyntheticGestures

SIZES = {"train": 40, "val": 20, "test": 20}


def source(split="train", **kw):
    return SyntheticGestures(split, SIZES, num_frames=10, frame_size=24, **kw)


def test_clips_are_deterministic_per_seed_and_index():
    a, b = source(), source()
    torch.testing.assert_close(a.read(3, [0, 4, 9]), b.read(3, [0, 4, 9]), rtol=0, atol=0)
    assert not torch.equal(a.read(3, [0, 4, 9]), source(seed=1).read(3, [0, 4, 9]))
    assert a.read(3, [0]).dtype == torch.uint8 and a.read(3, [0]).shape == (1, 24, 24, 3)


def test_only_requested_frames_are_rendered_and_match_the_full_clip():
    src = source(noise=0.0)
    full = src.read(5, list(range(10)))
    torch.testing.assert_close(src.read(5, [7, 2]), full[[7, 2]], rtol=0, atol=0)


def test_splits_differ_and_labels_cover_classes():
    train, val = source("train"), source("val")
    assert train.video_id(0) != val.video_id(0)
    assert not torch.equal(train.read(0, [0]), val.read(0, [0]))
    labels = {train.label(i) for i in range(len(train))}
    assert len(labels) >= 6 and labels <= set(range(len(CLASSES)))


@pytest.mark.parametrize("label", range(len(CLASSES)))
def test_each_class_reversed_in_time_is_its_pair(label):
    src = source(noise=0.0)
    frames = list(range(10))
    clip = src.render(0, frames, label)
    reversed_pair = src.render(0, frames[::-1], REVERSED[label])
    torch.testing.assert_close(reversed_pair, clip, rtol=0, atol=0)
    moving = label != REVERSED[label]
    assert (clip[0] != clip[-1]).any() == moving


def test_read_renders_the_clip_as_its_own_label():
    src = source()
    torch.testing.assert_close(src.read(7, [1, 5]), src.render(7, [1, 5], src.label(7)), rtol=0, atol=0)


def test_flip_map_swaps_horizontal_pairs_only():
    assert {CLASSES[k]: CLASSES[v] for k, v in FLIP_LABEL_MAP.items()} == {
        "move_left": "move_right",
        "move_right": "move_left",
        "rotate_clockwise": "rotate_counterclockwise",
        "rotate_counterclockwise": "rotate_clockwise",
    }


def test_bad_split_or_sizes_raise():
    with pytest.raises(ValueError, match="data.source.sizes"):
        SyntheticGestures("val", {"train": 4})
    with pytest.raises(IndexError, match="outside 0..39"):
        source().read(40, [0])


def test_datamodule_batches_have_the_clip_contract():
    dm = ClipDataModule(
        source=lambda split: source(split),
        num_classes=len(CLASSES),
        num_segments=4,
        crop_size=16,
        scale_size=16,
        batch_size=5,
    )
    dm.setup("fit")
    clips, labels, index = next(iter(dm.train_dataloader()))
    assert clips.shape == (5, 4, 3, 16, 16) and clips.dtype == torch.float32
    assert labels.shape == (5,) and index.shape == (5,)
    val_a = next(iter(dm.val_dataloader()))[0]
    val_b = next(iter(dm.val_dataloader()))[0]
    torch.testing.assert_close(val_a, val_b, rtol=0, atol=0)  # evaluation views are fixed
    assert abs(val_a.mean().item()) < 3


def test_datamodule_rejects_wrong_class_count():
    dm = ClipDataModule(source=lambda split: source(split), num_classes=5)
    with pytest.raises(ValueError, match="data.num_classes=5"):
        dm.setup("fit")
