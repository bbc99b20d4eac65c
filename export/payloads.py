"""What a request to the endpoint may carry, read without trusting it: a .npy batch (its header
checked against the body's size before any array exists; nothing unpickled), one PNG or JPEG image
(no other decoder tried, decoded pixels capped), and numeric query parameters. Every mistake is a
BadRequest with the status to answer and a message holding no Python object."""

from __future__ import annotations

import io
from http import HTTPStatus

import numpy as np

from . import runtime

IMAGE_FORMATS = {"image/png": "PNG", "image/jpeg": "JPEG"}
NPY_TYPES = ("application/x-npy", "application/octet-stream")


class BadRequest(Exception):
    """A client mistake: answered with ``status`` and the message as JSON."""

    def __init__(self, status: HTTPStatus, message: str):
        super().__init__(message)
        self.status = status


def npy_batch(body: bytes, max_batch: int) -> np.ndarray:
    """The array of a .npy body, viewed in place once its header agrees with the body's size
    (np.load would allocate what a crafted header declares, say 2^40 images, first)."""
    if body.startswith(b"PK"):
        raise BadRequest(HTTPStatus.BAD_REQUEST, "the body is not a .npy array (an .npz archive?)")
    stream = io.BytesIO(body)
    fmt = np.lib.format
    try:
        version = fmt.read_magic(stream)
        if version not in ((1, 0), (2, 0)):
            raise ValueError(f"format version {version[0]}.{version[1]} is not read here")
        read_header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        shape, fortran_order, dtype = read_header(stream)
    except (ValueError, EOFError, SyntaxError, RecursionError) as error:
        raise BadRequest(HTTPStatus.BAD_REQUEST, f"the body is not a .npy array ({error})") from None
    if dtype != np.uint8 and dtype.kind != "f":
        raise BadRequest(HTTPStatus.BAD_REQUEST, f"the array must be uint8 or float, got dtype {dtype}")
    if any(d < 0 for d in shape):
        raise BadRequest(HTTPStatus.BAD_REQUEST, f"the .npy header declares shape {shape}")
    if len(shape) >= 3 and shape[0] > max_batch:
        raise BadRequest(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                          f"batch of {shape[0]} images, more than the limit of {max_batch}")
    declared, held = int(np.prod(shape, dtype=object)) * dtype.itemsize, len(body) - stream.tell()
    if declared != held:
        raise BadRequest(HTTPStatus.BAD_REQUEST, f"the .npy header declares shape {shape} of {dtype} "
                          f"({declared} bytes), but {held} bytes follow it")
    array = np.frombuffer(body, dtype, offset=stream.tell(), count=declared // dtype.itemsize)
    return array.reshape(shape, order="F" if fortran_order else "C")


def image_batch(body: bytes, image_shape: tuple[int, ...], max_pixels: int) -> np.ndarray:
    """A batch of one from a PNG or JPEG body, at the model's image shape."""
    try:
        pixels = runtime.open_image(io.BytesIO(body), image_shape, tuple(IMAGE_FORMATS.values()), max_pixels)
    except runtime.ImageTooLarge as error:
        raise BadRequest(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, str(error)) from None
    return pixels[None]


def integer(query: dict, name: str, default):
    return _parameter(query, name, default, int, "an integer")


def number(query: dict, name: str, default):
    return _parameter(query, name, default, float, "a number")


def _parameter(query: dict, name: str, default, convert, what: str):
    if name not in query:
        return default
    try:
        return convert(query[name])
    except ValueError:
        raise BadRequest(HTTPStatus.BAD_REQUEST, f"{name} must be {what}, got {query[name]!r}") from None
