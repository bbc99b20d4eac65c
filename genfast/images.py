"""Image grids, with numpy only (used by the trainer, the analyses and the torch-free runtime)."""

from __future__ import annotations

import numpy as np


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
