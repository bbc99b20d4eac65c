"""Analyses of the generative models: VAE samples, latent vs pixel interpolation with energies and
t-SNE across training; GAN sample grids per epoch, loss and D(x)/D(G(z)) curves; sample quality."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import Tensor

from .. import models, reference
from ..models.trainer import eval_mode
from ..training import load_model
from ..images import to_unit
from .common import Analysis, batched, figure, image_grid_axes


def generate(model, n: int, seed: int = 0) -> Tensor:
    """n samples (N, C, H, W) in [0, 1] from z ~ N(0, I), the model in eval mode (the VAE's
    decoder, a GAN's generator)."""
    with torch.no_grad(), eval_mode(model):
        images = batched(model.generate, model.noise(n, torch.Generator().manual_seed(seed)))
    return to_unit(images, model.value_range)


def samples(model, n: int = 64, seed: int = 0) -> Analysis:
    images = generate(model, n, seed)
    fig, ax = figure(figsize=(6, 6 * -(-n // 8) / 8))
    image_grid_axes(ax, images.numpy(), columns=8, title=f"{n} samples, z ~ N(0, I)")
    return Analysis({"samples": fig}, {"n": n, "seed": seed})


@torch.no_grad()
def free_energy(model: models.VAE, unit_images: Tensor) -> Tensor:
    """Per-image VAE free energy in eval mode: BCE(sum over pixels) + β·KL with z = mu."""
    model.eval()
    logits, mu, logvar = model(unit_images, logits=True)
    return reference.vae_loss(logits.flatten(1), unit_images.flatten(1), mu, logvar, model.beta,
                              from_logits=True, reduction="none")


@torch.no_grad()
def interpolation(model: models.VAE, images: Tensor, labels: Optional[Tensor] = None, steps: int = 16,
                  pair: Optional[tuple[int, int]] = None) -> Analysis:
    """Between two test images (of different classes when labels are known): decoding the linear
    path between their mu vectors, and blending their pixels, each image with its free energy."""
    model.eval()
    if pair is None:
        first = 0
        second = next((i for i in range(1, len(images)) if labels is None or labels[i] != labels[first]), 1)
        pair = (first, second)
    a, b = images[pair[0]:pair[0] + 1], images[pair[1]:pair[1] + 1]
    t = torch.linspace(0, 1, steps)[:, None]
    mu_a, mu_b = model.encode(a)[0], model.encode(b)[0]
    latent = model.generate((1 - t) * mu_a + t * mu_b)
    pixel = (1 - t[:, :, None, None]) * a + t[:, :, None, None] * b
    energies = {"latent": free_energy(model, latent), "pixel": free_energy(model, pixel)}
    fig, (ax_latent, ax_pixel, ax_energy) = figure(3, 1, figsize=(steps * 0.5, 4.5), height_ratios=(1, 1, 2))
    image_grid_axes(ax_latent, latent.numpy(), columns=steps, title="latent space (decoded mu path)")
    image_grid_axes(ax_pixel, pixel.numpy(), columns=steps, title="pixel space")
    for name, values in energies.items():
        ax_energy.plot(t[:, 0].numpy(), values.numpy(), marker="o", label=name)
    ax_energy.set_xlabel("t")
    ax_energy.set_ylabel("free energy")
    ax_energy.legend()
    return Analysis({"interpolation": fig},
                    {"pair": list(pair), **{f"{k}_energy": v.tolist() for k, v in energies.items()},
                     "pixel_over_latent_midpoint": float(energies["pixel"][steps // 2] / energies["latent"][steps // 2])})


def tsne(snapshots: dict[int, Path], images: Tensor, labels: Tensor, points: int = 1000, seed: int = 0,
         progress: bool = False) -> Analysis:
    """t-SNE of the test set's mu (``points`` of them, drawn at random) under the weights of each saved epoch,
    coloured by label; ``knn_accuracy`` (5 nearest neighbours in mu, 5-fold) says how well the
    latent space separates the digits, in numbers."""
    from sklearn.manifold import TSNE
    from sklearn.model_selection import cross_val_score
    from sklearn.neighbors import KNeighborsClassifier
    from tqdm import tqdm

    subset = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:points]
    x, y = images[subset], labels[subset].numpy()
    epochs = sorted(snapshots)
    fig, axes = figure(1, len(epochs), figsize=(3.2 * len(epochs), 3.2), squeeze=False)
    numbers = {}
    for ax, epoch in zip(axes[0], tqdm(epochs, desc="t-SNE", disable=not progress, leave=False)):
        model, _ = load_model(snapshots[epoch])
        with torch.no_grad():
            mu = model.encode(x)[0].numpy()
        embedded = TSNE(n_components=2, init="pca", perplexity=30, random_state=seed).fit_transform(mu)
        knn = cross_val_score(KNeighborsClassifier(5), mu, y, cv=5).mean()
        numbers[f"epoch={epoch}"] = {"knn_accuracy": float(knn)}
        scatter = ax.scatter(embedded[:, 0], embedded[:, 1], c=y, cmap="tab10", s=4, vmin=-0.5, vmax=9.5)
        ax.set_title(f"epoch {epoch}: 5-NN accuracy {knn:.2f}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(scatter, ax=list(axes[0]), ticks=range(10), shrink=0.8)
    return Analysis({"tsne": fig}, numbers)


def _running_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Means of ``window`` consecutive values (one per full window)."""
    sums = np.cumsum(np.concatenate([[0.0], values]))
    return (sums[window:] - sums[:-window]) / window


def _read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# The per-step curves' axes, by metric name: losses; energies (EBGAN's C(real), C(fake)); the rest
# are probabilities and fractions in [0, 1] (DCGAN's D(x), EBGAN's active hinges, f_PT).
CURVE_AXES = (("loss", lambda key: "loss" in key.lower()),
              ("energy", lambda key: "energy" in key.lower()),
              ("probability / fraction", lambda key: True))


def gan_training(run_dir: Path, grids: int = 4) -> Analysis:
    """The GAN's fixed-noise sample grids at a few epochs (from the run's epoch_NNN.png) and its
    per-step curves, one axis per kind of metric (:data:`CURVE_AXES`): DCGAN's Loss_D, Loss_G and
    D(x), D(G(z)) before/after; EBGAN's losses, C(real) and C(fake), and the fraction of fakes whose
    hinge is active with the pulling-away term."""
    from PIL import Image

    steps = _read_jsonl(run_dir / "steps.jsonl")
    files = sorted(run_dir.glob("epoch_*.png"))
    chosen = [files[round(i)] for i in np.linspace(0, len(files) - 1, min(grids, len(files)))] if files else []
    figures, numbers = {}, {"grid_epochs": [int(f.stem.split("_")[1]) for f in chosen]}
    if chosen:
        fig, axes = figure(1, len(chosen), figsize=(3.2 * len(chosen), 3.4), squeeze=False)
        for ax, file in zip(axes[0], chosen):
            ax.imshow(np.asarray(Image.open(file)), cmap="gray")
            ax.set_title(f"epoch {int(file.stem.split('_')[1])}", fontsize=9)
            ax.set_axis_off()
        figures["gan_grids"] = fig
    if steps:
        keys = [k for k in steps[0] if k not in ("epoch", "step")]
        axis_of = {k: next(label for label, belongs in CURVE_AXES if belongs(k)) for k in keys}
        groups = [(label, [k for k in keys if axis_of[k] == label]) for label, _ in CURVE_AXES]
        groups = [(label, group) for label, group in groups if group]
        fig, axes = figure(1, len(groups), figsize=(5 * len(groups), 3), squeeze=False)
        x = np.arange(1, len(steps) + 1)
        window = max(1, len(steps) // 50)  # per-step values are noisy: each also as a running mean
        for ax, (label, group) in zip(axes[0], groups):
            for key in group:
                values = np.array([s[key] for s in steps], dtype=float)
                raw, = ax.plot(x, values, linewidth=0.5, alpha=0.3)
                ax.plot(x[window - 1:], _running_mean(values, window), color=raw.get_color(), linewidth=1.2,
                        label=key if window == 1 else f"{key} (mean of {window})")
            ax.set_xlabel("iteration")
            ax.set_ylabel(label)
            ax.legend(fontsize=8)
        figures["gan_curves"] = fig
        last_epoch = steps[-1]["epoch"]
        for name, rows in (("first_epoch", [s for s in steps if s["epoch"] == steps[0]["epoch"]]),
                           ("last_epoch", [s for s in steps if s["epoch"] == last_epoch])):
            numbers[name] = {k: float(np.mean([r[k] for r in rows])) for k in keys}
    return Analysis(figures, numbers)
