"""The train task: instantiate data, model, callbacks, loggers and trainer from a config, fit, test."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import sys
import warnings
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import rich
import rich.syntax
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities.rank_zero import rank_zero_only

from tsm.errors import DataError
from tsm.files import write_text_atomic
from tsm.metadata import check_class_order
from tsm.training import multigrid
from tsm.training.checkpoint_io import use_atomic_checkpoints
from tsm.training.cluster import check_sweep_launcher, group_sweep_runs
from tsm.training.precision import resolve_precision
from tsm.training.resume import (
    CHECKPOINTS,
    LAST,
    RunDirInUse,
    check_same_network,
    check_same_run,
    claim_run_dir,
    continue_wandb_run,
    hold_run_dir,
    is_requeue,
    previous_run,
    recorded_class_names,
    release_run_dir,
    resume_checkpoint,
    save_hydra_record,
)

log = logging.getLogger(__name__)
# Mixed precision keeps float32 weights: the summary's size in MB, counted at 32 bits, is right as printed.
warnings.filterwarnings("ignore", message=r"Precision bf16-mixed is not supported by the model summary")


def instantiate_group(cfg: DictConfig | None) -> list[Any]:
    """Instantiate every ``_target_`` entry of a callbacks/logger group (None gives [])."""
    if cfg is None:
        return []
    return [hydra.utils.instantiate(entry) for entry in cfg.values() if entry is not None and "_target_" in entry]


def print_config(cfg: DictConfig, output_dir: Path) -> None:
    """Print the composed config and save it, resolved, as ``config.yaml`` in the run directory."""
    text = OmegaConf.to_yaml(cfg, resolve=True)
    rich.print(rich.syntax.Syntax(text, "yaml"))
    write_text_atomic(output_dir / "config.yaml", text)


def plain_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """Logged tensors as plain floats, finite ones only kept as numbers."""
    out = {}
    for key, value in sorted(metrics.items()):
        number = float(value)
        out[key] = number if math.isfinite(number) else None
    return out


def instantiate_data(cfg: DictConfig) -> Any:
    """The datamodule of ``cfg.data``; a null ``data.num_classes`` is set to the count of its train
    labels, so that the model (``model.num_classes: ${data.num_classes}``) receives it. The resolved
    config is kept as ``datamodule.config``."""
    datamodule = hydra.utils.instantiate(cfg.data)
    if cfg.data.get("num_classes") is None:
        cfg.data.num_classes = datamodule.num_classes
    # recorded in checkpoints (tsm.metadata.DATA_KEY): int8 calibration reads the model's own data
    datamodule.config = OmegaConf.to_container(cfg.data, resolve=True)
    return datamodule


def earlier_metrics(run_dir: Path) -> dict[str, Any]:
    """The ``metrics.json`` an earlier attempt of the run wrote (a resume that trains no further epoch measures
    the test alone); {} if there is none or it cannot be read (logged)."""
    path = run_dir / "metrics.json"
    if not path.is_file():
        return {}
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        log.warning("%s is not JSON (%s): it is replaced by this attempt's metrics alone", path, error)
        return {}
    if not isinstance(found, dict):
        log.warning("%s is not a JSON object: it is replaced by this attempt's metrics alone", path)
        return {}
    return found


def finish_wandb(failed: bool) -> None:
    """Close this process's W&B run, if one was started, marked failed or not (sweeps run many jobs per process)."""
    wandb = sys.modules.get("wandb")  # not imported: no run to close
    if wandb is not None and wandb.run is not None:
        wandb.finish(exit_code=1 if failed else 0)


def check_before_training(
    cfg: DictConfig, datamodule: Any, model: pl.LightningModule, output_dir: Path, requeued: bool
) -> str | None:
    """What would fail after training, or resume another run, refused before training writes into the run
    directory (its ``.hydra/`` record and ``run.json`` are written, Hydra's log file opened): unlabelled validation
    or test videos, a resumed checkpoint trained otherwise or on other data, a checkpoint reading the data's
    classes in another order. Returns the checkpoint to resume from (None: a new run)."""
    if cfg.test:
        datamodule.check_labelled("test")
    if cfg.train:
        datamodule.check_labelled("val")
        ckpt_path = resume_checkpoint(output_dir, cfg.get("ckpt_path"), requeued)
        if ckpt_path:
            check_same_run(ckpt_path, model.hparams, cfg.model, datamodule.config)
        classes = datamodule.describe()["class_names"]
    else:
        ckpt_path = checkpoint_to_test(cfg, model)
        classes = datamodule.dataset("test").source.classes if cfg.test else None
    for what, path in (("ckpt_path", ckpt_path), ("model.init_from", model.hparams.get("init_from"))):
        if path and classes is not None:
            check_class_order(recorded_class_names(path, what), classes, f"{what}={path}")
    return ckpt_path


def checkpoint_to_test(cfg: DictConfig, model: pl.LightningModule) -> str | None:
    """``train=false``: the run checkpoint ``ckpt_path`` names, checked to hold this model's network; None tests
    the weights ``model.init_from`` gives. A model without either is refused: its classifier is random."""
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path == LAST:
        raise ValueError("train=false ckpt_path=last: name the checkpoint to test, ckpt_path=PATH")
    if ckpt_path:
        ckpt_path = resume_checkpoint(Path(cfg.paths.output_dir), ckpt_path, requeued=False)
        check_same_network(ckpt_path, model.hparams)
        return ckpt_path
    if cfg.test and model.hparams.get("init_from") is None:
        raise ValueError(
            "train=false tests the model as built, and its classifier is random: give the checkpoint to test "
            "(ckpt_path=PATH, or model.init_from=PATH for a weights file), or run src/eval.py ckpt_path=PATH"
        )
    return None


