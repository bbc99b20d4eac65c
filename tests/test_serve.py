"""The HTTP endpoint on loopback: every route, bad requests, limits and concurrent clients."""

import http.client
import io
import json
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
from PIL import Image  # noqa: E402

from genfast.export import runtime, serve  # noqa: E402


@pytest.fixture(scope="module")
def servers(onnx_exports):
    """{kind: (server, served model)} for the VAE and the DAE, on free loopback ports."""
    running = {}
    for kind in ("vae", "dae"):
        model = runtime.load(onnx_exports[kind][1], device="cpu")
        server = serve.make_server(model, port=0, max_batch=16, max_bytes=200_000)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        running[kind] = (server, model)
    yield running
    for server, _ in running.values():
        server.shutdown()
        server.server_close()


def request(server, method, path, body=None, headers=None):
    connection = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=30)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type"), response.read()
    finally:
        connection.close()


def npy(array) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def png(array) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def npz(array) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, images=array)
    return buffer.getvalue()


NPY = {"Content-Type": "application/x-npy"}


def images(n, seed=0):
    return np.random.default_rng(seed).random((n, 1, 28, 28), dtype=np.float32)


def test_health_info_and_samples(servers):
    server, model = servers["vae"]
    assert request(server, "GET", "/health")[2] == b'{"status": "ok"}'
    status, kind, body = request(server, "GET", "/info")
    info = json.loads(body)
    assert status == 200 and info["kind"] == "vae" and info["graphs"] == ["decode", "encode", "reconstruct"]
    assert info["provider"] == "CPUExecutionProvider" and info["max_batch"] == 16
    status, kind, body = request(server, "GET", "/sample?n=6&seed=3&columns=3")
    assert status == 200 and kind == "image/png"
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(body))),
                                  runtime.grid(model.generate(6, seed=3), columns=3))


def test_reconstruct_png_and_npy(servers):
    server, model = servers["vae"]
    pixels = (np.random.default_rng(2).random((28, 28)) * 255).astype(np.uint8)
    status, kind, body = request(server, "POST", "/reconstruct", png(pixels), {"Content-Type": "image/png"})
    assert status == 200 and kind == "image/png"
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(body))), runtime.grid(model.reconstruct(pixels)))
    batch = images(5)
    status, kind, body = request(server, "POST", "/reconstruct?format=npy", npy(batch), NPY)
    assert status == 200 and kind == "application/x-npy"
    np.testing.assert_allclose(np.load(io.BytesIO(body), allow_pickle=False), model.reconstruct(batch))


def test_json_jobs(servers):
    server, model = servers["vae"]
    batch = images(3)
    status, _, body = request(server, "POST", "/encode", npy(batch), NPY)
    mu, logvar = model.encode(batch)
    assert status == 200
    np.testing.assert_allclose(json.loads(body)["mu"], mu, rtol=1e-6)
    np.testing.assert_allclose(json.loads(body)["logvar"], logvar, rtol=1e-6)
    dae_server, dae = servers["dae"]
    status, _, body = request(dae_server, "POST", "/energy", npy(batch), NPY)
    assert status == 200
    np.testing.assert_allclose(json.loads(body)["energy"], dae.energy(batch), rtol=1e-6)
    status, _, body = request(dae_server, "POST", "/denoise?p=0.5&seed=4&format=npy", npy(batch), NPY)
    np.testing.assert_allclose(np.load(io.BytesIO(body)), dae.denoise(batch, p=0.5, seed=4))


@pytest.mark.parametrize("method,path,body,headers,status,message", [
    ("GET", "/nowhere", None, {}, 404, "no endpoint"),
    ("POST", "/nowhere", b"x", NPY, 404, "no endpoint"),
    ("GET", "/reconstruct", None, {}, 405, "takes POST"),
    ("POST", "/energy", npy(images(2)), NPY, 404, "no energy graph"),  # the VAE has none
    ("POST", "/reconstruct", b"", NPY, 400, "empty body"),
    ("POST", "/reconstruct", b"not npy", NPY, 400, "not a .npy"),
    ("POST", "/reconstruct", b"not png", {"Content-Type": "image/png"}, 400, "not a readable image"),
    ("POST", "/reconstruct", b"{}", {"Content-Type": "application/json"}, 415, "Content-Type"),
    ("POST", "/reconstruct", npy(np.zeros((2, 1, 5, 5), np.float32)), NPY, 400, "shape"),
    ("POST", "/reconstruct", npy(np.full((1, 1, 28, 28), 3.0, np.float32)), NPY, 400, r"in [0, 1]"),
    ("POST", "/reconstruct", npy(images(17)), NPY, 413, "limit of 16"),
    ("POST", "/reconstruct", npy(np.zeros((70, 1, 28, 28), np.float32)), NPY, 413, "limit of 200000"),
    ("POST", "/reconstruct?format=gif", npy(images(1)), NPY, 400, "format"),
    ("GET", "/sample?n=0", None, {}, 400, "n must be"),
    ("GET", "/sample?n=17", None, {}, 400, "n must be"),
    ("GET", "/sample?n=abc", None, {}, 400, "integer"),
    ("POST", "/denoise?p=x", npy(images(1)), NPY, 400, "number"),
    ("POST", "/reconstruct", npz(images(1)), NPY, 400, ".npz"),
    ("POST", "/reconstruct", png(np.zeros((4100, 4100), np.uint8)), {"Content-Type": "image/png"}, 413, "pixels"),
])
def test_bad_requests_get_clear_4xx(servers, method, path, body, headers, status, message):
    server, _ = servers["vae"]
    got, kind, answer = request(server, method, path, body, headers)
    assert got == status and kind == "application/json"
    assert message in json.loads(answer)["error"]
    assert request(server, "GET", "/health")[0] == 200  # still serving


def test_an_unread_body_is_not_taken_for_the_next_request(servers):
    """A rejected POST closes the connection: its body (here a request) must not be served."""
    import socket

    server, _ = servers["vae"]
    smuggled = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
    with socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=30) as s:
        s.sendall(b"POST /nowhere HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(smuggled) + smuggled)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 404") and answer.count(b"HTTP/1.1") == 1


def test_concurrent_clients_get_their_own_answers(servers):
    server, model = servers["dae"]
    batches = [images(1 + i % 5, seed=i) for i in range(24)]

    def energy(batch):
        status, _, body = request(server, "POST", "/energy", npy(batch), NPY)
        assert status == 200
        return np.array(json.loads(body)["energy"])

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(energy, batches))
    for batch, answer in zip(batches, answers):
        np.testing.assert_allclose(answer, model.energy(batch), rtol=1e-6)


def test_serve_command_listens_on_loopback(onnx_exports, tmp_path):
    import re
    import subprocess
    import sys

    process = subprocess.Popen([sys.executable, "-m", "genfast.cli", "serve", str(onnx_exports["vae"][1]),
                                "--port", "0", "--device", "cpu", "--threads", "1"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        line = process.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)", line)
        assert match, line + process.stderr.read()
        connection = http.client.HTTPConnection("127.0.0.1", int(match.group(1)), timeout=30)
        connection.request("GET", "/sample?n=2&seed=0")
        response = connection.getresponse()
        assert response.status == 200 and response.read()[:8] == b"\x89PNG\r\n\x1a\n"
    finally:
        process.terminate()
        process.wait(timeout=30)
