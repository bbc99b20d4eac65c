"""DCGAN as in pytorch/examples (dcgan/main.py): a ConvTranspose2d generator nz → ngf·8 → … → nc
with BatchNorm + ReLU and Tanh, a Conv2d discriminator with LeakyReLU(0.2) and BatchNorm, weights
N(0, 0.02), BatchNorm weights N(1, 0.02) and biases 0; Adam(2e-4, β1 0.5), batch 64, 25 epochs,
64×64 images in [−1, 1].

One knowing difference: the discriminator ends in a logit, not a Sigmoid, and the losses use the
numerically stable BCE on logits (genfast's fused kernel with ``backend="fused"``); the
mathematics is the same as Sigmoid + BCELoss. Grids are saved per epoch, not every 100 iterations.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..images import to_unit
from .registry import register
from .spec import Defaults, GraphSpec, ModelSpec, Option, backend_ops
from .trainer import Trainer, eval_mode


def _weights_init(module: nn.Module) -> None:
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def _doublings(image_size: int) -> int:
    doublings = math.log2(image_size / 4)
    if image_size < 16 or doublings != int(doublings):
        raise ValueError(f"image_size must be a power of two >= 16, got {image_size}")
    return int(doublings)


class Generator(nn.Sequential):
    def __init__(self, nz: int, ngf: int, nc: int, image_size: int):
        k = _doublings(image_size)  # 64x64: k = 4, channels ngf*8 -> ngf*4 -> ngf*2 -> ngf -> nc
        layers = [nn.ConvTranspose2d(nz, ngf * 2 ** (k - 1), 4, 1, 0, bias=False),
                  nn.BatchNorm2d(ngf * 2 ** (k - 1)), nn.ReLU(True)]
        for i in range(k - 1, 0, -1):
            layers += [nn.ConvTranspose2d(ngf * 2**i, ngf * 2 ** (i - 1), 4, 2, 1, bias=False),
                       nn.BatchNorm2d(ngf * 2 ** (i - 1)), nn.ReLU(True)]
        layers += [nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False), nn.Tanh()]
        super().__init__(*layers)

    def forward(self, z: Tensor) -> Tensor:
        """Images (N, nc, size, size) from noise (N, nz) (or (N, nz, 1, 1), as pytorch/examples)."""
        return super().forward(z.view(z.shape[0], -1, 1, 1))


class Discriminator(nn.Sequential):
    def __init__(self, ndf: int, nc: int, image_size: int):
        k = _doublings(image_size)
        layers = [nn.Conv2d(nc, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True)]
        for i in range(1, k):
            layers += [nn.Conv2d(ndf * 2 ** (i - 1), ndf * 2**i, 4, 2, 1, bias=False),
                       nn.BatchNorm2d(ndf * 2**i), nn.LeakyReLU(0.2, inplace=True)]
        layers += [nn.Conv2d(ndf * 2 ** (k - 1), 1, 4, 1, 0, bias=False), nn.Flatten(0)]  # logits
        super().__init__(*layers)


class DCGAN(nn.Module):
    value_range = "tanh"

    def __init__(self, nz: int = 100, ngf: int = 64, ndf: int = 64, nc: int = 1, image_size: int = 64,
                 backend: str = "fused"):
        super().__init__()
        backend_ops(backend)  # an unknown backend fails here, not at the first step
        self.nz, self.nc, self.image_size, self.backend = nz, nc, image_size, backend
        self.generator = Generator(nz, ngf, nc, image_size)
        self.discriminator = Discriminator(ndf, nc, image_size)
        self.apply(_weights_init)

    @property
    def latent_size(self) -> int:
        return self.nz

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.nc, self.image_size, self.image_size)

    def noise(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return torch.randn(n, self.nz, generator=generator)

    def generate(self, z: Tensor) -> Tensor:
        return self.generator(z)

    def discriminate(self, y: Tensor) -> Tensor:
        """D(x): the probability that each image is real."""
        return torch.sigmoid(self.discriminator(y))

    def bce(self, logits: Tensor, label: float) -> Tensor:
        """Mean BCE of D's logits against a constant label, in float32 (also under autocast)."""
        logits = logits.float()
        return backend_ops(self.backend).binary_cross_entropy_with_logits(logits, torch.full_like(logits, label))


