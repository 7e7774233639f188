"""The browser demo's server (``web/``).

``demo_server`` hands out the page and one stream-mode ONNX file, with the headers that make the page
cross-origin isolated (so onnxruntime-web may use threads), and nothing else: no folder listings, no file
outside ``web/`` (symlinks resolved), no request naming another host (DNS rebinding), no connection idle
past ``IDLE_TIMEOUT_S``. (The tests drive the page in headless Chromium: ``tests/helpers/chromium.py``.)
"""

from __future__ import annotations

import os
import socket
from functools import partial
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tsm.metadata import BUFFERS_KEY, INFO_KEY, MODE_KEY
from tsm.streaming.runtime import read_metadata

WEB = Path(__file__).resolve().parents[3] / "web"  # the page, in the repository (not installed)
MODEL_URL = "/model.onnx"
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")
IDLE_TIMEOUT_S = 30  # seconds a connection may wait for (the rest of) a request before the server closes it


def check_model(path: Path) -> None:
    """Refuse a file the page cannot run, saying why (the page says the same of files picked in it)."""
    if not path.is_file():
        raise FileNotFoundError(f"onnx={path}: no such file")
    if path.suffix.lower() != ".onnx":
        raise ValueError(f"onnx={path}: the browser demo runs ONNX files (src/export.py format=onnx mode=stream)")
    metadata = read_metadata(path)
    how = "export it with src/export.py mode=stream"
    if metadata.get(MODE_KEY, "stream") != "stream":
        raise ValueError(f"onnx={path} is a {metadata[MODE_KEY]}-mode export: {how}")
    missing = [key for key in (MODE_KEY, BUFFERS_KEY, INFO_KEY) if key not in metadata]
    if missing:
        raise ValueError(f"onnx={path} lacks the metadata {', '.join(missing)}: {how}")


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
        """404 unless the path is the model or a file in ``web/`` (a folder: its index.html), symlinks resolved, none
        of whose names starts with a dot (``.npmrc`` may hold a token)."""
        try:
            path = self.translate_path(self.path)
            if os.path.isdir(path):
                path = os.path.join(path, "index.html")
            real = os.path.realpath(path)
        except (ValueError, UnicodeError):  # a null byte or a lone surrogate in the path
            self.send_error(HTTPStatus.NOT_FOUND, "File not found")
            return None
        inside = real.startswith(self.directory + os.sep) and os.path.isfile(real)
        hidden = any(part.startswith(".") for part in Path(real).relative_to(self.directory).parts) if inside else True
        if path != str(self.model) and hidden:
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
    if type(port) is not int or not 0 <= port <= 65535:
        raise ValueError(f"port must be 0 (any free port) to 65535, got {port!r}")
    model = Path(model).resolve()
    check_model(model)
    runtime = WEB / "node_modules" / "onnxruntime-web"
    if not runtime.is_dir():
        raise FileNotFoundError(f"{WEB}/node_modules/onnxruntime-web is missing: run npm install --prefix web")
    if not runtime.resolve().is_relative_to(WEB):  # the page could not load it: nothing outside web/ is served
        raise FileNotFoundError(f"{runtime} links out of {WEB}, whence nothing is served: run npm ci --prefix web")
    server_class = type("DemoServer", (ThreadingHTTPServer,), {"address_family": address_family(host, port)})
    return server_class((host, port), partial(DemoHandler, model=model, host=host))


def address_family(host: str, port: int) -> socket.AddressFamily:
    """The family of the address ``host`` names (IPv6 for ``::1``, ``::`` or an IPv6 host name; the server class
    alone binds IPv4 only), as ``python -m http.server --bind`` picks it."""
    try:
        found = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        raise ValueError(f"host={host!r} names no address to listen on ({error.strerror})") from None
    return found[0][0]
