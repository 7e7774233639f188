"""A checkpoint (and its ONNX export) is all that using a model needs: no dataset, no backbone file, no PyTorch."""

import json
import logging
import shutil
from pathlib import Path

import pytest
import timm
import torch

from tests.helpers.config import compose_train
from tests.helpers.scripts import run_python
from tests.helpers.videos import JESTER_CLASSES, make_jester, write_video
from tsm.errors import DataError
from tsm.evaluate import evaluate
from tsm.metadata import INFO_KEY
from tsm.models.checkpoints import load_recognizer
from tsm.streaming.runtime import read_metadata
from tsm.training.task import train

DATA = ["data=jester", "data.num_workers=0", "data.crop_size=32", "data.scale_size=36", "data.num_segments=4"]


@pytest.fixture(scope="module")
def orphan(tmp_path_factory) -> Path:
    """A causal TSM trained one epoch on a Jester folder from a backbone file; both then deleted."""
    tmp = tmp_path_factory.mktemp("orphan")
    name = compose_train([], tmp / "default").model.backbone  # the default run's backbone
    backbone = tmp / f"{name}_imagenet.pth"
    torch.save(timm.create_model(name).state_dict(), backbone)
    root = make_jester(tmp / "jester")
    overrides = [*DATA, f"data.root={root}", f"model.pretrained_file={backbone}", "model/shift=causal"]
    overrides += ["data.batch_size=2", "trainer.max_epochs=1", "trainer.accelerator=cpu", "logger=csv", "test=false"]
    overrides += ["callbacks.progress_bar=null", "callbacks.model_summary=null"]
    train(compose_train(overrides, tmp / "run"))
    shutil.rmtree(root)
    backbone.unlink()
    return tmp / "run" / "checkpoints" / "last.ckpt"


def test_checkpoint_records_what_using_it_needs(orphan):
    model = load_recognizer(orphan)
    assert model.info["class_names"] == list(JESTER_CLASSES)
    assert model.info["num_segments"] == 4 and model.info["input_size"] == 32 and model.info["scale_size"] == 36
    assert model.info["mean"] == [0.485, 0.456, 0.406] and model.info["shift"]["direction"] == "causal"


@pytest.mark.slow
def test_eval_stream_and_export_without_dataset_or_backbone_file(orphan, tmp_path):
    """Eval needs data to evaluate on (a fresh folder); stream and export need the checkpoint only."""
    fresh = make_jester(tmp_path / "other_jester")
    metrics = evaluate(compose_train([*DATA, f"data.root={fresh}", f"ckpt_path={orphan}"], tmp_path / "eval", "eval"))
    assert metrics["test/videos"] == 2

    video = write_video(tmp_path / "gesture.mp4", num_frames=6)
    stream = ["src/stream.py", f"ckpt_path={orphan}", f"source={video}", f"hydra.run.dir={tmp_path / 's'}"]
    out = run_python(stream).stdout
    assert "frame     5:" in out and any(name in out for name in JESTER_CLASSES)

    onnx_file = tmp_path / "stream.onnx"
    run_python(["src/export.py", f"ckpt_path={orphan}", "mode=stream", f"out={onnx_file}", f"hydra.run.dir={tmp_path}"])
    info = json.loads(read_metadata(onnx_file)[INFO_KEY])
    assert info["class_names"] == list(JESTER_CLASSES) and info["input_size"] == 32 and info["scale_size"] == 36

    # the ONNX file alone runs a video on a machine without PyTorch or timm
    blocked = "import sys; sys.modules.update(torch=None, timm=None); from tsm.streaming.app import main; "
    code = blocked + f"main([{str(onnx_file)!r}, '--source', {str(video)!r}])"
    out = run_python(["-c", code]).stdout
    assert "frame     5:" in out and any(name in out for name in JESTER_CLASSES) and "median_ms" in out


def test_old_checkpoint_without_info_still_loads_and_says_what_is_missing(orphan, tmp_path, caplog):
    state = torch.load(orphan, weights_only=True)
    del state[INFO_KEY]
    old = tmp_path / "old.ckpt"
    torch.save(state, old)
    with caplog.at_level(logging.WARNING):
        model = load_recognizer(old)
    assert model.info["class_names"] == [str(i) for i in range(27)] and model.info["num_segments"] == 4
    assert "does not record class_names, input_size, scale_size, mean, std" in caplog.text


def test_a_checkpoint_whose_info_does_not_fit_its_network_is_refused(orphan, tmp_path):
    """Two class names for 27 classes exported a file naming 2 of its 27 logits; eval failed with a bare zip()."""
    state = torch.load(orphan, weights_only=True)
    state[INFO_KEY]["class_names"] = ["a", "b"]
    torch.save(state, tmp_path / "crafted.ckpt")
    with pytest.raises(DataError, match="crafted.ckpt: tsm_info class_names names 2 classes, and the network has 27"):
        load_recognizer(tmp_path / "crafted.ckpt")


def crafted(state: dict, change: str) -> dict:
    if change == "no state_dict":
        del state["state_dict"]
    elif change == "listed state_dict":
        state["state_dict"] = list(state["state_dict"].values())
    elif change == "text info":
        state[INFO_KEY] = "class names"
    elif change == "wrong fc shape":
        state["state_dict"]["net.fc.weight"] = torch.zeros(3, 3)
    elif change == "negative classes":
        state["hyper_parameters"]["num_classes"] = -1
    elif change == "odd backbone_args":
        state["hyper_parameters"]["backbone_args"] = {"_target_": "os.system"}
    return state


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("no state_dict", "its state_dict is a NoneType, not a mapping of names to tensors"),
        ("listed state_dict", "its state_dict is a list, not a mapping of names to tensors"),
        ("text info", "its tsm_info is a str, not a mapping"),
        ("wrong fc shape", "its weights do not fit the architecture it records: .*size mismatch for fc.weight"),
        ("negative classes", "its hyper_parameters build no network: "),
        ("odd backbone_args", "its hyper_parameters build no network: .*_target_"),
    ],
)
def test_a_malformed_checkpoint_is_refused_naming_the_file(orphan, tmp_path, change, message):
    """Each gave a bare KeyError, AttributeError, TypeError or torch error from deep inside, naming no file."""
    torch.save(crafted(torch.load(orphan, weights_only=True), change), tmp_path / "crafted.ckpt")
    with pytest.raises(DataError, match=f"crafted.ckpt: {message}"):
        load_recognizer(tmp_path / "crafted.ckpt")
