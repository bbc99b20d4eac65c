"""Autoencoders of the practicum: h = f(W_h y + b_h), ỹ = g(W_y h + b_y), f = g = tanh, trained
with the real-valued reconstruction cost C(y, ỹ) = ‖y − ỹ‖² (MSE) on images in [−1, 1].

d < 784 is under-complete (the practicum's d = 30); d > 784 over-complete. The denoising
autoencoder (d = 500) reconstructs the clean y from y corrupted by ``img * Dropout(0.5)(ones)``.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ._backend import backend_ops


class Autoencoder(nn.Module):
    value_range = "tanh"

    def __init__(self, d: int = 30, n: int = 28 * 28, backend: str = "fused"):
        super().__init__()
        self.ops = backend_ops(backend)
        self.encoder = nn.Sequential(nn.Linear(n, d), nn.Tanh())
        self.decoder = nn.Sequential(nn.Linear(d, n), nn.Tanh())

    def forward(self, y: Tensor) -> Tensor:
        h = self.encoder(y.flatten(1))   # 784 -> d
        y_tilde = self.decoder(h)        # d -> 784
        return y_tilde.view_as(y)

    def energy(self, y: Tensor) -> Tensor:
        """Per-sample reconstruction energy ‖y − ỹ‖²."""
        return (self(y) - y).flatten(1).pow(2).sum(dim=1)

    def inputs(self, y: Tensor) -> Tensor:
        """What the network sees of a clean batch: y itself (corrupted y for the DAE)."""
        return y

    def loss(self, y: Tensor) -> Tensor:
        return F.mse_loss(self(self.inputs(y)), y)


class DenoisingAutoencoder(Autoencoder):
    def __init__(self, d: int = 500, n: int = 28 * 28, p: float = 0.5, backend: str = "fused"):
        super().__init__(d, n, backend)
        self.p = p

    def corrupt(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """(y * Dropout(p)(ones), keep_mask): dropped pixels become 0, kept ones are scaled by 1/(1-p)."""
        return self.ops.dropout_corrupt(y, self.p)

    def inputs(self, y: Tensor) -> Tensor:
        return self.corrupt(y)[0]
