"""No silent resume, no lost run: a run resumes only when asked, refuses a directory holding another run,
writes checkpoints and results atomically, and passes over a checkpoint it cannot read."""

import csv
import json
import logging
import subprocess
import sys

import hydra
import pytest
import torch

from tests.helpers import ROOT
from tests.helpers.config import TINY, compose_train, hydra_run_dir, tiny_checkpoint
from tests.helpers.scripts import run_python
from tsm.distill.cache import load_or_build
from tsm.errors import DataError
from tsm.files import atomic_open, stale_temporaries
from tsm.training import resume
from tsm.training.checkpoint_io import AtomicCheckpointIO
from tsm.training.resume import (
    RunDirInUse,
    claim_run_dir,
    continue_wandb_run,
    is_requeue,
    newest_readable,
    resume_checkpoint,
)
from tsm.training.task import instantiate_data, train

ONE_EPOCH = [*TINY, "logger=csv", "test=false"]


def saved_epoch(path) -> int:
    return torch.load(path, weights_only=True)["epoch"]


def wandb_run_ids(run_dir) -> list[str]:
    """The W&B run id of each attempt's offline folder, oldest first."""
    return [path.name.rsplit("-", 1)[1] for path in sorted(run_dir.glob("wandb/offline-run-*"))]


@pytest.mark.slow
def test_a_rerun_in_a_used_directory_is_refused_unless_asked(tmp_path):
    """With the default loggers (W&B offline and CSV)."""
    run, one_epoch = tmp_path / "run", [*TINY, "test=false"]
    train(compose_train(one_epoch, run))
    config = (run / "config.yaml").read_text()
    with pytest.raises(RunDirInUse, match="ckpt_path=last.*overwrite=true") as error:
        train(compose_train([*one_epoch, "seed=7"], run))
    assert str(run) in str(error.value) and "checkpoints/" in str(error.value)
    assert (run / "config.yaml").read_text() == config  # refused before anything was written

    resumed = train(compose_train([*one_epoch, "trainer.max_epochs=2", "ckpt_path=last"], run))  # asked: resumes
    assert saved_epoch(run / "checkpoints" / "last.ckpt") == 1
    rows = (next(run.glob("csv/version_1/metrics.csv"))).read_text()
    assert ",0," not in rows.replace("epoch", "")  # the second attempt trained epoch 1 only
    logged = [row for path in sorted(run.glob("csv/version_*/metrics.csv")) for row in csv.DictReader(open(path))]
    assert resumed["val/acc_best"] == pytest.approx(max(float(row["val/acc"]) for row in logged if row["val/acc"]))
    assert len(set(wandb_run_ids(run))) == 2  # offline, each attempt is a W&B run of its own
    fitted = json.loads((run / "metrics.json").read_text())
    tested = train(compose_train([*TINY, "trainer.max_epochs=2", "ckpt_path=last"], run))  # trains no epoch
    assert json.loads((run / "metrics.json").read_text()) == tested  # it replaced the training's metrics by the test's
    assert tested == {**fitted, **{k: v for k, v in tested.items() if k.startswith("test/")}} and "test/acc" in tested

    train(compose_train([*one_epoch, "overwrite=true"], run))  # asked: starts afresh
    assert saved_epoch(run / "checkpoints" / "last.ckpt") == 0
    assert sorted(p.name for p in (run / "csv").iterdir()) == ["version_0"]  # the earlier run's logs went with it
    assert len(wandb_run_ids(run)) == 1


def test_online_every_attempt_of_a_run_logs_to_its_wandb_run(tmp_path, caplog):
    """Before, each attempt (a requeue, ckpt_path=last) started a W&B run of its own. A given id is kept; a record
    older than the id starts a new W&B run; offline, W&B would ignore the resume (each attempt its own run)."""
    online = [*TINY, "logger.wandb.offline=false"]
    claim_run_dir(tmp_path, None, requeued=False, overwrite=False)
    recorded = json.loads((tmp_path / "run.json").read_text())["wandb_id"]
    for _attempt in range(2):  # the first and a resumed one
        cfg = compose_train(online, tmp_path)
        continue_wandb_run(cfg, tmp_path)
        assert cfg.logger.wandb.id == recorded
    cfg = compose_train(TINY, tmp_path)
    continue_wandb_run(cfg, tmp_path)
    assert cfg.logger.wandb.id is None
    cfg = compose_train([*online, "logger.wandb.id=mine"], tmp_path)
    continue_wandb_run(cfg, tmp_path)
    assert cfg.logger.wandb.id == "mine"
    (tmp_path / "run.json").write_text(json.dumps({"slurm_job_id": None, "slurm_restart_count": 0}))
    cfg = compose_train(online, tmp_path)
    with caplog.at_level(logging.INFO):
        continue_wandb_run(cfg, tmp_path)
    assert cfg.logger.wandb.get("id") is None and "records no W&B run id" in caplog.text


