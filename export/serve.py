"""An HTTP endpoint for an exported model, on the standard library's threading HTTP server and
the runtime (numpy + onnxruntime; no torch).

    GET  /health                      {"status": "ok"}
    GET  /info                        the model: kind, graphs, image shape, latent size, provider, limits
    GET  /sample?n=16&seed=0          a PNG grid of n samples (generator or VAE decoder)
    POST /reconstruct                 reconstructions: PNG grid (default) or ?format=npy
    POST /denoise?p=0.5&seed=0        the DAE's restorations (corrupting the posted images first with p)
    POST /energy | /encode | /discriminate      JSON

POST bodies are one image (Content-Type image/png, image/jpeg, ...) or a batch as a .npy array
(Content-Type application/x-npy; uint8, or float in [0, 1]; (N, C, H, W) or (N, H, W); loaded with
allow_pickle=False). Requests larger than ``max_bytes`` or batches above ``max_batch`` get 413,
malformed ones 400, unknown paths 404. It listens on the loopback interface unless told otherwise;
to expose it, put it behind a reverse proxy that terminates TLS and limits clients (nginx, Caddy).
"""

from __future__ import annotations

import io
import json
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import numpy as np

from . import runtime

MAX_BATCH = 256
MAX_BYTES = 8 << 20
MAX_PIXELS = 4096 * 4096  # a posted image's width x height: a small PNG can decode to gigabytes
TIMEOUT_S = 30  # a client that stalls mid-request frees its thread after this
POST_JOBS = ("reconstruct", "denoise", "energy", "encode", "discriminate")


class _BadRequest(Exception):
    def __init__(self, status: HTTPStatus, message: str):
        super().__init__(message)
        self.status = status


def make_server(model: runtime.GenfastModel, host: str = "127.0.0.1", port: int = 8000,
                max_batch: int = MAX_BATCH, max_bytes: int = MAX_BYTES) -> ThreadingHTTPServer:
    """A server (not yet serving: call serve_forever) answering for ``model``; port 0 picks a free one."""

    class Handler(_Handler):
        pass

    Handler.model, Handler.max_batch, Handler.max_bytes = model, max_batch, max_bytes
    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server


