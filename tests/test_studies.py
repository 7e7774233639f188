"""Each study's script reruns end to end at a tiny size, so the scripts cannot rot."""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from PIL import Image

from experiments.common import (
    CPU_FLAGS,
    TRAIN_SCRIPT,
    forked_exit_code,
    machine,
    run_train,
    synthetic_overrides,
)
from experiments.generalisation.scenes import SWIPES
from experiments.generalisation.study import clips_of
from tests.helpers import ROOT
from tests.helpers.scripts import run_forked
from tsm.training.precision import auto_precision

EXPERIMENTS = ROOT / "experiments"


def run_study(module: str, *args, timeout: float = 1800) -> subprocess.CompletedProcess:
    """``python -m experiments.<module> args`` in the repository root, as the studies' READMEs run them (forked
    from a server that imported the training code once: the scripts' own start-up is what the README commands'
    tests run in fresh interpreters)."""
    return run_forked(f"experiments.{module}", args, timeout=timeout)


@pytest.mark.slow
def test_a_run_forked_from_the_training_server_is_the_same_run_as_its_own_process(tmp_path):
    """The studies' runs fork from a process that imported the training code once: same metrics as
    ``python src/train.py`` in a process of its own (time aside), and a failing run is an error naming it."""
    tiny = [*synthetic_overrides(8, 4, 36), "data.num_segments=4", "data.batch_size=4", "trainer.max_epochs=1"]
    forked = run_train([*tiny, "seed=3"], tmp_path / "forked", threads=1)
    own = run_train([*tiny, "seed=3"], tmp_path / "own", threads=1, own_interpreter=True)
    assert {k: v for k, v in forked.items() if not k.startswith("time/")} == {
        k: v for k, v in own.items() if not k.startswith("time/")
    }
    overrides = (tmp_path / "forked" / ".hydra" / "overrides.yaml").read_text()  # src/train.py's own Hydra run
    assert "seed=3" in overrides
    # a rerun there is refused, and leaves the run's record (before, Hydra had replaced it with the refused command's)
    assert forked_exit_code(TRAIN_SCRIPT, [*tiny, "seed=4", f"hydra.run.dir={tmp_path / 'forked'}"]) == 1
    checkpoint = tmp_path / "forked" / "checkpoints" / "last.ckpt"  # and so is a test writing into it
    assert forked_exit_code("src/eval.py", [f"ckpt_path={checkpoint}", f"hydra.run.dir={tmp_path / 'forked'}"]) == 1
    assert (tmp_path / "forked" / ".hydra" / "overrides.yaml").read_text() == overrides
    with pytest.raises(RuntimeError, match=r"src/train.py .*model.backbone=no_such_net.* failed \(exit code 1\)"):
        run_train([*tiny, "model.backbone=no_such_net"], tmp_path / "bad")


@pytest.mark.slow
def test_kd_study_tiny(tmp_path):
    run_study("kd.study", "--scale", "tiny", "--parallel", "2", "--out", tmp_path)
    table = (tmp_path / "results_tiny.md").read_text()
    assert "| I3D | `python src/train.py +experiment=synthetic_i3d_teacher seed=1` |" in table
    assert "| KD I3D a=0.5 T=4.0 | [1] |" in table and "| KD TSM-MobileNetV2 a=0.5 T=4.0 | [1] |" in table
    assert "| student | [1] |" in table and "AdamW | [1]" not in table  # the tiny scale runs the SGD recipe only
    assert "| cache read back |" in table and "| teacher on every batch |" in table
    assert (tmp_path / "kd_tiny.png").stat().st_size > 0
    runs = tmp_path / "runs" / "tiny"
    assert len(list(runs.glob("*/metrics.json"))) == 5  # two teachers, the student, two distilled students
    cache = torch.load(runs / "kd_i3d_a0.5_T4.0_seed1" / "teacher_logits.pt", weights_only=True)["logits"].double()
    top = [torch.softmax(cache / t, 1).max(1).values.mean().item() for t in (1.0, 4.0)]
    assert f"| {top[0]:.3f} at T=1, {top[1]:.3f} at T=4 |" in table  # how soft the I3D's targets are


@pytest.mark.slow
def test_efficiency_study_tiny(tmp_path):
    run_study("efficiency.study", "--size", "32", "--repeats", "1", "--classes", "5", "--out", tmp_path)
    table = (tmp_path / "results.md").read_text()
    assert "| TSM-MobileNetV2 | 2.23 |" in table  # 2.22M backbone + 1280 x 5 + 5 classifier
    assert "TSM adds no MACs over TSN: True" in table
    assert (tmp_path / "efficiency.png").stat().st_size > 0