def test_a_run_that_fails_before_its_first_checkpoint_gives_its_directory_back(tmp_path, caplog):
    """Before, its run.json stayed: a rerun in the directory was refused, and the ckpt_path=last the refusal
    suggests found nothing to resume. The error is logged (into the run directory's log file under Hydra)."""
    run = tmp_path / "run"
    with pytest.raises(FileNotFoundError, match="ckpt_path: no such file"):
        train(compose_train([*ONE_EPOCH, f"ckpt_path={tmp_path / 'typo.ckpt'}"], run))
    assert not (run / "run.json").exists() and "the run failed: FileNotFoundError" in caplog.text
    with pytest.raises(IndexError):  # two classes for nine-class data: fails in its first step, after config.yaml
        train(compose_train([*ONE_EPOCH, "model.num_classes=2"], run))
    assert not (run / "run.json").exists() and not (run / "config.yaml").exists()
    train(compose_train(ONE_EPOCH, run))
    assert saved_epoch(run / "checkpoints" / "last.ckpt") == 0 and (run / "run.json").is_file()


def test_only_a_later_attempt_of_the_same_slurm_job_is_a_requeue(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.delenv("SLURM_RESTART_COUNT", raising=False)
    claim_run_dir(tmp_path, None, requeued=False, overwrite=False)
    assert json.loads((tmp_path / "run.json").read_text())["slurm_job_id"] == "77"
    assert not is_requeue(tmp_path)  # a second run in the same allocation
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    assert is_requeue(tmp_path)
    monkeypatch.setenv("SLURM_JOB_ID", "78")
    assert not is_requeue(tmp_path)
    monkeypatch.delenv("SLURM_JOB_ID")
    assert not is_requeue(tmp_path)


def test_two_runs_claiming_one_directory_at_once_do_not_share_it(tmp_path, monkeypatch):
    claim_run_dir(tmp_path, None, requeued=False, overwrite=False)
    first = (tmp_path / "run.json").read_text()
    monkeypatch.setattr(resume, "previous_run", lambda run_dir: [])  # both found it empty before either wrote
    with pytest.raises(RunDirInUse, match="claimed by another run started at the same time"):
        claim_run_dir(tmp_path, None, requeued=False, overwrite=False)
    assert (tmp_path / "run.json").read_text() == first and sorted(p.name for p in tmp_path.iterdir()) == ["run.json"]


def test_a_run_directory_in_use_is_neither_resumed_nor_replaced(tmp_path):
    """A second ckpt_path=last (or overwrite=true) while the run ran wrote checkpoints beside its (or deleted them).
    The directory is held until the process ends, however it ends: a killed run's requeue is not refused."""
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    claim_run_dir(run, None, requeued=False, overwrite=False)
    (run / "checkpoints" / "last.ckpt").write_bytes(b"its checkpoint")
    holds = (
        f"from tsm.training.resume import hold_run_dir\nwith hold_run_dir(__import__('pathlib').Path({str(run)!r})):"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", f"{holds}\n print('held', flush=True)\n input()"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline() == "held\n"
    for asked in ("ckpt_path=last", "overwrite=true"):
        with pytest.raises(RunDirInUse, match=f"{run} is in use: another run is running in it now"):
            train(compose_train([*ONE_EPOCH, asked], run))
    assert (run / "checkpoints" / "last.ckpt").read_bytes() == b"its checkpoint"
    holder.kill()  # SIGKILL: nothing of its own releases the lock
    holder.wait()
    with resume.hold_run_dir(run):
        pass


def test_run_directories_differ_within_a_second():
    assert len({hydra_run_dir() for _ in range(5)}) == 5


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("resume"), [])


def test_another_run_s_checkpoint_does_not_resume_into_a_used_directory(checkpoint, tmp_path):
    """Before, any ckpt_path passed the claim: the directory's run was replaced by the other one's, its checkpoints
    mixed with the other run's."""
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    claim_run_dir(run, None, requeued=False, overwrite=False)
    (run / "checkpoints" / "last.ckpt").write_bytes(checkpoint.read_bytes())
    (run / "learning_curves.png").write_bytes(b"png")
    first = (run / "run.json").read_text()
    with pytest.raises(RunDirInUse, match=f"and ckpt_path={checkpoint} is not one of its checkpoints"):
        claim_run_dir(run, str(checkpoint), requeued=False, overwrite=False)
    assert not claim_run_dir(run, str(run / "checkpoints" / "last.ckpt"), requeued=False, overwrite=False)
    assert (run / "run.json").read_text() == first  # its own checkpoint resumes it
    assert claim_run_dir(run, str(checkpoint), requeued=False, overwrite=True)  # asked: afresh, then resumed
    assert (run / "run.json").read_text() != first and sorted(p.name for p in run.iterdir()) == ["run.json"]


@pytest.mark.slow
def test_a_test_only_run_tests_the_checkpoint_it_names(checkpoint, tmp_path):
    """train=false ignored ckpt_path and tested random weights, in any run directory (a run's metrics.json was
    replaced). A checkpoint predicting one class scores that class's share of the test videos."""
    state = torch.load(checkpoint, weights_only=True)
    test_only = [*TINY, "logger=csv", "train=false"]
    cfg = compose_train(test_only, tmp_path / "labels")
    source = instantiate_data(cfg).source(split="test")
    labels = [source.label(i) for i in range(len(source))]
    state["state_dict"]["net.fc.weight"].zero_()
    state["state_dict"]["net.fc.bias"].copy_(10 * torch.nn.functional.one_hot(torch.tensor(labels[0]), 9))
    torch.save(state, tmp_path / "one_class.ckpt")
    metrics = train(compose_train([*test_only, f"ckpt_path={tmp_path / 'one_class.ckpt'}"], tmp_path / "t"))
    assert metrics["test/acc"] == pytest.approx(labels.count(labels[0]) / len(labels))
    with pytest.raises(ValueError, match="train=false tests the model as built, and its classifier is random"):
        train(compose_train(test_only, tmp_path / "random"))
    with pytest.raises(RunDirInUse, match="already holds a run .*: a test-only run \\(train=false\\) writes its"):
        train(compose_train([*test_only, f"ckpt_path={checkpoint}", "overwrite=true"], tmp_path / "t"))
    assert (tmp_path / "t" / "metrics.json").is_file()  # overwrite=true deletes nothing for a test-only run
    with pytest.raises(ValueError, match="holds another network than this run's model \\(model.backbone: "):
        train(compose_train([*test_only, f"ckpt_path={checkpoint}", "model.backbone=resnet10t"], tmp_path / "net"))
    other_batch = [*test_only, f"ckpt_path={tmp_path / 'one_class.ckpt'}", "data.batch_size=4"]  # not the network
    assert train(compose_train(other_batch, tmp_path / "t4"))["test/acc"] == metrics["test/acc"]


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("tsm_history", 5, "its tsm_history is not a list"),
        ("tsm_rng", {"torch": "x"}, "its tsm_rng holds no generator"),
    ],
)
def test_a_resumed_checkpoint_with_a_damaged_record_is_refused_naming_it(checkpoint, tmp_path, key, value, message):
    """Before: "'int' object is not iterable", "expected a torch.ByteTensor", naming no file."""
    state = torch.load(checkpoint, weights_only=True)
    state[key] = value
    torch.save(state, tmp_path / "damaged.ckpt")
    with pytest.raises(DataError, match=f"damaged.ckpt: {message}"):
        train(compose_train([*ONE_EPOCH, "trainer.max_epochs=2", f"ckpt_path={tmp_path / 'damaged.ckpt'}"], tmp_path))


