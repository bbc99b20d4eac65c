"""The practicum's energy-based GAN. The cost network is an autoencoder, C(y) = ‖Dec(Enc(y)) − y‖²;
it is trained with L_C(y, ŷ) = C(y) + [m − C(ŷ)]⁺ (no gradient once C(ŷ) ≥ m) and the generator
with L_G(z) = C(G(z)). (The text's "[m − G(z)]⁺" is a slip for [m − C(G(z))]⁺.)

Where we knowingly differ (the practicum gives neither networks nor settings): the networks are
MLPs on flattened images in [−1, 1]; the optimiser settings are DCGAN's (Adam(2e-4, β1 0.5),
batch 64, 25 epochs); the margin m is in the units of C, a sum over pixels. Its losses are squared
errors and a hinge: no fused op applies, so it has no backend choice.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .registry import register
from .spec import Defaults, GraphSpec, ModelSpec, Option
from .trainer import Trainer, batched_mean


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

    def __init__(self, nz: int = 64, hidden: int = 512, code: int = 64,
                 image_shape: tuple[int, int, int] = (1, 28, 28), margin: float = 10.0):
        super().__init__()
        self.nz, self.margin, self.image_shape = nz, margin, tuple(image_shape)
        n = math.prod(image_shape)
        self.generator = nn.Sequential(
            nn.Linear(nz, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, n), nn.Tanh())
        self.cost = CostNetwork(n, hidden, code)

    @property
    def latent_size(self) -> int:
        return self.nz

    def noise(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return torch.randn(n, self.nz, generator=generator)

    def generate(self, z: Tensor) -> Tensor:
        """Images (N, C, H, W) in [-1, 1]."""
        return self.generator(z).view(-1, *self.image_shape)

    def energy(self, y: Tensor) -> Tensor:
        """C(y), one energy per image."""
        return self.cost(y)

    def cost_loss(self, cost_real: Tensor, cost_fake: Tensor) -> Tensor:
        """L_C from C(y) of real images and C(ŷ) of detached fakes."""
        return cost_real.mean() + F.relu(self.margin - cost_fake).mean()

    @staticmethod
    def generator_loss(cost_fake: Tensor) -> Tensor:
        """L_G = C(G(z))."""
        return cost_fake.mean()


class EnergyGANTrainer(Trainer):
    picture_rows = ("fixed noise",)

    def __init__(self, model: EnergyGAN, lr: float, betas: tuple[float, float], seed: int = 1):
        super().__init__(model, {"generator": model.generator, "cost": model.cost}, lr, betas, seed)
        self.fixed_noise = model.noise(64, torch.Generator().manual_seed(seed))

    def train_step(self, x):
        generator, cost = self.nets["generator"], self.nets["cost"]
        fake = generator(self.model.noise(x.shape[0]).to(x.device))
        # Real and detached fake images in one forward pass (DDP allows one per backward).
        cost_real, cost_fake = cost(torch.cat([x.flatten(1), fake.detach()])).split(x.shape[0])
        cost_loss = self.model.cost_loss(cost_real, cost_fake)
        self.step("cost", cost_loss)
        generator_loss = self.model.generator_loss(cost(fake))
        self.step("generator", generator_loss)
        return {"loss_cost": cost_loss.item(), "loss_generator": generator_loss.item()}

    @torch.no_grad()
    def evaluate(self, x):
        fake = self.model.generate(self.fixed_noise.to(x.device))
        return {"test_energy_real": batched_mean(lambda b: self.model.energy(b).mean(), x),
                "energy_fake": self.model.energy(fake).mean().item()}

    @torch.no_grad()
    def picture(self, x):
        """Eight rows of samples from fixed noise."""
        return ((self.model.generate(self.fixed_noise.to(x.device)) + 1) / 2).clamp(0, 1)


def _build(backend: str = "fused", **options) -> EnergyGAN:
    return EnergyGAN(**options)  # no fused op on its path: the backend changes nothing


register(ModelSpec(
    name="ebgan", summary="energy-based GAN: autoencoder cost C(y), margin loss",
    model_class=EnergyGAN, build=_build, trainer=EnergyGANTrainer,
    defaults=Defaults(lr=2e-4, batch_size=64, epochs=25, betas=(0.5, 0.999)),
    options={"nz": Option(64, int, 1, 4096, help="noise size"),
             "hidden": Option(512, int, 1, 8192, help="width of the MLPs' hidden layers"),
             "margin": Option(10.0, float, 0.0, 1e6, help="margin m, in units of C (a sum over pixels)")},
    graphs=(GraphSpec("generate", ("z",), ("image",), lambda m, z: m.generate(z)),
            GraphSpec("energy", ("image",), ("energy",), lambda m, y: m.energy(y))),
    analyses=("samples", "training", "sample_quality")))
