"""The HTTP endpoint on loopback: every route, bad requests, limits, slow and departing clients,
a bounded load test and a property-based test of request parsing."""

import contextlib
import http.client
import io
import json
import re
import socket
import statistics
import struct
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

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
    ("POST", "/reconstruct", png(np.zeros((2100, 2100), np.uint8)), {"Content-Type": "image/png"}, 413, "pixels"),
])
def test_bad_requests_get_clear_4xx(servers, method, path, body, headers, status, message):
    server, _ = servers["vae"]
    got, kind, answer = request(server, method, path, body, headers)
    assert got == status and kind == "application/json"
    assert message in json.loads(answer)["error"]
    assert b" at 0x" not in answer  # no object's repr
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


@contextlib.contextmanager
def running(model, **limits):
    """A server for ``model`` with these limits, serving on a free loopback port."""
    server = serve.make_server(model, port=0, **limits)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def connect(server, timeout=10) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=timeout)


def read_to_end(s: socket.socket) -> bytes:
    answer = b""
    while chunk := s.recv(65536):
        answer += chunk
    return answer


def exchange(server, data: bytes) -> bytes:
    """Sends raw bytes, ends the sending side, and reads until the server closes."""
    with connect(server) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        return read_to_end(s)


def responses(raw: bytes, head: bool = False) -> list[tuple[int, dict, bytes]]:
    """The HTTP/1.1 responses in ``raw`` as (status, headers, body), interim 100s skipped; fails
    on anything else than whole, well-formed responses with a Content-Length."""
    parsed = []
    while raw:
        header, end, raw = raw.partition(b"\r\n\r\n")
        assert end, f"unterminated headers: {header[:200]!r}"
        status_line, *lines = header.decode("latin-1").split("\r\n")
        match = re.fullmatch(r"HTTP/1\.1 (\d{3}) [ -~]*", status_line)
        assert match, f"bad status line {status_line!r}"
        fields = [line.partition(":") for line in lines]
        assert all(colon and name.strip() == name for name, colon, _ in fields), lines
        headers = {name.lower(): value.strip() for name, _, value in fields}
        if match.group(1) == "100":
            continue
        length = 0 if head else int(headers["content-length"])
        assert len(raw) >= length, "body shorter than its Content-Length"
        parsed.append((int(match.group(1)), headers, raw[:length]))
        raw = raw[length:]
    return parsed


@pytest.fixture(scope="module")
def vae(servers):
    return servers["vae"][1]


def npy_header(descr: str, shape: tuple, version=(1, 0), fortran_order=False) -> bytes:
    buffer = io.BytesIO()
    header = {"descr": descr, "fortran_order": fortran_order, "shape": shape}
    if version == (1, 0):
        np.lib.format.write_array_header_1_0(buffer, header)
    else:
        np.lib.format.write_array_header_2_0(buffer, header)
    return buffer.getvalue()


SMUGGLED = b"GET /info HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.mark.parametrize("head,status,message", [
    (b"GET /health HTTP/1.1\r\nContent-Length: %d\r\n" % len(SMUGGLED), 400, "GET request carries no body"),
    (b"HEAD /health HTTP/1.1\r\nContent-Length: %d\r\n" % len(SMUGGLED), 400, None),
    (b"GET /health HTTP/1.1\r\nTransfer-Encoding: chunked\r\n", 411, "chunked"),
    (b"POST /reconstruct HTTP/1.1\r\nContent-Type: application/x-npy\r\nTransfer-Encoding: chunked\r\n"
     b"Content-Length: %d\r\n" % len(SMUGGLED), 411, "chunked"),
    (b"POST /reconstruct HTTP/1.1\r\nContent-Type: application/x-npy\r\nContent-Length: 0\r\n"
     b"Content-Length: %d\r\n" % len(SMUGGLED), 400, "more than one Content-Length"),
    (b"POST /reconstruct HTTP/1.1\r\nContent-Type: application/x-npy\r\nContent-Length: \xb2\r\n", 400,
     "Content-Length must be"),
])
def test_ambiguous_bodies_get_one_answer_and_a_closed_connection(servers, head, status, message):
    """A body the server does not read must not be taken for a request (a proxy reusing the
    connection would be desynchronised): one refusal, then the connection ends."""
    server, _ = servers["vae"]
    with connect(server) as s:  # the connection stays open on the client's side: the server must end it
        s.sendall(head + b"Host: x\r\n\r\n" + SMUGGLED)
        answers = responses(read_to_end(s), head=head.startswith(b"HEAD"))
    assert [a[0] for a in answers] == [status] and answers[0][1]["connection"] == "close"
    if message:
        assert message in json.loads(answers[0][2])["error"]