def test_a_checkpoint_with_the_data_s_classes_in_another_order_neither_resumes_nor_initialises(checkpoint, tmp_path):
    """A Jester or Something-V1 checkpoint trained before their classes were sorted would read its classifier's
    rows as other classes without a word (src/eval.py refused it; resuming, model.init_from and train=false did not)."""
    state = torch.load(checkpoint, weights_only=True)
    state["tsm_info"]["class_names"] = state["tsm_info"]["class_names"][::-1]
    torch.save(state, tmp_path / "reordered.ckpt")
    for key in ("ckpt_path", "model.init_from"):
        for only_test in ([], ["train=false", "test=true"]):  # nor is it tested by train.py as if it were in order
            with pytest.raises(ValueError, match=f"{key}=.*reordered.ckpt numbers the data's classes in another order"):
                train(compose_train([*ONE_EPOCH, *only_test, f"{key}={tmp_path / 'reordered.ckpt'}"], tmp_path / key))


def test_a_resumed_run_s_best_validation_accuracy_counts_the_epochs_before_the_resume():
    """val/acc_best (src/train.py's optimized_metric, a sweep's objective) restarted at a resume: a requeued run
    reported the best of its last attempt's epochs only."""
    from tsm.training.module import TSMLitModule

    module = TSMLitModule("resnet18", 3, 2)
    history = [{"split": "val", "epoch": 0, "loss": 1.0, "acc": 0.9}, {"split": "train", "epoch": 0, "acc": 0.99}]
    history.append({"split": "val", "epoch": 1, "loss": 1.2, "acc": 0.6})
    module.on_load_checkpoint({"tsm_history": history})
    module.val_acc_best.update(torch.tensor(0.7))  # the first epoch after the resume
    assert module.val_acc_best.compute().item() == pytest.approx(0.9)


