"""The browser demo's server (tsm.streaming.demo_server) over raw HTTP: it serves the page and the model, and refuses
folder listings, files outside web/, other host names and idle connections. It serves a copy of web/ (with an
empty node_modules/onnxruntime-web, a symlink out of it and a file beside it), so it needs no npm install."""

import http.client
import os
import shutil
import socket
import threading
import time

import pytest
import torch

from tsm.export import to_onnx
from tsm.models import build_recognizer
from tsm.streaming import demo_server as web

SIZE = 64


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A tiny stream-mode export, made as tests/streaming/test_web_demo.py's page_setup makes it."""
    torch.manual_seed(0)
    net = build_recognizer("mobilenetv2_050", 5, 4, shift={"direction": "causal"})
    net.eval().info = {"class_names": list("abcde"), "scale_size": 73, "input_size": SIZE}
    return to_onnx(net, tmp_path_factory.mktemp("model") / "stream.onnx", mode="stream", input_size=SIZE)


@pytest.fixture
def serving(model, tmp_path, monkeypatch):
    """Start a server (at a host) of ``tmp_path/web`` (web/'s index.html); ``tmp_path/pyproject.toml`` lies outside
    it and ``web/leak.txt`` and ``web/out/`` are symlinks to it and to its folder."""
    root = tmp_path / "web"
    (root / "node_modules" / "onnxruntime-web").mkdir(parents=True)
    shutil.copy(web.WEB / "index.html", root / "index.html")
    (tmp_path / "pyproject.toml").write_text("secret")
    os.symlink(tmp_path / "pyproject.toml", root / "leak.txt")
    os.symlink(tmp_path, root / "out")
    monkeypatch.setattr(web, "WEB", root)
    started = []

    def start(host: str) -> web.ThreadingHTTPServer:
        httpd = web.demo_server(model, host, 0)
        thread = threading.Thread(target=httpd.serve_forever, daemon=True)
        thread.start()
        started.append((httpd, thread))
        return httpd

    yield start
    for httpd, thread in started:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


@pytest.fixture
def server(serving):
    return serving("127.0.0.1")


def get(httpd, path: str, host: str | None = "127.0.0.1") -> tuple[int, dict, bytes]:
    """GET ``path`` with the Host header ``host`` (None: none): status, headers, body."""
    conn = http.client.HTTPConnection(*httpd.server_address[:2], timeout=10)
    try:
        conn.putrequest("GET", path, skip_host=True, skip_accept_encoding=True)
        if host is not None:
            conn.putheader("Host", host)
        conn.endheaders()
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def test_no_folder_listings(server):
    status, headers, body = get(server, "/")
    assert status == 200 and body == (web.WEB / "index.html").read_bytes()
    assert headers["Cross-Origin-Opener-Policy"] == "same-origin" and headers["Cache-Control"] == "no-store"
    assert get(server, "/node_modules/")[0] == 404
    assert get(server, "/node_modules")[0] == 404  # not a redirect to the listing


def test_nothing_outside_web(server, model):
    status, _, body = get(server, web.MODEL_URL)
    assert status == 200 and body == model.read_bytes()
    for path in ["/leak.txt", "/out/pyproject.toml", "/out/", "/../pyproject.toml", "/%2e%2e/pyproject.toml"]:
        status, _, body = get(server, path)
        assert status == 404 and b"secret" not in body, path


def test_hidden_files_and_odd_paths_get_a_404(server):
    """web/.npmrc (which may hold a token) was served; a null byte or a lone surrogate in the path closed the
    connection with a traceback."""
    hidden = web.WEB / ".audit_hidden"
    hidden.write_text("token")
    try:
        for path in ["/.audit_hidden", "/index.html%00", "/%00/", "/%ed%a0%80"]:
            status, _, body = get(server, path)
            assert status == 404 and b"token" not in body, path
    finally:
        hidden.unlink()


def test_other_host_names_are_refused(server):
    port = server.server_address[1]
    for host in ["localhost", f"localhost:{port}", "127.0.0.1", f"127.0.0.1:{port}", "[::1]", f"[::1]:{port}"]:
        assert get(server, "/", host)[0] == 200, host
    for host in ["evil.example", f"evil.example:{port}", "", None]:
        status, headers, body = get(server, "/", host)
        assert status == 403 and headers["Content-Type"].startswith("text/plain") and b"Host" in body, host


def test_it_listens_on_an_ipv6_address(serving, model):
    """host=::1 failed to bind ('Address family for hostname not supported'): the server class binds IPv4 only."""
    httpd = serving("::1")
    assert httpd.server_address[0] == "::1"
    assert get(httpd, "/model.onnx", f"[::1]:{httpd.server_address[1]}")[2] == model.read_bytes()
    assert web.address_family("127.0.0.1", 0) == socket.AF_INET
    with pytest.raises(ValueError, match="host='no such host.invalid' names no address to listen on"):
        serving("no such host.invalid")


def test_allowed_hosts():
    assert web.host_allowed("192.168.1.5:8000", "192.168.1.5", 8000)
    assert web.host_allowed("LOCALHOST", "192.168.1.5", 8000)
    assert not web.host_allowed("192.168.1.5:8001", "192.168.1.5", 8000)
    assert not web.host_allowed("192.168.1.5", "127.0.0.1", 8000)
    assert not web.host_allowed(None, "127.0.0.1", 8000)


@pytest.mark.parametrize("sent", [b"", b"GET / HTTP/1.1\r\n"])
def test_idle_connections_are_closed(server, monkeypatch, sent):
    monkeypatch.setattr(web, "IDLE_TIMEOUT_S", 0.5)
    with socket.create_connection(server.server_address[:2], timeout=5) as sock:
        sock.sendall(sent)
        start = time.monotonic()
        assert sock.recv(1024) == b""  # closed, without an answer
        assert time.monotonic() - start < 3


@pytest.mark.parametrize("port", [-1, 65536, "8000"])
def test_a_port_out_of_range_is_refused_naming_the_key(model, port):
    """Before the model is read; socket's own error ('bind(): port must be 0-65535') named no key."""
    with pytest.raises(ValueError, match="port must be 0 \\(any free port\\) to 65535"):
        web.demo_server(model, "127.0.0.1", port)


def test_a_file_of_another_runtime_is_refused_naming_the_format(model, tmp_path):
    """A .tflite file was read as ONNX: 'not an ONNX file: ... Wire format was corrupt'."""
    (tmp_path / "stream.tflite").write_bytes(model.read_bytes())
    with pytest.raises(
        ValueError, match=r"stream.tflite: the browser demo runs ONNX files \(src/export.py format=onnx"
    ):
        web.demo_server(tmp_path / "stream.tflite", "127.0.0.1", 0)