@pytest.mark.slow
def test_backbones_study_tiny(tmp_path):
    only = ["mobilenetv2_050", "mobileone_s0", "vit_tiny_patch16_224"]
    run_study("backbones.study", "--size", "32", "--frames", "2", "--repeats", "1", "--only", *only, "--out", tmp_path)
    table = (tmp_path / "results.md").read_text()
    assert "| MobileOne S0 | `mobileone_s0` |" in table and "| ViT-Tiny/16 (DeiT-Tiny) |" in table
    assert (tmp_path / "backbones.png").stat().st_size > 0


@pytest.mark.slow
def test_backbone_accuracy_study_tiny(tmp_path):
    only = ["mobilenetv2_050", "vit_tiny_patch16_224"]
    run_study("backbones.accuracy", "--scale", "tiny", "--only", *only, "--parallel", "2", "--out", tmp_path)
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
    run_study("backbones.accuracy", "--scale", "tiny", "--report-only", "--out", tmp_path)
    assert (tmp_path / "accuracy_tiny.md").read_text().split("\n", 1)[1] == table.split("\n", 1)[1]


@pytest.mark.slow
def test_latency_bench_tiny(tmp_path):
    out = tmp_path / "latency.md"
    run_study("latency.bench", "--repeats", "2", "--size", "32", "--out", out)
    text = out.read_text()
    assert "| eager |" in text and "| ort |" in text and "TSM / plain" in text  # clip throughput and per frame
    for runtime in ("eager PyTorch", "onnxruntime, buffers bound", "onnxruntime, buffers as NumPy feeds"):
        assert f"| {runtime}" in text


@pytest.mark.slow
def test_tsm_vs_tsn_and_shift_ablation_studies_tiny(tmp_path):
    """The shift ablation's TSN, residual and in-place arms are the tsm_vs_tsn study's runs, reused, not retrained."""
    shared = tmp_path / "tsm_vs_tsn"
    run_study("tsm_vs_tsn.study", "--scale", "tiny", "--parallel", "2", "--out", shared)
    table = (shared / "results_tiny.md").read_text()
    assert "| variant | 16x16, seeds [1] | 24x24, seeds [1] |" in table
    for variant in ("TSN", "TSM residual", "TSM in-place", "TSM causal"):
        assert f"| {variant} | " in table
    assert (shared / "tsm_vs_tsn_tiny.png").stat().st_size > 0

    def finished_runs() -> dict[Path, int]:  # each run's metrics file and when it was written
        return {path: path.stat().st_mtime_ns for path in (shared / "runs" / "tiny").glob("*/metrics.json")}

    trained = finished_runs()
    assert len(trained) == 8

    out = tmp_path / "ablation"
    run_study("shift_ablation.study", "--scale", "tiny", "--repeats", "2", "--parallel", "2", "--out", out,
              "--tsm-vs-tsn", shared)  # fmt: skip
    table = (out / "results_tiny.md").read_text()
    assert "| TSN (no shift) | " in table and "| 1.000 |" in table  # TSN's step time against itself
    assert "| fold_div 8, last stages only | " in table
    assert (out / "shift_ablation_tiny.png").stat().st_size > 0
    assert len(list((out / "runs" / "tiny").glob("*/metrics.json"))) == 5
    assert finished_runs() == trained


@pytest.mark.slow
def test_data_throughput_bench_tiny(tmp_path):
    out = tmp_path / "data.md"
    run_study("data_throughput.bench", "--clips", "1", "--long-seconds", "4", "--out", out)
    table = out.read_text()
    assert "| (a) Jester-like" in table and "| (c) Something-V2-like" in table and "| (d) long, 4 s H.264" in table
    assert "sparse speed-up over the 5 decode-all reads" in table and "packets to the decoder" in table
    assert "| decord (one thread) |" in table and "| torchcodec (one thread, exact seeks) |" in table
    assert table.count("same frames as sparse") == 3  # checked on every video before timing
    assert table.count("the kept index:") == 3 and table.count("decode-all reads") == 2  # none on the long one
    assert table.count("decoding alone: ") == 3 and "a reader doing nothing else would be " in table


