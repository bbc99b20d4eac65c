"""The practicum's variational autoencoder: free energy F̃(y) = C(y, ỹ) + β/2 Σ (v − log v − 1 + μ²)
with the binary cross-entropy as C, z = μ + ε ⊙ √v in training and z = μ at test time. d = 20,
encoder 784 → d² → 2d and decoder d → d² → 784 with ReLU, Adam(1e-3), batch 256, 10 epochs.

The decoder ends in a Sigmoid, as in the practicum; the loss takes the decoder's logits (the layer
before it) and the numerically stable BCE on logits: the same mathematics, without the Sigmoid's
passes forward and back and without BCE's log clamp at −100 for saturated pixels. Samples decode
z ~ N(0, I) (the text's ``torch.rand`` is a slip).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .registry import register
from .spec import Defaults, GraphSpec, ModelSpec, Option, backend_ops
from .trainer import Trainer, batched_mean, eval_mode, showcase


class VAE(nn.Module):
    value_range = "unit"

    def __init__(self, d: int = 20, image_shape: tuple[int, int, int] = (1, 28, 28), beta: float = 1.0,
                 backend: str = "fused"):
        super().__init__()
        backend_ops(backend)  # an unknown backend fails here, not at the first step
        self.d, self.beta, self.image_shape, self.backend = d, beta, tuple(image_shape), backend
        n = math.prod(image_shape)
        self.encoder = nn.Sequential(nn.Linear(n, d**2), nn.ReLU(), nn.Linear(d**2, 2 * d))
        self.decoder = nn.Sequential(nn.Linear(d, d**2), nn.ReLU(), nn.Linear(d**2, n), nn.Sigmoid())

    @property
    def latent_size(self) -> int:
        return self.d

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mu_logvar = self.encoder(x.flatten(1)).view(-1, 2, self.d)
        return mu_logvar[:, 0, :], mu_logvar[:, 1, :]

    def reparameterise(self, mu: Tensor, logvar: Tensor) -> Tensor:
        return backend_ops(self.backend).reparameterise(mu, logvar) if self.training else mu

    def forward(self, x: Tensor, logits: bool = False) -> tuple[Tensor, Tensor, Tensor]:
        """(reconstruction, mu, logvar); with ``logits`` the reconstruction before the Sigmoid."""
        mu, logvar = self.encode(x)
        z = self.reparameterise(mu, logvar)
        recon = self.decoder[:-1](z) if logits else self.decoder(z)
        return recon.view_as(x), mu, logvar

    def reconstruct(self, x: Tensor) -> Tensor:
        return self(x)[0]

    def noise(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return torch.randn(n, self.d, generator=generator)

    def generate(self, z: Tensor) -> Tensor:
        """Decoded images (N, C, H, W) in [0, 1]."""
        return self.decoder(z).view(-1, *self.image_shape)

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
        return backend_ops(self.backend).vae_loss(recon.flatten(1).float(), x.flatten(1).float(), mu.float(),
                                                  logvar.float(), self.beta, from_logits)


class VAETrainer(Trainer):
    picture_rows = ("test images", "reconstructions", "samples")

    def __init__(self, model: VAE, lr: float, betas: tuple[float, float], seed: int = 1):
        super().__init__(model, {"model": model}, lr, betas, seed)

    def train_step(self, x):
        # The decoder's logits and BCE on logits: no Sigmoid pass forward and back.
        with self.autocast(x):
            loss = self.model.loss(x, self.nets["model"](x, logits=True), from_logits=True)
        self.step("model", loss)
        return {"loss": loss.item() / x.shape[0]}  # per image, as the practicum prints

    @torch.no_grad()
    def evaluate(self, x):
        with eval_mode(self.model):  # z = mu
            return {"test_loss": batched_mean(lambda b: self.model.loss(b) / b.shape[0], x)}

    @torch.no_grad()
    def picture(self, x):
        """Rows: test images, their reconstructions, then two rows of samples."""
        with eval_mode(self.model):
            shown = showcase(x)
            samples = self.model.generate(self.model.noise(16, torch.Generator().manual_seed(0)).to(x.device))
            return torch.cat([shown, self.model.reconstruct(shown), samples])


register(ModelSpec(
    name="vae", summary="variational autoencoder, d = 20, BCE(sum) + beta * KL",
    model_class=VAE, build=VAE, trainer=VAETrainer,
    defaults=Defaults(lr=1e-3, batch_size=256, epochs=10),
    options={"d": Option(20, int, 1, 256, help="latent size (hidden layers are d^2 wide)"),
             "beta": Option(1.0, float, 0.0, 1e6, help="weight of the KL term")},
    graphs=(GraphSpec("encode", ("image",), ("mu", "logvar"), lambda m, y: m.encode(y)),
            GraphSpec("decode", ("z",), ("image",), lambda m, z: m.generate(z)),
            GraphSpec("reconstruct", ("image",), ("reconstruction",), lambda m, y: m.reconstruct(y))),
    analyses=("reconstructions", "samples", "interpolation", "tsne", "sample_quality")))
