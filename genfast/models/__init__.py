"""The practicum's models. Those with a fused op on their path (the DAE's corruption, the VAE's
sampling and loss, DCGAN's BCE) take ``backend="fused"`` (genfast's kernels) or
``backend="reference"`` (plain PyTorch)."""

from .autoencoder import Autoencoder, DenoisingAutoencoder
from .dcgan import DCGAN
from .ebgan import EnergyGAN
from .vae import VAE

__all__ = ["Autoencoder", "DCGAN", "DenoisingAutoencoder", "EnergyGAN", "VAE"]