@pytest.mark.slow
def test_data_throughput_loader_tiny(tmp_path):
    out = tmp_path / "loader.md"
    args = ["--clips", "4", "--workers", "0", "1", "--size", "32", "--batch", "2", "--seconds", "1", "--repeats", "1"]
    run_study("data_throughput.loader", *args, "--out", out)
    table = out.read_text()
    for name in ("(a) Jester-format folder", "(b) video tree"):
        rows = {
            int(m[0]): float(m[1]) for m in re.findall(rf"^\| {re.escape(name)} \| (\d+) \| ([\d.]+) \|", table, re.M)
        }
        assert set(rows) == {0, 1} and all(rate > 0 for rate in rows.values())
        assert f"| {name} | 1 | {rows[1]:.1f} | 1.00 |" in table
    assert re.search(r"Training step on this CPU .*: [\d.]+ clips/s\.", table)
    assert "needs ceil(C / clips-per-worker) workers" in table


@pytest.mark.slow
def test_scaling_and_shift_op_benches_tiny(tmp_path):
    args = ["--steps", "1", "--clips", "1", "--size", "32"]
    run = run_study("scaling.ddp_cpu", *args)
    assert "speed-up" in run.stdout and "all-reduce of 92 MiB" in run.stdout
    out = tmp_path / "shift.md"
    run_study("latency.shift_op", "--repeats", "1", "--out", out)
    assert "| tsm / clone |" in out.read_text()


@pytest.mark.slow
def test_recipe_study_tiny(tmp_path):
    run_study("recipe.study", "--scale", "tiny", "--out", tmp_path)
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
def test_generalisation_study_tiny(tmp_path):
    run_study("generalisation.study", "--scale", "tiny", "--out", tmp_path, "--folders", "hand")
    table = (tmp_path / "results_tiny.md").read_text()
    assert "| hand | 50x75 | TSM | [1] |" in table and "| objects | 50x50 | TSM | none |" in table
    assert "motion probe" in table and (tmp_path / "folders.png").stat().st_size > 0
    for folder, width in (("objects", 50), ("hand", 75), ("particles", 64)):
        root = tmp_path / "runs" / "tiny" / f"{folder}_data"
        assert (root / "jester-v1-labels.csv").read_text().splitlines() == list(SWIPES)
        assert Image.open(root / "20bn-jester-v1" / "1" / "00008.jpg").size[0] == width
    more = clips_of({"train": 8, "validation": 4}, "hand-4x-clips")
    assert more == {"train": 32, "validation": 4}

    # the same folders, fine-tuned from the default run's weights (pretrained here first, at a tiny size)
    run_study("generalisation.fine_tune", "--scale", "tiny", "--out", tmp_path, "--folders", "hand")
    table = (tmp_path / "fine_tune_tiny.md").read_text()
    assert "| hand | TSM fine-tuned | [1] |" in table and "| objects | TSM fine-tuned | none |" in table
    assert "- pretraining for TSM fine-tuned: `OMP_NUM_THREADS=1 python src/train.py " in table
    assert (tmp_path / "fine_tune_tiny.png").stat().st_size > 0
    runs = tmp_path / "runs" / "tiny"
    overrides = (runs / "hand_tsm-fine-tuned_seed1" / ".hydra" / "overrides.yaml").read_text()
    assert f"model.init_from={runs / 'pretrain_tsm' / 'checkpoints' / 'last.ckpt'}" in overrides
    assert (runs / "pretrain_tsm" / "metrics.json").is_file() and not (runs / "pretrain_tsn").exists()


@pytest.mark.slow
def test_multigrid_study_tiny(tmp_path):
    """Also ``python src/train.py +multigrid=default`` as users run it: its schedule logged, time to accuracy too."""
    run_study("multigrid.study", "--scale", "tiny", "--out", tmp_path)
    table = (tmp_path / "results_tiny.md").read_text()
    assert "| default | " in table and "| multigrid | " in table and "+multigrid=default" in table
    assert (tmp_path / "multigrid_tiny.png").stat().st_size > 0
    run = tmp_path / "runs" / "tiny" / "multigrid_seed1"
    log = (run / "train.log").read_text()  # 8 frames at 32x32 in batches of 4, two epochs
    assert "epoch 0: 32 x 4 x 16^2, 15 x 4 x 23^2, 15 x 4 x 23^2 (lr x 3.75)" in log and "epoch 1: " in log
    header = next((run / "csv").glob("version_*/metrics.csv")).read_text().splitlines()[0]
    assert "time/train_s" in header.split(",")