def check_test_only_dir(run_dir: Path, requeued: bool) -> None:
    """A test-only run (``train=false``) writes its results into a directory of its own (or its requeued job's)."""
    found = previous_run(run_dir)
    if found and not requeued:
        raise RunDirInUse(
            f"{run_dir} already holds a run ({', '.join(found)}): a test-only run (train=false) writes its results "
            "into a directory of its own: leave hydra.run.dir unset, or give another one"
        )


def tested_checkpoint(trainer: pl.Trainer, run_dir: Path) -> str | None:
    """The best checkpoint of this run, which training ends by testing. A resumed checkpoint records where its
    best one was: a path outside this run's ``checkpoints/`` (a run directory moved since) is read from there by
    name, and refused if it is not there."""
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    if not best:
        return None
    own = run_dir / CHECKPOINTS
    if Path(best).resolve().parent == own.resolve():
        return best
    if (own / Path(best).name).is_file():
        log.warning("the resumed checkpoint names %s as its best; testing %s", best, own / Path(best).name)
        return str(own / Path(best).name)
    raise DataError(best, f"the run's best checkpoint, as its checkpoints record it, is not in {own}")


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit (and test) as configured; writes ``metrics.json`` in the run directory and returns the metrics.

    A null ``data.num_classes`` comes from the train labels (:func:`instantiate_data`). The run resumes
    only when asked (``ckpt_path=PATH|last``) or when it is a requeued SLURM job (``auto_resume``), and
    refuses a run directory holding another run (:mod:`tsm.training.resume`).
    """
    if type(cfg.seed) is not int:
        raise ValueError(f"seed must be an integer, got {cfg.seed!r}")
    output_dir = Path(cfg.paths.output_dir)
    with hold_run_dir(output_dir) if rank_zero_only.rank == 0 else contextlib.nullcontext():
        return fit_and_test(cfg, output_dir)


def fit_and_test(cfg: DictConfig, output_dir: Path) -> dict[str, float]:
    """:func:`train` in ``output_dir``, which this process holds."""
    requeued = bool(cfg.get("auto_resume")) and is_requeue(output_dir)
    check_sweep_launcher(cfg)
    claimed = False  # whether this attempt wrote the run directory's run.json
    if rank_zero_only.rank == 0:  # before anything is written into the run directory
        if not cfg.train:  # resumes nothing, replaces nothing
            check_test_only_dir(output_dir, requeued)
        resumed = cfg.get("ckpt_path") if cfg.train else None
        claimed = claim_run_dir(output_dir, resumed, requeued, bool(cfg.get("overwrite")) and cfg.train)
        save_hydra_record(cfg, output_dir)  # the command as given, before this run adds W&B ids and groups
        continue_wandb_run(cfg, output_dir)
    group_sweep_runs(cfg)
    pl.seed_everything(cfg.seed, workers=True)
    metrics: dict[str, Any] = {}
    try:
        datamodule = instantiate_data(cfg)
        datamodule.multigrid = multigrid.from_config(cfg)
        if datamodule.multigrid is not None:
            log.info("multigrid schedule:\n%s", "\n".join(datamodule.multigrid.rows()))
        model = hydra.utils.instantiate(cfg.model)
        resolve_precision(cfg, model)
        ckpt_path = check_before_training(cfg, datamodule, model, output_dir, requeued)
        if rank_zero_only.rank == 0:  # other ranks write nothing here: rank 0 may not have claimed the directory yet
            print_config(cfg, output_dir)  # with data.num_classes as read from the labels, the precision resolved
        loggers = instantiate_group(cfg.get("logger"))
        trainer = hydra.utils.instantiate(
            cfg.trainer, callbacks=instantiate_group(cfg.get("callbacks")), logger=loggers or False
        )
        use_atomic_checkpoints(trainer)
        if cfg.train:
            # weights_only: a resumed checkpoint is read like every other weights file (tsm.models.weight_files)
            trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
            metrics.update(trainer.callback_metrics)
        if cfg.test:
            tested = tested_checkpoint(trainer, output_dir) if cfg.train else ckpt_path
            trainer.test(model, datamodule=datamodule, ckpt_path=tested, weights_only=True)
            metrics.update(trainer.callback_metrics)
    except BaseException as error:
        log.error("the run failed: %s: %s", type(error).__name__, error)  # into the run directory's log file too
        finish_wandb(failed=True)
        if claimed:
            release_run_dir(output_dir)
        raise
    finish_wandb(failed=False)
    result = plain_metrics(metrics)
    if cfg.train and ckpt_path:  # a resume: what the earlier attempts measured and this one did not stays
        trained = any(key.startswith("train/") for key in result)  # an earlier test measured older weights then
        stale = {key.split("/")[0] for key in result} | ({"test"} if trained else set())
        result = {**{k: v for k, v in earlier_metrics(output_dir).items() if k.split("/")[0] not in stale}, **result}
    if trainer.is_global_zero:  # rank 0 alone: anything done here must be free of collectives
        write_text_atomic(output_dir / "metrics.json", json.dumps(result, indent=2) + "\n")
    return result
