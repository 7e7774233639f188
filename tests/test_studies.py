"""Each study's script reruns end to end at a tiny size, so the scripts cannot rot."""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import ROOT

EXPERIMENTS = ROOT / "experiments"
sys.path.insert(0, str(EXPERIMENTS))
from study import synthetic_overrides  # noqa: E402


@pytest.mark.slow
def test_kd_study_tiny(tmp_path):
    script = EXPERIMENTS / "kd" / "study.py"
    args = ["--scale", "tiny", "--parallel", "2", "--out", str(tmp_path)]
    subprocess.run([sys.executable, str(script), *args], check=True)
    table = (tmp_path / "results_tiny.md").read_text()
    assert "| I3D | `python src/train.py +experiment=synthetic_i3d_teacher seed=1` |" in table
    assert "| KD I3D a=0.5 T=4.0 | [1] |" in table and "| KD TSM-MobileNetV2 a=0.5 T=4.0 | [1] |" in table
    assert "| student AdamW | [1] |" in table and "| KD I3D a=0.5 T=4.0 AdamW | [1] |" in table
    assert "| KD TSM-MobileNetV2 a=0.5 T=4.0 AdamW | [1] |" in table and "| KD I3D a=0.9 T=4.0 AdamW | [1] |" in table
    assert "| cache read back |" in table and "| teacher on every batch |" in table
    assert (tmp_path / "kd_tiny.png").stat().st_size > 0
    runs = tmp_path / "runs" / "tiny"
    assert len(list(runs.glob("*/metrics.json"))) == 10
    cache = torch.load(runs / "kd_i3d_a0.5_T4.0_seed1" / "teacher_logits.pt", weights_only=True)["logits"].double()
    top = [torch.softmax(cache / t, 1).max(1).values.mean().item() for t in (1.0, 4.0)]
    assert f"| {top[0]:.3f} at T=1, {top[1]:.3f} at T=4 |" in table  # how soft the I3D's targets are


@pytest.mark.slow
def test_efficiency_study_tiny(tmp_path):
    script = EXPERIMENTS / "efficiency" / "study.py"
    args = ["--size", "32", "--repeats", "1", "--classes", "5", "--out", str(tmp_path)]
    subprocess.run([sys.executable, str(script), *args], check=True)
    table = (tmp_path / "results.md").read_text()
    assert "| TSM-MobileNetV2 | 2.23 |" in table  # 2.22M backbone + 1280 x 5 + 5 classifier
    assert "TSM adds no MACs over TSN: True" in table
    assert (tmp_path / "efficiency.png").stat().st_size > 0


@pytest.mark.slow
def test_backbones_study_tiny(tmp_path):
    script = EXPERIMENTS / "backbones" / "study.py"
    only = ["mobilenetv2_050", "mobileone_s0", "vit_tiny_patch16_224"]
    args = ["--size", "32", "--frames", "2", "--repeats", "1", "--only", *only, "--out", str(tmp_path)]
    subprocess.run([sys.executable, str(script), *args], check=True)
    table = (tmp_path / "results.md").read_text()
    assert "| MobileOne S0 | `mobileone_s0` |" in table and "| ViT-Tiny/16 (DeiT-Tiny) |" in table
    assert (tmp_path / "backbones.png").stat().st_size > 0


@pytest.mark.slow
def test_backbone_accuracy_study_tiny(tmp_path):
    script = EXPERIMENTS / "backbones" / "accuracy.py"
    only = ["mobilenetv2_050", "vit_tiny_patch16_224"]
    args = ["--scale", "tiny", "--only", *only, "--parallel", "2", "--out", str(tmp_path)]
    subprocess.run([sys.executable, str(script), *args], check=True)
    table = (tmp_path / "accuracy_tiny.md").read_text()
    runs = tmp_path / "runs" / "accuracy_tiny"
    assert len(list(runs.glob("*/metrics.json"))) == 4  # two backbones x TSM, TSN
    for name, timm_name in (
        ("MobileNetV2 x0.5", "mobilenetv2_050"),
        ("ViT-Tiny/16 (DeiT-Tiny)", "vit_tiny_patch16_224"),
    ):
        accs = [
            json.loads((runs / f"{timm_name}_{v}_seed1" / "metrics.json").read_text())["test/acc"]
            for v in ("TSM", "TSN")
        ]
        assert f"| {name} | `{timm_name}` | {accs[0]:.3f} | {accs[1]:.3f} | [1] |" in table
    assert "| GhostNet x0.5 | `ghostnet_050` | - | - | - | - |" in table  # not run: said, not invented
    assert (tmp_path / "accuracy_tiny.png").stat().st_size > 0
    subprocess.run(
        [sys.executable, str(script), "--scale", "tiny", "--report-only", "--out", str(tmp_path)], check=True
    )
    assert (tmp_path / "accuracy_tiny.md").read_text().split("\n", 1)[1] == table.split("\n", 1)[1]


