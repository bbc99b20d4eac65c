"""Images, with numpy only (used by the trainer, the analyses and the torch-free runtime): value
ranges, grids and PNGs. The range conversions work on numpy arrays and torch tensors alike.

Every function that takes images and a destination takes the images first.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from .files import atomic_write

# A model's value range: where its images live. 'unit' is ToTensor's [0, 1] (the VAE, whose decoder
# ends in a Sigmoid); 'tanh' is [-1, 1] after Normalize((0.5,), (0.5,)) (AE, DAE, EBGAN, DCGAN).
VALUE_RANGES = {"unit": (0.0, 1.0), "tanh": (-1.0, 1.0)}


def value_range_bounds(value_range: str) -> tuple[float, float]:
    if value_range not in VALUE_RANGES:
        raise ValueError(f"value_range must be one of {tuple(VALUE_RANGES)}, got {value_range!r}")
    return VALUE_RANGES[value_range]


def from_unit(x, value_range: str):
    """Images in [0, 1] to the model's range (a new array or tensor)."""
    low, high = value_range_bounds(value_range)
    return x if (low, high) == (0.0, 1.0) else x * (high - low) + low


def to_unit(x, value_range: str):
    """Images in the model's range to [0, 1], clipped (a new array or tensor)."""
    low, high = value_range_bounds(value_range)
    unit = x if (low, high) == (0.0, 1.0) else (x - low) * (1.0 / (high - low))
    return unit.clip(0.0, 1.0)


def grid(images, columns: int = 8, gap: int = 2) -> np.ndarray:
    """Images (N, C, H, W) in [0, 1] as one uint8 picture (H', W') or (H', W', 3), ``gap`` black
    pixels between and around them."""
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must have shape (N, 1 or 3, H, W), got {images.shape}")
    n, c, h, w = images.shape
    columns = max(1, min(columns, n))
    rows = -(-n // columns)
    picture = np.zeros((rows * (h + gap) + gap, columns * (w + gap) + gap, c), dtype=np.uint8)
    pixels = np.round(np.clip(images, 0, 1).transpose(0, 2, 3, 1) * 255).astype(np.uint8)
    for i in range(n):
        r, col = divmod(i, columns)
        top, left = gap + r * (h + gap), gap + col * (w + gap)
        picture[top:top + h, left:left + w] = pixels[i]
    return picture[..., 0] if c == 1 else picture


def labelled_grid(images, columns: int = 8, row_labels: tuple[str, ...] = (), scale: int = 1):
    """A PIL image of the grid, each image enlarged ``scale`` times (nearest neighbour: pixels stay
    sharp), with a label left of each row (the last label repeats for the rows after it)."""
    from PIL import Image, ImageDraw, ImageFont

    picture = grid(images, columns)
    if scale > 1:
        picture = picture.repeat(scale, axis=0).repeat(scale, axis=1)
    image = Image.fromarray(picture)
    if not row_labels:
        return image
    n, _, h, _ = np.shape(images)
    rows = -(-n // max(1, min(columns, n)))
    font = ImageFont.load_default(size=max(11, 4 * scale))
    labels = [row_labels[min(r, len(row_labels) - 1)] for r in range(rows)]
    width = max(int(font.getlength(label)) for label in labels) + 12
    canvas = Image.new(image.mode, (image.width + width, image.height), color=255 if image.mode == "L" else (255,) * 3)
    canvas.paste(image, (width, 0))
    draw = ImageDraw.Draw(canvas)
    ink = 0 if image.mode == "L" else (0, 0, 0)
    for r, label in enumerate(labels):
        middle = 2 * scale + r * (h + 2) * scale + h * scale // 2
        draw.text((6, middle), label, fill=ink, font=font, anchor="lm")
    return canvas


def png_bytes(images, columns: int = 8, row_labels: tuple[str, ...] = (), scale: int = 1) -> bytes:
    """A PNG grid of images (N, C, H, W) in [0, 1] (needs Pillow); see labelled_grid."""
    buffer = io.BytesIO()
    labelled_grid(images, columns, row_labels, scale).save(buffer, format="PNG")
    return buffer.getvalue()


def save_grid(images, path: str | Path, columns: int = 8, row_labels: tuple[str, ...] = (), scale: int = 1) -> Path:
    """Writes a PNG grid of images (N, C, H, W) in [0, 1] atomically; returns the path."""
    path = Path(path)
    data = png_bytes(images, columns, row_labels, scale)
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))
    return path
