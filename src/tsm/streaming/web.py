"""The browser demo's server and a headless-Chromium driver of the page (``web/``).

``demo_server`` hands out the page and one stream-mode ONNX file, with the headers that make the page
cross-origin isolated (so onnxruntime-web may use threads), and nothing else: no folder listings, no file
outside ``web/`` (symlinks resolved), no request naming another host (DNS rebinding), no connection idle
past ``IDLE_TIMEOUT_S``. ``stream_in_chromium`` opens the page in headless Chromium with a fake camera
playing a ``.y4m`` file and returns what the page reports per frame (its model input, logits and latency);
it needs the ``playwright`` package and a Chromium (Debian's ``chromium``), for tests and benchmarks only.
"""

from __future__ import annotations

import os
import shutil
import threading
from functools import partial
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tsm.streaming.runtime import read_metadata

WEB = Path(__file__).resolve().parents[3] / "web"  # the page, in the repository (not installed)
MODEL_URL = "/model.onnx"
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")
IDLE_TIMEOUT_S = 30  # seconds a connection may wait for (the rest of) a request before the server closes it


def check_model(path: Path) -> None:
    """Refuse a file the page cannot run, saying why (the page says the same of files picked in it)."""
    if not path.is_file():
        raise FileNotFoundError(f"model={path}: no such file")
    metadata = read_metadata(path)
    how = "export it with src/export.py mode=stream"
    if metadata.get("tsm_mode", "stream") != "stream":
        raise ValueError(f"model={path} is a {metadata['tsm_mode']}-mode export: {how}")
    missing = [key for key in ("tsm_mode", "tsm_buffers", "tsm_info") if key not in metadata]
    if missing:
        raise ValueError(f"model={path} lacks the metadata {', '.join(missing)}: {how}")


def host_allowed(header: str | None, server_host: str, port: int) -> bool:
    """Whether a request's Host header names this server, a guard against DNS rebinding: a loopback name or
    ``server_host`` (the address it listens on), with or without ``:port``; a missing Host is refused."""
    names = set(LOOPBACK_HOSTS)
    if server_host:
        names.add(f"[{server_host}]" if ":" in server_host else server_host)
    return bool(header) and header.lower() in names | {f"{name}:{port}" for name in names}


