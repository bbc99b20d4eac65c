"""An HTTP endpoint for an exported model, on the standard library's threading HTTP server and
the runtime (numpy + onnxruntime; no torch).

    GET  /health                      {"status": "ok"}
    GET  /info                        the model: kind, graphs, image shape, latent size, provider, limits
    GET  /sample?n=16&seed=0          a PNG grid of n samples (generator or VAE decoder)
    POST /reconstruct                 reconstructions: PNG grid (default) or ?format=npy
    POST /denoise?p=0.5&seed=0        the DAE's restorations (corrupting the posted images first with p)
    POST /energy | /encode | /discriminate      JSON

POST bodies are one PNG or JPEG image (image/png, image/jpeg: no other decoder is tried) or a batch
as a .npy array (application/x-npy; uint8 or float in [0, 1]; (N, C, H, W) or (N, H, W); its header
is checked against the body's size before any array exists; nothing is unpickled). Client mistakes
get a 4xx and a JSON {"error": ...}. A body whose extent is ambiguous (on a GET or HEAD, chunked,
two Content-Lengths) is refused and the connection closed: its bytes are never read as a request.
At most ``max_connections`` connections are served at once, one thread each (newer clients wait in
the listen backlog), ``max_jobs`` of them computing; ``request_timeout`` bounds a whole request and,
again, the sending of its answer. It listens on loopback unless told otherwise; to expose it, put
it behind a reverse proxy that terminates TLS and limits clients (nginx, Caddy).

What a request may carry (the .npy and image bodies, query parameters) is read by payloads.py;
this file is the HTTP path from the socket to the answer, with the deadlines, framing checks and
limits that guard each step.
"""

from __future__ import annotations

import io
import json
import os
import socket
import sys
import threading
import time
import traceback
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import numpy as np

from . import runtime
from .payloads import IMAGE_FORMATS, NPY_TYPES, BadRequest, image_batch, integer, npy_batch, number

MAX_BATCH = 256  # images in one request
MAX_BYTES = 8 << 20  # a request body
MAX_PIXELS = 1 << 22  # decoded pixels (width x height) in one request: a 127 KB PNG can hold 4096x4096
MAX_CONNECTIONS = 64  # served at once, one thread each
MAX_JOBS = os.cpu_count() or 1  # requests computing at once (decoding, the model, PNG encoding)
BACKLOG = 1024  # connections waiting to be accepted (the kernel caps it at net.core.somaxconn)
REQUEST_TIMEOUT = 30.0  # seconds for a whole request to arrive, and again for its answer to be taken
LINGER = 2.0  # seconds to read and drop what a refused client still sends before closing on it
POST_JOBS = ("reconstruct", "denoise", "energy", "encode", "discriminate")


def check_limits(request_timeout: float = REQUEST_TIMEOUT, **counts: int) -> None:
    """Raises ValueError naming the first limit that is not a positive integer (a positive
    number of seconds for request_timeout)."""
    for name, value in counts.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if isinstance(request_timeout, bool) or not isinstance(request_timeout, (int, float)) \
            or not 0 < request_timeout < float("inf"):
        raise ValueError(f"request_timeout must be a positive number of seconds, got {request_timeout!r}")


def make_server(model: runtime.GenfastModel, host: str = "127.0.0.1", port: int = 8000, *,
                max_batch: int = MAX_BATCH, max_bytes: int = MAX_BYTES, max_pixels: int = MAX_PIXELS,
                max_connections: int = MAX_CONNECTIONS, max_jobs: int = MAX_JOBS, backlog: int = BACKLOG,
                request_timeout: float = REQUEST_TIMEOUT) -> ThreadingHTTPServer:
    """A server (not yet serving: call serve_forever) answering for ``model``; port 0 picks a free one."""
    check_limits(max_batch=max_batch, max_bytes=max_bytes, max_pixels=max_pixels, max_connections=max_connections,
                 max_jobs=max_jobs, backlog=backlog, request_timeout=request_timeout)

    class Handler(_Handler):
        pass

    Handler.model, Handler.max_batch, Handler.max_bytes = model, max_batch, max_bytes
    Handler.max_pixels, Handler.request_timeout = max_pixels, float(request_timeout)
    return _Server((host, port), Handler, max_connections, max_jobs, backlog)