@pytest.mark.slow
def test_quantization_study_tiny(tmp_path):
    tiny = [*synthetic_overrides(8, 4, 36), "data.batch_size=4", "trainer.max_epochs=1", "data.num_segments=4"]
    run_study(
        "quantization.study", "--clips", "4", "--repeats", "2", "--sizes", "32", "--out", tmp_path, "--extra", *tiny
    )
    table = (tmp_path / "results.md").read_text()
    assert all(f"| {name} |" in table for name in ("stream fp16", "stream int8", "clip int8", "plain 2D int8"))
    census = next(line for line in table.splitlines() if line.startswith("Nodes onnxruntime runs for stream int8"))
    assert "QLinearConv" in census and "Concat" in census and "QLinearConcat" not in census  # uint8 buffers
    if shutil.which("qemu-x86_64") is None and not os.environ.get("CI"):  # CI installs it (.ci/run)
        pytest.skip("weight_bits.py needs qemu-x86_64 (Debian's qemu-user)")
    ckpt = tmp_path / "runs/causal/checkpoints/last.ckpt"
    run_study("quantization.weight_bits", "--ckpt", ckpt, "--clips", "3", "--calibration", "2", "--out", tmp_path)
    rows = json.loads((tmp_path / "weight_bits.json").read_text())["rows"]
    assert set(rows) == {"7", "8"} and set(rows["7"]) == {"this CPU", "AVX2 (qemu -cpu Haswell)"}
    assert rows["7"]["AVX2 (qemu -cpu Haswell)"]["max_abs_diff"] == 0  # 7-bit weights: the same logits on AVX2
    assert "| 7-bit | AVX2 (qemu -cpu Haswell) | " in (tmp_path / "weight_bits.md").read_text()


@pytest.mark.slow
def test_int8_speed_tiny(tmp_path):
    out = tmp_path / "int8.md"
    args = ["--backbones", "mobilenetv2_050", "--size", "32", "--repeats", "2", "--burst", "3", "--burst-rounds", "1"]
    run_study("quantization.int8_speed", *args, "--out", out)
    table = out.read_text()
    for runtime in ("LiteRT", "onnxruntime"):  # timed switching file every frame, and in bursts of one file
        assert f"| mobilenetv2_050 | {runtime} | every frame |" in table
        assert f"| mobilenetv2_050 | {runtime} | bursts of 3 |" in table


@pytest.mark.slow
def test_spinning_tiny(tmp_path):
    out = tmp_path / "spinning.md"
    args = ["--backbones", "mobilenetv2_050", "--size", "32", "--frames", "2", "--gap", "1", "--burst", "2"]
    run_study("latency.spinning", *args, "--burst-rounds", "1", "--out", out)
    rows = [line.split(" | ") for line in out.read_text().splitlines() if line.startswith("| mobilenetv2_050 |")]
    assert [row[1] for row in rows] == ["fp32", "int8"]
    assert all(float(row[4].rstrip("x")) > 0 and float(row[8].rstrip("x |")) > 0 for row in rows)


@pytest.mark.slow
def test_recipe_step_time_tiny(tmp_path):
    run_study("recipe.step_time", "--repeats", "1", "--batch", "2", "--out", tmp_path)
    rows = [
        line for line in (tmp_path / "step_time.md").read_text().splitlines() if line.startswith("| ") and "`" in line
    ]
    auto = auto_precision("auto", depthwise=False)[0]  # the default's precision on this machine
    assert rows[0].startswith(f"| default (resnet10t_050, 64x64) | `-` | {auto} | 1.23 | 180 |")
    assert rows[0].endswith("| 1.00 |")
    assert rows[1].startswith("| default in float32 | `trainer.precision=32-true` | 32-true | 1.23 | 180 |")
    previous = "| mobilenetv2_050 (the previous default), 64x64 | `model.backbone=mobilenetv2_050`"
    assert f"{previous} | 32-true | 0.70 | 63 |" in rows[2]  # depthwise: float32 on any CPU
    assert rows[3].startswith("| mobilenetv2_050 in bf16 mixed precision | `model.backbone=mobilenetv2_050 trainer")
    assert "| bf16-mixed | 0.70 | 63 |" in rows[3] and len(rows) == 8


def test_studies_run_as_modules_without_path_edits():
    """Every study is ``python -m experiments.<folder>.<script>``: a package per folder, no ``sys.path`` edits."""
    scripts = sorted(EXPERIMENTS.glob("*/*.py"))
    assert scripts and all((path.parent / "__init__.py").is_file() for path in scripts)
    assert not [path for path in [*scripts, EXPERIMENTS / "common.py"] if "sys.path" in path.read_text()]


