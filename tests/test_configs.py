"""Every experiment config composes, and its data and model instantiate."""

import re
from pathlib import Path

import hydra
import pytest
import torch
from omegaconf import OmegaConf

from tests.helpers import ROOT
from tests.helpers.config import CONF_DIR, compose_train
from tsm.models.i3d import I3D
from tsm.training.precision import resolve_precision

EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))


def test_there_are_experiments():
    assert {"synthetic_tsm", "synthetic_tsn"} <= set(EXPERIMENTS)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_composes_and_instantiates(name, tmp_path, tiny_overrides):
    """Each experiment builds its data, model (teachers and weight files stood in by random ones,
    no network) and trainer."""
    cfg = compose_train([f"+experiment={name}"], tmp_path)
    if not cfg.data.source._target_.endswith("SyntheticGestures"):  # sizes are the synthetic source's keys
        tiny_overrides = [o for o in tiny_overrides if not o.startswith("data.source.")]
    overrides = [f"+experiment={name}", *tiny_overrides, "model.pretrained=false"]
    classes = cfg.data.num_classes or 7  # data.root is an empty folder: no label files to count classes in
    if OmegaConf.is_missing(cfg.data, "root"):
        overrides += [f"data.root={tmp_path}", f"data.num_classes={classes}"]
    if cfg.model.distill.kind != "none":
        overrides.append(f"model.distill.teacher_ckpt={random_i3d(tmp_path / 'teacher.pt', classes)}")
    if cfg.model.backbone == "i3d" and cfg.model.pretrained_file:
        overrides.append(f"model.pretrained_file={random_i3d(tmp_path / 'rgb_imagenet.pt', 400)}")
    cfg = compose_train(overrides, tmp_path)
    datamodule = hydra.utils.instantiate(cfg.data)
    model = hydra.utils.instantiate(cfg.model)
    assert model.net.num_classes == datamodule.num_classes == cfg.data.num_classes
    assert model.net.num_segments == cfg.data.num_segments
    resolve_precision(cfg, model)  # as src/train.py does: Lightning takes no precision=auto
    hydra.utils.instantiate(cfg.trainer)


def random_i3d(path: Path, num_classes: int) -> Path:
    torch.save(I3D(num_classes).state_dict(), path)
    return path


def test_public_keys_exist(tmp_path):
    cfg = compose_train([], tmp_path)
    for key in [
        "data.root",
        "data.num_segments",
        "data.crop_size",
        "data.batch_size",
        "data.num_workers",
        "model.backbone",
        "model.pretrained",
        "model.shift.enabled",
        "model.shift.fold_div",
        "model.shift.direction",
        "model.shift.place",
        "model.shift.blocks",
        "trainer.max_epochs",
        "seed",
        "ckpt_path",
    ]:
        node = cfg
        for part in key.split("."):
            assert part in node, f"missing config key {key}"
            node = node[part]


def test_shift_group_options(tmp_path):
    tsn = compose_train(["model/shift=none"], tmp_path)
    causal = compose_train(["model/shift=causal"], tmp_path)
    assert tsn.model.shift.enabled is False
    assert causal.model.shift.direction == "causal"
    assert Path(CONF_DIR / "model" / "shift" / "inplace.yaml").is_file()


DATASETS = sorted(p.stem for p in (CONF_DIR / "data").glob("*.yaml") if p.stem not in ("synthetic", "base"))


def test_dataset_configs_extend_one_base_and_normalise_once(tmp_path):
    """Every data config extends conf/data/base.yaml; ImageNet's mean and std are written once in the configs
    and once in the package (tsm.imagenet)."""
    for name in [*DATASETS, "synthetic"]:
        text = (CONF_DIR / "data" / f"{name}.yaml").read_text()
        assert "defaults:\n  - base\n  - _self_\n" in text, name
        cfg = compose_train([f"data={name}", f"data.root={tmp_path}"], tmp_path)
        assert list(cfg.data.mean) == [0.485, 0.456, 0.406] and list(cfg.data.std) == [0.229, 0.224, 0.225]
    written = lambda folder, pattern: sorted(  # noqa: E731
        str(p.relative_to(ROOT)) for p in (ROOT / folder).rglob(pattern) if "0.485" in p.read_text()
    )
    assert written("conf", "*.yaml") == ["conf/data/base.yaml"]
    assert written("src", "*.py") == ["src/tsm/imagenet.py"]


@pytest.mark.parametrize("name", DATASETS)
@pytest.mark.parametrize(("crop", "scale"), [(224, 256), (64, 73), (112, 128)])
def test_scale_size_follows_crop_size(name, crop, scale, tmp_path):
    """Evaluation resizes to scale_size before the centre crop: a 64-pixel crop of a 256-pixel frame saw the
    middle quarter of it (the README's Jester command reached 0.695 for that)."""
    cfg = compose_train([f"data={name}", f"data.root={tmp_path}", f"data.crop_size={crop}"], tmp_path)
    assert cfg.data.scale_size is None
    assert hydra.utils.instantiate(cfg.data).scale_size == scale
    given = compose_train(
        [f"data={name}", f"data.root={tmp_path}", f"data.crop_size={crop}", "data.scale_size=300"], tmp_path
    )
    assert hydra.utils.instantiate(given.data).scale_size == 300


