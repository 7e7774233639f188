"""Streaming an exported file the way a device without PyTorch does: a fresh process in which importing torch or
timm fails, running :func:`tsm.open_stream`; on this CPU, on an emulated x86 one, or on an emulated arm64 board."""

import os
import platform
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import ROOT
from tests.helpers.scripts import run_python

# A runner under a meta-path hook that refuses torch and timm: what a device without PyTorch has.
TORCH_FREE = """
import sys
import numpy as np

class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "timm"):
            raise ImportError(f"{name} is blocked: the runner must not need it")

sys.meta_path.insert(0, Refuse())
from tsm.streaming.sessions import open_stream

session = open_stream(sys.argv[1])
clips = np.load(sys.argv[2])
logits = {}
for name in clips.files:
    session.reset()
    logits[name] = np.concatenate([session.step(frame[None]) for frame in clips[name]])
np.savez(sys.argv[3], precision=session.precision, classes=len(session.info["class_names"]), **logits)
"""


def stream_without_torch(path: Path, clips: dict[str, np.ndarray], tmp: Path, **run) -> dict:
    """Each clip ``(T, 3, H, W)`` streamed through ``path`` (a reset before each) in a torch-free process: the
    per-frame logits ``(T, K)`` under the clip's name, and the session's ``precision`` and class count.
    ``run``: :func:`~tests.helpers.scripts.run_python`'s options (another interpreter under qemu)."""
    np.savez(tmp / "clips.npz", **clips)
    run_python(["-c", TORCH_FREE, path, tmp / "clips.npz", tmp / "logits.npz"], timeout=600, **run)
    return dict(np.load(tmp / "logits.npz"))


STEP_UNDER = """
import sys
import numpy as np
from tsm.streaming.sessions import open_stream
session, frames = open_stream(sys.argv[1]), np.load(sys.argv[2])
np.save(sys.argv[3], np.stack([session.step(frame[None])[0] for frame in frames]))
"""


def needs_qemu_x86() -> None:
    """Skip where qemu's x86 user mode cannot run (CI installs it: there, fail)."""
    if platform.machine() != "x86_64" or shutil.which("qemu-x86_64") is None:
        if os.environ.get("CI") and platform.machine() == "x86_64":
            pytest.fail("CI installs qemu-user (.ci/run) for the emulated-CPU tests")
        pytest.skip("needs qemu-x86_64 (Debian's qemu-user) on an x86_64 machine")


def logits_on_cpu(cpu: str, path: Path, frames: np.ndarray, tmp_path: Path) -> np.ndarray:
    """A stream file's logits for ``frames`` ``(T, 3, H, W)`` on an emulated x86 ``cpu`` (qemu's user mode: the
    runtimes pick their integer kernels by the CPU's features). numpy's OpenBLAS is told the core (its names are
    qemu's): under qemu's Nehalem it picks Haswell kernels, and numpy's import dies of an illegal instruction."""
    np.save(tmp_path / "frames.npy", frames)
    out = tmp_path / f"{cpu}.npy"
    run_python(
        ["-c", STEP_UNDER, path, tmp_path / "frames.npy", out],
        launcher=["qemu-x86_64", "-cpu", cpu],
        env={"OPENBLAS_CORETYPE": cpu},
    )
    return np.load(out)


# an arm64 Python with numpy and TVM's wheels, unpacked for qemu (.ci/run builds it with
# experiments/quantization/arm64_sysroot.sh; TSM_ARM64_SYSROOT names another)
SYSROOT = Path(os.environ.get("TSM_ARM64_SYSROOT", ROOT / "build" / "arm64"))
ELF_MACHINE = {b"\x3e\x00": "x86-64", b"\xb7\x00": "aarch64"}  # e_machine, bytes 18-19 of an ELF header
needs_arm64_sysroot = pytest.mark.skipif(
    not (SYSROOT / "usr" / "bin" / "python3.11").is_file(), reason=f"no arm64 sysroot at {SYSROOT}"
)


def emulated_arm64() -> dict:
    """``run_python``'s options for the arm64 Python of :data:`SYSROOT` under qemu's aarch64 user mode."""
    return {
        "launcher": ["qemu-aarch64", "-L", str(SYSROOT)],
        "python": str(SYSROOT / "usr" / "bin" / "python3.11"),
        "env": {"PYTHONPATH": f"{SYSROOT / 'site'}:{ROOT / 'src'}"},
    }
