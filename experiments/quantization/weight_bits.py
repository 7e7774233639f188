"""What the int8 files' 7-bit weights cost and what they fix: 7-bit (the exporter's) against 8-bit weights
for one checkpoint, run on this CPU and on an emulated AVX2-only x86 CPU (qemu's user mode, ``-cpu Haswell``:
onnxruntime then takes its AVX2 integer kernels, which sum uint8 x int8 products in int16 pairs), and with
``--arm-sysroot`` on an emulated ARM Cortex-A57 too (the sysroot from ``arm64_sysroot.sh``).

    python -m experiments.quantization.weight_bits [--ckpt PATH] [--clips 300] [--arm-sysroot DIR]

Each stream file is calibrated as ``src/export.py`` does (64 unaugmented training clips) and run on
``--clips`` validation clips (per-frame logits averaged over each clip): top-1 agreement with the fp32
file, top-1, and how far each emulated CPU's logits are from this CPU's. Needs ``qemu-x86_64`` (Debian's
qemu-user). The checkpoint is experiments.quantization.study's (trained by it when absent). Writes
``weight_bits.md`` and ``weight_bits.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort

from experiments.common import ROOT, machine, shown
from tsm.export import to_onnx
from tsm.models.checkpoints import load_recognizer
from tsm.quantize import calibration_data, clip_logits, clips_of, to_int8

HERE = Path(__file__).resolve().parent
# clip_logits' stream path with numpy and onnxruntime alone: tsm.quantize imports torch, 24 s under emulation
LOGITS_UNDER_QEMU = """
import sys
import numpy as np
from tsm.streaming.runtime import OnnxStreamSession
stream, logits = OnnxStreamSession(sys.argv[1]), []
for clip in np.load(sys.argv[2]):
    stream.reset()
    logits.append(np.mean([stream.step(frame[None])[0] for frame in clip], axis=0))
np.save(sys.argv[3], np.stack(logits))
"""


def emulators(arm_sysroot: Path | None) -> dict[str, tuple[list[str], dict[str, str]]]:
    """Each emulated CPU's name: the command that runs Python on it, and its environment."""
    cpus = {"AVX2 (qemu -cpu Haswell)": (["qemu-x86_64", "-cpu", "Haswell", sys.executable], {})}
    if arm_sysroot is not None:
        arm_sysroot = arm_sysroot.resolve()
        python = ["qemu-aarch64", "-cpu", "cortex-a57", "-L", str(arm_sysroot), str(arm_sysroot / "usr/bin/python3.11")]
        cpus["ARM (qemu -cpu cortex-a57)"] = (python, {"PYTHONPATH": f"{arm_sysroot / 'site'}:{ROOT / 'src'}"})
    return cpus


def emulated_logits(emulator: tuple[list[str], dict[str, str]], path: Path, clips_file: Path) -> np.ndarray:
    """``clip_logits`` of ``path`` in onnxruntime on an emulated CPU."""
    python, env = emulator
    out = path.with_suffix(".emulated.npy")
    command = [*python, "-c", LOGITS_UNDER_QEMU, str(path), str(clips_file), str(out)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env={**os.environ, **env})
    if done.returncode != 0:
        sys.exit(f"{shlex.join(python)} failed on {path.name}:\n{done.stderr[-3000:]}")
    return np.load(out)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ckpt", type=Path, default=HERE / "runs" / "causal" / "checkpoints" / "last.ckpt")
    parser.add_argument("--clips", type=int, default=300, help="validation clips")
    parser.add_argument("--calibration", type=int, default=64, help="training clips to calibrate on")
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument("--arm-sysroot", type=Path, default=None, help="arm64_sysroot.sh's folder: add an ARM CPU")
    args = parser.parse_args()
    if shutil.which("qemu-x86_64") is None:
        sys.exit("weight_bits.py needs qemu-x86_64 (apt-get install qemu-user) to emulate an AVX2-only CPU")
    if args.arm_sysroot is not None and not (args.arm_sysroot / "usr/bin/python3.11").is_file():
        sys.exit(f"--arm-sysroot {args.arm_sysroot} holds no usr/bin/python3.11: make it with arm64_sysroot.sh")
    if not args.ckpt.is_file():
        sys.exit(f"{args.ckpt} does not exist: run python -m experiments.quantization.study first (it trains it)")
    rows, cpus = {}, emulators(args.arm_sysroot)
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = to_onnx(load_recognizer(args.ckpt), Path(tmp) / "stream_fp32.onnx", mode="stream")
        data = calibration_data(args.ckpt, fp32)
        calibration, _ = clips_of(data, "train", args.calibration)
        clips, labels = clips_of(data, "val", args.clips)
        labels = np.asarray(labels)
        np.save(Path(tmp) / "clips.npy", np.stack(clips))
        reference = clip_logits(fp32, clips).argmax(1)
        for bits in (7, 8):
            path = to_int8(fp32, Path(tmp) / f"int8_{bits}.onnx", calibration, {"split": "train"}, weight_bits=bits)
            here = clip_logits(path, clips)
            logits = {"this CPU": here}
            logits |= {cpu: emulated_logits(e, path, Path(tmp) / "clips.npy") for cpu, e in cpus.items()}
            rows[bits] = {
                cpu: {
                    "agreement": float((values.argmax(1) == reference).mean()),
                    "top1": float((values.argmax(1) == labels).mean()),
                    "same_top1": float((values.argmax(1) == here.argmax(1)).mean()),
                    "max_abs_diff": float(np.abs(values - here).max()),
                }
                for cpu, values in logits.items()
            }
        fp32_top1 = float((reference == labels).mean())
    result = {
        "command": shlex.join(["python", "-m", "experiments.quantization.weight_bits", *sys.argv[1:]]),
        "machine": machine(),
        "onnxruntime": ort.__version__,
        "ckpt": str(args.ckpt),
        "clips": len(clips),
        "fp32_top1": fp32_top1,
        "rows": rows,
    }
    (args.out / "weight_bits.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "weight_bits.md").write_text(report(result) + "\n")
    print(report(result))


def report(result: dict) -> str:
    ckpt = shown(result["ckpt"])
    lines = [
        f"Command: `{result['command']}`; {result['machine']}, onnxruntime "
        f"{result['onnxruntime']}; checkpoint `{ckpt}`; "
        f"stream files on {result['clips']} validation clips; fp32 top-1 {result['fp32_top1']:.3f}.",
        "",
        "| weights | CPU | agreement with fp32 | top-1 | top-1 = this CPU's | max abs logit difference from this CPU |",
        "|---|---|---|---|---|---|",
    ]
    for bits, cpus in result["rows"].items():
        lines += [
            f"| {bits}-bit | {cpu} | {r['agreement']:.3f} | {r['top1']:.3f} | {r['same_top1']:.3f} "
            f"| {r['max_abs_diff']:.4f} |"
            for cpu, r in cpus.items()
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
