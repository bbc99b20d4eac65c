"""genfast's kernels as ``torch.library`` custom ops (namespace ``genfast``), one module per op
family, mirroring csrc/:

- :mod:`.losses`: kl_divergence, binary_cross_entropy, binary_cross_entropy_with_logits, vae_loss
  (csrc/cpu/fused_loss.cpp, csrc/cuda/fused_loss.cu)
- :mod:`.reparameterisation`: reparameterise (csrc/*/reparameterise)
- :mod:`.dropout`: dropout_corrupt (csrc/*/dropout)

Each module holds, per op, the public function, the checks, the implementation that calls
``genfast._C``, the fake kernel and the autograd formula, registered together. Shared:
:mod:`._registration` (defining and calling an op, kernel launch and output buffers; bindings.cpp's
counterpart) and :mod:`._checks` (argument checks). The per-element math of every kernel is
csrc/genfast_math.h.
"""

from .. import _C
from .dropout import dropout_corrupt
from .losses import binary_cross_entropy, binary_cross_entropy_with_logits, kl_divergence, vae_loss
from .reparameterisation import reparameterise

__all__ = [
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "build_info",
    "dropout_corrupt",
    "kl_divergence",
    "reparameterise",
    "vae_loss",
]


def build_info() -> dict:
    """What this build of genfast contains: CUDA (version, archs), OpenMP threads, compiler, CPU ISA."""
    return dict(_C.build_info())
