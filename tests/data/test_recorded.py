"""A config read from a file is data: a checkpoint's recorded data config and architecture are rebuilt from
this project's own classes and plain values, never given to ``hydra.utils.instantiate``."""

from functools import partial
from pathlib import Path

import pytest
import torch

from tests.helpers.config import tiny_checkpoint
from tests.helpers.scripts import run_python
from tsm.data.datamodule import ClipDataModule
from tsm.data.recorded import datamodule_from_record
from tsm.data.sources.synthetic import SyntheticGestures
from tsm.errors import DataError, UnsafeFileError
from tsm.metadata import DATA_KEY
from tsm.models.checkpoints import data_config, load_recognizer


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("stored"), [])


def crafted(ckpt: Path, path: Path, edit) -> Path:
    """A copy of ``ckpt`` with ``edit(state)`` applied: still plain data, so weights_only loads it."""
    state = torch.load(ckpt, weights_only=True)
    edit(state)
    torch.save(state, path)
    return path


def open_call(marker: Path) -> dict:
    """What hydra.utils.instantiate turns into ``open(marker, "a")``: creating the marker file."""
    return {"_target_": "builtins.open", "_args_": [str(marker), "a"]}


def test_the_recorded_data_rebuilds_the_training_data(ckpt):
    record = data_config(ckpt)
    data = datamodule_from_record({**record, "log_dir": None}, str(ckpt), DATA_KEY)
    assert isinstance(data, ClipDataModule)
    assert isinstance(data.source, partial) and data.source.func is SyntheticGestures
    assert data.num_classes == 9 and data.crop_size == record["crop_size"]
    assert len(data.dataset("val")) == record["source"]["sizes"]["val"]


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (lambda d, m: d.update(source=open_call(m)), "tsm_data.source._target_"),
        (lambda d, m: d.update(open_call(m)), "tsm_data._target_"),
        (lambda d, m: d["source"].update(noise=open_call(m)), "tsm_data.source.noise._target_"),
        (lambda d, m: d["augment"].update(scales=[1.0, open_call(m)]), "tsm_data.augment.scales[1]._target_"),
        (lambda d, m: d["source"].update(_args_=[str(m)]), "'_args_'"),
        (lambda d, m: d["source"].update(_recursive_=False), "'_recursive_'"),
        (lambda d, m: d["source"].update(_partial_="yes"), "tsm_data.source._partial_"),
        (lambda d, m: d["source"].update(evil=1), "does not fit tsm.data.sources.synthetic.SyntheticGestures"),
        (lambda d, m: d.update(source=torch.zeros(2)), "tsm_data.source holds a Tensor"),
    ],
    ids=["nested", "top", "deep", "in_list", "args", "recursive", "partial", "unknown_argument", "tensor"],
)
def test_anything_else_is_refused_naming_file_and_key(ckpt, tmp_path, edit, key):
    marker = tmp_path / "code_ran"
    record = data_config(ckpt)
    edit(record, marker)
    with pytest.raises(UnsafeFileError, match="never run|stored config|does not fit|plain value|true or false") as e:
        datamodule_from_record(record, "evil.ckpt", DATA_KEY)
    assert "evil.ckpt" in str(e.value) and key in str(e.value)
    assert not marker.exists()


@pytest.mark.slow
def test_export_of_a_crafted_checkpoint_runs_nothing(ckpt, tmp_path):
    """The hole itself: ``export.py precision=int8`` rebuilt the checkpoint's data with hydra's instantiate."""
    marker = tmp_path / "code_ran"
    evil = crafted(ckpt, tmp_path / "evil.ckpt", lambda s: s[DATA_KEY].update(source=open_call(marker)))
    export = ["src/export.py", f"ckpt_path={evil}", "precision=int8", f"hydra.run.dir={tmp_path / 'run'}"]
    done = run_python(export, ok=False)
    assert "UnsafeFileError" in done.stderr and "tsm_data.source._target_ is 'builtins.open'" in done.stderr
    assert not marker.exists()


@pytest.mark.parametrize(
    ("hparams", "message"),
    [
        ({"backbone": "hf-hub:someone/model"}, "not i3d or a model in timm's registry"),
        ({"backbone_args": {"checkpoint_path": "/etc/passwd"}}, "backbone_args checkpoint_path would load"),
        ({"backbone_args": {"pretrained_cfg_overlay": {"file": "x.pth"}}}, "pretrained_cfg_overlay would load"),
    ],
    ids=["hub_backbone", "timm_checkpoint_path", "timm_pretrained_file"],
)
def test_a_recorded_architecture_loads_nothing_else(ckpt, tmp_path, hparams, message):
    evil = crafted(ckpt, tmp_path / "evil.ckpt", lambda s: s["hyper_parameters"].update(hparams))
    with pytest.raises(UnsafeFileError, match=message) as error:
        load_recognizer(evil)
    assert str(evil) in str(error.value)


def test_a_checkpoint_of_another_lightning_project_is_named_as_such(ckpt, tmp_path):
    """Hyper-parameters without this project's keys: before, a bare TypeError of build_recognizer's arguments, or an
    UnsafeFileError about a backbone the file never named."""
    other = crafted(ckpt, tmp_path / "other.ckpt", lambda s: s.update(hyper_parameters={"lr": 0.1, "hidden": 64}))
    with pytest.raises(DataError, match="lack backbone, num_classes, num_segments: not a checkpoint of this project"):
        load_recognizer(other)
