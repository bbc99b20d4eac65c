"""What every analysis needs: a trained run loaded back, images in [0, 1], figures, PSNR and SSIM."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch import Tensor, nn

from .. import data as datasets
from ..images import grid
from ..training import Config, load_model

PSNR_CAP_DB = 100.0  # an exact restoration has infinite PSNR; summaries hold this cap instead


@dataclass
class Analysis:
    """An analysis' output: matplotlib figures by name and a JSON-able dict of numbers."""
    figures: dict[str, Any] = field(default_factory=dict)
    numbers: dict[str, Any] = field(default_factory=dict)


@dataclass
class Run:
    """A trained run: its model (CPU, eval mode), configuration and data split in the model's range."""
    path: Path
    model: nn.Module
    cfg: Config
    test_images: Tensor             # float32 (N, C, H, W) in the model's value range
    test_labels: Optional[Tensor]
    epochs_trained: int

    @property
    def name(self) -> str:
        return self.path.name

    def train_split(self) -> datasets.Dataset:
        return datasets.load(self.cfg.data, "train", size=self.test_images.shape[-1],
                             channels=self.test_images.shape[1])

    def snapshots(self) -> dict[int, Path]:
        """{epoch: weights file} of the snapshots the trainer saved, and the final model."""
        found = {int(p.stem.split("_")[1]): p for p in sorted((self.path / "snapshots").glob("epoch_*.safetensors"))}
        if self.epochs_trained not in found:  # snapshots off, or a run stopped between them
            found[self.epochs_trained] = self.path / "model.safetensors"
        return found


def load_run(path: str | Path) -> Run:
    path = Path(path)
    if not path.is_dir():
        raise NotADirectoryError(f"{path}: analyses take a run directory (genfast train's --run-dir)")
    model, cfg = load_model(path)
    channels, size, _ = cfg.spec.image_shape(cfg.options)
    test = datasets.load(cfg.data, "test", size=size, channels=channels)
    metrics = path / "metrics.jsonl"
    epochs = 0
    if metrics.is_file():
        lines = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
        epochs = max((r["epoch"] for r in lines), default=0)
    return Run(path, model, cfg, datasets.normalise(test.images, model.value_range), test.labels, epochs)


def psnr(restored: np.ndarray, clean: np.ndarray) -> np.ndarray:
    """Per-image PSNR in dB of images in [0, 1] (N, ...), capped at PSNR_CAP_DB."""
    mse = ((restored.astype(np.float64) - clean) ** 2).reshape(len(clean), -1).mean(axis=1)
    with np.errstate(divide="ignore"):
        value = 10.0 * np.log10(1.0 / mse)
    return np.minimum(value, PSNR_CAP_DB)


def ssim(restored: np.ndarray, clean: np.ndarray) -> np.ndarray:
    """Per-image SSIM (Wang et al. 2004: Gaussian window, sigma 1.5) of (N, H, W) images in [0, 1]."""
    from skimage.metrics import structural_similarity

    return np.array([structural_similarity(a, b, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                           use_sample_covariance=False)
                     for a, b in zip(restored.astype(np.float64), clean.astype(np.float64))])


def image_grid_axes(ax, images: Tensor | np.ndarray, columns: int, title: str = "",
                    row_labels: tuple[str, ...] = ()) -> None:
    """Draws images (N, C, H, W) in [0, 1] as one grid on a matplotlib axis, with a label left of
    each row (the last label repeats) and the title above, both clear of the images."""
    images = np.asarray(images)
    ax.imshow(grid(images, columns), cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    ax.set_xticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    if row_labels:
        rows, height = -(-len(images) // max(1, min(columns, len(images)))), images.shape[-2]
        ax.set_yticks([2 + r * (height + 2) + height / 2 for r in range(rows)],
                      [row_labels[min(r, len(row_labels) - 1)] for r in range(rows)], fontsize=9)
        ax.tick_params(axis="y", length=0)
    else:
        ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9, pad=6)


def figure(*args, **kwargs):
    """A matplotlib figure on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib import pyplot as plt

    fig, axes = plt.subplots(*args, **kwargs)
    return fig, axes


def spread(n: int, show: int) -> Tensor:
    """``show`` indices spread evenly over n items (test splits are ordered by class)."""
    return torch.linspace(0, n - 1, min(show, n)).round().long()


@torch.no_grad()
def batched(fn, x: Tensor, batch: int = 500) -> Tensor:
    return torch.cat([fn(x[i:i + batch]) for i in range(0, len(x), batch)])
