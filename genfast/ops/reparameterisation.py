"""reparameterise: z = mu + eps * exp(logvar / 2), eps drawn in the kernel
(csrc/cpu/reparameterise.cpp, csrc/cuda/reparameterise.cu; the math is reparameterise_noise and
reparameterise_grad_logvar in csrc/genfast_math.h). When logvar needs a gradient the forward pass
also keeps dz/dlogvar = eps * exp(logvar / 2) / 2 (one latent-sized tensor), so a plain backward is
one multiplication; a backward that builds a graph regenerates eps from the same Philox key.

Random ops draw from Philox4x32-10 keyed by an int64 tensor ``seed_offset = [seed, offset]`` on the
input's device, so the kernel reads it from device memory (CUDA-graph safe); the public function
draws it from torch's generator (``torch.manual_seed`` reproduces it), and CPU and CUDA draw the
same noise bits for the same key (float64 outputs may differ in the last bit, float64 exp being
the platform's).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .. import _C
from . import _checks as check
from ._registration import DTYPES, call, define, launch, new_output


def reparameterise(
    mu: Tensor, logvar: Tensor, *, seed: Optional[int] = None, offset: int = 0,
    generator: Optional[torch.Generator] = None,
) -> Tensor:
    """z = mu + eps * exp(logvar / 2), eps ~ N(0, I) drawn in the kernel (Philox4x32-10).

    With ``seed`` (and ``offset``) the noise is fixed: the same seed gives the same eps on CPU and
    CUDA. Otherwise they are drawn from torch's generator for the device (or ``generator``).
    """
    key = check.philox_key("mu", mu, seed, offset, generator)
    keep_derivative = isinstance(logvar, Tensor) and logvar.requires_grad and torch.is_grad_enabled()
    return call(_REPARAMETERISE, mu, logvar, key, keep_derivative)[0]


def _check(a_name: str, a, logvar, seed_offset) -> None:
    check.matching_pair(a_name, a, "logvar", logvar)
    check.seed_offset(seed_offset, a)


def _compute_dtype(t: Tensor) -> torch.dtype:
    """The kernels' arithmetic type: float64 for float64, else float32."""
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _reparameterise(mu: Tensor, logvar: Tensor, seed_offset: Tensor, keep_derivative: bool = False
                    ) -> tuple[Tensor, Tensor]:
    """(z, dz/dlogvar in the compute type when keep_derivative, else an empty placeholder)."""
    _check("mu", mu, logvar, seed_offset)
    mu, logvar = mu.contiguous(), logvar.contiguous()
    z = new_output(mu)
    half_noise = new_output(mu, dtype=_compute_dtype(mu)) if keep_derivative else mu.new_empty(0)
    _C.reparameterise_forward(DTYPES[mu.dtype], mu.numel(), mu.data_ptr(), logvar.data_ptr(),
                              seed_offset.contiguous().data_ptr(), z.data_ptr(),
                              half_noise.data_ptr() if keep_derivative else 0, *launch(mu))
    return z, half_noise


def _reparameterise_fake(mu, logvar, seed_offset, keep_derivative=False):
    _check("mu", mu, logvar, seed_offset)
    return mu.new_empty(mu.shape), mu.new_empty(mu.shape if keep_derivative else (0,), dtype=_compute_dtype(mu))


def _reparameterise_setup(ctx, inputs, output):
    _, logvar, seed_offset, *_ = inputs
    ctx.set_materialize_grads(False)
    ctx.mark_non_differentiable(output[1])
    ctx.save_for_backward(logvar, seed_offset, output[1])


def _reparameterise_backward(ctx, grad_z, _grad_half_noise):
    """dz/dmu = 1; dz/dlogvar kept by the forward pass, or, for a backward that builds a graph (or
    a call that kept none), the op below, which regenerates eps and autograd differentiates."""
    if grad_z is None:
        return None, None, None, None
    logvar, seed_offset, half_noise = ctx.saved_tensors
    if not ctx.needs_input_grad[1]:
        grad_logvar = None
    elif torch.is_grad_enabled() or half_noise.numel() != logvar.numel():
        grad_logvar = call(_GRAD_LOGVAR, grad_z, logvar, seed_offset)
    else:
        grad_logvar = grad_z * half_noise
        if grad_logvar.dtype != grad_z.dtype:  # float16/bfloat16: rounded once, from float32
            grad_logvar = grad_logvar.to(grad_z.dtype)
    return grad_z, grad_logvar, None, None


# The logvar-gradient, an op of its own: grad_z * eps * exp(logvar / 2) / 2, eps regenerated.


def _grad_logvar(grad_z: Tensor, logvar: Tensor, seed_offset: Tensor) -> Tensor:
    _check("grad_z", grad_z, logvar, seed_offset)
    grad_z, logvar = grad_z.contiguous(), logvar.contiguous()
    grad_logvar = new_output(logvar)
    _C.reparameterise_backward(DTYPES[logvar.dtype], logvar.numel(), grad_z.data_ptr(), logvar.data_ptr(),
                               seed_offset.contiguous().data_ptr(), grad_logvar.data_ptr(), *launch(logvar))
    return grad_logvar


def _grad_logvar_fake(grad_z, logvar, seed_offset):
    _check("grad_z", grad_z, logvar, seed_offset)
    return logvar.new_empty(logvar.shape)


def _grad_logvar_setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _grad_logvar_backward(ctx, grad):
    """grad_logvar is linear in grad_z, and its derivative in logvar is half of itself: both are
    this op again (so derivatives of any order are)."""
    grad_z, logvar, seed_offset = ctx.saved_tensors
    return (call(_GRAD_LOGVAR, grad, logvar, seed_offset) if ctx.needs_input_grad[0] else None,
            0.5 * call(_GRAD_LOGVAR, grad_z * grad, logvar, seed_offset) if ctx.needs_input_grad[1] else None,
            None)


_GRAD_LOGVAR = define("reparameterise_backward", _grad_logvar, _grad_logvar_fake, _grad_logvar_setup,
                      _grad_logvar_backward)
_REPARAMETERISE = define("reparameterise", _reparameterise, _reparameterise_fake, _reparameterise_setup,
                         _reparameterise_backward)