class DemoHandler(SimpleHTTPRequestHandler):
    """Files of ``web/``, the model at ``/model.onnx``, with cross-origin isolation headers; errors in plain text."""

    error_content_type = "text/plain; charset=utf-8"
    error_message_format = "%(code)d %(message)s: %(explain)s\n"

    def __init__(self, *args, model: Path, host: str, **kwargs) -> None:
        self.model, self.host, self.timeout = model, host.lower(), IDLE_TIMEOUT_S
        super().__init__(*args, directory=os.path.realpath(WEB), **kwargs)  # handles the request

    def parse_request(self) -> bool:
        """The base class's parsing, then 403 unless the Host header names this server (:func:`host_allowed`)."""
        if not super().parse_request():
            return False
        hosts = self.headers.get_all("Host", [])
        if not host_allowed(hosts[0] if len(hosts) == 1 else None, self.host, self.server.server_address[1]):
            reason = "ask for localhost, 127.0.0.1, [::1] or the served address"
            self.send_error(HTTPStatus.FORBIDDEN, "Host not allowed", reason)
            return False
        return True

    def translate_path(self, path: str) -> str:
        if path.split("?", 1)[0] == MODEL_URL:
            return str(self.model)
        return super().translate_path(path)

    def send_head(self):
        """404 unless the path is the model or a file in ``web/`` (a folder: its index.html), symlinks resolved."""
        path = self.translate_path(self.path)
        if os.path.isdir(path):
            path = os.path.join(path, "index.html")
        real = os.path.realpath(path)
        if path != str(self.model) and not (real.startswith(self.directory + os.sep) and os.path.isfile(real)):
            self.send_error(HTTPStatus.NOT_FOUND, "File not found")
            return None
        return super().send_head()

    def end_headers(self) -> None:
        self.send_header("Cross-Origin-Opener-Policy", "same-origin")
        self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (the base class's name)
        pass


def demo_server(model: str | Path, host: str = "127.0.0.1", port: int = 8000) -> ThreadingHTTPServer:
    """A server of the demo page and ``model`` (port 0: any free port) for requests naming ``host`` or a loopback
    name; not yet serving."""
    model = Path(model).resolve()
    check_model(model)
    if not (WEB / "node_modules" / "onnxruntime-web").is_dir():
        raise FileNotFoundError(f"{WEB}/node_modules/onnxruntime-web is missing: run npm install --prefix web")
    return ThreadingHTTPServer((host, port), partial(DemoHandler, model=model, host=host))


def chromium_path() -> str | None:
    """The system Chromium (Debian: /usr/bin/chromium), or None."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


def stream_in_chromium(url: str, y4m: str | Path, screenshot: str | Path | None = None, timeout_s: float = 120) -> dict:
    """Open ``url`` (the page with ``?model=...&source=camera&report=N``) in headless Chromium whose camera
    plays ``y4m``; wait for the page's report of N frames (or its error). Returns ``{"frames": [...],
    "label": shown label text, "error": page error or None}``; saves a PNG of the page to ``screenshot``."""
    from playwright.sync_api import sync_playwright

    args = [
        "--use-fake-device-for-media-stream",
        "--use-fake-ui-for-media-stream",
        f"--use-file-for-fake-video-capture={Path(y4m).resolve()}",
    ]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=args, headless=True)
        try:
            page = browser.new_page(viewport={"width": 900, "height": 560})
            page.goto(url)
            page.wait_for_function("window.tsmDone || window.tsmError", timeout=timeout_s * 1000)
            result = page.evaluate(
                "({frames: window.tsmReport, error: window.tsmError || null,"
                " label: document.getElementById('label').textContent})"
            )
            if screenshot is not None:
                page.screenshot(path=str(screenshot))
            return result
        finally:
            browser.close()


def run_page(model: str | Path, camera: str | Path, frames: int, screenshot=None, timeout_s: float = 120) -> dict:
    """Serve the page with ``model`` on a free port and stream ``camera`` (``.y4m``) through it in headless
    Chromium until the page reports ``frames`` frames: :func:`stream_in_chromium`'s result."""
    server = demo_server(model, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        query = f"?model={MODEL_URL.lstrip('/')}&source=camera&report={frames}"
        return stream_in_chromium(f"http://127.0.0.1:{server.server_address[1]}/{query}", camera, screenshot, timeout_s)
    finally:
        server.shutdown()
        server.server_close()


def write_y4m(frames, path: str | Path, fps: int = 10) -> Path:
    """RGB frames ``(N, H, W, 3)`` uint8 (even H and W) as a 4:2:0 ``.y4m`` file, Chromium's fake-camera
    format: BT.601 in the limited ("studio") range, which is how Chromium reads it back to RGB."""
    import numpy as np

    rgb = np.asarray(frames, dtype=np.float64)
    n, height, width, _ = rgb.shape
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    y = 16 + 219 / 255 * (0.299 * r + 0.587 * g + 0.114 * b)
    cb = 128 + 224 / 255 * (-0.168736 * r - 0.331264 * g + 0.5 * b)
    cr = 128 + 224 / 255 * (0.5 * r - 0.418688 * g - 0.081312 * b)
    planes = [y, cb, cr]
    # chroma: mean of each 2x2 block
    planes[1:] = [p.reshape(n, height // 2, 2, width // 2, 2).mean(axis=(2, 4)) for p in planes[1:]]
    planes = [np.clip(np.round(p), 0, 255).astype(np.uint8) for p in planes]
    path = Path(path)
    with open(path, "wb") as file:
        file.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for i in range(n):
            file.write(b"FRAME\n")
            for plane in planes:
                file.write(plane[i].tobytes())
    return path
