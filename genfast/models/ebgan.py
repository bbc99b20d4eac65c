"""The practicum's energy-based GAN. The cost network is an autoencoder, C(y) = ‖Dec(Enc(y)) − y‖²;
it is trained with L_C(y, ŷ) = C(y) + [m − C(ŷ)]⁺ (no gradient once C(ŷ) ≥ m) and the generator
with L_G(z) = C(G(z)). (The text's "[m − G(z)]⁺" is a slip for [m − C(G(z))]⁺.)

Networks are MLPs on flattened images in [−1, 1] (the practicum gives none); the margin m is in
the units of C, a sum over pixels. Its losses are squared errors and a hinge: no fused op applies,
so it has no backend choice.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class CostNetwork(nn.Module):
    """C(y) = ‖Dec(Enc(y)) − y‖², one energy per sample."""

    def __init__(self, n: int, hidden: int, code: int):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(n, hidden), nn.ReLU(), nn.Linear(hidden, code))
        self.decoder = nn.Sequential(nn.Linear(code, hidden), nn.ReLU(), nn.Linear(hidden, n), nn.Tanh())

    def forward(self, y: Tensor) -> Tensor:
        y = y.flatten(1)
        return (self.decoder(self.encoder(y)) - y).pow(2).sum(dim=1)


class EnergyGAN(nn.Module):
    value_range = "tanh"

    def __init__(self, nz: int = 64, hidden: int = 512, code: int = 64, n: int = 28 * 28,
                 margin: float = 10.0):
        super().__init__()
        self.nz, self.margin = nz, margin
        self.generator = nn.Sequential(
            nn.Linear(nz, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, n), nn.Tanh())
        self.cost = CostNetwork(n, hidden, code)

    def generate(self, z: Tensor) -> Tensor:
        return self.generator(z)

    def cost_loss(self, cost_real: Tensor, cost_fake: Tensor) -> Tensor:
        """L_C from C(y) of real images and C(ŷ) of detached fakes."""
        return cost_real.mean() + F.relu(self.margin - cost_fake).mean()

    @staticmethod
    def generator_loss(cost_fake: Tensor) -> Tensor:
        """L_G = C(G(z))."""
        return cost_fake.mean()

    def noise(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return torch.randn(n, self.nz, generator=generator)
