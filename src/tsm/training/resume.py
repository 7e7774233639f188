"""A run resumes only when asked, from a checkpoint it can read, in a run directory that is its own.

- ``ckpt_path=PATH`` resumes from PATH; ``ckpt_path=last`` from the newest readable checkpoint of the
  run directory (``hydra.run.dir=...`` names an earlier run's).
- ``auto_resume=true`` resumes a requeued SLURM job: the run directory's ``run.json`` records the job
  id and ``SLURM_RESTART_COUNT`` of the attempt that started it, and a later attempt of that job (same
  id, higher count) resumes. A second run in the same job (an interactive allocation) is no requeue.
- Otherwise a run directory that already holds a run (``run.json``, ``config.yaml``, ``metrics.json``
  or checkpoints) is refused, naming the overrides that resume it or start afresh in it
  (``overwrite=true`` deletes its checkpoints first).

A checkpoint that cannot be read (a write cut short by a kill before writes were atomic, a damaged
disk) is reported by name and the next newest readable one is used.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import secrets
import shutil
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

from tsm.errors import DataError
from tsm.files import TEMP_SUFFIX, stale_temporaries, write_text_atomic
from tsm.metadata import DATA_KEY, INFO_KEY
from tsm.models.checkpoints import ARCHITECTURE_KEYS, is_lightning_checkpoint
from tsm.models.weight_files import safe_load
from tsm.training.optim import starts_from_weights

log = logging.getLogger(__name__)
RUN_RECORD = "run.json"
WANDB_ID = "wandb_id"  # run.json's key: the W&B run every attempt of the run logs to
CHECKPOINTS = "checkpoints"
LOCK_FILE = ".run.lock"  # held by the process running in the directory (hold_run_dir)
LAST = "last"  # ckpt_path=last
RESULTS = (RUN_RECORD, "config.yaml", "metrics.json")
LOGGER_DIRS = ("csv", "wandb")  # the loggers' folders (conf/logger/): an overwritten run's logs go with it
# the run's other outputs (tsm.training.callbacks' plots, tsm.data.datamodule's reports): they go with it too
OTHER_OUTPUTS = ("learning_curves.png", "confusion_test.png", "skipped_samples.txt", "missing_*.txt")
# hyper-parameters a resumed run may change: where its weights first came from (only whether they came from given
# weights matters, :func:`check_same_run`), the memory format, and the files a run reads or writes
NOT_COMPARED = {
    "pretrained",
    "pretrained_file",
    "init_from",
    "channels_last",
    "distill.teacher_ckpt",
    "distill.cache_file",
}
# data settings a resumed run may change: where the data is (moved to another disk or node), how many processes
# read it, where its reports go, and whether a bad sample stops the run or is skipped (the way past one)
DATA_NOT_COMPARED = {
    "root",
    "source.root",
    "source.frames_root",
    "num_workers",
    "pin_memory",
    "log_dir",
    "on_error",
    "source.on_error",
    "source.splits.test",  # what the run tests, not what it trains on
}


class RunDirInUse(RuntimeError):
    """The run directory holds an earlier run and nothing asked to resume or replace it."""


@contextlib.contextmanager
def hold_run_dir(run_dir: Path) -> Iterator[None]:
    """Hold ``run_dir`` while this process runs in it (global rank 0): a second run in it at the same time (a
    resume of it, ``overwrite=true``, a test-only run) is refused instead of writing checkpoints beside this run's
    or deleting them. The system releases the lock when the process ends, however it ends, so a killed run's
    requeue is never refused on a local disk (on a network file system a crashed node's lock lasts until its lease
    ends: minutes); where the file system has no locks (some network mounts), that is logged."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / LOCK_FILE, "ab") as file:
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunDirInUse(
                f"{run_dir} is in use: another run is running in it now (it holds {run_dir / LOCK_FILE}). Wait for "
                "it to end, or leave hydra.run.dir unset for a new directory"
            ) from None
        except OSError as error:
            log.warning("cannot lock %s (%s): a second run started in it now would not be refused", run_dir, error)
        yield


def has_checkpoints(run_dir: Path) -> bool:
    checkpoints = run_dir / CHECKPOINTS
    return checkpoints.is_dir() and any(checkpoints.iterdir())


def previous_run(run_dir: Path) -> list[str]:
    """What an earlier run left in ``run_dir`` (Hydra's own ``.hydra/`` and log file are this run's)."""
    found = [name for name in RESULTS if (run_dir / name).exists()]
    if has_checkpoints(run_dir):
        found.append(f"{CHECKPOINTS}/")
    return found