@pytest.mark.parametrize("path,length,status", [("/nowhere", 150_000, 404), ("/reconstruct", 300_000, 413)])
def test_a_refused_body_does_not_reset_its_answer(servers, path, length, status):
    """Closing on unread bytes would send a reset that can destroy the answer before it is read."""
    server, _ = servers["vae"]
    head = b"POST %s HTTP/1.1\r\nContent-Type: application/x-npy\r\nContent-Length: %d\r\n\r\n" % (
        path.encode(), length)
    [(got, _, _)] = responses(exchange(server, head + bytes(length)))
    assert got == status


def test_keep_alive_serves_consecutive_requests_on_one_connection(servers):
    """A refusal whose body was read (a wrong shape) keeps the connection too."""
    server, _ = servers["vae"]
    connection = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=30)
    try:
        for method, path, body, headers, status in [
                ("GET", "/health", None, {}, 200),
                ("POST", "/reconstruct?format=npy", npy(images(2)), NPY, 200),
                ("POST", "/reconstruct", npy(images(2)[:, :, :5]), NPY, 400),
                ("HEAD", "/info", None, {}, 200),
                ("GET", "/sample?n=2", None, {}, 200)]:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            assert response.status == status and (response.read() == b"") == (method == "HEAD")
            first = connection.sock if path == "/health" else first
            assert connection.sock is first, f"{method} {path} closed the connection"
    finally:
        connection.close()


def test_a_trickling_client_is_cut_at_the_request_deadline(vae):
    """The deadline bounds the whole request: a header line every 0.2 s (each read well within any
    per-read timeout) still ends after request_timeout."""
    with running(vae, request_timeout=1.0) as server, connect(server) as s:
        start = time.monotonic()
        s.sendall(b"GET /health HTTP/1.1\r\n")
        with pytest.raises((ConnectionError, EOFError)):
            while time.monotonic() - start < 8:
                s.sendall(b"X-Slow: 1\r\n")
                s.settimeout(0.2)
                try:
                    if s.recv(1) == b"":
                        raise EOFError
                except TimeoutError:
                    pass
        assert 0.9 < time.monotonic() - start < 3


def test_a_body_shorter_than_its_content_length(vae):
    with running(vae, request_timeout=1.0) as server:
        head = b"POST /reconstruct HTTP/1.1\r\nContent-Type: application/x-npy\r\nContent-Length: 1000\r\n\r\n"
        [(status, _, body)] = responses(exchange(server, head + b"x" * 10))  # the client ended its side
        assert status == 400 and "ended after 10 of the 1000 bytes" in json.loads(body)["error"]
        with connect(server) as s:  # the client waits: the deadline answers
            start = time.monotonic()
            s.sendall(head + b"x" * 10)
            [(status, headers, body)] = responses(read_to_end(s))
        assert status == 408 and headers["connection"] == "close" and 0.9 < time.monotonic() - start < 3


def test_connections_over_the_bound_wait_for_a_free_one(vae):
    with running(vae, max_connections=2, request_timeout=10) as server:
        idle = [connect(server), connect(server)]
        answered = threading.Event()

        def ask():
            assert request(server, "GET", "/health")[0] == 200
            answered.set()

        waiting = threading.Thread(target=ask)
        waiting.start()
        assert not answered.wait(0.5), "a third connection was served while two were held"
        idle.pop().close()
        assert answered.wait(5)
        waiting.join()
        idle[0].close()