@pytest.mark.slow
def test_vit_sites_study_tiny(tmp_path):
    script = EXPERIMENTS / "backbones" / "vit_sites.py"
    args = ["--scale", "tiny", "--parallel", "2", "--out", str(tmp_path)]
    subprocess.run([sys.executable, str(script), *args], check=True)
    table = (tmp_path / "vit_sites_tiny.md").read_text()
    assert all(f"| {site} |" in table for site in ("TSN", "attention", "MLP", "both"))
    assert len(list((tmp_path / "runs" / "vit_sites_tiny").glob("*/metrics.json"))) == 4


def _load(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _FrameMeans(torch.nn.Module):
    """Logits from each frame's mean colour: linear in them, so it sees the order unless ``blind``."""

    def __init__(self, weights: torch.Tensor, blind: bool = False) -> None:
        super().__init__()
        self.weights, self.blind = weights, blind

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        means = clips.mean((-1, -2))  # (N, T, C)
        if self.blind:
            return means.mean(1) @ self.weights[:3]
        return means.flatten(1) @ self.weights


def test_vit_fit_order_accuracy_matches_its_definition():
    vit_fit = _load(EXPERIMENTS / "backbones" / "vit_fit.py")
    torch.manual_seed(0)
    clips, labels = torch.randn(30, 8, 3, 5, 5), torch.randint(0, 9, (30,))
    net = _FrameMeans(torch.randn(8 * 3, 9))
    logits = net(clips).double()
    wins = []
    for i, y in enumerate(labels.tolist()):
        if y != 8:  # static is its own time reversal
            own, partner = logits[i, y], logits[i, vit_fit.REVERSED[y]]
            wins.append(1.0 if own > partner else 0.5 if own == partner else 0.0)
    assert vit_fit.order_accuracy(net, clips, labels) == pytest.approx(sum(wins) / len(wins), abs=1e-12)
    # a network blind to the order scores exactly one half on clips beside their reversals
    both = torch.cat([clips, clips.flip(1)])
    partners = torch.cat([labels, torch.tensor([vit_fit.REVERSED[y] for y in labels.tolist()])])
    assert vit_fit.order_accuracy(_FrameMeans(net.weights, blind=True), both, partners) == 0.5


@pytest.mark.slow
def test_vit_fit_study_tiny(tmp_path):
    script = EXPERIMENTS / "backbones" / "vit_fit.py"
    args = ["--seeds", "1", "--steps", "2", "--clips", "6", "--held-out", "6", "--every", "1", "--out", str(tmp_path)]
    subprocess.run([sys.executable, str(script), *args], check=True)
    table = (tmp_path / "vit_fit.md").read_text()
    assert "| TSN | 0.500 | 0.500 |" in table  # TSN cannot see the order: exactly one half
    assert all(f"| {site} | " in table for site in ("attention", "MLP", "both"))
    assert (tmp_path / "vit_fit.png").stat().st_size > 0


@pytest.mark.slow
def test_recipe_screen_and_seed_split_tiny(tmp_path):
    tiny = [*synthetic_overrides(40, 12, 36), "data.batch_size=4", "trainer.max_epochs=1"]
    screen = [EXPERIMENTS / "recipe" / "screen.py", "--variants", "default", "adamw", "--parallel", "2"]
    subprocess.run([sys.executable, *map(str, screen), "--out", str(tmp_path), "--extra", *tiny], check=True)
    assert "| adamw | `model.optimizer.name=adamw" in (tmp_path / "screen.md").read_text()
    probe = [EXPERIMENTS / "recipe" / "probe.py", tmp_path / "runs" / "screen" / "default_seed3", "--clips", "20"]
    subprocess.run([sys.executable, *map(str, probe), "--out", str(tmp_path)], check=True)
    assert "| default_seed3 | " in (tmp_path / "probe.md").read_text()
    run = tmp_path / "runs" / "screen" / "default_seed3"
    head_rows = [EXPERIMENTS / "recipe" / "head_rows.py", run, "--out", tmp_path]
    subprocess.run([sys.executable, *map(str, head_rows)], check=True)
    rows = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]["net.fc.weight"].double()
    rotation = (rows[6] - rows[7]).norm().item()  # rotate_clockwise / rotate_counterclockwise, the last column
    assert (tmp_path / "head_rows.md").read_text().splitlines()[-1].endswith(f" | {rotation:.2f} |")
    split = [EXPERIMENTS / "recipe" / "seed_split.py", "--pairs", "3:103", "--parallel", "1"]
    subprocess.run([sys.executable, *map(str, split), "--out", str(tmp_path), "--extra", *tiny], check=True)
    assert "| 3 | 103 |" in (tmp_path / "seed_split.md").read_text()


