"""The practicum's variational autoencoder: free energy F̃(y) = C(y, ỹ) + β/2 Σ (v − log v − 1 + μ²)
with the binary cross-entropy as C, z = μ + ε ⊙ √v in training and z = μ at test time.

The decoder ends in a Sigmoid, as in the practicum; the loss takes the decoder's logits (the layer
before it) and the numerically stable BCE on logits: the same mathematics, without the Sigmoid's
passes forward and back and without BCE's log clamp at −100 for saturated pixels.
"""

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

    def forward(self, x: Tensor, logits: bool = False) -> tuple[Tensor, Tensor, Tensor]:
        """(reconstruction, mu, logvar); with ``logits`` the reconstruction before the Sigmoid."""
        mu, logvar = self.encode(x)
        z = self.reparameterise(mu, logvar)
        recon = self.decoder[:-1](z) if logits else self.decoder(z)
        return recon.view_as(x), mu, logvar

    def loss(self, x: Tensor, outputs: tuple[Tensor, Tensor, Tensor] | None = None,
             from_logits: bool = False) -> Tensor:
        """BCE summed over pixels and batch + β·KL, as the practicum (divide by the batch for a
        mean). ``outputs``: this model's (recon, mu, logvar) when already computed, the
        reconstruction as probabilities, or as logits (``forward(x, logits=True)``) with
        ``from_logits=True``; without them the loss runs the model on logits."""
        if outputs is None:
            outputs, from_logits = self(x, logits=True), True
        recon, mu, logvar = outputs
        # In float32 also under autocast (bf16 activations): the loss sums 784 terms a pixel batch.
        return self.ops.vae_loss(recon.flatten(1).float(), x.flatten(1).float(), mu.float(), logvar.float(),
                                 self.beta, from_logits)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Decodes z ~ N(0, I) (randn: the practicum's torch.rand is a slip)."""
        device = next(self.parameters()).device
        z = torch.randn(n, self.d, generator=generator).to(device)
        return self.decoder(z)
