"""The practicum's models, each computing its losses with genfast's fused ops (``backend="fused"``)
or with the plain-PyTorch references (``backend="reference"``)."""

from .autoencoder import Autoencoder, DenoisingAutoencoder
from .dcgan import DCGAN
from .ebgan import EnergyGAN
from .vae import VAE

__all__ = ["Autoencoder", "DCGAN", "DenoisingAutoencoder", "EnergyGAN", "VAE"]