def test_training_tests_a_best_checkpoint_of_its_own_run_only(tmp_path, caplog):
    """A resumed checkpoint records where its best checkpoint was; a crafted or moved one named any file, which was
    tested unchecked."""
    from types import SimpleNamespace

    from tsm.training.task import tested_checkpoint

    def trainer(best):
        return SimpleNamespace(checkpoint_callback=SimpleNamespace(best_model_path=str(best)))

    own = tmp_path / "run" / "checkpoints"
    own.mkdir(parents=True)
    (own / "epoch_003.ckpt").write_bytes(b"")
    assert tested_checkpoint(trainer(own / "epoch_003.ckpt"), tmp_path / "run") == str(own / "epoch_003.ckpt")
    with caplog.at_level(logging.WARNING):  # the run directory was moved: its own file of that name
        assert tested_checkpoint(trainer(tmp_path / "old" / "epoch_003.ckpt"), tmp_path / "run") == str(
            own / "epoch_003.ckpt"
        )
    assert "names " + str(tmp_path / "old" / "epoch_003.ckpt") + " as its best" in caplog.text
    with pytest.raises(DataError, match=r"nan_weights.ckpt: the run's best checkpoint, .* is not in"):
        tested_checkpoint(trainer(tmp_path / "nan_weights.ckpt"), tmp_path / "run")
    assert tested_checkpoint(SimpleNamespace(checkpoint_callback=None), tmp_path / "run") is None


def test_a_requeued_job_started_from_a_checkpoint_goes_on_from_its_own(checkpoint, tmp_path):
    """It restarted from the ckpt_path it was started with, losing the epochs trained since."""
    (tmp_path / "checkpoints").mkdir()
    assert resume_checkpoint(tmp_path, str(checkpoint), requeued=True) == str(checkpoint)  # none of its own yet
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(checkpoint.read_bytes())
    assert resume_checkpoint(tmp_path, str(checkpoint), requeued=True) == str(tmp_path / "checkpoints" / "last.ckpt")


