"""The README and the documentation site (``docs/``, ``mkdocs.yml``).

Every command in the ``bash`` blocks of README.md and of every ``docs/*.md`` page runs: at a tiny size
here, or in the test named for it. A command is run as written with placeholders filled in (a
checkpoint, a video, output paths) and tiny overrides appended (later overrides win in Hydra); a command
that appears on several pages runs once. Commands that need a GPU, a dataset on disk or a cluster are
listed in ``COVERED_ELSEWHERE`` with the test that runs them; a command that is neither run nor listed
fails this test. The site builds with ``mkdocs build --strict`` (any warning, a broken link included,
fails), and the figures the pages quote are their results files' own.
"""

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT
from tests.helpers.config import TINY, tiny_checkpoint
from tests.helpers.videos import write_video
from tsm.export import to_onnx
from tsm.models.checkpoints import load_recognizer

# command substring -> the test that runs it
COVERED_ELSEWHERE = {
    "trainer=ddp trainer.devices=8": "tests/training/test_ddp.py::test_default_config_runs_under_ddp (2 CPU processes)",
    "trainer=ddp trainer.devices=2 trainer.accelerator=cpu": (
        "tests/training/test_ddp.py::test_default_config_runs_under_ddp"
    ),
    "hydra/launcher=slurm": "tests/training/test_slurm.py (a real one-node SLURM cluster)",
    "data.root=/data/sthv2": "tests/data/test_sources.py::test_eval_two_clips_three_crops_on_each_dataset",
    "TSM_something_resnet50": "tests/models/test_official_weights.py::test_eval_and_init_from_accept_an_official_file",
    "+experiment=jester_i3d_teacher": (
        "tests/distill/test_distill.py::test_jester_i3d_teacher_fast_dev_run_and_missing_weights"
    ),
    "+experiment=jester_mbv2_online": "tests/test_configs.py::test_jester_mbv2_online_trains_and_streams",
    "+experiment=jester_mbv2_kd": (
        "tests/distill/test_distill.py (jester_mbv2_kd fast_dev_run on a Jester-format folder)"
    ),
    "+experiment=synthetic_i3d_teacher": (
        "tests/distill/test_distill.py::test_synthetic_i3d_teacher_then_cached_kd_student"
    ),
    "+experiment=synthetic_mbv2_kd": "tests/distill/test_distill.py::test_synthetic_i3d_teacher_then_cached_kd_student",
    "data=jester data.root=/data/jester": "tests/data/test_sources.py::test_fast_dev_run_trains_on_each_dataset",
    "data=ucf101 data.root=/data/ucf101": "tests/data/test_sources.py::test_fast_dev_run_trains_on_each_dataset",
    "data=list data.root=/data/mine": "tests/data/test_sources.py::test_fast_dev_run_trains_on_each_dataset",
    "data=jester data.root=FOLDER": (
        "tests/test_studies.py::test_generalisation_study_tiny (on a Jester-format folder, from scratch and from a "
        "default run's checkpoint)"
    ),
    "+multigrid=default": "tests/test_studies.py::test_multigrid_study_tiny",
    "data.source.format=tree": (
        "tests/data/test_sources.py::test_fast_dev_run_on_a_folder_tree_and_kinetics_missing_list"
    ),
    "ckpt_path=last": "tests/training/test_resume.py::test_a_rerun_in_a_used_directory_is_refused_unless_asked",
    "python -m experiments.": "tests/test_studies.py (every study script at a tiny size)",
    "mkdocs build --strict": "tests/test_docs.py::test_docs_build_strict",
    "format=tflite precision=int8": (
        "tests/test_litert_export.py::test_int8_stream_file_runs_integer_io_and_stays_near_fp32"
    ),
    "scp -r tsm_a72.so": "a copy to a board: tests/test_tvm_export.py runs the same library under qemu-aarch64",
    "tsm_a72.so --source": (
        "tests/test_tvm_export.py::test_cortex_a72_library_runs_under_qemu_and_gives_onnxruntimes_logits"
    ),
    "tsm_stream_int8.tflite --source": (
        "tests/test_litert_export.py::test_stream_script_and_app_run_the_tflite_file_on_a_video"
    ),
    "src/serve_demo.py": "tests/streaming/test_web_demo.py (the page in headless Chromium, the script prints its URL)",
    "npm install --prefix web": "CI (.ci/run builds the page before the tests)",
    "pip install": "CI (.ci/run installs the project, then runs the test command)",
    "python -m pytest": "CI (this test suite)",
}
QUIET = ["logger=csv", "callbacks.progress_bar=null", "callbacks.model_summary=null"]


PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def page_commands() -> dict[str, list[str]]:
    """The commands of the pages' bash blocks (continuation lines joined, comments dropped), each with the
    pages that show it."""
    commands: dict[str, list[str]] = {}
    for page in PAGES:
        for block in re.findall(r"```bash\n(.*?)```", page.read_text(), re.S):
            for line in block.replace("\\\n", " ").splitlines():
                command = line.split(" #")[0].strip()
                if command and not command.startswith("#"):
                    commands.setdefault(" ".join(command.split()), []).append(str(page.relative_to(ROOT)))
    return commands


def covered(part: str) -> bool:
    return any(key in part for key in COVERED_ELSEWHERE)


def runnable(command: str) -> list[list[str]]:
    """The parts of a command line (``a && b``) this test runs, as argument lists: ``python src/...``
    and ``python -m tsm...``, unless covered elsewhere."""
    parts = [shlex.split(part) for part in command.split("&&") if not covered(part)]
    return [p for p in parts if p[0] == "python" and (p[1] != "-m" or p[2].startswith("tsm."))]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    tmp = tmp_path_factory.mktemp("readme")
    causal = tiny_checkpoint(tmp / "causal", ["model/shift=causal"])
    return {
        "ckpt": str(tiny_checkpoint(tmp / "plain", [])),
        "causal": str(causal),
        "onnx": str(to_onnx(load_recognizer(causal), tmp / "tsm_stream.onnx", mode="stream")),
        "video": str(write_video(tmp / "video.mp4", num_frames=6)),
    }


def fill(args: list[str], files: dict[str, str], run_dir: Path) -> list[str]:
    """Placeholders filled in, tiny overrides appended."""
    filled = []
    for arg in args:
        key, _, value = arg.partition("=")
        if key == "ckpt_path":
            value = files["causal" if args[1] in ("src/stream.py", "src/export.py") else "ckpt"]
        elif key in ("model.distill.teacher_ckpt",):
            value = files["ckpt"]
        elif key == "source":
            value = files["video"]
        elif key in ("out", "out_video"):
            value = str(run_dir / value)
        filled.append(f"{key}={value}" if value else arg)
    if filled[1:3] == ["-m", "tsm.streaming.app"]:  # an ONNX file, and --source
        return [files["onnx"] if a.endswith(".onnx") else files["video"] if a == "video.mp4" else a for a in args]
    script = filled[1]
    data = [o for o in TINY if o.startswith("data.")]
    if script == "src/train.py":
        extra = [*TINY, *QUIET, "trainer.accelerator=cpu"]
        extra += ["trainer.max_epochs=1"] if "debug=overfit" in filled else ["debug=fdr"]
        if "-m" not in filled:
            return [*filled, *extra, f"hydra.run.dir={run_dir}"]
        # two jobs per sweep: the first value of each swept key (later overrides win)
        extra += [f"{a.split('=')[0]}={a.split('=')[1].split(',')[0]}" for a in filled[3:] if "," in a]
        if any(a.startswith("hparams_search=") for a in filled):
            extra += ["hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=2"]
        return [*filled, *extra, f"hydra.sweep.dir={run_dir}"]
    if script == "src/eval.py":
        return [*filled, *data, f"hydra.run.dir={run_dir}"]
    if script == "src/benchmark.py":
        return [*filled, "data.crop_size=32", "data.num_segments=4", "repeats=1", f"hydra.run.dir={run_dir}"]
    if script in ("src/stream.py", "src/export.py"):
        return [*filled, f"hydra.run.dir={run_dir}"]
    return filled


def runnable_parts() -> dict[str, list[str]]:
    """Each command line this test runs, once however many commands and pages show it, with its pages."""
    parts: dict[str, list[str]] = {}
    for command, pages in page_commands().items():
        for args in runnable(command):
            parts.setdefault(shlex.join(args), []).extend(pages)
    return parts


