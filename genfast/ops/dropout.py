"""dropout_corrupt: the practicum's corruption ``x * Dropout(p)(ones)`` and its keep-mask, drawn in
the kernel (csrc/cpu/dropout.cpp, csrc/cuda/dropout.cu; the keep rule and the product are keep
and dropout_apply in csrc/genfast_math.h). Philox keys as in reparameterisation.py.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .. import _C
from . import _checks as check
from ._registration import DTYPES, call, define, launch, new_output


def dropout_corrupt(
    x: Tensor, p: float = 0.5, *, seed: Optional[int] = None, offset: int = 0,
    generator: Optional[torch.Generator] = None,
) -> tuple[Tensor, Tensor]:
    """The practicum's corruption ``x * Dropout(p)(ones)``: returns (x * m, keep_mask).

    m is 1/(1-p) where kept and 0 where dropped (so x*m is x*2 or 0 at p = 0.5, like the seed);
    keep_mask is True where the pixel was kept, for inpainting exactly the dropped pixels.
    """
    return call(_DROPOUT_CORRUPT, x, p, check.philox_key("x", x, seed, offset, generator))


def _constants(p: float) -> tuple[int, float]:
    """The keep threshold on 24 random bits, and the scale 1 / (1 - p)."""
    return round((1.0 - p) * (1 << 24)), 1.0 / (1.0 - p)


def _check(x, p, seed_offset) -> float:
    check.float_tensor("x", x)
    p = check.probability(p)
    check.seed_offset(seed_offset, x)
    return p


def _dropout_corrupt(x: Tensor, p: float, seed_offset: Tensor) -> tuple[Tensor, Tensor]:
    p = _check(x, p, seed_offset)
    x = x.contiguous()
    out = new_output(x)
    mask = new_output(x, dtype=torch.bool)
    keep_threshold, scale = _constants(p)
    _C.dropout_forward(DTYPES[x.dtype], x.numel(), x.data_ptr(), keep_threshold, scale,
                       seed_offset.contiguous().data_ptr(), out.data_ptr(), mask.data_ptr(), *launch(x))
    return out, mask


def _dropout_corrupt_fake(x, p, seed_offset):
    _check(x, p, seed_offset)
    return x.new_empty(x.shape), x.new_empty(x.shape, dtype=torch.bool)


def _dropout_corrupt_setup(ctx, inputs, output):
    ctx.p = inputs[1]
    ctx.mark_non_differentiable(output[1])
    ctx.save_for_backward(output[1])


def _dropout_corrupt_backward(ctx, grad_out, _grad_mask):
    (mask,) = ctx.saved_tensors
    return call(_GRAD_X, grad_out, mask, ctx.p), None, None


# The x-gradient, an op of its own: grad_out * m, m rebuilt from the keep-mask.


def _check_grad_x(grad_out, mask, p) -> float:
    check.float_tensor("grad_out", grad_out)
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
        raise TypeError(f"mask must be a bool tensor, got {getattr(mask, 'dtype', type(mask).__name__)}")
    if mask.device != grad_out.device:
        raise ValueError(f"mask is on {mask.device} but grad_out is on {grad_out.device}")
    check.same_shape("mask", mask, "grad_out", grad_out)
    return check.probability(p)


def _grad_x(grad_out: Tensor, mask: Tensor, p: float) -> Tensor:
    p = _check_grad_x(grad_out, mask, p)
    grad_out, mask = grad_out.contiguous(), mask.contiguous()
    grad_x = new_output(grad_out)
    _C.dropout_backward(DTYPES[grad_out.dtype], grad_out.numel(), grad_out.data_ptr(), mask.data_ptr(),
                        _constants(p)[1], grad_x.data_ptr(), *launch(grad_out))
    return grad_x


def _grad_x_fake(grad_out, mask, p):
    _check_grad_x(grad_out, mask, p)
    return grad_out.new_empty(grad_out.shape)


def _grad_x_setup(ctx, inputs, output):
    ctx.p = inputs[2]
    ctx.save_for_backward(inputs[1])


def _grad_x_backward(ctx, grad):
    """grad_x = grad_out * m is linear in grad_out with the same m: its backward is itself."""
    (mask,) = ctx.saved_tensors
    return call(_GRAD_X, grad, mask, ctx.p), None, None


_GRAD_X = define("dropout_corrupt_backward", _grad_x, _grad_x_fake, _grad_x_setup, _grad_x_backward)
_DROPOUT_CORRUPT = define("dropout_corrupt", _dropout_corrupt, _dropout_corrupt_fake, _dropout_corrupt_setup,
                          _dropout_corrupt_backward)
