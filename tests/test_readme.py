"""Every command in README.md's ``bash`` blocks runs: at a tiny size here, or in the test named for it.

A command is run as written with placeholders filled in (a checkpoint, a video, output paths) and tiny
overrides appended (later overrides win in Hydra). Commands that need a GPU, a dataset on disk or a
cluster are listed in ``COVERED_ELSEWHERE`` with the test that runs them; a README command that is
neither run nor listed fails this test.
"""

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
    "src/serve_demo.py": "tests/streaming/test_web_demo.py (the page in headless Chromium, the script prints its URL)",
    "npm install --prefix web": "CI (.ci/run builds the page before the tests)",
    "pip install": "CI (.ci/run installs the project, then runs the test command)",
    "python -m pytest": "CI (this test suite)",
}
QUIET = ["logger=csv", "callbacks.progress_bar=null", "callbacks.model_summary=null"]


def readme_commands() -> list[str]:
    """The commands of README.md's bash blocks, continuation lines joined, comments and prompts dropped."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S):
        for line in block.replace("\\\n", " ").splitlines():
            command = line.split(" #")[0].strip()
            if command and not command.startswith("#"):
                commands.append(" ".join(command.split()))
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


def test_every_readme_command_is_run_or_covered():
    commands = readme_commands()
    assert len(commands) > 15
    for command in commands:
        for part in command.split("&&"):
            assert covered(part) or runnable(part), f"neither run here nor covered elsewhere: {part}"


@pytest.mark.slow
@pytest.mark.parametrize("command", [c for c in readme_commands() if runnable(c)])
def test_readme_command_runs(command, files, tmp_path):
    for args in runnable(command):
        args = fill(args, files, tmp_path / "run")
        done = subprocess.run([sys.executable, *args[1:]], capture_output=True, text=True, cwd=ROOT, timeout=600)
        assert done.returncode == 0, f"{' '.join(args)}\n{done.stderr[-3000:]}"
