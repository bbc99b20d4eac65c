"""Autoencoders of the practicum: h = f(W_h y + b_h), ỹ = g(W_y h + b_y), f = g = tanh, trained
with the real-valued reconstruction cost C(y, ỹ) = ‖y − ỹ‖² (MSE) on images in [−1, 1].

d < 784 is under-complete (the practicum's ``ae``, d = 30); d > 784 over-complete (``ae-over``,
d = 1000). The denoising autoencoder (``dae``, d = 500) reconstructs the clean y from y corrupted
by ``img * Dropout(0.5)(ones)``: dropped pixels become 0 and kept ones are doubled, so its input
lies in [−2, 2]. All three: Adam(1e-3), batch 256, 20 epochs, as the practicum's notebook.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..images import to_unit
from ..ops import dropout_corrupt
from .registry import register
from .spec import Defaults, GraphSpec, ModelSpec, Option, backend_ops
from .trainer import Trainer, batched_mean, eval_mode, showcase

MNIST = (1, 28, 28)


class Autoencoder(nn.Module):
    value_range = "tanh"

    def __init__(self, d: int = 30, image_shape: tuple[int, int, int] = MNIST, backend: str = "fused"):
        super().__init__()
        backend_ops(backend)  # an unknown backend fails here, not at the first step
        self.image_shape, self.backend = tuple(image_shape), backend
        n = math.prod(image_shape)
        self.encoder = nn.Sequential(nn.Linear(n, d), nn.Tanh())
        self.decoder = nn.Sequential(nn.Linear(d, n), nn.Tanh())

    @property
    def latent_size(self) -> int:
        return self.encoder[0].out_features  # d

    def forward(self, y: Tensor) -> Tensor:
        h = self.encoder(y.flatten(1))   # 784 -> d
        y_tilde = self.decoder(h)        # d -> 784
        return y_tilde.view_as(y)

    def reconstruct(self, y: Tensor) -> Tensor:
        return self(y)

    def energy(self, y: Tensor) -> Tensor:
        """Per-sample reconstruction energy ‖y − ỹ‖²."""
        return (self(y) - y).flatten(1).pow(2).sum(dim=1)

    def inputs(self, y: Tensor) -> Tensor:
        """What the network sees of a clean batch: y itself (corrupted y for the DAE)."""
        return y

    def loss(self, y: Tensor, reconstruction: Tensor | None = None) -> Tensor:
        """C(y, ỹ) = MSE against the clean y; ``reconstruction``: ỹ when already computed."""
        if reconstruction is None:
            reconstruction = self(self.inputs(y))
        return F.mse_loss(reconstruction.float(), y)  # float32 also under bf16 autocast


class DenoisingAutoencoder(Autoencoder):
    def __init__(self, d: int = 500, image_shape: tuple[int, int, int] = MNIST, p: float = 0.5,
                 backend: str = "fused"):
        super().__init__(d, image_shape, backend)
        self.p = p

    def corrupt(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """(y * Dropout(p)(ones), keep_mask): dropped pixels become 0, kept ones are scaled by 1/(1-p)."""
        return backend_ops(self.backend).dropout_corrupt(y, self.p)

    def inputs(self, y: Tensor) -> Tensor:
        return self.corrupt(y)[0]


class AutoencoderTrainer(Trainer):
    picture_rows = ("test images", "reconstructions")

    def __init__(self, model: Autoencoder, lr: float, betas: tuple[float, float], seed: int = 1):
        super().__init__(model, {"model": model}, lr, betas, seed)

    def train_step(self, x):
        with self.autocast(x):
            loss = self.model.loss(x, self.nets["model"](self.model.inputs(x)))
        self.step("model", loss)
        return {"loss": loss.item()}

    @torch.no_grad()
    def evaluate(self, x):
        with eval_mode(self.model):
            return {"test_mse": batched_mean(lambda b: self.model.loss(b, self.model(b)), x)}

    @torch.no_grad()
    def picture(self, x):
        """Rows: test images, their reconstructions."""
        with eval_mode(self.model):
            clean = showcase(x)
            return to_unit(torch.cat([clean, self.model(clean)]), self.model.value_range)


class DenoisingTrainer(AutoencoderTrainer):
    picture_rows = ("test images", "corrupted", "restored")

    @torch.no_grad()
    def evaluate(self, x):
        metrics = super().evaluate(x)
        with eval_mode(self.model):
            # The same corruption every epoch (fixed seed), whatever the training backend.
            corrupt = lambda b: dropout_corrupt(b, self.model.p, seed=len(b))[0]  # noqa: E731
            metrics["test_denoise_mse"] = batched_mean(lambda b: self.model.loss(b, self.model(corrupt(b))), x)
        return metrics

    @torch.no_grad()
    def picture(self, x):
        """Rows: test images, their corruption (clipped to [-1, 1] for display), the restorations."""
        with eval_mode(self.model):
            clean = showcase(x)
            corrupted = self.model.inputs(clean)  # in [-2, 2], as the model sees it
            return to_unit(torch.cat([clean, corrupted, self.model(corrupted)]), self.model.value_range)


GRAPHS = (
    GraphSpec("reconstruct", ("image",), ("reconstruction",), lambda m, y: m.reconstruct(y)),
    GraphSpec("energy", ("image",), ("energy",), lambda m, y: m.energy(y)),
)
DEFAULTS = Defaults(lr=1e-3, batch_size=256, epochs=20)


def _code_size(default: int) -> Option:
    return Option(default, int, 1, 8192, help="code size d (< 784 under-complete, > 784 over-complete)")


register(ModelSpec(
    name="ae", summary="under-complete autoencoder, d = 30, MSE on [-1, 1]",
    model_class=Autoencoder, build=Autoencoder, trainer=AutoencoderTrainer, defaults=DEFAULTS,
    options={"d": _code_size(30)}, graphs=GRAPHS,
    analyses=("reconstructions", "encoder_kernels", "garbage_test")))
register(ModelSpec(
    name="ae-over", summary="over-complete autoencoder, d = 1000",
    model_class=Autoencoder, build=Autoencoder, trainer=AutoencoderTrainer, defaults=DEFAULTS,
    options={"d": _code_size(1000)}, graphs=GRAPHS,
    analyses=("reconstructions", "encoder_kernels", "garbage_test")))
register(ModelSpec(
    name="dae", summary="denoising autoencoder, d = 500, trained on x * Dropout(p)(ones) against x",
    model_class=DenoisingAutoencoder, build=DenoisingAutoencoder, trainer=DenoisingTrainer,
    defaults=DEFAULTS,
    options={"d": _code_size(500),
             "p": Option(0.5, float, 0.0, 1.0, below_high=True, help="probability of dropping a pixel")},
    graphs=GRAPHS,
    analyses=("reconstructions", "encoder_kernels", "garbage_test", "denoising")))
