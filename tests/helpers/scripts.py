"""Running this project's scripts (``src/*.py``, ``python -c``, ``-m experiments...``) as users do: a fresh
Python process in the repository root; or, for the studies, a process forked from a server that has imported
the training code once (:func:`run_forked`)."""

import os
import runpy
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from tests.helpers import ROOT


def run_python(
    args: Sequence[str],
    *,
    ok: bool | None = True,
    launcher: Sequence[str] = (),
    env: dict[str, str] | None = None,
    timeout: float = 300,
    python: str | None = None,
) -> subprocess.CompletedProcess:
    """``python ARGS`` in the repository root, output captured as text. ``ok=True``: it must exit 0 (the
    failure shows the end of its stderr); ``ok=False``: it must fail; ``None``: the caller looks.
    ``launcher`` runs the interpreter under another program (``qemu-x86_64 -cpu ...``); ``env`` adds
    variables to this process's environment; ``python`` is another interpreter (an arm64 one under qemu)."""
    command = [*launcher, python or sys.executable, *map(str, args)]
    environment = {**os.environ, **env} if env else None
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=environment, timeout=timeout)
    return checked(done, ok)


def checked(done: subprocess.CompletedProcess, ok: bool | None) -> subprocess.CompletedProcess:
    """``done``, asserted to have exited 0 (``ok=True``, showing the end of its stderr) or not (``ok=False``)."""
    if ok is True:
        assert done.returncode == 0, done.stderr[-3000:]
    elif ok is False:
        assert done.returncode != 0, done.stdout[-3000:]
    return done


def run_forked(
    target: str, args: Sequence[str], *, ok: bool | None = True, timeout: float = 1800
) -> subprocess.CompletedProcess:
    """``python TARGET ARGS`` (a script such as ``src/export.py``) or ``python -m TARGET ARGS`` (a module such as
    ``experiments.deploy.table``) in the repository root, in a process forked from the studies' server
    (``experiments.common.TRAINING_SERVER``: torch, Lightning and the training code imported once per test
    worker, not once per call, ~7 s here), output captured as text; ``ok`` as :func:`run_python`'s. The script
    or module runs as ``__main__``. For the studies and the command line's refusals of bad input; the README's
    commands run in fresh interpreters (:func:`run_python`)."""
    from experiments.common import TRAINING_SERVER

    argv = list(map(str, args))
    command = ["python", target, *argv] if target.endswith(".py") else ["python", "-m", target, *argv]
    with tempfile.TemporaryDirectory() as tmp:
        out, err = Path(tmp) / "stdout", Path(tmp) / "stderr"
        process = TRAINING_SERVER.Process(target=_forked_main, args=(target, argv, out, err))
        process.start()
        process.join(timeout)
        if process.is_alive():
            process.kill()
            process.join()
            raise subprocess.TimeoutExpired(command, timeout)
        done = subprocess.CompletedProcess(command, process.exitcode, out.read_text(), err.read_text())
    return checked(done, ok)


def _forked_main(target: str, args: list[str], out: Path, err: Path) -> None:
    """In the forked process: its output to ``out`` and ``err``, then ``target`` as ``__main__`` from the root."""
    for stream, path in ((sys.stdout, out), (sys.stderr, err)):
        stream.flush()
        os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), stream.fileno())
    os.chdir(ROOT)
    sys.argv = [target, *args]
    if target.endswith(".py"):
        runpy.run_path(str(ROOT / target), run_name="__main__")
    else:
        runpy.run_module(target, run_name="__main__", alter_sys=True)
