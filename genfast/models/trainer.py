"""The base of every model's training: its networks, their optimizers, and the three things a
model file defines — one training step, the test metrics, the epoch's picture."""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import Tensor, nn


class Trainer:
    """A model, its optimizers, and its step / evaluation / picture.

    ``nets`` are the networks that run forward passes in training: each is wrapped in
    DistributedDataParallel under torchrun, separately (wrapping one module holding both networks
    of a GAN breaks its training). ``model`` is the unwrapped whole, for checkpoints.
    """

    # The layout the networks want their batches in (DCGAN: channels_last).
    memory_format = torch.contiguous_format
    # What each row of picture()'s grid (8 images a row) shows; the last label repeats.
    picture_rows: tuple[str, ...] = ()
    # --amp bf16 (set by the training session): forward passes and losses under bfloat16 autocast.
    amp = False

    def __init__(self, model: nn.Module, nets: dict[str, nn.Module], lr: float,
                 betas: tuple[float, float], seed: int = 1):
        self.model = model
        self.nets = dict(nets)
        self.optimizers = {name: adam(net.parameters(), lr, betas) for name, net in nets.items()}
        self.seed = seed

    def to(self, device) -> None:
        self.model.to(device, memory_format=self.memory_format)

    def prepare(self, images: Tensor) -> Tensor:
        """A data set tensor in the memory format the networks want."""
        return images.contiguous(memory_format=self.memory_format)

    def wrap(self, wrapper) -> None:
        self.nets = {name: wrapper(net) for name, net in self.nets.items()}

    def autocast(self, x: Tensor):
        """The context of the forward passes and losses: bfloat16 autocast under --amp bf16. The
        backward passes and optimizer steps stay outside it (as torch advises), and the weights,
        their gradients and Adam's state stay float32."""
        return torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.amp)

    def step(self, name: str, loss: Tensor) -> None:
        """Backward and one optimizer step of the network ``name``."""
        optimizer = self.optimizers[name]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def train_step(self, x: Tensor) -> dict[str, float]:
        """One step on a training batch; returns its metrics (logged per step and averaged per epoch)."""
        raise NotImplementedError

    @torch.no_grad()
    def evaluate(self, x: Tensor) -> dict[str, float]:
        """Test metrics at the end of an epoch."""
        return {}

    @torch.no_grad()
    def picture(self, x: Tensor) -> Tensor:
        """Images (N, C, H, W) in [0, 1] for the epoch's grid."""
        raise NotImplementedError


def adam(params, lr: float, betas: tuple[float, float]) -> torch.optim.Optimizer:
    """Adam with the fused implementation (one kernel for all parameters) where torch has it."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, betas=betas, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(params, lr=lr, betas=betas)


def showcase(x: Tensor, n: int = 8) -> Tensor:
    """n test images spread over the set (the test split is ordered by class)."""
    return x[torch.linspace(0, x.shape[0] - 1, n).long().to(x.device)]


@contextmanager
def eval_mode(module: nn.Module):
    """The module in eval mode for a block, then back in the mode it was in."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


def batched_mean(fn, x: Tensor, batch: int = 1000) -> float:
    """Mean of fn over test batches, weighted by batch size."""
    total = 0.0
    for start in range(0, x.shape[0], batch):
        part = x[start:start + batch]
        total += fn(part).item() * part.shape[0]
    return total / max(1, x.shape[0])
