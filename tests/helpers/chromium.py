"""Headless Chromium (through Playwright, the system browser) driving the browser demo with a fake camera."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

from tsm.streaming.demo_server import MODEL_URL, demo_server


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
