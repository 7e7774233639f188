"""Running this project's scripts (``src/*.py``, ``python -c``, ``-m experiments...``) as users do: a fresh
Python process in the repository root; or, for the studies, a process forked from a server that has imported
the training code once (:func:`run_module_forked`)."""

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
    if ok is True:
        assert done.returncode == 0, done.stderr[-3000:]
    elif ok is False:
        assert done.returncode != 0, done.stdout[-3000:]
    return done


def run_module_forked(module: str, args: Sequence[str], timeout: float = 1800) -> subprocess.CompletedProcess:
    """``python -m MODULE ARGS`` in the repository root, in a process forked from the studies' server
    (``experiments.common.TRAINING_SERVER``: torch, Lightning and the training code imported once per test
    worker, not once per script, ~7 s here), output captured as text; it must exit 0 (the failure shows the end
    of its stderr). The module runs as its ``__main__``, as ``python -m`` runs it."""
    from experiments.common import TRAINING_SERVER

    with tempfile.TemporaryDirectory() as tmp:
        out, err = Path(tmp) / "stdout", Path(tmp) / "stderr"
        process = TRAINING_SERVER.Process(target=_module_main, args=(module, list(map(str, args)), out, err))
        process.start()
        process.join(timeout)
        if process.is_alive():
            process.kill()
            process.join()
            raise subprocess.TimeoutExpired(["python", "-m", module, *args], timeout)
        done = subprocess.CompletedProcess(
            ["python", "-m", module, *args], process.exitcode, out.read_text(), err.read_text()
        )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _module_main(module: str, args: list[str], out: Path, err: Path) -> None:
    """In the forked process: its output to ``out`` and ``err``, then ``python -m MODULE ARGS`` from the root."""
    for stream, path in ((sys.stdout, out), (sys.stderr, err)):
        stream.flush()
        os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), stream.fileno())
    os.chdir(ROOT)
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
