"""data.augment.reverse: half the training clips play backwards, labelled with their time-reversed partner."""

import numpy as np
import pytest
import torch

from tsm.data.datamodule import ClipDataModule
from tsm.data.sources.synthetic import REVERSED, SyntheticGestures


class IndexedFrames:
    """Frame i of every video is filled with the value i; classes 0 <-> 1 reverse into each other, 2 into itself."""

    classes = ("forwards", "backwards", "still")
    reverse_label_map = {0: 1, 1: 0, 2: 2}

    def __len__(self):
        return 6

    def video_id(self, i):
        return f"v{i}"

    def num_frames(self, i):
        return 30

    def label(self, i):
        return i % 3

    def read(self, i, indices):
        return torch.tensor(indices, dtype=torch.uint8).view(-1, 1, 1, 1).expand(len(indices), 8, 8, 3).clone()


def datamodule(source, reverse=True, teacher_view=None):
    return ClipDataModule(
        source=lambda split: source,
        num_classes=len(source.classes),
        num_segments=4,
        crop_size=8,
        scale_size=8,
        augment={"scales": [1.0], "flip": False, "reverse": reverse},
        mean=(0.0, 0.0, 0.0),
        std=(1 / 255, 1 / 255, 1 / 255),
        teacher_view=teacher_view,
    )


def frames_of(clip: torch.Tensor) -> list[int]:
    return clip[:, 0, 0, 0].round().long().tolist()


def test_reversed_clips_play_backwards_with_the_partner_label():
    source = IndexedFrames()
    train = datamodule(source, teacher_view={"num_frames": 6, "mode": "dense", "stride": 2}).dataset("train")
    torch.manual_seed(0)
    backwards = 0
    for draw in range(60):
        index = draw % len(source)
        (student, teacher), label, _ = train[index]
        order, teacher_order = frames_of(student), frames_of(teacher)
        if order == sorted(order):
            assert label == source.label(index) and teacher_order == sorted(teacher_order)
        else:
            assert order == sorted(order, reverse=True) and teacher_order == sorted(teacher_order, reverse=True)
            assert label == source.reverse_label_map[source.label(index)]
            backwards += 1
    assert 15 <= backwards <= 45  # about half


def test_evaluation_and_reverse_off_never_reverse():
    source = IndexedFrames()
    dm = datamodule(source)
    for i in range(len(source)):
        clip, label, _ = dm.dataset("val")[i]
        assert frames_of(clip) == sorted(frames_of(clip)) and label == source.label(i)
    train = datamodule(source, reverse=False).dataset("train")
    for _ in range(20):
        clip, label, index = train[0]
        assert frames_of(clip) == sorted(frames_of(clip)) and label == 0


def test_a_source_without_time_reversed_partners_is_refused():
    class NoPartners(IndexedFrames):
        reverse_label_map = None

    with pytest.raises(ValueError, match="data.augment.reverse=false"):
        datamodule(NoPartners()).dataset("train")


def test_a_synthetic_clip_played_backwards_is_a_clip_of_its_partner_class():
    """The map the synthetic generator declares, checked against its own rendering (noise off)."""
    source = SyntheticGestures("train", {"train": 20}, num_frames=9, frame_size=24, noise=0.0)
    assert source.reverse_label_map == REVERSED
    for index in range(20):
        label = source.label(index)
        forwards = source.render(index, list(range(9)), label)
        partner = source.render(index, list(range(9)), REVERSED[label])
        np.testing.assert_array_equal(forwards.flip(0).numpy(), partner.numpy())