def serve(model: runtime.GenfastModel, host: str = "127.0.0.1", port: int = 8000, **limits) -> None:
    server = make_server(model, host, port, **limits)
    print(f"genfast serve: {model} on http://{host}:{server.server_address[1]} (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


class _Handler(BaseHTTPRequestHandler):
    model: runtime.GenfastModel
    max_batch: int
    max_bytes: int
    protocol_version = "HTTP/1.1"
    timeout = TIMEOUT_S
    _log_lock = threading.Lock()

    def do_GET(self):
        self._answer(self._get)

    def do_POST(self):
        self._answer(self._post)

    def _answer(self, handler) -> None:
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        try:
            status, content_type, body = handler(url.path.strip("/"), query)
        except _BadRequest as error:
            status, content_type, body = error.status, "application/json", _json({"error": str(error)})
        except LookupError as error:  # the model has no such graph
            status, content_type, body = HTTPStatus.NOT_FOUND, "application/json", _json({"error": str(error)})
        except ValueError as error:  # the runtime's input checks
            status, content_type, body = HTTPStatus.BAD_REQUEST, "application/json", _json({"error": str(error)})
        except Exception as error:  # onnxruntime failing: answer, and keep serving
            self.log_error("%s failed: %r", url.path, error)
            status, content_type, body = (HTTPStatus.INTERNAL_SERVER_ERROR, "application/json",
                                          _json({"error": f"{type(error).__name__}: {error}"}))
        if status >= 400 and self.command == "POST":
            # The body may be unread: its bytes must not be taken for the next request.
            self.close_connection = True
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _get(self, path: str, query: dict):
        if path == "health":
            return HTTPStatus.OK, "application/json", _json({"status": "ok"})
        if path == "info":
            m = self.model
            return HTTPStatus.OK, "application/json", _json({
                "kind": m.kind, "graphs": sorted(m.graphs), "image_shape": m.image_shape,
                "latent_size": m.latent_size, "provider": m.provider,
                "max_batch": self.max_batch, "max_bytes": self.max_bytes})
        if path == "sample":
            n = _integer(query, "n", 16)
            if not 1 <= n <= self.max_batch:
                raise _BadRequest(HTTPStatus.BAD_REQUEST, f"n must be in [1, {self.max_batch}], got {n}")
            seed = _integer(query, "seed", None)
            images = self.model.generate(n, seed)
            return HTTPStatus.OK, "image/png", runtime.png_bytes(images, _integer(query, "columns", 8))
        if path in POST_JOBS:
            raise _BadRequest(HTTPStatus.METHOD_NOT_ALLOWED, f"/{path} takes POST")
        raise _BadRequest(HTTPStatus.NOT_FOUND, f"no endpoint /{path}")

    def _post(self, path: str, query: dict):
        if path not in POST_JOBS:
            raise _BadRequest(HTTPStatus.NOT_FOUND, f"no endpoint /{path} for POST")
        images = self._read_images()
        m = self.model
        if path == "energy":
            return HTTPStatus.OK, "application/json", _json({"energy": m.energy(images).tolist()})
        if path == "discriminate":
            return HTTPStatus.OK, "application/json", _json({"probability": m.discriminate(images).tolist()})
        if path == "encode":
            mu, logvar = m.encode(images)
            return HTTPStatus.OK, "application/json", _json({"mu": mu.tolist(), "logvar": logvar.tolist()})
        if path == "denoise":
            p = _number(query, "p", None)
            out = m.denoise(images, p=p, seed=_integer(query, "seed", None))
        else:
            out = m.reconstruct(images)
        if query.get("format", "png") == "npy":
            buffer = io.BytesIO()
            np.save(buffer, out, allow_pickle=False)
            return HTTPStatus.OK, "application/x-npy", buffer.getvalue()
        if query.get("format", "png") != "png":
            raise _BadRequest(HTTPStatus.BAD_REQUEST, "format must be png or npy")
        return HTTPStatus.OK, "image/png", runtime.png_bytes(out, _integer(query, "columns", 8))

    def _read_images(self) -> np.ndarray:
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            raise _BadRequest(HTTPStatus.LENGTH_REQUIRED, "a POST needs a Content-Length")
        if int(length) > self.max_bytes:
            self.close_connection = True  # the body is not read
            raise _BadRequest(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                              f"the body has {length} bytes, more than the limit of {self.max_bytes}")
        body = self.rfile.read(int(length))
        if not body:
            raise _BadRequest(HTTPStatus.BAD_REQUEST, "empty body: post an image or a .npy batch")
        content_type = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if content_type in ("application/x-npy", "application/octet-stream"):
            try:
                images = np.load(io.BytesIO(body), allow_pickle=False)
            except (ValueError, OSError, EOFError) as error:
                raise _BadRequest(HTTPStatus.BAD_REQUEST, f"the body is not a .npy array ({error})") from None
            if not isinstance(images, np.ndarray):  # an .npz archive
                raise _BadRequest(HTTPStatus.BAD_REQUEST, "the body is not a .npy array (an .npz archive?)")
        elif content_type.startswith("image/"):
            from PIL import Image, UnidentifiedImageError

            try:
                with Image.open(io.BytesIO(body)) as image:  # reads the header only
                    if image.width * image.height > MAX_PIXELS:
                        raise _BadRequest(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                                          f"a {image.width}x{image.height} image: more than {MAX_PIXELS} pixels")
                    images = runtime.from_pil(image, *self.model.image_shape)[None]
            except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as error:
                raise _BadRequest(HTTPStatus.BAD_REQUEST, f"the body is not a readable image ({error})") from None
        else:
            raise _BadRequest(HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                              f"Content-Type must be image/* or application/x-npy, got {content_type or 'none'!r}")
        if images.ndim >= 3 and images.shape[0] > self.max_batch:
            raise _BadRequest(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                              f"batch of {images.shape[0]} images, more than the limit of {self.max_batch}")
        return images

    def log_message(self, format, *args):  # one line per request, not interleaved across threads
        with self._log_lock:
            super().log_message(format, *args)


def _json(value) -> bytes:
    return json.dumps(value).encode()


def _integer(query: dict, name: str, default):
    return _parameter(query, name, default, int, "an integer")


def _number(query: dict, name: str, default):
    return _parameter(query, name, default, float, "a number")


def _parameter(query: dict, name: str, default, convert, what: str):
    if name not in query:
        return default
    try:
        return convert(query[name])
    except ValueError:
        raise _BadRequest(HTTPStatus.BAD_REQUEST, f"{name} must be {what}, got {query[name]!r}") from None
