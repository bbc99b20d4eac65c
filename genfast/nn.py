"""Module forms of the fused ops, for models written the nn.Module way."""

from __future__ import annotations

from torch import Tensor, nn

from . import ops


class Reparameterise(nn.Module):
    """z = mu + eps * exp(logvar / 2) in training; z = mu in eval, as the practicum tests its VAE."""

    def forward(self, mu: Tensor, logvar: Tensor) -> Tensor:
        return ops.reparameterise(mu, logvar) if self.training else mu


class KLDivergence(nn.Module):
    def __init__(self, reduction: str = "sum"):
        super().__init__()
        self.reduction = reduction

    def forward(self, mu: Tensor, logvar: Tensor) -> Tensor:
        return ops.kl_divergence(mu, logvar, self.reduction)


class BCELoss(nn.Module):
    """Drop-in for nn.BCELoss (or nn.BCEWithLogitsLoss with ``from_logits=True``)."""

    def __init__(self, reduction: str = "mean", from_logits: bool = False):
        super().__init__()
        self.reduction = reduction
        self.from_logits = from_logits

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        fn = ops.binary_cross_entropy_with_logits if self.from_logits else ops.binary_cross_entropy
        return fn(input, target, self.reduction)


class VAELoss(nn.Module):
    """BCE(sum) + beta * KL, fused: ``VAELoss(beta)(recon, x, mu, logvar)``."""

    def __init__(self, beta: float = 1.0, from_logits: bool = False, reduction: str = "sum"):
        super().__init__()
        self.beta = beta
        self.from_logits = from_logits
        self.reduction = reduction

    def forward(self, recon: Tensor, target: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
        return ops.vae_loss(recon, target, mu, logvar, self.beta, self.from_logits, self.reduction)


class DropoutCorrupt(nn.Module):
    """The denoising autoencoder's input corruption. Unlike nn.Dropout it corrupts in eval mode
    too: it is data corruption, not regularisation. Returns (corrupted, keep_mask)."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return ops.dropout_corrupt(x, self.p)
