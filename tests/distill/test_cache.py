"""The teacher logit cache: built once per teacher and view, reused every epoch, rebuilt on change."""

import hydra
import pytest
import pytorch_lightning as pl
import torch

from tests.helpers.config import TINY, compose_train, tiny_checkpoint
from tsm.distill.cache import load_or_build


def test_load_or_build_reuses_and_invalidates(tmp_path):
    path = tmp_path / "cache.pt"
    builds = []

    def build(value):
        def run():
            builds.append(value)
            return torch.full((2, 3), float(value))

        return run

    key = {"teacher_sha256": "aa", "view": {"crop_size": 32}}
    assert load_or_build(path, key, ["a", "b"], build(1)).eq(1).all()
    assert load_or_build(path, key, ["a", "b"], build(2)).eq(1).all()  # read, not rebuilt
    assert builds == [1]
    assert load_or_build(path, {**key, "teacher_sha256": "bb"}, ["a", "b"], build(3)).eq(3).all()
    assert load_or_build(path, {**key, "teacher_sha256": "bb"}, ["a", "c"], build(4)).eq(4).all()
    assert load_or_build(path, {**key, "view": {"crop_size": 48}}, ["a", "c"], build(5)).eq(5).all()
    assert builds == [1, 3, 4, 5]


def fit_cached(teacher, run_dir, epochs=2, *overrides):
    """Fit a KD student with the cache on; returns the module, its data and the teacher's forward count."""
    overrides = [
        *TINY,
        "model/distill=checkpoint",
        f"model.distill.teacher_ckpt={teacher}",
        "model.distill.cache=true",
        f"trainer.max_epochs={epochs}",
        *overrides,
    ]
    cfg = compose_train(overrides, run_dir)
    model, data = hydra.utils.instantiate(cfg.model), hydra.utils.instantiate(cfg.data)
    calls = []
    model.teacher.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    trainer = pl.Trainer(
        max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False, limit_val_batches=0
    )
    trainer.fit(model, datamodule=data)
    return model, data, calls, trainer


@pytest.mark.slow
def test_cached_teacher_runs_once_and_follows_the_checkpoint(tmp_path):
    teacher_a = tiny_checkpoint(tmp_path / "a", [])
    model, data, calls, trainer = fit_cached(teacher_a, tmp_path / "run")
    cache = torch.load(tmp_path / "run" / "teacher_logits.pt", weights_only=True)
    assert cache["video_ids"] == data.video_ids("train") and len(cache["video_ids"]) == 8
    assert sum(calls) == 8  # once per training video, not once per epoch
    assert model.teacher is None and "train/loss_kd" in trainer.callback_metrics
    (clip, perm), _, _ = data.dataset("train")[0]  # training items no longer carry a teacher clip
    assert clip.ndim == 4 and sorted(perm.tolist()) == list(range(len(data.dataset("train").source.classes)))

    # the cached rows are the teacher's logits on the fixed (evaluation-style) view of each video
    from tsm.models.checkpoints import load_recognizer

    teacher = load_recognizer(teacher_a).eval()
    clips, _, indices = next(iter(data.teacher_view_loader()))
    with torch.no_grad():
        expected = teacher(clips)
    torch.testing.assert_close(cache["logits"][indices], expected, rtol=1e-4, atol=1e-5)

    # same run directory, same teacher: read back without running the teacher
    _, _, calls, _ = fit_cached(teacher_a, tmp_path / "run", epochs=1)
    assert calls == []
    # the teacher fed otherwise (the student's clips said to be normalised otherwise): rebuilt (it was read back)
    _, _, calls, _ = fit_cached(teacher_a, tmp_path / "run", 1, "model.distill.mean=[0.5,0.5,0.5]")
    assert sum(calls) == 8
    # another teacher checkpoint: the cache is rebuilt
    teacher_b = tiny_checkpoint(tmp_path / "b", ["seed=7", "model.backbone=mobilenetv2_035"])
    _, _, calls, _ = fit_cached(teacher_b, tmp_path / "run", epochs=1)
    assert sum(calls) == 8
    rebuilt = torch.load(tmp_path / "run" / "teacher_logits.pt", weights_only=True)
    assert rebuilt["key"]["teacher_sha256"] != cache["key"]["teacher_sha256"]
    assert not torch.allclose(rebuilt["logits"], cache["logits"])


def test_cached_targets_follow_the_flip_of_each_clip(tmp_path):
    """A flipped training clip is another class's clip: its cached KD target is the unaugmented view's
    logits permuted to match (perm[label] is the video's own class), every time."""
    from tsm.data.sources.synthetic import FLIP_LABEL_MAP
    from tsm.distill.teacher import Distiller

    cfg = compose_train(TINY, tmp_path)
    data = hydra.utils.instantiate(cfg.data)
    data.drop_teacher_view()
    train = data.dataset("train")
    flip = [FLIP_LABEL_MAP.get(k, k) for k in range(9)]
    kinds = {
        "plain": list(range(9)),
        "flip": flip,
    }
    torch.manual_seed(0)
    seen = set()
    for _ in range(8):
        for index in range(len(train)):
            (_, perm), label, _ = train[index]
            assert perm[label] == train.source.label(index)
            seen |= {name for name, p in kinds.items() if perm.tolist() == p}
    assert seen == set(kinds)

    distiller = Distiller.__new__(Distiller)
    distiller.cached = torch.randn(8, 9, dtype=torch.float64)
    perms = torch.stack([torch.randperm(9) for _ in range(4)])
    indices = torch.tensor([3, 0, 7, 3])
    expected = torch.stack([distiller.cached[i][p] for i, p in zip(indices.tolist(), perms, strict=True)])
    assert torch.equal(distiller.targets(perms, indices), expected)


def test_a_teacher_reading_the_data_s_classes_in_another_order_is_refused(tmp_path):
    """A Jester teacher trained before its classes were sorted taught each clip another class's logits."""
    teacher = tiny_checkpoint(tmp_path / "a", [])
    state = torch.load(teacher, weights_only=True)
    state["tsm_info"]["class_names"] = state["tsm_info"]["class_names"][::-1]
    torch.save(state, tmp_path / "reordered.ckpt")
    with pytest.raises(ValueError, match="model.distill.teacher_ckpt=.*reordered.ckpt numbers the data's classes in"):
        fit_cached(tmp_path / "reordered.ckpt", tmp_path / "run", epochs=1)
