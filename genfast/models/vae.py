"""The practicum's variational autoencoder: free energy F̃(y) = C(y, ỹ) + β/2 Σ (v − log v − 1 + μ²)
with the binary cross-entropy as C, z = μ + ε ⊙ √v in training and z = μ at test time."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ._backend import backend_ops


class VAE(nn.Module):
    value_range = "unit"

    def __init__(self, d: int = 20, n: int = 28 * 28, beta: float = 1.0, backend: str = "fused"):
        super().__init__()
        self.d, self.beta = d, beta
        self.ops = backend_ops(backend)
        self.encoder = nn.Sequential(nn.Linear(n, d**2), nn.ReLU(), nn.Linear(d**2, 2 * d))
        self.decoder = nn.Sequential(nn.Linear(d, d**2), nn.ReLU(), nn.Linear(d**2, n), nn.Sigmoid())

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mu_logvar = self.encoder(x.flatten(1)).view(-1, 2, self.d)
        return mu_logvar[:, 0, :], mu_logvar[:, 1, :]

    def reparameterise(self, mu: Tensor, logvar: Tensor) -> Tensor:
        return self.ops.reparameterise(mu, logvar) if self.training else mu

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        mu, logvar = self.encode(x)
        z = self.reparameterise(mu, logvar)
        return self.decoder(z).view_as(x), mu, logvar

    def loss(self, x: Tensor, outputs: tuple[Tensor, Tensor, Tensor] | None = None) -> Tensor:
        """BCE summed over pixels and batch + β·KL, as the practicum (divide by the batch for a
        mean); ``outputs`` are this model's (recon, mu, logvar) when already computed."""
        recon, mu, logvar = self(x) if outputs is None else outputs
        # In float32 also under autocast (bf16 activations): the loss sums 784 terms a pixel batch.
        return self.ops.vae_loss(recon.flatten(1).float(), x.flatten(1).float(), mu.float(), logvar.float(),
                                 self.beta)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Decodes z ~ N(0, I) (randn: the practicum's torch.rand is a slip)."""
        device = next(self.parameters()).device
        z = torch.randn(n, self.d, generator=generator).to(device)
        return self.decoder(z)
