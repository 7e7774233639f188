"""The browser demo (web/) in headless Chromium with a fake camera: the page's logits are onnxruntime's,
frame by frame with the shift buffers carried, and its screen shows the prediction."""

import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

from tests.helpers.chromium import chromium_path, run_page, write_y4m
from tests.helpers.weights import randomize_norms
from tsm.export import to_onnx
from tsm.models import build_recognizer
from tsm.quantize import to_int8
from tsm.streaming.app import preprocess
from tsm.streaming.demo_server import WEB, demo_server
from tsm.streaming.runtime import OnnxStreamSession

CLASSES = ["swipe left", "swipe right", "thumb up", "stop sign", "no gesture"]
SIZE, FRAMES = 64, 6


def unavailable() -> str | None:
    if chromium_path() is None:
        return "no Chromium (Debian's chromium; .ci/run installs it as root)"
    if not (WEB / "node_modules" / "onnxruntime-web").is_dir():
        return "web/node_modules is missing (npm install --prefix web; .ci/run runs it)"
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "playwright is not installed (the dev extra)"
    return None


@pytest.fixture(scope="module")
def page_setup(tmp_path_factory):
    reason = unavailable()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"CI installs what the browser demo test needs: {reason}")
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("web")
    torch.manual_seed(0)
    model = randomize_norms(build_recognizer("mobilenetv2_050", len(CLASSES), 4, shift={"direction": "causal"}))
    model.eval().info = {"class_names": CLASSES, "scale_size": 73, "input_size": SIZE}
    stream = to_onnx(model, root / "stream.onnx", mode="stream", input_size=SIZE)
    clip = to_onnx(model, root / "clip.onnx", mode="clip", input_size=SIZE)
    # smooth frames (colour gradients) with a bright square that moves: each reported input names its frame
    yy, xx = np.mgrid[0:120, 0:160]
    video = np.stack([xx * 1.2, yy * 1.5, 180 - xx * 0.8], axis=-1).astype(np.uint8)[None].repeat(12, 0)
    for i, frame in enumerate(video):
        frame[30:70, 10 + 10 * i : 50 + 10 * i] = (230, 200, 40)
    camera = write_y4m(video, root / "camera.y4m")
    return {"root": root, "stream": stream, "clip": clip, "camera": camera, "video": video}


def test_page_logits_are_onnxruntime_frame_by_frame(page_setup):
    shot = page_setup["root"] / "page.png"
    result = run_page(page_setup["stream"], page_setup["camera"], FRAMES, shot)
    assert result["error"] is None
    frames = result["frames"]
    assert len(frames) == FRAMES
    session = OnnxStreamSession(page_setup["stream"])
    info = session.info
    expected_inputs = [
        preprocess(f, info["scale_size"], info["input_size"], info["mean"], info["std"]) for f in page_setup["video"]
    ]
    for reported in frames:
        x = np.asarray(reported["input"], dtype=np.float32).reshape(1, 3, SIZE, SIZE)
        logits = session.step(x)[0]
        got = np.asarray(reported["logits"], dtype=np.float32)
        assert np.abs(got - logits).max() <= 1e-4 * np.abs(logits).max()
        # the page's preprocessing is Python's up to resampling and the camera's 4:2:0 YUV round trip
        # (measured: 4-5 grey levels mean absolute difference, about 0.08 after normalisation)
        nearest = min(float(np.abs(x - e).mean()) for e in expected_inputs)
        assert nearest < 0.1
    assert result["label"] == CLASSES[frames[-1]["label"]]
    # the screenshot shows the page with its prediction (the label text is drawn in the page's green)
    image = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    green = (image[..., 1] > 180) & (image[..., 0] < 160) & (image[..., 2] < 160)
    assert green.sum() > 200