def test_a_full_listen_queue_neither_refuses_nor_resets(vae):
    """100 clients connect before the server accepts anyone (a backlog of 5 drops the rest), and
    more than max_connections of them are then served in turn."""
    server, clients, serving = serve.make_server(vae, port=0, max_connections=16), [], None
    try:
        for _ in range(100):
            clients.append(connect(server, timeout=2))
        serving = threading.Thread(target=server.serve_forever, daemon=True)
        serving.start()
        for s in clients:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        for s in clients:
            [(status, _, body)] = responses(read_to_end(s))
            assert status == 200 and body == b'{"status": "ok"}'
    finally:
        for s in clients:
            s.close()
        if serving:
            server.shutdown()
        server.server_close()


def test_load_no_resets_and_health_answers_while_sample_is_busy(vae):
    """24 clients, 4 /sample requests each, a new connection each time, all at once; /health
    meanwhile. Every request is answered, and /health stays quick (its thread does not queue
    behind the computing ones)."""
    clients, each = 24, 4
    failures, health = [], []
    start = threading.Barrier(clients + 1)
    with running(vae, max_jobs=2) as server:
        def client():
            start.wait()
            for _ in range(each):
                try:
                    status, kind, _ = request(server, "GET", "/sample?n=256")
                    if status != 200 or kind != "image/png":
                        failures.append(status)
                except OSError as error:  # a reset, a refusal, a timeout
                    failures.append(repr(error))

        threads = [threading.Thread(target=client) for _ in range(clients)]
        for thread in threads:
            thread.start()
        start.wait()
        while any(thread.is_alive() for thread in threads):
            begin = time.perf_counter()
            assert request(server, "GET", "/health")[0] == 200
            health.append(time.perf_counter() - begin)
            time.sleep(0.01)
        for thread in threads:
            thread.join()
    assert failures == []
    assert len(health) >= 5 and statistics.median(health) < 0.1 and max(health) < 2.0, health


def test_clients_that_leave_print_no_traceback(servers, capsys):
    server, _ = servers["vae"]

    def reset(s: socket.socket) -> None:  # leave abruptly: a reset, not an orderly close
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()

    threads = threading.active_count()
    for data in (b"POST /reconstruct HTTP/1.1\r\nContent-Type: application/x-npy\r\nContent-Length: 100000\r\n\r\n"
                 + b"x" * 1000, b"GET /sample?n=16 HTTP/1.1\r\n\r\n", b"GET /heal"):
        s = connect(server)
        s.sendall(data)
        time.sleep(0.05)
        reset(s)
    deadline = time.monotonic() + 10
    while threading.active_count() > threads and time.monotonic() < deadline:  # their handlers end
        time.sleep(0.02)
    assert request(server, "GET", "/health")[0] == 200
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.parametrize("body,status,message", [
    (npy_header("|u1", (2 ** 40, 28, 28)) + bytes(100), 413, "batch of 1099511627776 images"),
    (npy_header("<f4", (1, 2 ** 40, 28)) + bytes(100), 400, "declares shape (1, 1099511627776, 28)"),
    (npy_header("<f4", (2, 1, 28, 28)) + bytes(4 * 784), 400, "but 3136 bytes follow it"),
    (npy_header("<f4", (2, 1, 28, -28)) + bytes(100), 400, "declares shape"),
    (npy_header("|O", (1, 1, 28, 28)) + bytes(8 * 784), 400, "dtype object"),
    (npy_header("<i8", (1, 1, 28, 28)) + bytes(8 * 784), 400, "dtype int64"),
    (b"\x93NUMPY\x03\x00" + npy_header("<f4", (1, 1, 28, 28))[8:] + bytes(4 * 784), 400, "version 3.0"),
    (npy_header("<f4", (1, 1, 28, 28))[:30], 400, "not a .npy array"),
])
def test_npy_headers_are_checked_before_anything_is_allocated(servers, body, status, message):
    server, _ = servers["vae"]
    got, _, answer = request(server, "POST", "/reconstruct", body, NPY)
    assert (got, message in json.loads(answer)["error"]) == (status, True), answer