def slurm_attempt() -> dict[str, Any]:
    """This process's SLURM job id and restart count (None and 0 outside SLURM)."""
    return {
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "slurm_restart_count": int(os.environ.get("SLURM_RESTART_COUNT") or 0),
    }


def read_record(run_dir: Path) -> dict[str, Any] | None:
    """``run.json`` of ``run_dir``, or None if there is none."""
    path = run_dir / RUN_RECORD
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DataError(path, f"not the JSON record of a run ({error}); move it away to start a run here") from error
    if not isinstance(record, dict):
        raise DataError(path, "not the JSON record of a run (not an object); move it away to start a run here")
    return record


def is_requeue(run_dir: Path) -> bool:
    """Whether this process is a later attempt of the SLURM job that started the run in ``run_dir``."""
    record, now = read_record(run_dir), slurm_attempt()
    if not record or now["slurm_job_id"] is None or record.get("slurm_job_id") != now["slurm_job_id"]:
        return False
    started = record.get("slurm_restart_count", 0)
    return isinstance(started, int) and now["slurm_restart_count"] > started


def claim_run_dir(run_dir: Path, ckpt_path: str | None, requeued: bool, overwrite: bool) -> bool:
    """Make ``run_dir`` this run's (global rank 0 only): refuse one holding an earlier run unless this
    run resumes (``ckpt_path``, a requeue) or replaces it (``overwrite``); record ``run.json`` once. Returns
    whether this attempt wrote the record (:func:`release_run_dir` gives it back)."""
    found = previous_run(run_dir)
    elsewhere = ckpt_path not in (None, LAST) and Path(ckpt_path).resolve().parent != (run_dir / CHECKPOINTS).resolve()
    resumes_here = requeued or (bool(ckpt_path) and not elsewhere)
    if found and not resumes_here:
        if not overwrite:
            given = f", and ckpt_path={ckpt_path} is not one of its checkpoints" if elsewhere else ""
            raise RunDirInUse(
                f"{run_dir} already holds a run ({', '.join(found)}){given}. Resume it with ckpt_path=last, start "
                "afresh in it with overwrite=true (deletes its checkpoints, results and logs), or leave "
                "hydra.run.dir unset for a new directory"
            )
        log.warning("overwrite=true: deleting the earlier run's checkpoints, results and logs in %s", run_dir)
        for folder in (CHECKPOINTS, *LOGGER_DIRS):
            shutil.rmtree(run_dir / folder, ignore_errors=True)
        for pattern in (*RESULTS, *OTHER_OUTPUTS):
            for path in run_dir.glob(pattern):
                path.unlink()
    for temp in stale_temporaries(run_dir / CHECKPOINTS):
        log.warning("deleting %s: a checkpoint write cut short by a kill (the file it replaced is intact)", temp)
        temp.unlink()
    if (run_dir / RUN_RECORD).exists() and resumes_here:
        return False  # resuming: the record stays the first attempt's
    record = json.dumps({**slurm_attempt(), "pid": os.getpid(), WANDB_ID: secrets.token_hex(8)})
    draft = run_dir / f".{RUN_RECORD}.{os.getpid()}{TEMP_SUFFIX}"
    write_text_atomic(draft, record)
    try:  # a hard link appears whole and only if the name is free: of two runs started at once, one wins
        os.link(draft, run_dir / RUN_RECORD)
    except FileExistsError:
        raise RunDirInUse(f"{run_dir} was claimed by another run started at the same time") from None
    except OSError:  # a file system without hard links: an exclusive create (a reader may see it empty)
        with open(run_dir / RUN_RECORD, "x", encoding="utf-8") as file:
            file.write(record)
    finally:
        draft.unlink()
    return True


def continue_wandb_run(cfg: DictConfig, run_dir: Path) -> None:
    """Online, log every attempt of the run in ``run_dir`` (a requeue, ``ckpt_path=last``) to one W&B run: the id
    its ``run.json`` records, unless ``logger.wandb.id`` is given. Offline (the default), each attempt keeps a W&B
    run of its own: W&B ignores a resume offline, and a later sync of a second folder of one id may replace the
    first's history."""
    wandb = (cfg.get("logger") or {}).get("wandb")
    if wandb is None or wandb.get("id") is not None or wandb.get("offline", False):
        return
    record = read_record(run_dir)
    if record is None:  # no run here (a test-only run of train.py in a new directory)
        return
    run_id = record.get(WANDB_ID)
    if not isinstance(run_id, str):  # a record written before W&B ids were kept: this attempt starts a W&B run
        log.info("%s records no W&B run id: this attempt logs to a new W&B run", run_dir / RUN_RECORD)
        return
    with open_dict(wandb):
        wandb.id = run_id