def serve(model: runtime.GenfastModel, host: str = "127.0.0.1", port: int = 8000, **limits) -> None:
    server = make_server(model, host, port, **limits)
    print(f"genfast serve: {model} on http://{host}:{server.server_address[1]} (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


class _Server(ThreadingHTTPServer):
    block_on_close = False  # closing does not wait for idle keep-alive clients

    def __init__(self, address, handler, max_connections: int, max_jobs: int, backlog: int):
        self.request_queue_size = backlog  # read by server_activate, in the constructor
        self.max_connections, self.max_jobs = max_connections, max_jobs
        self._slots = threading.BoundedSemaphore(max_connections)
        # More computing threads than cores only share the cores (and the GIL, which /health needs).
        self.jobs = threading.BoundedSemaphore(max_jobs)
        self._stopping = False
        super().__init__(address, handler)

    def process_request(self, request, client_address):
        # At the limit, the accepting thread waits for a slot: newer clients queue in the backlog
        # (no reset, no thread) until a connection ends, which request_timeout bounds.
        while not self._slots.acquire(timeout=0.25):
            if self._stopping:
                self.shutdown_request(request)
                return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def shutdown(self):
        self._stopping = True
        super().shutdown()

    def handle_error(self, request, client_address):
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):  # the client left or stalled
            return
        super().handle_error(request, client_address)  # a fault of the server: its traceback


class _DeadlineSocket(io.RawIOBase):
    """The client's socket, each read and write bounded by what is left of the handler's deadline
    (a per-call timeout alone lets a client that sends a byte now and then hold the thread forever)."""

    def __init__(self, sock: socket.socket, handler: _Handler):
        self._sock, self._handler = sock, handler

    def readable(self):
        return True

    def writable(self):
        return True

    def readinto(self, buffer) -> int:
        self._sock.settimeout(self._handler.time_left())
        return self._sock.recv_into(buffer)

    def write(self, data) -> int:
        self._sock.settimeout(self._handler.time_left())
        self._sock.sendall(data)  # its timeout bounds the whole call
        return memoryview(data).nbytes