@pytest.mark.slow
def test_latency_bench_tiny(tmp_path):
    out = tmp_path / "latency.md"
    subprocess.run(
        [
            sys.executable,
            str(EXPERIMENTS / "latency" / "bench.py"),
            "--repeats",
            "2",
            "--size",
            "32",
            "--out",
            str(out),
        ],
        check=True,
    )
    text = out.read_text()
    assert "| eager |" in text and "| ort |" in text and "TSM / plain" in text  # clip throughput and per frame
    for runtime in ("eager PyTorch", "onnxruntime, buffers bound", "onnxruntime, buffers as NumPy feeds"):
        assert f"| {runtime}" in text


@pytest.mark.slow
def test_tsm_vs_tsn_study_tiny(tmp_path):
    script = EXPERIMENTS / "tsm_vs_tsn" / "study.py"
    subprocess.run([sys.executable, str(script), "--scale", "tiny", "--out", str(tmp_path)], check=True)
    table = (tmp_path / "results_tiny.md").read_text()
    assert "| variant | 16x16, seeds [1] | 24x24, seeds [1] |" in table
    for variant in ("TSN", "TSM residual", "TSM in-place", "TSM causal"):
        assert f"| {variant} | " in table
    assert (tmp_path / "tsm_vs_tsn_tiny.png").stat().st_size > 0
    assert len(list((tmp_path / "runs" / "tiny").glob("*/metrics.json"))) == 8


@pytest.mark.slow
def test_shift_ablation_study_tiny(tmp_path):
    script = EXPERIMENTS / "shift_ablation" / "study.py"
    args = ["--scale", "tiny", "--repeats", "2", "--out", str(tmp_path), "--tsm-vs-tsn", str(tmp_path / "shared")]
    subprocess.run([sys.executable, str(script), *args], check=True)
    table = (tmp_path / "results_tiny.md").read_text()
    assert "| TSN (no shift) | " in table and "| 1.000 |" in table  # TSN's step time against itself
    assert "| fold_div 8, last stages only | " in table
    assert (tmp_path / "shift_ablation_tiny.png").stat().st_size > 0
    assert len(list((tmp_path / "runs" / "tiny").glob("*/metrics.json"))) == 5
    assert len(list((tmp_path / "shared" / "runs" / "tiny").glob("*/metrics.json"))) == 3  # TSN, residual, in-place


@pytest.mark.slow
def test_data_throughput_bench_tiny(tmp_path):
    out = tmp_path / "data.md"
    subprocess.run(
        [sys.executable, str(EXPERIMENTS / "data_throughput" / "bench.py"), "--clips", "1", "--out", str(out)],
        check=True,
    )
    table = out.read_text()
    assert "| (a) Jester-like" in table and "| (c) Something-V2-like" in table
    assert "sparse speed-up over the 5 decode-all reads" in table and "packets to the decoder" in table
    assert "| decord (one thread) |" in table and "| torchcodec (one thread, exact seeks) |" in table
    assert table.count("same frames as sparse") == 2  # checked on both videos before timing


@pytest.mark.slow
def test_scaling_and_shift_speed_benches_tiny(tmp_path):
    args = ["--steps", "1", "--clips", "1", "--size", "32"]
    run = subprocess.run(
        [sys.executable, str(EXPERIMENTS / "scaling" / "ddp_cpu.py"), *args], check=True, capture_output=True, text=True
    )
    assert "speed-up" in run.stdout and "all-reduce of 92 MiB" in run.stdout
    out = tmp_path / "shift.md"
    subprocess.run(
        [sys.executable, str(EXPERIMENTS / "shift_speed" / "bench.py"), "--repeats", "1", "--out", str(out)], check=True
    )
    assert "| tsm / clone |" in out.read_text()