class DCGANTrainer(Trainer):
    picture_rows = ("fixed noise",)
    # NHWC: oneDNN's and cuDNN's fast convolution layout (1.6x per iteration on the development CPU).
    memory_format = torch.channels_last

    def __init__(self, model: DCGAN, lr: float, betas: tuple[float, float], seed: int = 1):
        super().__init__(model, {"generator": model.generator, "discriminator": model.discriminator},
                         lr, betas, seed)
        self.fixed_noise = model.noise(64, torch.Generator().manual_seed(seed))

    def train_step(self, x):
        g, d, m = self.nets["generator"], self.nets["discriminator"], self.model
        # (1) D: maximise log D(x) + log(1 - D(G(z))): real batch, then the detached fake batch.
        self.optimizers["discriminator"].zero_grad(set_to_none=True)
        with self.autocast(x):
            real_logits = d(x)
            loss_real = m.bce(real_logits, 1.0)
        loss_real.backward()
        with self.autocast(x):
            fake = g(m.noise(x.shape[0]).to(x.device))
            fake_logits = d(fake.detach())
            loss_fake = m.bce(fake_logits, 0.0)
        loss_fake.backward()
        self.optimizers["discriminator"].step()
        # (2) G: maximise log D(G(z)), against real labels. Only G's gradients are computed:
        # pytorch/examples also computes D's weight gradients here and zeroes them unused (a sixth
        # of D's backward work). D runs unwrapped: under DDP this pass must not all-reduce D.
        with self.autocast(x):
            after_logits = m.discriminator(fake)
            loss_g = m.bce(after_logits, 1.0)
        self.optimizers["generator"].zero_grad(set_to_none=True)
        loss_g.backward(inputs=list(g.parameters()))
        self.optimizers["generator"].step()
        return {"Loss_D": (loss_real + loss_fake).item(), "Loss_G": loss_g.item(),
                "D(x)": torch.sigmoid(real_logits.float()).mean().item(),
                "D(G(z))_before": torch.sigmoid(fake_logits.float()).mean().item(),
                "D(G(z))_after": torch.sigmoid(after_logits.float()).mean().item()}

    @torch.no_grad()
    def picture(self, x):
        """Eight rows of samples from fixed noise."""
        with eval_mode(self.model.generator):
            return to_unit(self.model.generate(self.fixed_noise.to(x.device)), self.model.value_range)


def _image_shape(options: dict) -> tuple[int, int, int]:
    return (options["channels"], options["image_size"], options["image_size"])


def _build(backend: str = "fused", channels: int = 1, **options) -> DCGAN:
    return DCGAN(nc=channels, backend=backend, **options)


register(ModelSpec(
    name="dcgan", summary="pytorch/examples' DCGAN at 64x64",
    model_class=DCGAN, build=_build, trainer=DCGANTrainer,
    defaults=Defaults(lr=2e-4, batch_size=64, epochs=25, betas=(0.5, 0.999), snapshot_every=0),
    options={"nz": Option(100, int, 1, 4096, help="noise size"),
             "ngf": Option(64, int, 1, 1024, help="generator width"),
             "ndf": Option(64, int, 1, 1024, help="discriminator width"),
             "image_size": Option(64, int, choices=(16, 32, 64, 128, 256), help="image side"),
             "channels": Option(1, int, choices=(1, 3), help="1 (grey) or 3 (RGB image folders)")},
    graphs=(GraphSpec("generate", ("z",), ("image",), lambda m, z: m.generate(z)),
            GraphSpec("discriminate", ("image",), ("probability",), lambda m, y: m.discriminate(y))),
    analyses=("samples", "training", "sample_quality"),
    image_shape=_image_shape))
