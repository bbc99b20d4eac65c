"""How a genfast op is defined, called and launched.

``define`` registers an op's implementation as the custom op ``torch.ops.genfast.<name>`` with its
fake kernel and autograd formula. ``call`` runs it. In plain eager mode ``call`` skips the
dispatcher and runs the same implementation and the same autograd formulas through a
``torch.autograd.Function``; everything else (torch.compile, FakeTensor, opcheck, vmap, modes,
tensor subclasses) goes through the custom op.

Why two routes: the custom op's dispatch is Python -> C++ dispatcher -> Python autograd kernel ->
redispatch -> Python implementation, 5 to 8 µs a call forward and 15 to 30 µs forward + backward,
as much as the kernels themselves at the practicum's sizes. benchmarks/ops.py's cases on this
project's 2-core CPU (1 thread, medians of 8 interleaved rounds), with this shortcut / without:
kl_divergence B = 128 forward 9.9 / 16.6 µs, forward + backward 33.3 / 49.6 µs; reparameterise
9.5 / 15.0 and 34.1 / 50.6 µs; vae_loss 119 / 152 µs forward + backward; at B = 4096 the
shortcut still saves 1 to 16%. The shortcut is this module's ``call`` alone; the ops never
branch on the route.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import torch
from torch import Tensor
from torch.utils._python_dispatch import _get_current_dispatch_mode

from .. import _C

# Read from the C ABI (csrc/kernels.h, exported by csrc/bindings.cpp), not copied.
DTYPES = {getattr(torch, name): code for name, code in _C.DType.__members__.items()}
REDUCTIONS = dict(_C.Reduction.__members__)
CUDA_BUILT = bool(_C.build_info()["cuda"])

# Tests set this to fill every output with NaN (or 0xA5 bytes) before the kernel writes it, so an
# element the kernel forgot to write cannot pass.
poison_outputs = False


def new_output(like: Tensor, shape=None, dtype: Optional[torch.dtype] = None) -> Tensor:
    """An output buffer on like's device: like's shape (like is contiguous) or shape; like's dtype
    or dtype. (The calls are picked for speed: tuple and keyword parsing cost here.)"""
    if shape is None:
        out = torch.empty_like(like) if dtype is None else torch.empty_like(like, dtype=dtype)
    else:
        out = like.new_empty(shape)
    if poison_outputs:
        if out.dtype == torch.bool:
            out.view(torch.uint8).fill_(0xA5)
        else:
            out.fill_(float("nan"))
    return out


def launch(t: Tensor) -> tuple[int, int, int]:
    """The launch triple of the _C entry points for a kernel over t: (CUDA device index, or -1 for
    the CPU; CUDA stream handle; CPU threads)."""
    if t.is_cuda:
        return t.device.index, torch.cuda.current_stream(t.device).cuda_stream, 1
    if not t.is_cpu:  # meta tensors have no data: only the fake kernels may see them
        raise ValueError(f"genfast's kernels run on cpu and cuda tensors, got a {t.device} tensor")
    return -1, 0, torch.get_num_threads()


class Op(NamedTuple):
    custom_op: Callable  # torch.ops.genfast.<name>
    eager: Callable      # the same implementation and formulas as a torch.autograd.Function
    impl: Callable       # the implementation alone


def define(name: str, impl, fake, setup_context, backward) -> Op:
    """Registers impl as the custom op genfast::name, with its fake kernel and autograd formula."""
    custom_op = torch.library.custom_op(f"genfast::{name}", impl, mutates_args=())
    custom_op.register_fake(fake)
    custom_op.register_autograd(backward, setup_context=setup_context)

    # Old-style forward(ctx, ...): a separate setup_context staticmethod would make apply() bind
    # the arguments through inspect.signature on every call. Built with type() so that the
    # autograd node is named after the op (e.g. GenfastVaeLossBackward).
    def forward(ctx, *args):
        output = impl(*args)
        setup_context(ctx, args, output)
        return output

    class_name = "Genfast" + "".join(part.title() for part in name.split("_"))
    eager = type(class_name, (torch.autograd.Function,), {
        "forward": staticmethod(forward), "backward": staticmethod(backward)})
    return Op(custom_op, eager.apply, impl)


def plain_eager(tensors) -> bool:
    """True when nothing but autograd may see the call: not compiling, no torch-function override
    (modes or subclasses), no dispatch mode (FakeTensorMode, ...), no functorch transform (vmap,
    torch.func.grad), and plain tensors with data. (torch has no public query for the last two.)"""
    for t in tensors:
        if type(t) is not Tensor or t.is_meta:
            return False
    return not (
        torch.compiler.is_compiling()
        or torch.overrides.has_torch_function(tensors)
        or _get_current_dispatch_mode() is not None
        or torch._C._are_functorch_transforms_active()
    )


def call(op: Op, *args):
    """Runs an op: plain eager calls go straight to the implementation (through the
    autograd.Function when an input needs a gradient), anything else through the custom op."""
    tensors = [a for a in args if isinstance(a, Tensor)]
    if not plain_eager(tensors):
        return op.custom_op(*args)
    if torch.is_grad_enabled():
        for t in tensors:
            if t.requires_grad:
                return op.eager(*args)
    return op.impl(*args)


def wants_grad(*tensors) -> bool:
    return torch.is_grad_enabled() and any(isinstance(t, Tensor) and t.requires_grad for t in tensors)