def test_npy_byte_orders_and_memory_layouts(servers):
    server, model = servers["vae"]
    batch = images(3)
    for array in (batch.astype(">f4"), np.asfortranarray(batch), batch.astype(np.float64),
                  np.round(batch * 255).astype(np.uint8)):
        status, _, body = request(server, "POST", "/reconstruct?format=npy", npy(array), NPY)
        assert status == 200
        np.testing.assert_allclose(np.load(io.BytesIO(body)), model.reconstruct(array), atol=1e-6)


def encoded(array, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt)
    return buffer.getvalue()


def test_only_png_and_jpeg_are_decoded(servers):
    from test_runtime import png_declaring

    server, model = servers["vae"]
    pixels = (images(1)[0, 0] * 255).astype(np.uint8)
    for fmt in ("TIFF", "BMP", "GIF", "PPM"):  # Pillow reads them all; the endpoint does not try
        for content_type in ("image/png", "image/jpeg"):
            status, _, body = request(server, "POST", "/energy", encoded(pixels, fmt), {"Content-Type": content_type})
            assert status == 400 and "not PNG or JPEG" in json.loads(body)["error"], (fmt, body)
    jpeg = encoded(pixels, "JPEG")
    status, _, body = request(server, "POST", "/reconstruct?format=npy", jpeg, {"Content-Type": "image/jpeg"})
    assert status == 200
    np.testing.assert_allclose(np.load(io.BytesIO(body)), model.reconstruct(Image.open(io.BytesIO(jpeg))), atol=1e-6)
    status, _, body = request(server, "POST", "/reconstruct", encoded(pixels, "GIF"), {"Content-Type": "image/gif"})
    assert status == 415 and "image/png, image/jpeg" in json.loads(body)["error"]
    for size in ((3000, 3000), (100_000, 100_000)):  # over the server's limit; over Pillow's bomb limit
        status, _, body = request(server, "POST", "/reconstruct", png_declaring(*size), {"Content-Type": "image/png"})
        assert status == 413 and "pixels" in json.loads(body)["error"]


def test_the_servers_own_refusals(servers):
    server, _ = servers["vae"]
    [(status, headers, body)] = responses(exchange(server, b"PUT /health HTTP/1.1\r\nHost: x\r\n\r\n"))
    assert status == 405 and headers["allow"] == "GET, HEAD, POST" and "error" in json.loads(body)
    [(status, _, body)] = responses(exchange(server, b"GET /health\r\n\r\n"))  # HTTP/0.9: no status line
    assert status == 400 and "HTTP version" in json.loads(body)["error"]
    [(status, _, _)] = responses(exchange(server, b"GET /health HTTP/2.0\r\n\r\n"))
    assert status == 505
    [(status, headers, body)] = responses(exchange(server, b"HEAD /health HTTP/1.1\r\n\r\n"), head=True)
    assert status == 200 and headers["content-length"] == "16" and body == b""
    [(status, _, body)] = responses(exchange(server, b"GET /%s HTTP/1.1\r\n\r\n" % (b"x" * 70000)))
    assert status == 414


def test_expect_100_continue(servers):
    server, model = servers["vae"]
    head = b"POST /reconstruct?format=npy HTTP/1.1\r\nContent-Type: application/x-npy\r\nExpect: 100-continue\r\n"
    with connect(server) as s:  # over max_bytes: refused before the body is sent
        s.sendall(head + b"Content-Length: 10000000\r\n\r\n")
        assert s.recv(65536).startswith(b"HTTP/1.1 413 ")
    body = npy(images(2))
    with connect(server) as s:
        s.sendall(head + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body))
        assert s.recv(65536) == b"HTTP/1.1 100 Continue\r\n\r\n"
        s.sendall(body)
        [(status, _, answer)] = responses(read_to_end(s))
    assert status == 200
    np.testing.assert_allclose(np.load(io.BytesIO(answer)), model.reconstruct(images(2)), atol=1e-6)