def save_hydra_record(cfg: DictConfig, output_dir: Path) -> None:
    """Hydra's ``.hydra/`` record of the command (``config.yaml``, ``hydra.yaml``, ``overrides.yaml``), written by
    the run once its directory is its own: ``conf/train.yaml`` and ``conf/eval.yaml`` set ``hydra.output_subdir:
    null``, or Hydra would write it first, and a refused rerun would replace the earlier run's record with its own."""
    if not HydraConfig.initialized():  # composed in Python (tests, notebooks): no command to record
        return
    hydra_cfg = HydraConfig.get()
    record = output_dir / ".hydra"
    record.mkdir(parents=True, exist_ok=True)
    nodes = {"config": cfg, "hydra": OmegaConf.create({"hydra": hydra_cfg}), "overrides": hydra_cfg.overrides.task}
    for name, node in nodes.items():
        write_text_atomic(record / f"{name}.yaml", OmegaConf.to_yaml(node))


def release_run_dir(run_dir: Path) -> None:
    """Give back the claim of a run that failed before it wrote a checkpoint (global rank 0 only): its
    ``run.json`` and ``config.yaml`` would make a rerun in ``run_dir`` refused, with nothing there to resume (its
    logs stay)."""
    if not has_checkpoints(run_dir):
        for name in RESULTS:
            (run_dir / name).unlink(missing_ok=True)


def resume_checkpoint(run_dir: Path, ckpt_path: str | None, requeued: bool) -> str | None:
    """The checkpoint to resume from: ``ckpt_path`` itself, checked to be a run's checkpoint, or (``ckpt_path=last``
    or a requeue: a requeued job started from ``ckpt_path`` goes on from its own checkpoints once it has some) the
    newest readable checkpoint of ``run_dir``; None to start from scratch."""
    if requeued and newest_readable(run_dir / CHECKPOINTS):  # a requeue goes on from its own newest, not ckpt_path
        ckpt_path = LAST
    if ckpt_path and ckpt_path != LAST:
        state = safe_load(ckpt_path, "ckpt_path")  # what Lightning would make of a bad file: torch.load's advice
        if not (is_lightning_checkpoint(state) and "state_dict" in state):
            raise DataError(
                ckpt_path,
                "ckpt_path is not a Lightning checkpoint of a run; to start from a file's weights instead, "
                "give it as model.init_from",
            )
        return ckpt_path
    if ckpt_path != LAST and not requeued:
        return None
    folder = run_dir / CHECKPOINTS
    found = newest_readable(folder)
    if found is None and ckpt_path == LAST:
        raise FileNotFoundError(f"ckpt_path=last: no readable checkpoint in {folder}")
    log.info("resuming from %s", found)
    return found


def differences(
    recorded: Any, current: Any, key: str, skipped: Collection[str] = NOT_COMPARED
) -> list[tuple[str, Any, Any]]:
    """``(key path, recorded, current)`` where two config trees differ, but for the paths in ``skipped``; a key the
    recorded tree lacks (an older checkpoint's) is not compared."""
    if key in skipped:
        return []
    if isinstance(recorded, Mapping) and isinstance(current, Mapping):
        keys = sorted(recorded.keys() & current.keys())
        return [d for k in keys for d in differences(recorded[k], current[k], f"{key}.{k}" if key else k, skipped)]
    if isinstance(recorded, (list, tuple)) and isinstance(current, (list, tuple)):
        recorded, current = list(recorded), list(current)
    return [] if recorded == current else [(key, recorded, current)]


def interpolations(model_config: Any, key: str = "model") -> dict[str, str]:
    """``{model.* key: the key it copies}`` for the ``model`` config's plain interpolations, such as
    ``model.optimizer.batch_size: ${data.batch_size}``: a difference there is the copied key's."""
    if isinstance(model_config, Mapping):
        return {k: v for name, value in model_config.items() for k, v in interpolations(value, f"{key}.{name}").items()}
    if isinstance(model_config, str) and model_config.startswith("${") and model_config.endswith("}"):
        return {key: model_config[2:-1]}
    return {}


