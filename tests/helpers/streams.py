"""Streaming an exported file the way a device without PyTorch does: a fresh process in which importing torch or
timm fails, running :func:`tsm.open_stream`."""

from pathlib import Path

import numpy as np

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
