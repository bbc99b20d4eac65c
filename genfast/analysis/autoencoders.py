"""The practicum's autoencoder figures as analyses: reconstructions, encoder kernels, denoising
against OpenCV inpainting, and the "garbage test" of merged digits."""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from torch import Tensor, nn

from .. import models
from ..ops import dropout_corrupt
from ..images import to_unit
from .common import Analysis, batched, figure, image_grid_axes, psnr, spread, ssim

DROP_RATES = (0.25, 0.5, 0.75)
ALPHAS = (0.1, 0.2, 0.3, 0.4, 0.5)


def _reconstruct_batched(model: nn.Module, x: Tensor) -> Tensor:
    return batched(model.reconstruct, x)


def reconstructions(model: nn.Module, images: Tensor, show: int = 10) -> Analysis:
    """Test images (top) and their reconstructions (bottom); the mean squared error per pixel of the
    whole split, on images in [0, 1] (comparable across the [0, 1] VAE and the [-1, 1] AEs)."""
    model.eval()
    restored = to_unit(_reconstruct_batched(model, images), model.value_range)
    clean = to_unit(images, model.value_range)
    shown = spread(len(images), show)
    fig, ax = figure(figsize=(1.4 + show * 0.6, 1.7))
    image_grid_axes(ax, torch.cat([clean[shown], restored[shown]]).numpy(), columns=show,
                    row_labels=("test images", "reconstructions"))
    return Analysis({"reconstructions": fig},
                    {"mse_unit": float(((restored - clean) ** 2).mean()), "images": len(images)})