def test_page_runs_an_int8_file(page_setup):
    """An int8 export streams in the page too, its uint8 buffers included. onnxruntime-web's integer kernels
    compute what x86's do (the exporter's 7-bit weights keep AVX2-only CPUs from saturating): the first frame's
    logits agree to one int8 step. The float convolution that reads the frame sums in another order, which
    moves some of its quantized outputs by a step; the buffers carry those into the next frames, whose logits
    then agree within the bound the int8 file keeps to fp32 (measured: 0.08-0.09 of 1.7 on AVX-512 VNNI; the
    same file with an int8 first convolution: equal on every frame)."""
    session = OnnxStreamSession(page_setup["stream"])
    info = session.info
    clip = np.stack(
        [preprocess(f, info["scale_size"], SIZE, info["mean"], info["std"])[0] for f in page_setup["video"]]
    )
    int8 = to_int8(page_setup["stream"], page_setup["root"] / "stream_int8.onnx", [clip], {"data": "the test video"})
    result = run_page(int8, page_setup["camera"], 3)
    assert result["error"] is None and len(result["frames"]) == 3
    reference = OnnxStreamSession(int8)
    graph = onnx.load(str(int8)).graph
    dequantize = next(node for node in graph.node if node.output[0] == "logits")  # the logits' int8 step
    step = next(onnx.numpy_helper.to_array(t) for t in graph.initializer if t.name == dequantize.input[1])
    for index, reported in enumerate(result["frames"]):
        logits = reference.step(np.asarray(reported["input"], dtype=np.float32).reshape(1, 3, SIZE, SIZE))[0]
        got = np.asarray(reported["logits"], dtype=np.float32)
        bound = step * 1.001 if index == 0 else 0.1 * np.abs(logits).max()
        assert np.abs(got - logits).max() <= bound


def bare_copy(stream: Path, path: Path) -> Path:
    """The stream export without its metadata."""
    proto = onnx.load(str(stream))
    del proto.metadata_props[:]
    onnx.save(proto, str(path))
    return path


def test_page_and_server_refuse_files_they_cannot_stream(page_setup, tmp_path):
    from playwright.sync_api import sync_playwright

    bare = bare_copy(page_setup["stream"], tmp_path / "bare.onnx")
    with pytest.raises(ValueError, match="lacks the metadata tsm_mode, tsm_buffers, tsm_info"):
        demo_server(bare, port=0)
    with pytest.raises(ValueError, match="clip-mode export"):
        demo_server(page_setup["clip"], port=0)
    server = demo_server(page_setup["stream"], port=0)  # the page, then files picked in it
    threading.Thread(target=server.serve_forever, daemon=True).start()
    expected = {bare: "lacks the metadata tsm_mode, tsm_buffers, tsm_info", page_setup["clip"]: "clip-mode export"}
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium_path(), headless=True)
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{server.server_address[1]}/")
            for path, message in expected.items():
                page.evaluate("window.tsmError = null")
                page.set_input_files("#model-file", str(path))
                page.wait_for_function("window.tsmError", timeout=30_000)
                assert message in page.evaluate("window.tsmError")
                assert message in page.inner_text("#error")
            browser.close()
    finally:
        server.shutdown()
        server.server_close()


def test_serve_demo_script_prints_the_url(page_setup):
    command = [sys.executable, "src/serve_demo.py", f"onnx={page_setup['stream']}", "port=0"]
    proc = subprocess.Popen(command, cwd=WEB.parent, stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("TSM browser demo: http://127.0.0.1:") and "?model=model.onnx&source=camera" in line
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_browser_latency_bench_tiny(page_setup, tmp_path):
    args = ["--size", "64", "--frames", "3", "--backbone", "mobilenetv2_050", "--out", str(tmp_path / "b.md")]
    subprocess.run(
        [sys.executable, "-m", "experiments.latency.browser", *args], check=True, cwd=WEB.parent, timeout=600
    )
    table = (tmp_path / "b.md").read_text()
    assert "| onnxruntime-web, headless Chromium (web/) |" in table and "over 3 frames" in table