def check_same_run(
    ckpt_path: str, hparams: Mapping[str, Any], model_config: Any = None, data_config: Mapping[str, Any] | None = None
) -> None:
    """Resuming continues a run as it was: refuse a checkpoint whose model, optimizer, schedule or loss settings
    (its ``hyper_parameters``) are not this run's ``model.*`` ``hparams``, which Lightning would meet as a bare
    state_dict size mismatch, or silently override with the checkpoint's learning rates; or whose recorded data
    (``tsm_data``: the dataset, splits, clip sampling, sizes, augmentation) is not ``data_config``, this run's
    resolved ``data``, which would go on training on other clips unnoticed. Where the weights first came from and
    the files a run reads or writes (``NOT_COMPARED``, ``DATA_NOT_COMPARED``) may differ; whether they came from
    given weights (the classifier's learning rates follow it) may not. ``model_config``, the unresolved ``model``
    config, names the key a difference was copied from (``data.batch_size`` for ``model.optimizer.batch_size``)."""
    state = safe_load(ckpt_path, "ckpt_path")
    recorded = dict(state["hyper_parameters"])
    current = OmegaConf.to_container(OmegaConf.create(dict(hparams)), resolve=True)
    found = differences(recorded, current, "")
    origins = starts_from_weights(recorded), starts_from_weights(current)
    if origins[0] != origins[1]:
        found.append(("pretrained, pretrained_file or init_from", *origins))
    copied = interpolations(OmegaConf.to_container(model_config) if model_config is not None else {})
    named = [(copied.get(f"model.{key}", f"model.{key}"), old, new) for key, old, new in found]
    if data_config is not None and isinstance(state.get(DATA_KEY), Mapping):  # older checkpoints record no data
        seen = {key for key, _, _ in named}
        for key, old, new in differences(dict(state[DATA_KEY]), dict(data_config), "", DATA_NOT_COMPARED):
            if f"data.{key}" not in seen:  # a model key copies it: named once
                named.append((f"data.{key}", old, new))
    if not named:
        return
    listed = "; ".join(f"{key}: {old!r} in the checkpoint, {new!r} now" for key, old, new in named[:4])
    same_network = not any(key.split(".")[0] in ARCHITECTURE_KEYS for key, _, _ in found)
    anew = f", or start a new run from its weights with model.init_from={ckpt_path}" if same_network else ""
    raise ValueError(
        f"ckpt_path={ckpt_path} resumes a run with the settings it was trained with, and {len(named)} differ "
        f"({listed}): resume with those{anew}"
    )


def recorded_class_names(path: str, what: str) -> list[str] | None:
    """The class names a checkpoint of this project records (None for another file, or one recording none)."""
    state = safe_load(path, what)
    return (state.get(INFO_KEY) or {}).get("class_names") if is_lightning_checkpoint(state) else None


def check_same_network(ckpt_path: str, hparams: Mapping[str, Any]) -> None:
    """A checkpoint tested by this run's model (``train=false``) holds its network: the architecture keys
    (:data:`~tsm.models.checkpoints.ARCHITECTURE_KEYS`) of its ``hyper_parameters`` are ``hparams``'."""
    recorded = dict(safe_load(ckpt_path, "ckpt_path")["hyper_parameters"])
    current = OmegaConf.to_container(OmegaConf.create(dict(hparams)), resolve=True)
    shared = [key for key in ARCHITECTURE_KEYS if key in recorded and key in current]  # an older one lacks some
    found = [d for key in shared for d in differences(recorded[key], current[key], key)]
    if found:
        listed = "; ".join(f"model.{key}: {old!r} in the checkpoint, {new!r} now" for key, old, new in found[:4])
        raise ValueError(
            f"ckpt_path={ckpt_path} holds another network than this run's model ({listed}): set those, or test it "
            "with src/eval.py ckpt_path=PATH, which builds the network the checkpoint records"
        )


def newest_readable(folder: Path) -> str | None:
    """The newest ``*.ckpt`` in ``folder`` (``last.ckpt`` first among equals) that reads as a Lightning
    checkpoint; each unreadable one is reported by name and passed over."""
    candidates = sorted(folder.glob("*.ckpt"), key=lambda p: (p.stat().st_mtime, p.stem == LAST), reverse=True)
    for path in candidates:
        try:
            state = safe_load(path, "checkpoint")
        except DataError as error:  # empty, truncated, not a torch.save file (a pickle asking for code raises)
            log.warning("%s cannot be read (%s); trying the next newest", path, error.reason)
            continue
        if is_lightning_checkpoint(state) and "state_dict" in state:
            return str(path)
        log.warning("%s is not a Lightning checkpoint of a run; trying the next newest", path)
    return None
