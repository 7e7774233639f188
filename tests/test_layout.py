"""The house rules: no import circles, small files, a lazy top level, a torch-free ONNX runtime, and
the timm internals the patcher depends on named and pinned."""

import ast
import re
import subprocess
import sys
import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest

import tsm
from tests.helpers import ROOT
from tsm.models.families import BACKBONES, BLOCKS

SRC = ROOT / "src"
PACKAGE = SRC / "tsm"
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """tsm module -> the tsm modules it imports, at any depth of its code (function-level imports count)."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tsm"):
                targets |= {
                    f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                    for a in node.names
                }
            elif isinstance(node, ast.Import):
                targets |= {a.name for a in node.names if a.name.startswith("tsm")}
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def test_no_import_circles():
    graph = import_graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                cycle = path[path.index(target) :] + [target]
                pytest.fail("import circle: " + " -> ".join(cycle))
            if target not in state:
                visit(target, [*path, target])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])


def test_no_file_past_the_limit():
    long = {str(p.relative_to(SRC)): n for p in SRC.rglob("*.py") if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"files over {MAX_LINES} lines: {long}"


def test_the_network_knows_nothing_of_lightning_hydra_or_files():
    for name in ("shift.py", "models/recognizer.py", "models/patch.py", "models/factory.py", "models/i3d.py"):
        text = (PACKAGE / name).read_text()
        assert not re.search(r"^\s*(import|from) (pytorch_lightning|lightning|hydra|omegaconf)", text, re.M), name


def test_public_api_is_lazy_and_complete():
    code = (
        "import sys, tsm; assert not any(m.split('.')[0] in ('torch', 'timm') for m in sys.modules), 'eager'; "
        f"names = {tsm.__all__!r}; [getattr(tsm, n) for n in names]"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    expected = {"build_recognizer", "load_recognizer", "load_official_tsm", "temporal_shift", "TemporalShift"}
    assert expected | {"StreamingTSM", "to_onnx", "OnnxStreamSession", "I3D"} <= set(tsm.__all__)


def test_onnx_runtime_and_app_import_without_torch_or_timm():
    runners = "tsm.streaming.runtime, tsm.streaming.app, tsm.streaming.sessions, tsm.streaming.litert"
    code = f"import sys; sys.modules.update(torch=None, timm=None); import {runners}"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_patcher_knows_these_timm_classes():
    """The family tables import timm's (some private) model and block classes; a timm release that moves or
    renames one fails here."""
    known = {f"{t.__module__}.{t.__qualname__}" for t in (*BACKBONES, *BLOCKS)}
    assert known == {
        "timm.models.resnet.ResNet",
        "timm.models.efficientnet.EfficientNet",
        "timm.models.mobilenetv3.MobileNetV3",
        "timm.models.convnext.ConvNeXt",
        "timm.models.regnet.RegNet",
        "timm.models.byobnet.ByobNet",
        "timm.models.ghostnet.GhostNet",
        "timm.models.vision_transformer.VisionTransformer",
        "timm.models.resnet.BasicBlock",
        "timm.models.resnet.Bottleneck",
        "timm.models._efficientnet_blocks.InvertedResidual",
        "timm.models._efficientnet_blocks.DepthwiseSeparableConv",
        "timm.models._efficientnet_blocks.EdgeResidual",
        "timm.models._efficientnet_blocks.ConvBnAct",
        "timm.models._efficientnet_blocks.UniversalInvertedResidual",
        "timm.models._efficientnet_blocks.MobileAttention",
        "timm.models.convnext.ConvNeXtBlock",
        "timm.models.regnet.Bottleneck",
        "timm.models.ghostnet.GhostBottleneck",
        "timm.models.ghostnet.GhostBottleneckV3",
        "timm.models.byobnet.MobileOneBlock",
        "timm.models.vision_transformer.Block",
    }


def test_timm_is_pinned_to_the_tested_range():
    project = tomllib.loads((SRC.parent / "pyproject.toml").read_text())["project"]
    (spec,) = [d for d in project["dependencies"] if d.startswith("timm")]
    low, high = re.fullmatch(r"timm>=([\d.]+),<([\d.]+)", spec).groups()
    installed = tuple(int(x) for x in version("timm").split(".")[:3])
    assert tuple(int(x) for x in low.split(".")) <= installed < tuple(int(x) for x in high.split("."))


def test_tests_mirror_the_package():
    """Each test folder is named after the subpackage of tsm it tests (helpers aside); the package's own
    modules are tested by the files at the top of tests/. Shared code is imported from tests.helpers."""
    folders = {p.name for p in (ROOT / "tests").iterdir() if (p / "__init__.py").is_file()}
    subpackages = {p.name for p in PACKAGE.iterdir() if p.is_dir() and any(p.glob("*.py"))}
    assert folders - {"helpers", "experiments"} <= subpackages, folders - subpackages
    old_helper_import = re.compile(r"^\s*from (conftest|fixtures_video|slurm_cluster) import", re.M)
    assert not [p for p in (ROOT / "tests").rglob("*.py") if old_helper_import.search(p.read_text())]
