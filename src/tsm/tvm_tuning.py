"""MetaSchedule tuning of a Relax module for this machine's CPU, with a builder that builds.

TVM's own tuning pipeline (``relax.pipeline.static_shape_tuning_pipeline``) builds each batch of candidates in
fresh worker processes whose build function first imports all of TVM's tensor intrinsics (CUDA's included). That
import parses some 250 TVMScript functions, each calling ``inspect.stack()``, which looks up the module of every
frame of the import machinery by a scan of ``sys.modules``: 25-60 s in a process that imported PyTorch (TVM's FFI
does), past the builder's 30 s timeout, so every candidate failed to build and nothing was tuned; and 60-170 s
in the tuning process itself. :func:`build_candidate` builds as TVM's default does, without that import (the fp32
schedules tuned here use no tensor intrinsics), and :func:`tuned` imports the intrinsics with those lookups
remembered (:func:`remembered_frame_modules`: 3 s).
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from collections.abc import Iterator
from pathlib import Path

TUNING_RECORDS = "database_tuning_record.json"  # the log's measured schedules, in its folder
FAILED_RUN_SECONDS = 1e9  # MetaSchedule logs a candidate that failed to build or run with 1e10 s
log = logging.getLogger(__name__)


@contextlib.contextmanager
def remembered_frame_modules() -> Iterator[None]:
    """Within the block, ``inspect.getmodule`` remembers its answer for a file name that is no file (``<frozen
    importlib._bootstrap>``, the import machinery's frames), instead of scanning ``sys.modules`` for it again."""
    original, found = inspect.getmodule, {}

    def getmodule(obj, _filename=None):
        if _filename is None or not _filename.startswith("<"):
            return original(obj, _filename)
        if _filename not in found:
            found[_filename] = original(obj, _filename)
        return found[_filename]

    inspect.getmodule = getmodule
    try:
        yield
    finally:
        inspect.getmodule = original


def build_candidate(mod, target, _params):
    """One tuning candidate, built as MetaSchedule's ``default_build`` builds it, less the intrinsics import."""
    from tvm.driver import build
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    return build(RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod), target=target)


def search(trials: int):
    """MetaSchedule's evolutionary search with a population that grows with the trials per task, up to TVM's 512:
    sampling and evolving 512 candidates takes ~25 s a convolution here, wasted on a budget of a few trials."""
    from tvm.s_tir import meta_schedule as ms

    population = min(512, max(32, 8 * trials))
    return ms.search_strategy.EvolutionarySearch(population_size=population, init_min_unmeasured=population // 2)


def ran(record) -> bool:
    """Whether a tuning record's candidate built and ran (MetaSchedule logs a failed one with a run time of 1e10 s)."""
    return bool(record.run_secs) and max(float(getattr(t, "value", t)) for t in record.run_secs) < FAILED_RUN_SECONDS


def untuned_tasks(tasks: list, work_dir: str | Path) -> list:
    """The ``tasks`` (MetaSchedule ``ExtractedTask``) for which the tuning log in ``work_dir`` holds no schedule that
    built and ran."""
    from tvm.s_tir import meta_schedule as ms

    if not (Path(work_dir) / TUNING_RECORDS).is_file():
        return tasks
    log = ms.database.JSONDatabase(work_dir=str(work_dir), allow_missing=False)

    def scheduled(module) -> bool:
        best = log.get_top_k(log.commit_workload(module), 1) if log.has_workload(module) else []
        return bool(best) and ran(best[0])

    return [task for task in tasks if not scheduled(task.dispatched[0])]


def tasks_of(module, target) -> tuple:
    """``module`` lowered as tuning and compiling take it (within ``with target``), and its MetaSchedule tasks."""
    import tvm
    from tvm import relax
    from tvm.relax.pipeline import zero_pipeline
    from tvm.s_tir import meta_schedule as ms

    module = tvm.transform.Sequential(
        [relax.transform.DecomposeOpsForInference(), relax.transform.CanonicalizeBindings(), zero_pipeline()]
    )(module)
    return module, ms.relax_integration.extract_tasks(module, target)


def tuned(module, target, trials: int, work_dir: str | Path):
    """``module`` with the schedules of the tuning log in ``work_dir``, when ``trials`` > 0 after tuning, with that
    many MetaSchedule trials each, the tasks the log has no schedule for yet (a task in the log is not tuned again:
    a second model with the same convolutions, or a second export, reuses their schedules; for more trials, start a
    new log)."""
    from tvm import relax
    from tvm.s_tir import meta_schedule as ms

    with remembered_frame_modules():  # before a log is read: its schedules may use them
        import tvm.s_tir.tensor_intrin  # noqa: F401 (registers them, as tuning does, in seconds)
    with target:
        module, extracted = tasks_of(module, target)
        tasks = untuned_tasks(extracted, work_dir) if trials else []
        if trials:
            log.info("tuning %d of %d tasks (the others are in the log %s)", len(tasks), len(extracted), work_dir)
        if tasks:
            contexts, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(
                tasks, str(work_dir), strategy=search(trials)
            )
            ms.tune.tune_tasks(
                tasks=contexts,
                task_weights=weights,
                work_dir=str(work_dir),
                max_trials_global=trials * len(tasks),
                max_trials_per_task=trials,
                num_trials_per_iter=min(trials, 64),
                builder=ms.builder.LocalBuilder(f_build=build_candidate),
            )
        return relax.transform.MetaScheduleApplyDatabase(str(work_dir))(module)
