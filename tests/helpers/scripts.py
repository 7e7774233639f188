"""Running this project's scripts (``src/*.py``, ``python -c``, ``-m experiments...``) as users do: a fresh
Python process in the repository root."""

import os
import subprocess
import sys
from collections.abc import Sequence

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
