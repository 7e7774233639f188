"""Weights files are untrusted: a pickle that runs code when unpickled is refused by every entry point, and
a file that is no torch.save archive at all is a DataError naming it and its role."""

import os
from pathlib import Path

import pytest
import torch

from tests.helpers.config import TINY, compose_train
from tests.helpers.scripts import run_python
from tsm.distill.cache import load_or_build
from tsm.distill.teacher import load_teacher
from tsm.errors import DataError
from tsm.models import build_recognizer
from tsm.models.checkpoints import load_recognizer
from tsm.models.i3d import load_i3d
from tsm.models.official_weights import load_official_tsm
from tsm.models.weight_files import UnsafeFileError, safe_load
from tsm.training.module import TSMLitModule
from tsm.training.task import train

REFUSED = "not unpickled"


class Payload:
    """Unpickling this runs a shell command that creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture
def marker(tmp_path) -> Path:
    return tmp_path / "code_ran"


@pytest.fixture
def evil_ckpt(tmp_path, marker) -> Path:
    """Looks like a Lightning checkpoint of this project; its hyper-parameters carry the payload."""
    path = tmp_path / "evil.ckpt"
    hparams = {"backbone": "mobilenetv2_050", "num_classes": 9, "num_segments": 4, "extra": Payload(marker)}
    torch.save({"pytorch-lightning_version": "2.6.0", "hyper_parameters": hparams, "state_dict": {}}, path)
    return path


@pytest.fixture
def evil_pth(tmp_path, marker) -> Path:
    """Looks like a released TSM file or a plain state dict."""
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"new_fc.weight": torch.zeros(2, 2)}, "best_prec1": Payload(marker)}, path)
    return path


def test_the_payload_would_run_if_unpickled(evil_ckpt, marker):
    """The test's premise: a full unpickling runs the command."""
    torch.load(evil_ckpt, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize(
    "load",
    [
        lambda p: load_recognizer(p),
        lambda p: load_official_tsm(p),
        lambda p: load_i3d(p),
        lambda p: load_teacher("checkpoint", p, 9),
        lambda p: load_teacher("i3d", p, 9),
        lambda p: TSMLitModule("mobilenetv2_050", 9, 4, init_from=str(p)),
        lambda p: build_recognizer("mobilenetv2_050", 9, 4, pretrained_file=str(p)),
        lambda p: load_or_build(p, {}, [], lambda: torch.zeros(0, 9)),
    ],
    ids=["recognizer", "official_tsm", "i3d", "teacher_ckpt", "i3d_teacher", "init_from", "backbone", "cache"],
)
@pytest.mark.parametrize("fixture", ["evil_ckpt", "evil_pth"])
def test_python_entry_points_refuse_the_payload(load, fixture, request, marker):
    path = request.getfixturevalue(fixture)
    with pytest.raises(UnsafeFileError, match=REFUSED) as error:
        load(path)
    assert str(path) in str(error.value) and "weights_only=False" in str(error.value)  # how to load a trusted one
    assert not marker.exists()


def test_training_resume_refuses_the_payload(evil_ckpt, marker, tmp_path):
    """``ckpt_path=`` of a training run (Lightning's own checkpoint loading); evaluation's ``ckpt_path`` is
    load_recognizer's, refused above and by src/eval.py below."""
    with pytest.raises(Exception, match="Weights only load failed|not unpickled"):
        train(compose_train([*TINY, "logger=csv", f"ckpt_path={evil_ckpt}"], tmp_path / "train"))
    assert not marker.exists()


@pytest.mark.parametrize("content", ["empty", "text", "truncated", "zip"])
def test_a_file_that_is_no_torch_save_archive_says_so(content, tmp_path):
    path = tmp_path / "teacher.ckpt"
    torch.save({"state_dict": {"fc.weight": torch.zeros(4, 4)}}, path)
    whole = path.read_bytes()
    data = {"empty": b"", "text": b"not a checkpoint", "truncated": whole[: len(whole) // 2], "zip": whole[:-30]}
    path.write_bytes(data[content])
    with pytest.raises(DataError, match="model.distill.teacher_ckpt is not a readable torch.save file") as error:
        safe_load(path, "model.distill.teacher_ckpt")
    assert error.value.path == str(path)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("script", "args"),
    [
        ("eval.py", []),
        ("export.py", ["mode=stream"]),
        ("stream.py", ["source=nothing.mp4"]),
        ("train.py", ["debug=fdr", "logger=csv"]),
    ],
)
def test_scripts_refuse_the_payload(script, args, evil_ckpt, marker, tmp_path):
    key = "model.init_from" if script == "train.py" else "ckpt_path"
    done = run_python([f"src/{script}", f"{key}={evil_ckpt}", f"hydra.run.dir={tmp_path}", *args], ok=False)
    assert REFUSED in done.stderr, done.stderr[-2000:]
    assert not marker.exists()