def encoder_kernels(model: models.Autoencoder, show: int = 20) -> Analysis:
    """The first ``show`` rows of the encoder's first layer as images (28x28 for MNIST). ``roughness`` is the
    mean absolute difference of neighbouring weights over the weights' standard deviation: high for
    "salt and pepper" kernels, low for smooth strokes."""
    weights = model.encoder[0].weight.detach().cpu()
    kernels = weights.view(-1, *model.image_shape[1:])  # grey models: one channel
    steps = torch.cat([(kernels[:, 1:, :] - kernels[:, :-1, :]).abs().flatten(1),
                       (kernels[:, :, 1:] - kernels[:, :, :-1]).abs().flatten(1)], 1).mean(1)
    roughness = (steps / weights.std(1)).mean().item()
    show = min(show, len(kernels))
    columns = min(show, 10)
    fig, axes = figure(-(-show // columns), columns, figsize=(columns * 0.9, -(-show // columns) * 0.9), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if i < show:
            limit = kernels[i].abs().max().item() or 1.0
            ax.imshow(kernels[i].numpy(), cmap="RdBu_r", vmin=-limit, vmax=limit)
    fig.suptitle(f"encoder kernels (d = {weights.shape[0]}), roughness {roughness:.2f}", fontsize=9)
    return Analysis({"encoder_kernels": fig}, {"roughness": roughness, "d": weights.shape[0]})


def _inpaint(corrupted_unit: np.ndarray, dropped: np.ndarray, method: int) -> np.ndarray:
    """OpenCV inpainting of images in [0, 1] (N, H, W) at the dropped pixels, radius 3."""
    import cv2

    out = np.empty_like(corrupted_unit)
    for i, (image, mask) in enumerate(zip(corrupted_unit, dropped)):
        pixels = np.round(image * 255).astype(np.uint8)
        out[i] = cv2.inpaint(pixels, mask.astype(np.uint8), 3, method).astype(np.float32) / 255
    return out


def denoising_vs_inpainting(model: models.Autoencoder, images: Tensor, drop_rates=DROP_RATES,
                            seed: int = 0, show: int = 6) -> Analysis:
    """Dropout-corrupted test images restored by the DAE and by OpenCV's Telea and Navier-Stokes
    inpainting (radius 3, mask = exactly the pixels ``dropout_corrupt`` dropped).

    OpenCV sees the corrupted image as the practicum makes it at p = 0.5, (img_bad / 4 + 0.5) * 255
    as uint8; for other p the kept pixels are divided by their 1/(1-p) scale first, so in both cases
    OpenCV gets the clean value at every kept pixel and mid-grey at the dropped ones; the DAE gets
    its kept pixels at the scale it was trained with (1/(1 - its p)), so only the drop rate varies
    across ``drop_rates``. Inpainting
    keeps the known pixels; the DAE redraws all of them, so ``dae_known_pixels`` (the DAE's output
    at the dropped pixels only) is the like-for-like comparison. PSNR (capped at 100 dB) and SSIM
    are computed against the clean image in [0, 1], per image, over the split.
    """
    import cv2

    model.eval()
    clean = to_unit(images, "tanh")[:, 0].numpy()
    numbers: dict[str, dict] = {}
    shown: Optional[list[np.ndarray]] = None
    trained_scale = 1 / (1 - getattr(model, "p", 0.5))
    for p in drop_rates:
        corrupted, keep = dropout_corrupt(images, p, seed=seed)
        # Kept pixels at the scale the DAE was trained with (2 for p = 0.5): only the drop rate varies.
        dae_input = corrupted * ((1 - p) * trained_scale)
        restored = to_unit(_reconstruct_batched(model, dae_input), "tanh")[:, 0].numpy()
        # Kept pixels back to their clean value, dropped ones at 0 -> mid-grey in [0, 1].
        corrupted_unit = ((corrupted * (1 - p)).clamp(-1, 1)[:, 0].numpy() + 1) / 2
        dropped = ~keep[:, 0].numpy()
        methods = {"corrupted": corrupted_unit, "dae": restored,
                   "dae_known_pixels": np.where(dropped, restored, corrupted_unit),
                   # OpenCV works in uint8: its kept pixels are put back unrounded.
                   "telea": np.where(dropped, _inpaint(corrupted_unit, dropped, cv2.INPAINT_TELEA), corrupted_unit),
                   "ns": np.where(dropped, _inpaint(corrupted_unit, dropped, cv2.INPAINT_NS), corrupted_unit)}
        numbers[f"p={p:g}"] = {name: {"psnr": float(psnr(out, clean).mean()), "ssim": float(ssim(out, clean).mean())}
                               for name, out in methods.items()}
        if p == 0.5 or shown is None:
            pick = spread(len(images), show).numpy()
            shown = [np.where(dropped[pick], 0.0, 1.0), corrupted_unit[pick], clean[pick], restored[pick],
                     methods["telea"][pick], methods["ns"][pick]]
    rows = ("noise (dropped: black)", "corrupted", "clean", "DAE", "Telea", "Navier-Stokes")
    fig, ax = figure(figsize=(1.6 + show * 0.8, 0.6 + len(rows) * 0.8))
    image_grid_axes(ax, np.concatenate(shown)[:, None], columns=show, row_labels=rows,
                    title="p = 0.5: the DAE against OpenCV inpainting of exactly the dropped pixels")
    return Analysis({"denoising_vs_inpainting": fig}, numbers)


def detector_auroc(negatives: np.ndarray, positives: np.ndarray) -> float:
    """AUROC of a score that should be higher for the positives (0.5: no better than chance)."""
    from sklearn.metrics import roc_auc_score

    truth = np.r_[np.zeros(len(negatives)), np.ones(len(positives))]
    return float(roc_auc_score(truth, np.r_[negatives, positives]))


def energy(model: models.Autoencoder, y: Tensor) -> Tensor:
    """‖y − ỹ‖² per image, through the (uncorrupted) autoencoder."""
    return batched(model.energy, y)


def grey_pixels(y: Tensor) -> Tensor:
    """Σ (1 − |y|) per image in [−1, 1]: how far an image is from black-and-white; a detector that
    needs no model, as a baseline for the energy."""
    return (1 - y.abs()).flatten(1).sum(1)


def garbage_test(model: models.Autoencoder, images: Tensor, labels: Optional[Tensor] = None,
                 alphas=ALPHAS, pairs: int = 1000, steps: int = 16, seed: int = 0) -> Analysis:
    """Merged digits α·a + (1 − α)·b of two test images (of different classes when labels are known)
    through the autoencoder: the energy of clean vs merged images, the AUROC of the energy as a
    "not a digit" detector per α, and the energy along a pixel-space interpolation a → b.

    Averaging (the practicum's merge) turns the strokes grey, which a model-free score spots
    (``baseline_auroc_grey_pixels``); ``auroc_overlay`` is the energy's AUROC for the opaque overlay
    of the two digits' ink (a over b: ink = a + b − a·b in [0, 1]), which stays black-and-white."""
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    a = torch.randint(len(images), (pairs,), generator=generator)
    b = torch.randint(len(images), (pairs,), generator=generator)
    if labels is not None and labels.unique().numel() > 1:
        same = labels[a] == labels[b]
        while same.any():
            b[same] = torch.randint(len(images), (int(same.sum()),), generator=generator)
            same = labels[a] == labels[b]
    clean = energy(model, images).numpy()
    merged = {alpha: energy(model, alpha * images[a] + (1 - alpha) * images[b]).numpy() for alpha in alphas}
    auroc = {f"alpha={alpha:g}": detector_auroc(clean, merged[alpha]) for alpha in alphas}
    ink_a, ink_b = (images[a] + 1) / 2, (images[b] + 1) / 2
    overlay = 2 * (ink_a + ink_b - ink_a * ink_b) - 1
    grey = grey_pixels(images).numpy()
    baseline = {f"alpha={alpha:g}": detector_auroc(grey, grey_pixels(alpha * images[a] + (1 - alpha) * images[b]).numpy())
                for alpha in alphas}
    t = torch.linspace(0, 1, steps)
    path = (1 - t)[:, None, None, None] * images[a[0]] + t[:, None, None, None] * images[b[0]]
    along = energy(model, path).numpy()

    fig_hist, ax = figure(figsize=(5, 3))
    half = merged.get(0.5, merged[alphas[-1]])
    bins = np.linspace(0, max(clean.max(), half.max()), 50)
    ax.hist(clean, bins=bins, alpha=0.6, label="test digits")
    ax.hist(half, bins=bins, alpha=0.6, label="merged (α = 0.5)")
    ax.set_xlabel("energy ‖y − ỹ‖²")
    ax.legend()
    ax.set_title(f"AUROC {auroc.get('alpha=0.5', float('nan')):.3f}", fontsize=9)
    fig_path, (ax_images, ax_energy) = figure(2, 1, figsize=(steps * 0.5, 3.2), height_ratios=(1, 2))
    image_grid_axes(ax_images, to_unit(path, "tanh").numpy(), columns=steps)
    ax_energy.plot(t.numpy(), along, marker="o")
    ax_energy.set_xlabel("t (pixel-space interpolation from a to b)")
    ax_energy.set_ylabel("energy")
    return Analysis({"garbage_histogram": fig_hist, "garbage_interpolation": fig_path},
                    {"auroc": auroc, "auroc_overlay": detector_auroc(clean, energy(model, overlay).numpy()),
                     "baseline_auroc_grey_pixels": baseline, "energy_clean_mean": float(clean.mean()),
                     "energy_merged_mean": {f"alpha={k:g}": float(v.mean()) for k, v in merged.items()},
                     "interpolation_energy": along.tolist()})
