"""Running this project's scripts (``src/*.py``, ``python -c``, ``-m experiments...``) as users do: a fresh
Python process in the repository root; or, for the studies, a process forked from a server that has imported
the training code once (:func:`run_forked`)."""

import os
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
    (``experiments.common.forked_exit_code``: torch, Lightning and the training code imported once per test
    worker, not once per call, ~7 s here), output captured as text; ``ok`` as :func:`run_python`'s. For the
    studies and the command line's refusals of bad input; the README's commands run in fresh interpreters
    (:func:`run_python`)."""
    from experiments.common import forked_command, forked_exit_code

    argv = list(map(str, args))
    command = forked_command(target, argv)
    with tempfile.TemporaryDirectory() as tmp:
        out, err = Path(tmp) / "stdout", Path(tmp) / "stderr"
        code = forked_exit_code(target, argv, stdout=out, stderr=err, timeout=timeout)
        done = subprocess.CompletedProcess(command, code, out.read_text(), err.read_text())
    return checked(done, ok)