def test_a_crop_larger_than_the_resized_frame_is_refused(tmp_path):
    cfg = compose_train(["data=jester", f"data.root={tmp_path}", "data.crop_size=128", "data.scale_size=100"], tmp_path)
    with pytest.raises(Exception, match=r"data.crop_size=128 is larger than data.scale_size=100.*null \(146\)"):
        hydra.utils.instantiate(cfg.data)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.crop_size=-5", "data.crop_size must be a positive integer, got -5"),
        ("data.crop_size=0", "data.crop_size must be a positive integer, got 0"),
        ("data.num_segments=0", "data.num_segments must be a positive integer, got 0"),
        ("data.batch_size=0", "data.batch_size must be a positive integer, got 0"),
        ("data.batch_size=2.5", "data.batch_size must be a positive integer, got 2.5"),
        ("data.scale_size=-1", "data.scale_size must be a positive integer, got -1"),
        ("data.num_classes=0", "data.num_classes must be a positive integer, got 0"),
        ("data.num_workers=-1", "data.num_workers must be an integer >= 0, got -1"),
    ],
)
def test_a_count_out_of_range_is_refused_naming_its_key(override, message, tmp_path):
    """The default run's data with a count no clip can have: refused when the data is built, naming the key,
    not later as a convolution's or a loader's error about tensor shapes."""
    cfg = compose_train([override], tmp_path)
    with pytest.raises(Exception, match=message):
        hydra.utils.instantiate(cfg.data)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.mean=[0.5]", r"data.mean must be 3 numbers \(R, G, B\), got \[0.5\]"),
        ("data.mean=0.5", r"data.mean must be 3 numbers \(R, G, B\), got 0.5"),
        ("data.std=[0.229,0,0.225]", r"data.std must be 3 positive numbers \(R, G, B\), got \[0.229, 0, 0.225\]"),
        ("data.sampling.stride=0", "data.sampling.stride must be a positive integer, got 0"),
        ("data.augment.scales=[]", r"data.augment.scales must be one or more fractions in \(0, 1\], got \[\]"),
        ("data.augment.scales=[1.0,0]", r"data.augment.scales must be one or more fractions in \(0, 1\]"),
        ("data.augment.max_distort=-1", "data.augment.max_distort must be an integer >= 0, got -1"),
        ("+data.teacher_view.mode=dense", "data.teacher_view needs num_frames"),
        ("+data.teacher_view.num_frames=0", "data.teacher_view.num_frames must be a positive integer, got 0"),
        ("+data.teacher_view={num_frames:4,stride:-1}", "data.teacher_view.stride must be a positive integer, got -1"),
    ],
)
def test_a_data_value_no_clip_can_use_is_refused_naming_its_key(override, message, tmp_path):
    """A normalisation of one channel, a zero std, a zero stride, no crop scales, a teacher view without frames:
    refused when the data is built, naming the key; before, a bare shape error when the train set was built, an
    empty crop list's numpy error in a loader worker, or clips of one repeated frame and NaN inputs, silently."""
    cfg = compose_train([override], tmp_path)
    with pytest.raises(Exception, match=message):
        hydra.utils.instantiate(cfg.data).dataset("train")


@pytest.mark.parametrize("template", ["{idx}.jpg", "{:05s}.jpg", "%05d.jpg", "{}_{}.jpg", "frame.jpg"])
def test_a_frame_template_without_one_number_field_is_refused(template, tmp_path):
    """Before, '{idx}.jpg' passed the field count and died of a bare KeyError in a loader worker, past
    data.on_error=skip."""
    from tests.helpers.videos import make_jester

    root = make_jester(tmp_path / "jester")
    cfg = compose_train(["data=jester", f"data.root={root}", f"data.frame_template='{template}'"], tmp_path)
    with pytest.raises(ValueError, match=f"data.frame_template={re.escape(repr(template))} needs exactly one field"):
        hydra.utils.instantiate(cfg.data).dataset("train")


@pytest.mark.parametrize("name", ["jester", "sthv1", "sthv2", "kinetics400", "ucf101", "hmdb51", "list"])
def test_data_frame_start_reaches_every_frame_reading_source(name, tmp_path):
    """``data.frame_start`` (documented for frame folders not numbered from 1) is a key of every dataset config
    that reads frames; before, ``data.source.frame_start=0`` failed to compose ("not in struct")."""
    cfg = compose_train([f"data={name}", "data.root=/nowhere", "data.frame_start=0"], tmp_path)
    assert cfg.data.source.frame_start == 0


def test_a_negative_data_frame_start_is_refused(tmp_path):
    from tests.helpers.videos import make_jester

    root = make_jester(tmp_path / "jester")
    cfg = compose_train(["data=jester", f"data.root={root}", "data.frame_start=-1"], tmp_path)
    with pytest.raises(ValueError, match=r"data.frame_start must be an integer >= 0, got -1"):
        hydra.utils.instantiate(cfg.data).dataset("train")