def test_every_command_is_run_or_covered():
    commands = page_commands()
    assert len(commands) > 30 and {p for pages in commands.values() for p in pages} >= {
        "README.md",
        "docs/deployment.md",
    }
    for command, pages in commands.items():
        for part in command.split("&&"):
            assert covered(part) or runnable(part), f"{pages}: neither run here nor covered elsewhere: {part}"


@pytest.mark.slow
@pytest.mark.parametrize("command", list(runnable_parts()))
def test_command_runs(command, files, tmp_path):
    args = fill(shlex.split(command), files, tmp_path / "run")
    done = subprocess.run([sys.executable, *args[1:]], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert done.returncode == 0, f"{' '.join(args)}\n{done.stderr[-3000:]}"


@pytest.mark.slow
def test_docs_build_strict(tmp_path):
    """The site builds with every warning an error: broken links and anchors, pages missing from the nav,
    docstrings the API reference cannot read."""
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert done.returncode == 0 and "WARNING" not in done.stderr, done.stderr[-5000:]
    assert (tmp_path / "site" / "api" / "index.html").read_text().count("build_recognizer") > 1


def table_rows(text: str) -> list[str]:
    return [
        line for line in text.splitlines() if line.startswith("| synthetic gestures") or line.startswith("| Jester")
    ]


@pytest.mark.parametrize("page", ["README.md", "docs/getting-started.md"])
def test_the_default_run_table_is_the_recipe_study_s(page):
    """The default run's table on the front page is the recipe study's results file, row for row."""
    rows = table_rows((ROOT / page).read_text())
    assert len(rows) >= 3 and set(rows) <= set(table_rows((ROOT / "experiments/recipe/results_small.md").read_text()))


def test_the_reliability_page_quotes_the_study_and_the_fuzz_tests():
    """The reliability figures of README.md and docs/reliability.md are the kill study's and the fuzz tests'
    own (tests/training/test_resume.py checks the README's)."""
    from tests.data.test_fuzz_readers import TOTAL_EXAMPLES

    study = json.loads((ROOT / "experiments" / "reliability" / "results.json").read_text())
    for page in ["README.md", "docs/reliability.md"]:
        text = " ".join((ROOT / page).read_text().split())
        assert f"illed {study['kills']} times ({study['kills_during_writes']} during checkpoint writes)" in text
        assert f"{TOTAL_EXAMPLES:,} arbitrary and edited files per run" in text


def deploy_rows(text: str, columns: int) -> dict[tuple[str, str, str], list[str]]:
    """Rows of a deployment table by (model, runtime, precision): the first word of the model, the runtime
    without a qualifier in brackets, and the numbers (median, p95, stream / 2D, MB, agreement)."""
    rows = {}
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == columns and cells[2] in ("fp32", "int8") and cells[3] != "-":
            rows[cells[0].split()[0], cells[1].split(" (")[0], cells[2]] = cells[3:8]
    return rows


def test_the_deployment_guide_s_table_is_the_deploy_study_s():
    """Every row of the deployment guide's table is the deploy study's results file's, number for number."""
    guide = deploy_rows((ROOT / "docs/deployment.md").read_text(), 8)
    study = deploy_rows((ROOT / "experiments/deploy/results.md").read_text(), 9)
    assert len(guide) == len(study) == 20 and guide == study


@pytest.mark.parametrize(
    "study, results_file",
    [("generalisation", "results_small.md"), ("multigrid", "results_small.md"), ("speed", "results.md")],
)
def test_a_study_s_readme_tables_are_its_results(study, results_file):
    """Every row of the study's README shaped as its results table is a row of its results file."""
    results = (ROOT / "experiments" / study / results_file).read_text().splitlines()
    header = next(line for line in results if line.startswith("| "))
    readme = (ROOT / "experiments" / study / "README.md").read_text().splitlines()
    rows = [line for line in readme if line.startswith("| ") and line.count("|") == header.count("|")]
    rows = [line for line in rows if line != header]
    assert len(rows) >= 2 and set(rows) <= set(results)