def test_limits_are_checked_and_reported(vae):
    for bad in ({"max_connections": 0}, {"max_jobs": -1}, {"backlog": 1.5}, {"max_pixels": True},
                {"request_timeout": 0}, {"request_timeout": float("nan")}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            serve.make_server(vae, port=0, **bad)
    with running(vae, max_pixels=1000, max_connections=3, max_jobs=1, request_timeout=2.5) as server:
        info = json.loads(request(server, "GET", "/info")[2])
        assert (info["max_pixels"], info["max_connections"], info["max_jobs"], info["request_timeout"]) == (
            1000, 3, 1, 2.5)
        status, _, body = request(server, "POST", "/reconstruct", png(np.zeros((40, 40), np.uint8)),
                                  {"Content-Type": "image/png"})
        assert status == 413 and "limit of 1000 pixels" in json.loads(body)["error"]


# -- properties: any request gets well-formed answers, never a 5xx of ours, never a hang ------------

PIXELS = (images(1, seed=5)[0, 0] * 255).astype(np.uint8)
SEED_BODIES = [npy(images(2)), npy(images(1)[0, 0]), npy(np.round(images(3) * 255).astype(np.uint8)),
               npy(images(2).astype(">f8")), npz(images(1)), encoded(PIXELS, "PNG"), encoded(PIXELS, "JPEG"),
               encoded(PIXELS, "TIFF"), encoded(np.stack([PIXELS] * 4, -1), "PNG"),
               encoded((PIXELS.astype(np.uint16) << 8), "PNG"), npy_header("|u1", (2 ** 40, 28, 28)) + bytes(64)]
GET_PATHS = ["/health", "/info", "/sample?n=3&seed=1", "/sample?n=-1", "/sample?n=x&columns=0", "/sample?seed=-5",
             "/sample?n=99999999999999999999", "/nowhere", "//health", "/%zz?%%=&&", "http://[::1/", "*"]
POST_PATHS = ["/reconstruct", "/reconstruct?format=npy", "/reconstruct?format=gif&columns=-3", "/denoise?p=0.5",
              "/denoise?p=nan&seed=x", "/encode", "/energy", "/discriminate", "/sample"]
CONTENT_TYPES = ["application/x-npy", "application/octet-stream", "image/png", "image/jpeg; q=1", "IMAGE/PNG",
                 "image/gif", "text/plain", ""]
TOKEN = st.text(st.characters(min_codepoint=33, max_codepoint=255), min_size=1, max_size=12)


@st.composite
def bodies(draw) -> bytes:
    """Valid, damaged and hostile .npy arrays and images, and random bytes."""
    kind = draw(st.sampled_from(["seed", "mutated", "mutated", "npy header", "random"]))
    if kind == "random":
        return draw(st.binary(max_size=2000))
    if kind == "npy header":
        shape = tuple(draw(st.lists(st.integers(-2, 2 ** 42) | st.integers(0, 30), max_size=5)))
        descr = draw(st.sampled_from(["|u1", "<f4", ">f8", "<f2", "|O", "<i8", "<c8", "|V8", "|S3", "<M8[s]"]))
        return npy_header(descr, shape) + draw(st.binary(max_size=64))
    body = bytearray(draw(st.sampled_from(SEED_BODIES)))
    if kind == "mutated":
        for _ in range(draw(st.integers(1, 8))):
            body[draw(st.integers(0, len(body) - 1))] = draw(st.integers(0, 255))
        body = body[:draw(st.integers(1, len(body)))]
    return bytes(body)


@st.composite
def request_heads(draw) -> tuple[bytes, str]:
    """A request line and headers, valid or not, with a small body framed right or wrong."""
    version = draw(st.sampled_from(["HTTP/1.1", "HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/1.x", "", "x y"]))
    line = " ".join(filter(None, [draw(st.sampled_from(["GET", "GET", "POST", "PUT", "OPTIONS"]) | TOKEN),
                                  draw(st.sampled_from(GET_PATHS + POST_PATHS) | TOKEN.map(lambda t: "/" + t)),
                                  version]))
    body = draw(st.sampled_from([b"", npy(images(1))]) | st.binary(max_size=100))
    headers = [b"Host: x"] + [b"Content-Type: " + t.encode() for t in draw(st.lists(st.sampled_from(CONTENT_TYPES),
                                                                                     max_size=1))]
    n = len(body)
    headers += draw(st.sampled_from([
        [b"Content-Length: %d" % n], [b"Content-Length: %d" % n], [], [b"Content-Length: %d" % (n + 1000)],
        [b"Content-Length: %d" % max(0, n - 1)], [b"Content-Length: -1"], [b"Content-Length: 1e3"],
        [b"Content-Length: \xb2"], [b"Content-Length: " + b"9" * 30], [b"Content-Length: %d" % n] * 2,
        [b"Transfer-Encoding: chunked"], [b"Content-Length: %d" % n, b"Expect: 100-continue"]]))
    headers += draw(st.lists(st.binary(max_size=40).filter(lambda h: b"\r" not in h and b"\n" not in h), max_size=3))
    return line.encode("latin-1") + b"\r\n" + b"\r\n".join(headers) + b"\r\n\r\n" + body, version


def check_answers(server, data: bytes, version: str = "HTTP/1.1") -> None:
    """Each answer a whole HTTP response with a 2xx or 4xx status (505 for HTTP/2), each refusal a
    JSON error naming no Python object."""
    answers = responses(exchange(server, data))
    assert answers, "no answer"
    for status, headers, body in answers:
        assert 200 <= status < 500 or (status == 505 and version == "HTTP/2.0"), (status, body)
        if status >= 400:
            assert headers["content-type"] == "application/json" and " at 0x" not in json.loads(body)["error"]


# capsys is read and cleared by each example: sharing it across examples is what is wanted.
FUZZ = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(request_heads())
@example((b"GET http://[::1/ HTTP/1.1\r\n\r\n", "HTTP/1.1"))
@example((b"POST /encode HTTP/1.1\r\nContent-Length: \xb2\r\n\r\n", "HTTP/1.1"))
def test_any_request_line_and_headers_get_well_formed_answers(servers, capsys, sent):
    data, version = sent
    check_answers(servers["vae"][0], data, version)
    assert "Traceback" not in capsys.readouterr().err


@FUZZ
@given(st.sampled_from(POST_PATHS), st.sampled_from(CONTENT_TYPES[:5]), bodies())
@example("/reconstruct", "application/x-npy", npy_header("<f4", (2 ** 40, 1, 28, 28)) + bytes(64))
def test_any_body_gets_a_well_formed_answer(servers, capsys, path, content_type, body):
    """.npy headers and arrays, image bytes: valid, damaged and hostile, posted well framed."""
    head = b"POST %s HTTP/1.1\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n" % (
        path.encode(), content_type.encode(), len(body))
    check_answers(servers["vae"][0], head + body)
    assert "Traceback" not in capsys.readouterr().err


def test_serve_command_passes_its_limits_and_refuses_bad_ones(onnx_exports, monkeypatch, capsys):
    from genfast import cli

    seen = {}
    monkeypatch.setattr(serve, "serve", lambda model, host, port, **limits: seen.update(limits, port=port))
    folder = str(onnx_exports["vae"][1])
    assert cli.main(["serve", folder, "--port", "0", "--max-connections", "3", "--max-jobs", "2",
                     "--max-pixels", "1024", "--request-timeout", "2.5", "--backlog", "16"]) == 0
    assert seen == {"max_connections": 3, "max_jobs": 2, "max_pixels": 1024, "request_timeout": 2.5,
                    "backlog": 16, "port": 0}
    for flag, value in (("--max-connections", "0"), ("--request-timeout", "-1"), ("--max-batch", "0")):
        with pytest.raises(SystemExit) as exit_info:
            cli.main(["serve", folder, flag, value])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and err.count("\n") == 1 and flag[2:].replace("-", "_") in err