def test_an_unreadable_last_checkpoint_falls_back_to_the_newest_readable(checkpoint, tmp_path, caplog):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    data = checkpoint.read_bytes()
    (folder / "epoch_000.ckpt").write_bytes(data)
    (folder / "epoch_001.ckpt").write_bytes(b"")  # a newer one, empty
    (folder / "last.ckpt").write_bytes(data[: len(data) // 2])  # the newest, truncated
    with caplog.at_level(logging.WARNING):
        assert resume_checkpoint(tmp_path, "last", requeued=False) == str(folder / "epoch_000.ckpt")
    assert f"{folder / 'last.ckpt'} cannot be read" in caplog.text and "epoch_001.ckpt cannot be read" in caplog.text
    (folder / "epoch_000.ckpt").unlink()
    assert newest_readable(folder) is None
    with pytest.raises(FileNotFoundError, match="ckpt_path=last: no readable checkpoint"):
        resume_checkpoint(tmp_path, "last", requeued=False)
    assert resume_checkpoint(tmp_path, None, requeued=False) is None  # not asked: no resume


def test_a_named_checkpoint_that_is_no_run_s_is_refused_naming_ckpt_path(checkpoint, tmp_path):
    """Lightning would hand a bad file to torch.load, whose error advises weights_only=False (running the file's
    code); a run's checkpoint passes, a missing, garbled or plain-weights file is refused naming the key."""
    assert resume_checkpoint(tmp_path, str(checkpoint), requeued=False) == str(checkpoint)
    with pytest.raises(FileNotFoundError, match="ckpt_path: no such file"):
        resume_checkpoint(tmp_path, str(tmp_path / "missing.ckpt"), requeued=False)
    with pytest.raises(FileNotFoundError, match="ckpt_path: .* is a folder; name a file in it"):  # 'no such file'
        resume_checkpoint(tmp_path, str(tmp_path), requeued=False)
    (tmp_path / "notes.ckpt").write_text("not a checkpoint")
    with pytest.raises(DataError, match="ckpt_path is not a readable torch.save file"):
        resume_checkpoint(tmp_path, str(tmp_path / "notes.ckpt"), requeued=False)
    torch.save({"conv.weight": torch.ones(2)}, tmp_path / "weights.pt")
    with pytest.raises(DataError, match="not a Lightning checkpoint of a run; .* model.init_from"):
        resume_checkpoint(tmp_path, str(tmp_path / "weights.pt"), requeued=False)


def test_a_checkpoint_trained_otherwise_is_refused_before_it_resumes(checkpoint, tmp_path):
    """Another backbone gave Lightning's bare state_dict size mismatch, another learning rate was silently replaced
    by the checkpoint's. The memory format and the files a run reads or writes may differ; whether the weights
    started from given ones may not (the classifier's learning rates follow it). A difference copied from a data
    key is named by that key; model.init_from is offered only for the same network."""
    from tsm.training.resume import check_same_run, differences

    def check(*overrides):
        cfg = compose_train([*TINY, *overrides], tmp_path / "cfg")
        data = instantiate_data(cfg).config
        check_same_run(str(checkpoint), hydra.utils.instantiate(cfg.model).hparams, cfg.model, data)

    check()
    check("model.channels_last=true", "data.num_workers=1", "data.on_error=skip", f"paths.output_dir={tmp_path}")
    check("+data.pin_memory=true")  # how it is read
    with pytest.raises(ValueError, match=r"1 differ \(data.augment.flip: True in the checkpoint, False now\): .*init_"):
        check("data.augment.flip=false")  # would go on training on other clips, unnoticed
    with pytest.raises(ValueError, match=r"2 differ \(data.scale_size: 32 .* 40 now; data.source.noise: 0.03 .* 0.1 "):
        check("data.scale_size=40", "data.source.noise=0.1")
    with pytest.raises(
        ValueError, match=r"\(model.pretrained, pretrained_file or init_from: False in the checkpoint, True now"
    ):
        check(f"model.init_from={checkpoint}")
    with pytest.raises(ValueError, match=r"\(model.backbone: 'resnet10t_050' in the checkpoint, .*now\): resume wi"):
        check("model.backbone=mobilenetv2_050")
    with pytest.raises(ValueError, match=r"\(data.batch_size: 2 in the checkpoint, 3 now\): .* model.init_from="):
        check("data.batch_size=3")
    kd = {"distill": {"cache_file": "run_a/teacher_logits.pt", "teacher_ckpt": "a.pt", "alpha": 0.5}}
    moved = {"distill": {"cache_file": "run_b/teacher_logits.pt", "teacher_ckpt": "../a.pt", "alpha": 0.5}}
    assert differences(kd, moved, "") == []
    assert differences(kd, {"distill": {**moved["distill"], "alpha": 0.7}}, "") == [("distill.alpha", 0.5, 0.7)]
    resumed = compose_train([*ONE_EPOCH, f"ckpt_path={checkpoint}", "model.optimizer.base_lr=0.5"], tmp_path / "run")
    with pytest.raises(ValueError, match=r"model.optimizer.base_lr: .* in the checkpoint, 0.5 now\): .*init_from"):
        train(resumed)
    assert not (tmp_path / "run" / "config.yaml").exists()  # refused before the run directory records this run


class Interrupted(Exception):
    pass


def dies_halfway(obj, file):
    """torch.save cut short: half the bytes written, then the process 'dies'."""
    file.write(b"PK\x03\x04 half a checkpoint")
    raise Interrupted


def test_a_write_cut_short_leaves_the_old_checkpoint(checkpoint, tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    path.write_bytes(checkpoint.read_bytes())
    monkeypatch.setattr(torch, "save", dies_halfway)
    with pytest.raises(Interrupted):
        AtomicCheckpointIO().save_checkpoint({"epoch": 5}, path)
    assert path.read_bytes() == checkpoint.read_bytes() and not stale_temporaries(tmp_path)
    with pytest.raises(Interrupted), atomic_open(tmp_path / "metrics.json", "w") as file:
        file.write("{")
        raise Interrupted
    assert not (tmp_path / "metrics.json").exists()


def test_training_writes_checkpoints_through_the_atomic_io(tmp_path, monkeypatch):
    saved = []
    monkeypatch.setattr(
        AtomicCheckpointIO, "save_checkpoint", lambda self, c, path, storage_options=None: saved.append(path)
    )
    train(compose_train([*ONE_EPOCH, "callbacks.model_checkpoint=null"], tmp_path))
    assert [p.endswith("last.ckpt") for p in saved] == [True]


def test_an_unreadable_teacher_cache_is_rebuilt(tmp_path, caplog):
    path = tmp_path / "teacher_logits.pt"
    key, ids = {"teacher_sha256": "x"}, ["a", "b"]
    logits = load_or_build(path, key, ids, lambda: torch.ones(2, 3))
    path.write_bytes(path.read_bytes()[:40])  # truncated by a kill before writes were atomic
    with caplog.at_level(logging.WARNING):
        rebuilt = load_or_build(path, key, ids, lambda: torch.full((2, 3), 2.0))
    assert f"{path} cannot be read" in caplog.text and torch.equal(rebuilt, 2 * logits)
    assert torch.equal(load_or_build(path, key, ids, lambda: torch.zeros(2, 3)), rebuilt)  # read back


def test_a_teacher_cache_of_another_shape_than_its_videos_is_refused(tmp_path):
    path = tmp_path / "teacher_logits.pt"
    torch.save({"key": {}, "video_ids": ["a", "b"], "logits": torch.ones(5, 3)}, path)
    with pytest.raises(DataError, match=r"teacher_logits.pt: its logits \(5, 3\) are not one row per video"):
        load_or_build(path, {}, ["a", "b"], lambda: torch.ones(2, 3))


def test_a_file_that_is_no_teacher_cache_is_not_replaced_by_one(checkpoint, tmp_path):
    """A checkpoint or notes given as model.distill.cache_file were overwritten with a warning."""
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes")
    with pytest.raises(DataError, match="notes.txt: model.distill.cache_file is not a readable .* not replaced"):
        load_or_build(notes, {}, ["a"], lambda: torch.ones(1, 3))
    assert notes.read_text() == "my notes"
    data = checkpoint.read_bytes()
    with pytest.raises(DataError, match="holds no teacher logits \\(another file\\?\\); it is not replaced"):
        load_or_build(checkpoint, {}, ["a"], lambda: torch.ones(1, 3))
    assert checkpoint.read_bytes() == data


@pytest.mark.slow
def test_kill_and_resume_study_tiny(tmp_path):
    """Killed three times (during checkpoint writes too), resumed each time: every checkpoint left readable,
    and the final weights are the uninterrupted run's, bit for bit."""
    study = ["-m", "experiments.reliability.kill_resume", "--kills", "3", "--epochs", "6", "--out", tmp_path]
    run_python(study, timeout=600)  # as the docs run it
    result = json.loads((tmp_path / "results.json").read_text())
    assert result["kills"] == 3 and result["kills_during_writes"] >= 1
    assert result["unreadable_checkpoints"] == 0 and result["max_abs_weight_diff"] == 0
    assert "| 3 |" in (tmp_path / "results.md").read_text()


def test_atomic_files_get_the_mode_open_would_give(tmp_path):
    import os

    umask = os.umask(0o022)
    os.umask(umask)
    with atomic_open(tmp_path / "metrics.json", "w") as file:
        file.write("{}")
    assert (tmp_path / "metrics.json").stat().st_mode & 0o777 == 0o666 & ~umask


def test_the_committed_kill_study_lost_nothing():
    """The kill study's committed results (the figures README.md and docs/reliability.md quote, checked in
    tests/test_docs.py): no checkpoint left unreadable, the final weights the uninterrupted run's."""
    study = json.loads((ROOT / "experiments" / "reliability" / "results.json").read_text())
    assert study["kills"] > 0 and study["kills_during_writes"] > 0
    assert study["unreadable_checkpoints"] == 0 and study["max_abs_weight_diff"] == 0
