"""The practicum's energy-based GAN. The cost network is an autoencoder, C(y) = ‖Dec(Enc(y)) − y‖²;
it is trained with L_C(y, ŷ) = C(y) + [m − C(ŷ)]⁺ (no gradient once C(ŷ) ≥ m) and the generator
with L_G(z) = C(G(z)). (The text's "[m − G(z)]⁺" is a slip for [m − C(G(z))]⁺.)

Networks are MLPs on flattened images in [−1, 1]; the margin m is in the units of C, a sum over
pixels, so its default (10) is about 1/80 of C for a blank image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class EnergyGAN(nn.Module):
    value_range = "tanh"

    def __init__(self, nz: int = 64, hidden: int = 512, code: int = 64, n: int = 28 * 28,
                 margin: float = 10.0, backend: str = "fused"):
        super().__init__()
        self.nz, self.margin, self.backend = nz, margin, backend
        self.generator = nn.Sequential(
            nn.Linear(nz, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, n), nn.Tanh())
        self.cost_encoder = nn.Sequential(nn.Linear(n, hidden), nn.ReLU(), nn.Linear(hidden, code))
        self.cost_decoder = nn.Sequential(nn.Linear(code, hidden), nn.ReLU(), nn.Linear(hidden, n), nn.Tanh())

    def generate(self, z: Tensor) -> Tensor:
        return self.generator(z)

    def cost(self, y: Tensor) -> Tensor:
        """C(y) = ‖Dec(Enc(y)) − y‖², one energy per sample."""
        y = y.flatten(1)
        return (self.cost_decoder(self.cost_encoder(y)) - y).pow(2).sum(dim=1)

    def cost_loss(self, real: Tensor, fake: Tensor) -> Tensor:
        return self.cost(real).mean() + F.relu(self.margin - self.cost(fake.detach())).mean()

    def generator_loss(self, fake: Tensor) -> Tensor:
        return self.cost(fake).mean()

    def cost_parameters(self):
        return [*self.cost_encoder.parameters(), *self.cost_decoder.parameters()]

    def noise(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return torch.randn(n, self.nz, generator=generator)
