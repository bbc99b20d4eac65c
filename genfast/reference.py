"""The fused ops in plain PyTorch: the ground truth of the tests and an A/B baseline for users.

Same signatures and semantics as :mod:`genfast.ops`; the random ops take their noise (``eps``,
``keep_mask``) as an argument when one must reproduce genfast's draw, and draw it with torch's
own RNG otherwise.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor


def _reduce(per_item: Tensor, reduction: str) -> Tensor:
    if reduction == "sum":
        return per_item.sum()
    if reduction == "mean":
        return per_item.mean()
    if reduction == "none":
        return per_item
    raise ValueError(f"reduction must be one of ('sum', 'mean', 'none'), got {reduction!r}")


def _per_sample_sum(t: Tensor) -> Tensor:
    return t.flatten(1).sum(dim=1) if t.dim() > 1 else t


def reparameterise(mu: Tensor, logvar: Tensor, eps: Optional[Tensor] = None) -> Tensor:
    """z = mu + eps * exp(logvar / 2), eps ~ N(0, I) unless given."""
    if eps is None:
        eps = torch.randn_like(mu)
    return mu + eps * torch.exp(0.5 * logvar)


def kl_divergence(mu: Tensor, logvar: Tensor, reduction: str = "sum") -> Tensor:
    """0.5 * sum(exp(logvar) - logvar - 1 + mu^2) per sample (dim 0), then reduced."""
    per_element = 0.5 * (torch.exp(logvar) - logvar - 1 + mu.pow(2))
    return _reduce(_per_sample_sum(per_element), reduction)


def binary_cross_entropy(probs: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    return F.binary_cross_entropy(probs, target, reduction=reduction)


def binary_cross_entropy_with_logits(logits: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    return F.binary_cross_entropy_with_logits(logits, target, reduction=reduction)


def vae_loss(
    recon: Tensor, target: Tensor, mu: Tensor, logvar: Tensor, beta: float = 1.0,
    from_logits: bool = False, reduction: str = "sum",
) -> Tensor:
    """BCE(recon, target) summed per sample + beta * KL per sample, then reduced over samples."""
    bce = (F.binary_cross_entropy_with_logits if from_logits else F.binary_cross_entropy)(
        recon, target, reduction="none")
    per_sample = _per_sample_sum(bce) + beta * kl_divergence(mu, logvar, "none")
    return _reduce(per_sample, reduction)


def dropout_corrupt(
    x: Tensor, p: float = 0.5, keep_mask: Optional[Tensor] = None
) -> tuple[Tensor, Tensor]:
    """The practicum's ``img * nn.Dropout(p)(torch.ones(img.shape))``; returns (corrupted, keep_mask)."""
    if keep_mask is None:
        noise = F.dropout(torch.ones_like(x), p, training=True)
    else:
        noise = keep_mask.to(x.dtype) * (1.0 / (1.0 - p))
    return x * noise, noise != 0