@pytest.mark.slow
def test_recipe_study_tiny(tmp_path):
    script = EXPERIMENTS / "recipe" / "study.py"
    subprocess.run([sys.executable, str(script), "--scale", "tiny", "--out", str(tmp_path)], check=True)
    table = (tmp_path / "results_tiny.md").read_text()
    for row in (
        "| synthetic gestures (python src/train.py) | TSM | [1] |",
        "| Jester-format folder, 4 gestures | TSN | [1] |",
        "| synthetic gestures (python src/train.py) | TSM-MobileNetV2 | none | - | - | - | - |",  # small scale only
    ):
        assert row in table
    assert (tmp_path / "recipe_tiny.png").stat().st_size > 0
    assert len(list((tmp_path / "runs" / "tiny").glob("*/metrics.json"))) == 4
    labels = (tmp_path / "runs" / "tiny" / "jester_data" / "jester-v1-labels.csv").read_text().splitlines()
    assert labels == ["Swiping Left", "Swiping Right", "Swiping Up", "Swiping Down"]  # 4 of Jester's 27
    root = tmp_path / "runs" / "tiny" / "jester_data"
    assert (root / "jester-v1-train.csv").read_text().splitlines()[:2] == ["1;Swiping Left", "2;Swiping Right"]
    assert (root / "20bn-jester-v1" / "1" / "00008.jpg").is_file()


@pytest.mark.slow
def test_quantization_study_tiny(tmp_path):
    tiny = [*synthetic_overrides(8, 4, 36), "data.batch_size=4", "trainer.max_epochs=1", "data.num_segments=4"]
    script = EXPERIMENTS / "quantization" / "study.py"
    args = ["--clips", "4", "--repeats", "2", "--sizes", "32", "--out", str(tmp_path), "--extra", *tiny]
    subprocess.run([sys.executable, str(script), *args], check=True)
    table = (tmp_path / "results.md").read_text()
    assert all(f"| {name} |" in table for name in ("stream fp16", "stream int8", "clip int8", "plain 2D int8"))
    census = next(line for line in table.splitlines() if line.startswith("Nodes onnxruntime runs for stream int8"))
    assert "QLinearConv" in census and "QLinearConcat" in census
    if shutil.which("qemu-x86_64") is None and not os.environ.get("CI"):  # CI installs it (.ci/run)
        pytest.skip("weight_bits.py needs qemu-x86_64 (Debian's qemu-user)")
    script, ckpt = EXPERIMENTS / "quantization" / "weight_bits.py", tmp_path / "runs/causal/checkpoints/last.ckpt"
    args = ["--ckpt", str(ckpt), "--clips", "3", "--calibration", "2", "--out", str(tmp_path)]
    subprocess.run([sys.executable, str(script), *args], check=True)
    rows = json.loads((tmp_path / "weight_bits.json").read_text())["rows"]
    assert set(rows) == {"7", "8"} and set(rows["7"]) == {"this CPU", "AVX2 (qemu -cpu Haswell)"}
    assert rows["7"]["AVX2 (qemu -cpu Haswell)"]["max_abs_diff"] == 0  # 7-bit weights: the same logits on AVX2
    assert "| 7-bit | AVX2 (qemu -cpu Haswell) | " in (tmp_path / "weight_bits.md").read_text()


@pytest.mark.slow
def test_recipe_step_time_tiny(tmp_path):
    script = EXPERIMENTS / "recipe" / "step_time.py"
    subprocess.run([sys.executable, str(script), "--repeats", "1", "--batch", "2", "--out", str(tmp_path)], check=True)
    rows = [
        line for line in (tmp_path / "step_time.md").read_text().splitlines() if line.startswith("| ") and "`" in line
    ]
    assert rows[0].startswith("| default (resnet10t_050, 64x64) | `-` | 1.23 | 180 |") and rows[0].endswith("| 1.00 |")
    assert "| mobilenetv2_050 (the previous default), 64x64 | `model.backbone=mobilenetv2_050` | 0.70 | 63 |" in rows[1]
    assert len(rows) == 6
