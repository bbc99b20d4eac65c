"""Argument checks shared by the ops. Each op checks its arguments once, at its entry (the custom
op's implementation and fake kernel), so that a bad call raises an exception naming the argument
before any pointer reaches C++. The common valid case is tested first, cheaply."""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from ._registration import CUDA_BUILT, DTYPES, REDUCTIONS


def float_tensor(name: str, t) -> None:
    if isinstance(t, Tensor) and t.dtype in DTYPES and (t.is_cpu or (t.is_cuda and CUDA_BUILT)):
        return
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in DTYPES:
        raise TypeError(f"{name} must be float32, float64, float16 or bfloat16, got {t.dtype}")
    if t.device.type not in ("cpu", "cuda", "meta"):
        raise ValueError(f"{name} is on {t.device}; genfast runs on cpu and cuda tensors")
    if t.device.type == "cuda" and not CUDA_BUILT:
        raise RuntimeError(
            f"{name} is a CUDA tensor but this genfast build has no CUDA kernels "
            "(reinstall with nvcc available, GENFAST_CUDA=ON)"
        )


def same_kind(name: str, t: Tensor, ref_name: str, ref: Tensor) -> None:
    if t.device != ref.device:
        raise ValueError(f"{name} is on {t.device} but {ref_name} is on {ref.device}")
    if t.dtype != ref.dtype:
        raise TypeError(f"{name} has dtype {t.dtype} but {ref_name} has {ref.dtype}")


def same_shape(name: str, t: Tensor, ref_name: str, ref: Tensor) -> None:
    if t.shape != ref.shape:
        raise ValueError(f"{name} has shape {tuple(t.shape)} but {ref_name} has {tuple(ref.shape)}")


def matching_pair(name_x: str, x, name_y: str, y) -> None:
    """Two float tensors of one dtype, shape and device that genfast runs on."""
    if (isinstance(x, Tensor) and isinstance(y, Tensor) and x.dtype in DTYPES and x.dtype == y.dtype
            and x.shape == y.shape and x.device == y.device and (x.is_cpu or (x.is_cuda and CUDA_BUILT))):
        return
    float_tensor(name_x, x)
    float_tensor(name_y, y)
    same_kind(name_y, y, name_x, x)
    same_shape(name_y, y, name_x, x)


def batched(name: str, t: Tensor) -> None:
    if t.dim() < 1:
        raise ValueError(f"{name} must have a batch dimension (at least 1-d), got a 0-d tensor")


def reduction(value) -> None:
    if value not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {tuple(REDUCTIONS)}, got {value!r}")


def finite_float(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite float, got {value!r}")


def probability(p) -> float:
    """A dropout probability in [0, 1), as a float."""
    if isinstance(p, bool) or not isinstance(p, (int, float)):
        raise TypeError(f"p must be a float in [0, 1), got {type(p).__name__}")
    p = float(p)
    if not (0.0 <= p < 1.0):
        raise ValueError(f"p must be in [0, 1), got {p}")
    return p


def seed_offset(seed_offset, ref: Tensor) -> None:
    if isinstance(seed_offset, Tensor) and seed_offset.dtype == torch.int64 and seed_offset.shape == (2,) \
            and seed_offset.device == ref.device:
        return
    if not isinstance(seed_offset, Tensor):
        raise TypeError(f"seed_offset must be a torch.Tensor, got {type(seed_offset).__name__}")
    if seed_offset.dtype != torch.int64 or seed_offset.shape != (2,):
        raise ValueError(
            f"seed_offset must be an int64 tensor of shape (2,), got {seed_offset.dtype} {tuple(seed_offset.shape)}"
        )
    raise ValueError(f"seed_offset is on {seed_offset.device} but the input is on {ref.device}")


def philox_key(name: str, x, seed: Optional[int], offset: int,
               generator: Optional[torch.Generator]) -> Tensor:
    """The kernel's Philox key [seed, offset] as an int64 tensor on x's device: the given seed and
    offset, or both drawn from torch's generator for that device (or ``generator``)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if seed is None:
        return torch.randint(-(2**63), 2**63 - 1, (2,), dtype=torch.int64, device=x.device,
                             generator=generator)
    for key_name, v in (("seed", seed), ("offset", offset)):
        if isinstance(v, bool) or not isinstance(v, int) or not (-(2**63) <= v < 2**64):
            raise ValueError(f"{key_name} must be an integer in [-2**63, 2**64), got {v!r}")
    as_int64 = lambda v: v - 2**64 if v >= 2**63 else v  # noqa: E731  (same 64 bits)
    return torch.tensor([as_int64(seed), as_int64(offset)], dtype=torch.int64, device=x.device)
