"""DCGAN as in pytorch/examples (dcgan/main.py): a ConvTranspose2d generator nz → ngf·8 → … → nc
with BatchNorm + ReLU and Tanh, a Conv2d discriminator with LeakyReLU(0.2) and BatchNorm, weights
N(0, 0.02), BatchNorm weights N(1, 0.02) and biases 0.

One knowing difference: the discriminator ends in a logit, not a Sigmoid, and the losses use the
numerically stable BCE on logits (genfast's fused kernel with ``backend="fused"``); the
mathematics is the same as Sigmoid + BCELoss.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ._backend import backend_ops


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
        self.nz, self.nc, self.image_size = nz, nc, image_size
        self.ops = backend_ops(backend)
        self.generator = Generator(nz, ngf, nc, image_size)
        self.discriminator = Discriminator(ndf, nc, image_size)
        self.apply(_weights_init)

    def noise(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return torch.randn(n, self.nz, 1, 1, generator=generator)

    def bce(self, logits: Tensor, label: float) -> Tensor:
        """Mean BCE of D's logits against a constant label, in float32 (also under autocast)."""
        logits = logits.float()
        return self.ops.binary_cross_entropy_with_logits(logits, torch.full_like(logits, label))
