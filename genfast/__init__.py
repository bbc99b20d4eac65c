"""genfast: fused C++/CUDA kernels for classic generative models, checked against plain PyTorch.

The fused ops (each a ``torch.library`` custom op in the ``genfast`` namespace):

- :func:`reparameterise`: z = mu + eps * exp(logvar / 2), eps drawn in-kernel (Philox)
- :func:`kl_divergence`: 0.5 * sum(exp(logvar) - logvar - 1 + mu^2)
- :func:`binary_cross_entropy`, :func:`binary_cross_entropy_with_logits`
- :func:`vae_loss`: BCE(sum) + beta * KL in one kernel launch, gradients in the same pass
- :func:`dropout_corrupt`: the practicum's ``x * Dropout(p)(ones)`` corruption plus its keep-mask

:mod:`genfast.reference` has the same functions in plain PyTorch; :mod:`genfast.nn` wraps them as
modules. :mod:`genfast.export` turns trained models into ONNX and serves them with onnxruntime.

In an environment without torch (a serving machine with only numpy and onnxruntime), importing
genfast loads nothing else, so that ``genfast.export.runtime`` works there.
"""

from .version import __version__

try:
    import torch  # noqa: F401
except ModuleNotFoundError as missing:
    if missing.name != "torch":
        raise
else:
    from . import data, models, nn, reference
    from .ops import (
        binary_cross_entropy,
        binary_cross_entropy_with_logits,
        build_info,
        dropout_corrupt,
        kl_divergence,
        reparameterise,
        vae_loss,
    )
    from .training import load_model, train  # (needs the ops registered first)

__all__ = [
    "__version__",
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "build_info",
    "data",
    "dropout_corrupt",
    "kl_divergence",
    "load_model",
    "models",
    "nn",
    "reference",
    "reparameterise",
    "train",
    "vae_loss",
]