def test_a_training_set_smaller_than_a_batch_is_refused(tmp_path):
    """Training drops the last incomplete batch: 8 clips in batches of 16 trained nothing, and the run went on
    to test the untrained model as if it had trained."""
    from types import SimpleNamespace

    cfg = compose_train(["data.source.sizes.train=8", "data.batch_size=16"], tmp_path)
    data = hydra.utils.instantiate(cfg.data)
    with pytest.raises(ValueError, match=r"data.batch_size=16 is larger than the 8 training clips: .*nothing trained"):
        data.train_dataloader()
    data.batch_size = 5
    data.trainer = SimpleNamespace(world_size=2)  # DDP: each process gets half the clips
    with pytest.raises(ValueError, match="data.batch_size=5 is larger than the 4 training clips each of 2 processes"):
        data.train_dataloader()
    data.batch_size = 4
    assert len(data.train_dataloader()) == 2  # one process's view here: 8 clips, batches of 4


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.optimizer.base_lr=-0.1", "model.optimizer.base_lr must be > 0, got -0.1"),
        ("model.optimizer.weight_decay=-1", "model.optimizer.weight_decay must be >= 0, got -1"),
        ("model.optimizer.momentum=1.5", r"model.optimizer.momentum must be in \[0, 1\), got 1.5"),
        ("model.scheduler.warmup_epochs=-1", "model.scheduler.warmup_epochs must be >= 0, got -1"),
        ("model.scheduler.min_lr_ratio=2", r"model.scheduler.min_lr_ratio must be in \[0, 1\], got 2"),
        ("model.label_smoothing=-1", r"model.label_smoothing must be in \[0, 1\], got -1"),
        ("model.dropout=1.5", r"model.dropout must be in \[0, 1\), got 1.5"),
        ("model.optimizer.head_lr_mult_scratch.bias=-2", "model.optimizer.head_lr_mult_\\* must be >= 0"),
    ],
)
def test_a_recipe_number_out_of_range_is_refused_naming_its_key(override, message, tmp_path):
    """Refused when the module is built: a negative warm-up or label smoothing trained silently on, a negative
    learning rate failed in torch's optimizer as 'Invalid learning rate: -0.025'."""
    cfg = compose_train([override], tmp_path)
    with pytest.raises(Exception, match=message):
        hydra.utils.instantiate(cfg.model)


@pytest.mark.parametrize("fold_div", [0, -8])
def test_a_shift_fold_out_of_range_is_refused_naming_its_key(fold_div, tmp_path):
    cfg = compose_train([f"model.shift.fold_div={fold_div}"], tmp_path)
    with pytest.raises(Exception, match=f"model.shift.fold_div must be a positive integer .*got {fold_div}"):
        hydra.utils.instantiate(cfg.model)


@pytest.mark.slow
def test_jester_mbv2_online_trains_and_streams(tmp_path):
    """The README's online-model command on a Jester-format folder (one batch each), then frame by frame."""
    from tests.helpers.videos import FDR, make_jester
    from tsm.models.checkpoints import load_recognizer
    from tsm.streaming.model import StreamingTSM
    from tsm.training.task import train

    root = make_jester(tmp_path / "jester")
    run = tmp_path / "run"
    small = [o for o in FDR if o != "debug=fdr" and not o.startswith("model.backbone")]
    overrides = ["+experiment=jester_mbv2_online", f"data.root={root}", *small, "model.pretrained=false"]
    train(compose_train([*overrides, "trainer.max_epochs=1", "data.num_workers=0"], run))
    model = load_recognizer(run / "checkpoints" / "last.ckpt")
    assert model.info["backbone"] == "mobilenetv2_100" and len(model.info["class_names"]) == 27
    assert StreamingTSM.from_model(model).num_buffers == 10


def test_a_fine_tuned_classifier_learns_at_the_default_models_rate(tmp_path):
    """From a checkpoint, the default model's fresh classifier takes its own from-scratch rate (the paper's 5x/10x
    boost over that rate blew fine-tuning up: experiments/generalisation); the paper's recipe keeps the boost."""
    default = OmegaConf.to_container(compose_train(["model.init_from=x.ckpt"], tmp_path).model.optimizer, resolve=True)
    paper = OmegaConf.to_container(compose_train(["model=tsm"], tmp_path).model.optimizer, resolve=True)
    assert default["head_lr_mult_pretrained"] == default["head_lr_mult_scratch"] == {"weight": 1.0, "bias": 2.0}
    assert paper["head_lr_mult_pretrained"] == {"weight": 5.0, "bias": 10.0} and paper["base_lr"] == 0.01


def test_a_seed_that_is_no_integer_is_refused_naming_it(tmp_path):
    """Before: Lightning's bare "invalid literal for int()"."""
    from tsm.training.task import train

    with pytest.raises(ValueError, match="seed must be an integer, got 'abc'"):
        train(compose_train(["seed=abc"], tmp_path))
