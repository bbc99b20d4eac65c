"""The practicum's models, one file each, and the registry that maps names to them.

Each model file declares, next to its networks, a :class:`ModelSpec`: defaults, options with their
valid ranges, its trainer (step, test metrics, epoch picture), the ONNX graphs it exports and the
analyses that apply to it, and registers it. The trainer, the exporter, ``load_model`` and the
report look models up here: adding a model is one new file (imported below) plus its tests.
Models with a fused op on their path (the DAE's corruption, the VAE's sampling and loss, DCGAN's
BCE) take ``backend="fused"`` (genfast's kernels) or ``backend="reference"`` (plain PyTorch).
"""

from .registry import get, names, register, spec_of, unregister
from .spec import Defaults, GraphSpec, ModelSpec, Option
from .trainer import Trainer

# Importing a model file registers its models, in this order (the order of `genfast train --help`).
from .autoencoder import Autoencoder, DenoisingAutoencoder  # noqa: E402  isort: skip
from .vae import VAE  # noqa: E402  isort: skip
from .ebgan import EnergyGAN  # noqa: E402  isort: skip
from .dcgan import DCGAN  # noqa: E402  isort: skip

__all__ = ["DCGAN", "Autoencoder", "Defaults", "DenoisingAutoencoder", "EnergyGAN", "GraphSpec",
           "ModelSpec", "Option", "Trainer", "VAE", "get", "names", "register", "spec_of", "unregister"]