def test_index_lists_every_study_with_figures_from_its_results():
    """experiments/README.md has a row per study folder; its headline figures stand in the file it links (or it
    says that none is measured yet)."""
    index = (EXPERIMENTS / "README.md").read_text()
    rows = [line for line in index.splitlines() if line.startswith("| ") and "](" in line]
    folders = {path.parent.name for path in EXPERIMENTS.glob("*/README.md")}
    assert folders == {re.search(r"\]\((\w+)/\)", row).group(1) for row in rows}
    for row in rows:
        cells = row.split(" | ")
        figure, command = cells[2], cells[3]
        source = EXPERIMENTS / re.search(r"\]\(([\w/.]+\.(?:md|json))\)", figure).group(1)
        numbers = re.findall(r"\d+(?:\.\d+)?", figure.split("](")[0])
        assert numbers or "not measured yet" in figure, row  # a study still waiting for its hardware (gpu)
        assert all(number in source.read_text() for number in numbers), row
        module = re.search(r"python -m (experiments\.\w+\.\w+)", command).group(1)
        assert (EXPERIMENTS.parent / (module.replace(".", "/") + ".py")).is_file(), row


@pytest.mark.slow
def test_compile_bench_tiny(tmp_path):
    run_study("compile.bench", "--size", 32, "--batch", 2, "--steps", 1, "--out", tmp_path)
    table = (tmp_path / "results.md").read_text()
    assert "| median step | " in table
    difference = re.search(r"\| eval logits, max relative difference to eager \| \| (\S+) \|", table).group(1)
    assert float(difference) < 1e-4  # the compiled network computes what eager does


def test_the_machine_line_names_the_cpu_and_its_kernels_features():
    """Studies record the CPU they ran on (name, family and model, the flags that pick kernels), not only its
    architecture: two 2-core EPYCs of different generations differ 2.3x in bf16 here."""
    line = machine()
    assert f"{torch.get_num_threads()} threads" in line and torch.__version__ in line
    info = Path("/proc/cpuinfo")
    if info.is_file():
        fields = dict(row.split(":", 1) for row in info.read_text().split("\n\n")[0].splitlines() if ":" in row)
        fields = {key.strip(): value.strip() for key, value in fields.items()}
        assert fields.get("model name", fields.get("CPU part", "")) in line
        flags = set(fields.get("flags", fields.get("Features", "")).split())
        assert all((flag in re.findall(r"\w+", line)) == (flag in flags) for flag in CPU_FLAGS)


OFFICIAL_STAND_IN = '''
from torch import nn


class TSN(nn.Module):
    """Stands in for the official code's TSN (no checkout of it here): its constructor, its input layout."""

    def __init__(self, num_class, num_segments, modality, base_model, is_shift, shift_div, shift_place, **kwargs):
        super().__init__()
        assert (modality, base_model, is_shift, shift_div, shift_place) == ("RGB", "resnet50", True, 8, "blockres")
        assert kwargs.pop("partial_bn") in (True, False) and kwargs == {"pretrain": "none", "print_spec": False}
        self.num_segments = num_segments
        self.fc = nn.Linear(3, num_class)

    def forward(self, x):  # (B, T*3, H, W), as the official training script feeds it
        return self.fc(x.view(x.shape[0], self.num_segments, 3, -1).mean((1, 3)))
'''


@pytest.mark.slow
def test_speed_bench_tiny(tmp_path):
    """experiments/speed at a tiny size, the official checkout stood in for by a package of the same layout."""
    (tmp_path / "checkout" / "ops").mkdir(parents=True)
    (tmp_path / "checkout" / "ops" / "__init__.py").write_text("")
    (tmp_path / "checkout" / "ops" / "models.py").write_text(OFFICIAL_STAND_IN)
    args = ["--official", tmp_path / "checkout", "--sizes", "32", "--batch", "1", "--repeats", "1",
            "--matmul-side", "128"]  # fmt: skip
    run_study("speed.bench", *args, "--out", tmp_path)
    lines = (tmp_path / "results.md").read_text().splitlines()
    rows = [line.split(" | ") for line in lines if line.startswith("| 32 |")]
    auto = auto_precision("auto", depthwise=False)[0]
    expected = [("every BatchNorm trained", "32-true"), ("partial BatchNorm", "32-true"), ("fp32", "32-true"),
                ("channels_last", "32-true"), ("defaults", auto)]  # fmt: skip
    for row, (word, precision) in zip(rows, expected, strict=True):
        assert word in row[1] and row[2] == precision and float(row[3]) >= 0  # ms, rounded: a stand-in takes < 1
    assert rows[0][4] == "1.00" and all(float(row[5].strip(" |")) > 0 for row in rows)  # GFLOP/s
    assert "--matmul-side 128`" in lines[0]
    matmul = next(line for line in lines if line.startswith("GFLOP/s: "))
    assert "A dense 128x128x128 matrix product" in matmul
    assert re.search(r"32-true \d+ GFLOP/s, bf16-mixed \d+ GFLOP/s\.$", matmul)
