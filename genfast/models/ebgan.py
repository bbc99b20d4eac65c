"""The practicum's energy-based GAN, with what Zhao, Mathieu and LeCun's EBGAN (arXiv 1609.03126)
adds to make it learn: an energy on a known scale and the pulling-away term.

The practicum's formulas:

    cost network   L_C(y, ŷ) = C(y) + [m − C(ŷ)]⁺      (no gradient once C(ŷ) ≥ m)
    generator      L_G(z)    = C(G(z))
    a possible C   C(y)      = ‖Dec(Enc(y)) − y‖²

(The text's "[m − G(z)]⁺" is a slip for [m − C(G(z))]⁺.) Both losses are averaged over the batch.

Where we differ, and why (measured on the embedded split over the default 25 epochs, FID-MNIST of
the report's sample_quality; benchmarks/results/sample_quality.md has the defaults over 3 seeds):

- C(y) is the *mean* squared error over the n pixels, ‖Dec(Enc(y)) − y‖² / n, and m is in those
  units (images in [−1, 1]), so its scale does not depend on the image size. Summed over 784
  pixels, real digits sat at C = 50–170 against m = 10: no fake was ever under the margin, the cost
  network trained as a plain autoencoder and the generator collapsed onto one blob (1 class, FID
  1529). m is a fixed number, not tied to the measured real energy: under the hinge C(real)
  settles below m by itself (0.14–0.18 at m = 0.2, with 80–90% of the fakes under the margin),
  whereas a margin that follows C(real) has no scale of its own to settle at. Margins measured
  (lr 1e-3, batch 64, seed 1): m = 0.1 → FID 148, 0.2 → 123, 0.3 → 149, 0.5 → 329 (one class at
  epoch 5: a margin far above the real energy lets the cost network win).
- The generator loss adds the paper's pulling-away term on the encoder's codes S = Enc(G(z)) of
  the generated batch (N samples), against mode collapse:

      L_G(z) = C(G(z)) + λ_PT · f_PT(S),   f_PT(S) = 1 / (N(N − 1)) Σ_i Σ_{j≠i} (S_iᵀ S_j / (‖S_i‖ ‖S_j‖))²

  with λ_PT = 0.1 (the paper's). At the defaults f_PT falls to about 0.09 with or without it (seed 1:
  FID 85 with, 93 without): the margin does the work here; the term guards the other settings.
- The networks (the practicum names none) are MLPs, as the paper's MNIST ones: generator
  nz → h → h → n with BatchNorm and ReLU, Tanh out; cost network n → h → code → h → n with ReLU,
  Tanh out. The cost network has no BatchNorm: with it an image's energy depends on the rest of
  its batch (real and fake batches have different statistics, and the exported eval-mode energy
  is not the trained one), and runs (Adam 2e-4, batch 64) swung between 3 and 10 classes.
  Convolutions would cost several times the time per epoch on a CPU.
- Adam(2e-3, β1 0.5), batch 32, 25 epochs. With DCGAN's Adam(2e-4), batch 64 the generator had not
  learnt digits by epoch 25 (FID 387); lr 1e-3 gave 123, batch 32 then 85 (twice the steps for
  1.25x the time per epoch) and lr 2e-3 a mean of 92 over 3 seeds (1e-3: 100).

Its losses are squared errors, a hinge and a cosine: no fused op applies, so it has no backend
choice.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..images import to_unit
from .registry import register
from .spec import Defaults, GraphSpec, ModelSpec, Option
from .trainer import Trainer, batched_mean, eval_mode


def pull_away(codes: Tensor) -> Tensor:
    """f_PT(S): the mean squared cosine similarity between the codes of different samples
    (rows of S); 0 for fewer than two samples."""
    n = codes.shape[0]
    if n < 2:
        return codes.new_zeros(())
    # At least float32 (also under bf16 autocast): it sums N² squared cosines.
    unit = F.normalize(codes.flatten(1).to(torch.promote_types(codes.dtype, torch.float32)), dim=1)
    cosines = unit @ unit.T
    return (cosines.pow(2).sum() - cosines.diagonal().pow(2).sum()) / (n * (n - 1))


def _dense(n_in: int, n_out: int) -> list[nn.Module]:
    return [nn.Linear(n_in, n_out), nn.BatchNorm1d(n_out), nn.ReLU(True)]


class CostNetwork(nn.Module):
    """The autoencoder C: C(y) = ‖Dec(Enc(y)) − y‖² / n, one energy per sample. Without BatchNorm,
    so that an image's energy does not depend on the rest of its batch (see the module's notes)."""

    def __init__(self, n: int, hidden: int, code: int):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(n, hidden), nn.ReLU(True), nn.Linear(hidden, code))
        self.decoder = nn.Sequential(nn.Linear(code, hidden), nn.ReLU(True), nn.Linear(hidden, n), nn.Tanh())

    def forward(self, y: Tensor, with_code: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """C(y); with ``with_code``, (C(y), Enc(y))."""
        y = y.flatten(1)
        code = self.encoder(y)
        energy = (self.decoder(code) - y).pow(2).mean(dim=1)
        return (energy, code) if with_code else energy


class EnergyGAN(nn.Module):
    value_range = "tanh"

    def __init__(self, nz: int = 64, hidden: int = 512, code: int = 64,
                 image_shape: tuple[int, int, int] = (1, 28, 28), margin: float = 0.2,
                 pull_away_weight: float = 0.1):
        super().__init__()
        self.nz, self.margin, self.pull_away_weight = nz, margin, pull_away_weight
        self.image_shape = tuple(image_shape)
        n = math.prod(image_shape)
        self.generator = nn.Sequential(*_dense(nz, hidden), *_dense(hidden, hidden), nn.Linear(hidden, n), nn.Tanh())
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
        """C(y), one energy per image (the mean squared reconstruction error per pixel)."""
        return self.cost(y)

    def cost_loss(self, energy_real: Tensor, energy_fake: Tensor) -> Tensor:
        """L_C from C(y) of real images and C(ŷ) of detached fakes, each averaged over its batch."""
        return energy_real.mean() + F.relu(self.margin - energy_fake).mean()

    def generator_loss(self, energy_fake: Tensor, pull_away_term: Tensor) -> Tensor:
        """L_G = C(G(z)) averaged over the batch + λ_PT · f_PT(Enc(G(z))) (see :func:`pull_away`)."""
        return energy_fake.mean() + self.pull_away_weight * pull_away_term

    def hinge_active(self, energy_fake: Tensor) -> Tensor:
        """The fraction of fakes that still push the cost network: C(ŷ) < m."""
        return (energy_fake < self.margin).float().mean()


class EnergyGANTrainer(Trainer):
    picture_rows = ("fixed noise",)

    def __init__(self, model: EnergyGAN, lr: float, betas: tuple[float, float], seed: int = 1):
        super().__init__(model, {"generator": model.generator, "cost": model.cost}, lr, betas, seed)
        self.fixed_noise = model.noise(64, torch.Generator().manual_seed(seed))

    def train_step(self, x):
        generator, cost, m = self.nets["generator"], self.nets["cost"], self.model
        n = x.shape[0]
        # At least two fakes: BatchNorm and f_PT need two samples (a last batch may hold one image).
        with self.autocast(x):
            fake = generator(m.noise(max(n, 2)).to(x.device))
            # Real and detached fake images in one forward pass (DDP allows one per backward).
            energy_real, energy_fake = cost(torch.cat([x.flatten(1), fake.detach()])).split([n, fake.shape[0]])
            cost_loss = m.cost_loss(energy_real, energy_fake)
        self.step("cost", cost_loss)
        # The generator's step computes only the generator's gradients, through the unwrapped
        # cost network (under DDP this pass must not all-reduce the cost network).
        with self.autocast(x):
            energy_after, codes = m.cost(fake, with_code=True)
            pull = pull_away(codes)
            generator_loss = m.generator_loss(energy_after, pull)
        self.optimizers["generator"].zero_grad(set_to_none=True)
        generator_loss.backward(inputs=list(m.generator.parameters()))
        self.optimizers["generator"].step()
        return {"loss_cost": cost_loss.item(), "loss_generator": generator_loss.item(),
                "energy_real": energy_real.mean().item(), "energy_fake": energy_fake.mean().item(),
                "hinge_active": m.hinge_active(energy_fake).item(), "pull_away": pull.item()}

    @torch.no_grad()
    def evaluate(self, x):
        with eval_mode(self.model):
            fake = self.model.generate(self.fixed_noise.to(x.device))
            energy_fake = self.model.energy(fake)
            return {"test_energy_real": batched_mean(lambda b: self.model.energy(b).mean(), x),
                    "fixed_noise_energy": energy_fake.mean().item(),
                    "fixed_noise_hinge_active": self.model.hinge_active(energy_fake).item()}

    @torch.no_grad()
    def picture(self, x):
        """Eight rows of samples from fixed noise."""
        with eval_mode(self.model):
            return to_unit(self.model.generate(self.fixed_noise.to(x.device)), self.model.value_range)


def _image_shape(options: dict) -> tuple[int, int, int]:
    return (options["channels"], options["image_size"], options["image_size"])


def _build(backend: str = "fused", channels: int = 1, image_size: int = 28, **options) -> EnergyGAN:
    # No fused op on its path: the backend changes nothing.
    return EnergyGAN(image_shape=(channels, image_size, image_size), **options)


register(ModelSpec(
    name="ebgan", summary="energy-based GAN: autoencoder cost C(y), margin loss, pulling-away term",
    model_class=EnergyGAN, build=_build, trainer=EnergyGANTrainer,
    defaults=Defaults(lr=2e-3, batch_size=32, epochs=25, betas=(0.5, 0.999)),
    options={"nz": Option(64, int, 1, 4096, help="noise size"),
             "hidden": Option(512, int, 1, 8192, help="width of the MLPs' hidden layers"),
             "code": Option(64, int, 1, 4096, help="size of the cost network's code Enc(y)"),
             "margin": Option(0.2, float, 0.0, 1e6,
                              help="margin m, in units of C (a mean squared error per pixel in [-1, 1])"),
             "pull_away_weight": Option(0.1, float, 0.0, 1e6, help="weight λ_PT of the pulling-away term"),
             "image_size": Option(28, int, 4, 256, help="image side (data are resized to it)"),
             "channels": Option(1, int, choices=(1, 3), help="1 (grey) or 3 (RGB image folders)")},
    graphs=(GraphSpec("generate", ("z",), ("image",), lambda m, z: m.generate(z)),
            GraphSpec("energy", ("image",), ("energy",), lambda m, y: m.energy(y))),
    analyses=("samples", "training", "sample_quality"),
    image_shape=_image_shape))
