"""Kill it and it comes back: a small training run is killed (SIGKILL) again and again and resumed each
time with ``ckpt_path=last``; does it always resume from a readable checkpoint, and do its final weights
equal an uninterrupted run's?

    python -m experiments.reliability.kill_resume [--kills 20] [--epochs 24] [--out DIR]

Half the kills land while a checkpoint is being written (the moment the temporary file of the first to
fourth write of the attempt appears, polled every millisecond), the others at a random time in the first
half of an uninterrupted run's wall time (start-up included); kills stop early if an attempt finishes. A
killed attempt that left no checkpoint yet is restarted with ``overwrite=true``. Every attempt runs on one
torch thread with the same seed and settings, so the uninterrupted run is the exact reference. Writes
``results.md`` and ``results.json`` in ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from experiments.common import QUIET, ROOT, machine, shown
from tsm.files import TEMP_SUFFIX
from tsm.models.weight_files import safe_load
from tsm.training.resume import newest_readable

HERE = Path(__file__).resolve().parent
SMALL = [
    "data.source.sizes.train=48",
    "data.source.sizes.val=8",
    "data.source.sizes.test=8",
    "data.batch_size=4",
    "data.num_segments=4",
    "data.source.num_frames=6",
    "data.source.frame_size=36",
    "data.crop_size=32",
    "data.scale_size=32",
    "trainer.accelerator=cpu",
    "test=false",
]


def start(run_dir: Path, epochs: int, *extra: str) -> subprocess.Popen:
    command = [sys.executable, "src/train.py", *QUIET, *SMALL, f"trainer.max_epochs={epochs}", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    return subprocess.Popen(
        [*command, f"hydra.run.dir={run_dir}"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


def temporaries(folder: Path) -> set[str]:
    """The names of checkpoint temporary files in ``folder``: each is a write under way (or cut short)."""
    return {name for name in os.listdir(folder) if name.endswith(TEMP_SUFFIX)} if folder.is_dir() else set()


def kill_when(proc: subprocess.Popen, folder: Path, seen: set[str], writes_to_skip: int | None, delay: float) -> str:
    """SIGKILL ``proc`` while it writes its ``writes_to_skip + 1``-th checkpoint (``seen``: temporary files
    already there), or, with ``writes_to_skip`` None, ``delay`` s after its start; what happened."""
    deadline = time.monotonic() + delay
    while proc.poll() is None:
        new = temporaries(folder) - seen
        if writes_to_skip is None and time.monotonic() > deadline or writes_to_skip == 0 and new:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return f"at {delay:.1f} s" if writes_to_skip is None else "during a checkpoint write"
        if new and writes_to_skip is not None:
            seen |= new
            writes_to_skip -= 1
        time.sleep(0.001)
    return "finished before the kill"


def finish(run_dir: Path, epochs: int, extra: list[str]) -> None:
    proc = start(run_dir, epochs, *extra)
    _, err = proc.communicate()
    if proc.returncode:
        raise RuntimeError(f"{run_dir}: the run failed:\n{err.decode()[-3000:]}")


def unreadable(folder: Path) -> list[str]:
    """The checkpoints in ``folder`` that do not load."""
    bad = []
    for path in sorted(folder.glob("*.ckpt")):
        try:
            safe_load(path)
        except Exception:  # noqa: BLE001 (any failure to load is what is counted)
            bad.append(path.name)
    return bad


def epoch_of(path: str | Path) -> int:
    return torch.load(path, weights_only=True)["epoch"]


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0, help="of the kill moments")
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    runs = args.out / "runs"
    reference, victim = runs / "uninterrupted", runs / "killed"
    start_time = time.monotonic()
    finish(reference, args.epochs, [])
    run_seconds = time.monotonic() - start_time
    rng = random.Random(args.seed)
    attempts = []
    for kill in range(args.kills):
        resumed_from = newest_readable(victim / "checkpoints") if (victim / "checkpoints").is_dir() else None
        extra = ["ckpt_path=last"] if resumed_from else (["overwrite=true"] if victim.exists() else [])
        seen = temporaries(victim / "checkpoints")  # left by an earlier kill
        proc = start(victim, args.epochs, *extra)
        writes_to_skip = rng.randint(0, 3) if kill % 2 == 0 else None
        what = kill_when(proc, victim / "checkpoints", seen, writes_to_skip, rng.uniform(0, run_seconds / 2))
        if what == "finished before the kill":
            break
        attempts.append(
            {
                "kill": kill + 1,
                "when": what,
                "resumed_from": resumed_from and f"{shown(resumed_from)} (epoch {epoch_of(resumed_from)})",
                "unreadable_after": unreadable(victim / "checkpoints"),
            }
        )
    resumed_from = newest_readable(victim / "checkpoints")
    finish(victim, args.epochs, ["ckpt_path=last"] if resumed_from else ["overwrite=true"])
    expected, got = weights(reference), weights(victim)
    diff = max((expected[k].double() - got[k].double()).abs().max().item() for k in expected)
    result = {
        "machine": machine(),
        "epochs": args.epochs,
        "kills": len(attempts),
        "kills_during_writes": sum("write" in a["when"] for a in attempts),
        "resumes": sum(a["resumed_from"] is not None for a in attempts) + (resumed_from is not None),
        "unreadable_checkpoints": sum(len(a["unreadable_after"]) for a in attempts),
        "max_abs_weight_diff": diff,
        "attempts": attempts,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "results.md").write_text(report(result))
    print(report(result))


def report(result: dict) -> str:
    rows = "\n".join(
        f"| {a['kill']} | {a['when']} | {a['resumed_from'] or '(fresh start)'} | {len(a['unreadable_after'])} |"
        for a in result["attempts"]
    )
    command = f"python -m experiments.reliability.kill_resume --kills {result['kills']} --epochs {result['epochs']}"
    return f"""# Kill and resume

`{command}` ({result["machine"]}):
a {result["epochs"]}-epoch run on small synthetic data, SIGKILLed {result["kills"]} times
({result["kills_during_writes"]} of them while a checkpoint was being written), restarted after each kill with
`ckpt_path=last` (or `overwrite=true` while no checkpoint existed), then run to its end.

- resumes from a checkpoint: {result["resumes"]}
- unreadable checkpoint files after the kills: {result["unreadable_checkpoints"]}
- final weights against the uninterrupted run's: largest difference {result["max_abs_weight_diff"]:.3g}

| kill | when | the attempt it ended had resumed from | unreadable checkpoints after it |
|---|---|---|---|
{rows}
"""


if __name__ == "__main__":
    main()