class _Handler(BaseHTTPRequestHandler):
    model: runtime.GenfastModel
    max_batch: int
    max_bytes: int
    max_pixels: int
    request_timeout: float
    protocol_version = "HTTP/1.1"
    default_request_version = "HTTP/1.0"  # a request line without a version still gets a status line
    server_version, sys_version = "genfast", ""
    _log_lock = threading.Lock()

    def setup(self):
        self.connection = self.request
        # Headers and a small body leave in one send; a large body's tail must not wait for an ACK.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)
        self.rfile = io.BufferedReader(_DeadlineSocket(self.connection, self), 1 << 16)
        self.wfile = io.BufferedWriter(_DeadlineSocket(self.connection, self), 1 << 16)

    def time_left(self) -> float:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"the request took longer than {self.request_timeout:g} s")
        return left

    def handle_one_request(self):
        self._deadline = time.monotonic() + self.request_timeout
        self._body_unread = False
        super().handle_one_request()

    def parse_request(self) -> bool:
        if not super().parse_request():
            return False
        if len(self.requestline.split()) != 3:  # HTTP/0.9: its answers have no status line
            self.send_error(HTTPStatus.BAD_REQUEST, "the request line needs an HTTP version")
            return False
        self._body_unread = self._declares_body()
        return True

    def _declares_body(self) -> bool:
        """Whether bytes of a body follow the headers: if the answer leaves them unread, they must
        not be taken for the next request."""
        lengths = self.headers.get_all("Content-Length", [])
        return ("Transfer-Encoding" in self.headers or len(lengths) > 1
                or any(length.strip().lstrip("0") for length in lengths))

    def handle_expect_100(self) -> bool:
        """Refuses before the client sends a body that would be refused anyway."""
        self._body_unread = self._declares_body()
        try:
            self._check_framing()
            length = self._content_length()
            if length is not None and length > self.max_bytes:
                raise self._too_large(length)
        except BadRequest as error:
            self._send_json(error.status, {"error": str(error)})
            return False
        super().handle_expect_100()
        self.wfile.flush()
        return True

    def do_GET(self):
        self._answer(self._get)

    def do_HEAD(self):
        self._answer(self._get)

    def do_POST(self):
        self._answer(self._post)

    def send_error(self, code, message=None, explain=None):
        """The server's own refusals (malformed request line or headers, unknown method), as JSON."""
        headers = {}
        if code == HTTPStatus.NOT_IMPLEMENTED:  # an unknown method is the client's mistake
            code, message = HTTPStatus.METHOD_NOT_ALLOWED, "the methods are GET, HEAD and POST"
            headers["Allow"] = "GET, HEAD, POST"
        self.log_error("code %d, message %s", code, message)
        self.close_connection = True
        self._send_json(code, {"error": message or HTTPStatus(code).phrase}, headers)

    def _answer(self, route) -> None:
        try:
            self._check_framing()
            url = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            status, content_type, body = route(url.path.strip("/"), query)
        except BadRequest as error:
            return self._send_json(error.status, {"error": str(error)})
        except LookupError as error:  # the model has no such graph
            return self._send_json(HTTPStatus.NOT_FOUND, {"error": str(error)})
        except ValueError as error:  # the runtime's input checks
            return self._send_json(HTTPStatus.BAD_REQUEST, {"error": str(error)})
        except ConnectionError:  # the client left: nobody to answer
            raise
        except Exception:  # a fault of the server or onnxruntime: logged here, not shown to the client
            self.log_error("%s failed:\n%s", self.path, traceback.format_exc())
            return self._send_json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "internal error"})
        self._send(status, content_type, body)

    def _send_json(self, status: HTTPStatus, value: dict, headers: dict | None = None) -> None:
        self._send(status, "application/json", _json(value), headers)

    def _send(self, status: int, content_type: str, body: bytes, headers: dict | None = None) -> None:
        self._deadline = time.monotonic() + self.request_timeout  # for the client to take the answer
        if self._body_unread:
            self.close_connection = True
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.wfile.flush()
        if self.close_connection and status >= 400:
            self._drop_unread_input()

    def _drop_unread_input(self) -> None:
        """Closing a socket with unread bytes sends a reset, which can destroy the answer before
        the client reads it: end our side, then read and drop what the client still sends for a
        short while (a lingering close)."""
        try:
            self.connection.shutdown(socket.SHUT_WR)
            self._deadline = time.monotonic() + LINGER
            while self.rfile.read1(1 << 16):
                pass
        except OSError:  # the deadline (TimeoutError) or the client's reset
            pass

    def _check_framing(self) -> None:
        """Refuses the requests whose body's extent is ambiguous (the ways to smuggle a request)."""
        if "Transfer-Encoding" in self.headers:
            raise BadRequest(HTTPStatus.LENGTH_REQUIRED, "chunked bodies are not accepted: send a Content-Length")
        lengths = self.headers.get_all("Content-Length", [])
        if len(lengths) > 1:
            raise BadRequest(HTTPStatus.BAD_REQUEST, "more than one Content-Length")
        if lengths and not (lengths[0].strip().isascii() and lengths[0].strip().isdigit()):
            raise BadRequest(HTTPStatus.BAD_REQUEST, "Content-Length must be a number of bytes")
        if self.command in ("GET", "HEAD") and self._body_unread:
            raise BadRequest(HTTPStatus.BAD_REQUEST, f"a {self.command} request carries no body")

    def _content_length(self) -> int | None:
        length = self.headers.get("Content-Length")
        return None if length is None else int(length)

    def _too_large(self, length: int) -> BadRequest:
        return BadRequest(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                           f"the body has {length} bytes, more than the limit of {self.max_bytes}")

    def _get(self, path: str, query: dict):
        if path == "health":
            return HTTPStatus.OK, "application/json", _json({"status": "ok"})
        if path == "info":
            m = self.model
            return HTTPStatus.OK, "application/json", _json({
                "kind": m.kind, "graphs": sorted(m.graphs), "image_shape": m.image_shape,
                "latent_size": m.latent_size, "provider": m.provider, "max_batch": self.max_batch,
                "max_bytes": self.max_bytes, "max_pixels": self.max_pixels,
                "max_connections": self.server.max_connections, "max_jobs": self.server.max_jobs,
                "request_timeout": self.request_timeout})
        if path == "sample":
            n = integer(query, "n", 16)
            if not 1 <= n <= self.max_batch:
                raise BadRequest(HTTPStatus.BAD_REQUEST, f"n must be in [1, {self.max_batch}], got {n}")
            seed, columns = integer(query, "seed", None), integer(query, "columns", 8)
            with self.server.jobs:
                return HTTPStatus.OK, "image/png", runtime.png_bytes(self.model.generate(n, seed), columns)
        if path in POST_JOBS:
            raise BadRequest(HTTPStatus.METHOD_NOT_ALLOWED, f"/{path} takes POST")
        raise BadRequest(HTTPStatus.NOT_FOUND, f"no endpoint /{path}")

    def _post(self, path: str, query: dict):
        if path not in POST_JOBS:
            raise BadRequest(HTTPStatus.NOT_FOUND, f"no endpoint /{path} for POST")
        content_type, body = self._read_body()
        with self.server.jobs:
            return self._job(path, query, self._images(content_type, body))

    def _job(self, path: str, query: dict, images: np.ndarray):
        m = self.model
        if path == "energy":
            return HTTPStatus.OK, "application/json", _json({"energy": m.energy(images).tolist()})
        if path == "discriminate":
            return HTTPStatus.OK, "application/json", _json({"probability": m.discriminate(images).tolist()})
        if path == "encode":
            mu, logvar = m.encode(images)
            return HTTPStatus.OK, "application/json", _json({"mu": mu.tolist(), "logvar": logvar.tolist()})
        if path == "denoise":
            p = number(query, "p", None)
            out = m.denoise(images, p=p, seed=integer(query, "seed", None))
        else:
            out = m.reconstruct(images)
        if query.get("format", "png") == "npy":
            buffer = io.BytesIO()
            np.save(buffer, out, allow_pickle=False)
            return HTTPStatus.OK, "application/x-npy", buffer.getvalue()
        if query.get("format", "png") != "png":
            raise BadRequest(HTTPStatus.BAD_REQUEST, "format must be png or npy")
        return HTTPStatus.OK, "image/png", runtime.png_bytes(out, integer(query, "columns", 8))

    def _images(self, content_type: str, body: bytes) -> np.ndarray:
        if content_type in NPY_TYPES:
            return npy_batch(body, self.max_batch)
        return image_batch(body, self.model.image_shape, self.max_pixels)

    def _read_body(self) -> tuple[str, bytes]:
        content_type = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if content_type not in NPY_TYPES and content_type not in IMAGE_FORMATS:
            raise BadRequest(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "Content-Type must be image/png, image/jpeg or "
                              f"application/x-npy, got {content_type or 'none'!r}")
        length = self._content_length()
        if length is None:
            raise BadRequest(HTTPStatus.LENGTH_REQUIRED, "a POST needs a Content-Length")
        if length > self.max_bytes:
            raise self._too_large(length)
        try:
            body = self.rfile.read(length)
        except TimeoutError:
            raise BadRequest(HTTPStatus.REQUEST_TIMEOUT,
                              f"the body did not arrive within {self.request_timeout:g} s") from None
        if len(body) < length:
            raise BadRequest(HTTPStatus.BAD_REQUEST,
                              f"the body ended after {len(body)} of the {length} bytes of its Content-Length")
        self._body_unread = False
        if not body:
            raise BadRequest(HTTPStatus.BAD_REQUEST, "empty body: post an image or a .npy batch")
        return content_type, body

    def log_message(self, format, *args):  # one line per request, not interleaved across threads
        with self._log_lock:
            super().log_message(format, *args)


def _json(value) -> bytes:
    return json.dumps(value).encode()
