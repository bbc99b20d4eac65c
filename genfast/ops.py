"""genfast's kernels as ``torch.library`` custom ops (namespace ``genfast``).

Every op checks its arguments here, in Python, before a pointer reaches C++; registers a fake
kernel (so it traces under ``torch.compile(fullgraph=True)``) and its autograd formula.

The loss ops compute the input gradients in the same pass as the loss when asked to
(``grad_*`` flags, set by the public functions when autograd needs them); their backward then
only scales the saved gradients by ``grad_output``.

Random ops draw in-kernel from Philox4x32-10 keyed by an int64 tensor ``seed_offset = [seed,
offset]`` on the input's device, so the kernel reads it from device memory (CUDA-graph safe), the
public functions draw it from torch's generator (``torch.manual_seed`` reproduces it), and CPU and
CUDA draw the same noise bits for the same ``seed_offset`` (float64 outputs may differ in the last
bit, float64 exp being the platform's).
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple, Optional

import torch
from torch import Tensor
from torch.utils._python_dispatch import _get_current_dispatch_mode

from . import _C

__all__ = [
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "build_info",
    "dropout_corrupt",
    "kl_divergence",
    "reparameterise",
    "vae_loss",
]

# Read from the C ABI (csrc/kernels.h, exported by csrc/bindings.cpp), not copied.
_DTYPE_CODES = {getattr(torch, name): code for name, code in _C.DType.__members__.items()}
_TERMS = dict(_C.LossTerm.__members__)
_REDUCTION_CODES = dict(_C.Reduction.__members__)
REDUCTIONS = tuple(_REDUCTION_CODES)
_FLAT_ROW = _C.FLAT_ROW_ELEMENTS

_cuda_built = bool(_C.build_info()["cuda"])

# Tests set this to fill every output with NaN (or 0xA5 bytes) before the kernel writes it, so an
# element the kernel forgot to write cannot pass.
poison_outputs = False


def build_info() -> dict:
    """What this build of genfast contains: CUDA (version, archs), OpenMP threads, compiler, CPU ISA."""
    return dict(_C.build_info())


# --------------------------------------------------------------------------------------------
# Validation


def _check_float_tensor(name: str, t) -> None:
    if isinstance(t, Tensor) and t.dtype in _DTYPE_CODES and (t.is_cpu or (t.is_cuda and _cuda_built)):
        return
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in _DTYPE_CODES:
        raise TypeError(f"{name} must be float32, float64, float16 or bfloat16, got {t.dtype}")
    if t.device.type not in ("cpu", "cuda", "meta"):
        raise ValueError(f"{name} is on {t.device}; genfast runs on cpu and cuda tensors")
    if t.device.type == "cuda" and not _cuda_built:
        raise RuntimeError(
            f"{name} is a CUDA tensor but this genfast build has no CUDA kernels "
            "(reinstall with nvcc available, GENFAST_CUDA=ON)"
        )


def _check_same_kind(name: str, t: Tensor, ref_name: str, ref: Tensor) -> None:
    if t.device != ref.device:
        raise ValueError(f"{name} is on {t.device} but {ref_name} is on {ref.device}")
    if t.dtype != ref.dtype:
        raise TypeError(f"{name} has dtype {t.dtype} but {ref_name} has {ref.dtype}")


def _check_same_shape(name: str, t: Tensor, ref_name: str, ref: Tensor) -> None:
    if t.shape != ref.shape:
        raise ValueError(f"{name} has shape {tuple(t.shape)} but {ref_name} has {tuple(ref.shape)}")


def _matching_pair(x, y) -> bool:
    """The common valid case, tested cheaply: two float tensors of one dtype, shape and device
    that genfast can run on. Validators fall back to the detailed checks, which word the error."""
    return (
        isinstance(x, Tensor) and isinstance(y, Tensor) and x.dtype in _DTYPE_CODES
        and x.dtype == y.dtype and x.shape == y.shape and x.device == y.device
        and (x.is_cpu or (x.is_cuda and _cuda_built))
    )


def _check_reduction(reduction) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def _check_batched(name: str, t: Tensor) -> None:
    if t.dim() < 1:
        raise ValueError(f"{name} must have a batch dimension (at least 1-d), got a 0-d tensor")


def _check_seed_offset(seed_offset, ref: Tensor) -> None:
    if not isinstance(seed_offset, Tensor):
        raise TypeError(f"seed_offset must be a torch.Tensor, got {type(seed_offset).__name__}")
    if seed_offset.dtype != torch.int64 or seed_offset.shape != (2,):
        raise ValueError(
            f"seed_offset must be an int64 tensor of shape (2,), got {seed_offset.dtype} {tuple(seed_offset.shape)}"
        )
    if seed_offset.device != ref.device:
        raise ValueError(f"seed_offset is on {seed_offset.device} but the input is on {ref.device}")


def _check_probability(p) -> float:
    if isinstance(p, bool) or not isinstance(p, (int, float)):
        raise TypeError(f"p must be a float in [0, 1), got {type(p).__name__}")
    p = float(p)
    if not (0.0 <= p < 1.0):
        raise ValueError(f"p must be in [0, 1), got {p}")
    return p


# --------------------------------------------------------------------------------------------
# Launch helpers


def _launch(t: Tensor) -> tuple[int, int, int]:
    """(device index or -1 for CPU, CUDA stream handle, CPU threads) for a kernel over t."""
    if t.is_cuda:
        return t.device.index, torch.cuda.current_stream(t.device).cuda_stream, 1
    if not t.is_cpu:  # meta tensors have no data: only the fake kernels may see them
        raise ValueError(f"genfast's kernels run on cpu and cuda tensors, got a {t.device} tensor")
    return -1, 0, torch.get_num_threads()


def _empty(shape, like: Tensor, dtype: Optional[torch.dtype] = None) -> Tensor:
    out = torch.empty(shape, dtype=dtype or like.dtype, device=like.device)
    if poison_outputs:
        if out.dtype == torch.bool:
            out.view(torch.uint8).fill_(0xA5)
        else:
            out.fill_(float("nan"))
    return out


_NO_GRAD = (0,)  # shape of the placeholder returned for a gradient that was not asked for


def _grad_buffer(wanted: bool, like: Tensor) -> Tensor:
    return _empty(like.shape, like) if wanted else like.new_empty(_NO_GRAD)


def _ptr(t: Optional[Tensor]) -> int:
    return 0 if t is None or t.numel() == 0 else t.data_ptr()


# --------------------------------------------------------------------------------------------
# Two routes to one implementation. The custom op (torch.ops.genfast.*) is what torch.compile,
# FakeTensor, opcheck, vmap and every dispatch mode see. In plain eager mode the public functions
# call the same implementation and the same autograd formulas through a torch.autograd.Function,
# skipping the dispatcher's round trips (about 15 us a call, as much as the kernel at small sizes).

eager_fast_path = True  # tests switch it off to check that both routes agree


class _Route(NamedTuple):
    op: Callable        # the custom op: torch.ops.genfast.<name>
    autograd: Callable  # the same implementation and formulas as a torch.autograd.Function
    impl: Callable      # the implementation alone


def _define(name: str, impl, fake, setup_context=None, backward=None) -> _Route:
    """Registers impl as the custom op genfast::name, with its fake kernel and autograd formula.

    An op without a backward (the backward kernels themselves) routes calls that record
    gradients through the dispatcher, so that differentiating through it fails loudly.
    """
    op = torch.library.custom_op(f"genfast::{name}", impl, mutates_args=())
    op.register_fake(fake)
    if backward is None:
        return _Route(op, op, impl)
    op.register_autograd(backward, setup_context=setup_context)

    # Old-style forward(ctx, ...): a separate setup_context staticmethod would make apply() bind
    # the arguments through inspect.signature on every call. Built with type() so that the
    # autograd node is named after the op (e.g. GenfastVaeLossBackward).
    def forward(ctx, *args):
        output = impl(*args)
        setup_context(ctx, args, output)
        return output

    class_name = "Genfast" + "".join(part.title() for part in name.split("_"))
    eager = type(class_name, (torch.autograd.Function,), {
        "forward": staticmethod(forward), "backward": staticmethod(lambda ctx, *grads: backward(ctx, *grads))})
    return _Route(op, eager.apply, impl)


def _plain_eager(tensors) -> bool:
    return (
        eager_fast_path
        and not torch.compiler.is_compiling()
        and not torch._C._is_torch_function_mode_enabled()
        and not torch._C._are_functorch_transforms_active()
        and _get_current_dispatch_mode() is None
        and all(type(t) is Tensor and not t.is_meta for t in tensors)
    )


def _call(route: _Route, *args):
    """Runs an op by the cheapest correct route: plain eager calls with nothing to differentiate
    go straight to the implementation, with gradients through the autograd.Function; anything
    else (compile, modes, subclasses, transforms) through the dispatcher."""
    tensors = [a for a in args if isinstance(a, Tensor)]
    if not _plain_eager(tensors):
        return route.op(*args)
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return route.autograd(*args)
    return route.impl(*args)


# --------------------------------------------------------------------------------------------
# reparameterise


def _validate_reparameterise(mu, logvar, seed_offset) -> None:
    if (_matching_pair(mu, logvar) and isinstance(seed_offset, Tensor)
            and seed_offset.dtype == torch.int64 and seed_offset.shape == (2,)
            and seed_offset.device == mu.device):
        return
    _check_float_tensor("mu", mu)
    _check_float_tensor("logvar", logvar)
    _check_same_kind("logvar", logvar, "mu", mu)
    _check_same_shape("logvar", logvar, "mu", mu)
    _check_seed_offset(seed_offset, mu)


def _reparameterise_impl(mu: Tensor, logvar: Tensor, seed_offset: Tensor) -> Tensor:
    _validate_reparameterise(mu, logvar, seed_offset)
    mu, logvar, seed_offset = mu.contiguous(), logvar.contiguous(), seed_offset.contiguous()
    z = _empty(mu.shape, mu)
    _C.reparameterise_forward(
        _DTYPE_CODES[mu.dtype], mu.numel(), mu.data_ptr(), logvar.data_ptr(), seed_offset.data_ptr(),
        z.data_ptr(), *_launch(mu),
    )
    return z


def _reparameterise_fake(mu, logvar, seed_offset):
    _validate_reparameterise(mu, logvar, seed_offset)
    return mu.new_empty(mu.shape)


def _reparameterise_backward_impl(grad_z: Tensor, logvar: Tensor, seed_offset: Tensor) -> Tensor:
    """d z / d logvar applied to grad_z: grad_z * eps * exp(logvar / 2) / 2, eps regenerated."""
    _validate_reparameterise(grad_z, logvar, seed_offset)
    grad_z, logvar = grad_z.contiguous(), logvar.contiguous()
    grad_logvar = _empty(logvar.shape, logvar)
    _C.reparameterise_backward(
        _DTYPE_CODES[logvar.dtype], logvar.numel(), grad_z.data_ptr(), logvar.data_ptr(),
        seed_offset.contiguous().data_ptr(), grad_logvar.data_ptr(), *_launch(logvar),
    )
    return grad_logvar


def _reparameterise_backward_fake(grad_z, logvar, seed_offset):
    _validate_reparameterise(grad_z, logvar, seed_offset)
    return logvar.new_empty(logvar.shape)


_REPARAMETERISE_BACKWARD = _define(
    "reparameterise_backward", _reparameterise_backward_impl, _reparameterise_backward_fake)


def _reparameterise_setup(ctx, inputs, output):
    _, logvar, seed_offset = inputs
    ctx.save_for_backward(logvar, seed_offset)


def _reparameterise_grad(ctx, grad_z):
    logvar, seed_offset = ctx.saved_tensors
    return grad_z, _call(_REPARAMETERISE_BACKWARD, grad_z, logvar, seed_offset), None


_REPARAMETERISE = _define("reparameterise", _reparameterise_impl, _reparameterise_fake,
                          _reparameterise_setup, _reparameterise_grad)


# --------------------------------------------------------------------------------------------
# dropout_corrupt


def _dropout_constants(p: float) -> tuple[int, float]:
    """The keep threshold on 24 random bits, and the scale 1 / (1 - p)."""
    return round((1.0 - p) * (1 << 24)), 1.0 / (1.0 - p)


def _validate_dropout(x, p, seed_offset) -> float:
    _check_float_tensor("x", x)
    p = _check_probability(p)
    _check_seed_offset(seed_offset, x)
    return p


def _dropout_corrupt_impl(x: Tensor, p: float, seed_offset: Tensor) -> tuple[Tensor, Tensor]:
    p = _validate_dropout(x, p, seed_offset)
    x = x.contiguous()
    out = _empty(x.shape, x)
    mask = _empty(x.shape, x, torch.bool)
    keep_threshold, scale = _dropout_constants(p)
    _C.dropout_forward(
        _DTYPE_CODES[x.dtype], x.numel(), x.data_ptr(), keep_threshold, scale,
        seed_offset.contiguous().data_ptr(), out.data_ptr(), mask.data_ptr(), *_launch(x),
    )
    return out, mask


def _dropout_corrupt_fake(x, p, seed_offset):
    _validate_dropout(x, p, seed_offset)
    return x.new_empty(x.shape), x.new_empty(x.shape, dtype=torch.bool)


def _validate_dropout_backward(grad_out, mask, p) -> float:
    _check_float_tensor("grad_out", grad_out)
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
        raise TypeError(f"mask must be a bool tensor, got {getattr(mask, 'dtype', type(mask).__name__)}")
    if mask.device != grad_out.device:
        raise ValueError(f"mask is on {mask.device} but grad_out is on {grad_out.device}")
    _check_same_shape("mask", mask, "grad_out", grad_out)
    return _check_probability(p)


def _dropout_corrupt_backward_impl(grad_out: Tensor, mask: Tensor, p: float) -> Tensor:
    p = _validate_dropout_backward(grad_out, mask, p)
    grad_out, mask = grad_out.contiguous(), mask.contiguous()
    grad_x = _empty(grad_out.shape, grad_out)
    _C.dropout_backward(
        _DTYPE_CODES[grad_out.dtype], grad_out.numel(), grad_out.data_ptr(), mask.data_ptr(),
        _dropout_constants(p)[1], grad_x.data_ptr(), *_launch(grad_out),
    )
    return grad_x


def _dropout_corrupt_backward_fake(grad_out, mask, p):
    _validate_dropout_backward(grad_out, mask, p)
    return grad_out.new_empty(grad_out.shape)


_DROPOUT_CORRUPT_BACKWARD = _define(
    "dropout_corrupt_backward", _dropout_corrupt_backward_impl, _dropout_corrupt_backward_fake)


def _dropout_setup(ctx, inputs, output):
    ctx.p = inputs[1]
    ctx.mark_non_differentiable(output[1])
    ctx.save_for_backward(output[1])


def _dropout_grad(ctx, grad_out, _grad_mask):
    (mask,) = ctx.saved_tensors
    return _call(_DROPOUT_CORRUPT_BACKWARD, grad_out, mask, ctx.p), None, None


_DROPOUT_CORRUPT = _define("dropout_corrupt", _dropout_corrupt_impl, _dropout_corrupt_fake,
                           _dropout_setup, _dropout_grad)


# --------------------------------------------------------------------------------------------
# Fused losses: one row-structured kernel (csrc/*/fused_loss) behind four ops.


def _run_fused_loss(
    *, term_a: str, x_a: Tensor, y_a: Tensor, rows: int, cols_a: int, reduction: str,
    grad_x_a: bool, grad_y_a: bool, term_b: str = "none", x_b: Optional[Tensor] = None,
    y_b: Optional[Tensor] = None, cols_b: int = 0, weight_b: float = 1.0, grad_b: bool = False,
    elementwise: bool = False,
) -> tuple[Tensor, ...]:
    """Runs the fused loss kernel; returns (loss, grad_x_a, grad_y_a, grad_x_b, grad_y_b).

    A gradient not asked for comes back as an empty placeholder (None for an absent segment B).
    """
    if reduction == "none":
        loss = _empty(x_a.shape if elementwise else (rows,), x_a)
    else:
        loss = _empty((), x_a)
    gx_a, gy_a = _grad_buffer(grad_x_a, x_a), _grad_buffer(grad_y_a, y_a)
    gx_b = _grad_buffer(grad_b, x_b) if x_b is not None else None
    gy_b = _grad_buffer(grad_b, y_b) if y_b is not None else None

    problem = _C.LossProblem()
    problem.dtype, problem.reduction, problem.per_element = (
        _DTYPE_CODES[x_a.dtype], _REDUCTION_CODES[reduction], elementwise)
    problem.rows, problem.out = rows, loss.data_ptr()
    for segment, term, x, y, cols, gx, gy in ((problem.a, term_a, x_a, y_a, cols_a, gx_a, gy_a),
                                              (problem.b, term_b, x_b, y_b, cols_b, gx_b, gy_b)):
        segment.term, segment.cols = _TERMS[term], cols
        segment.n = x.numel() if x is not None else 0
        segment.x, segment.y, segment.grad_x, segment.grad_y = _ptr(x), _ptr(y), _ptr(gx), _ptr(gy)
    problem.b.weight = weight_b
    device, stream, threads = _launch(x_a)
    if device >= 0 and reduction != "none":
        workspace = torch.zeros(_C.LossProblem.workspace_bytes(rows), dtype=torch.uint8, device=x_a.device)
        problem.workspace = workspace.data_ptr()
    _C.fused_loss(problem, device, stream, threads)
    return loss, gx_a, gy_a, gx_b, gy_b


def _scale_saved_grad(saved: Tensor, computed: bool, grad_out: Tensor, reduction: str,
                      per_row: bool) -> Tensor:
    """The backward of every fused loss: the saved d loss / d input times grad_output."""
    if not computed:
        raise RuntimeError(
            "genfast: this loss was computed without that input's gradient (its grad_* flag was "
            "False); call the public genfast function, which sets the flags when autograd needs them"
        )
    if reduction == "none" and per_row:
        grad_out = grad_out.reshape(grad_out.shape + (1,) * (saved.dim() - 1))
    elif type(grad_out) is Tensor and grad_out.dim() == 0 and grad_out.is_cpu and grad_out.item() == 1.0:
        # loss.backward() on CPU: the saved gradient is the answer. Returning it is safe: while
        # ctx holds it, autograd neither steals it as a leaf's .grad (it copies) nor adds into it.
        # (Not on CUDA, where .item() would synchronise; not while tracing, where it is symbolic.)
        return saved
    return saved * grad_out


def _scaled_grads(ctx, grad_loss: Optional[Tensor], per_row: bool) -> list[Optional[Tensor]]:
    """Gradients for the tensor inputs of a fused loss op, in order (None where not needed, and
    all None for an undefined grad_loss: gradients are not materialised)."""
    if grad_loss is None:
        return [None] * len(ctx.computed)
    return [
        _scale_saved_grad(saved, computed, grad_loss, ctx.reduction, per_row)
        if ctx.needs_input_grad[i] else None
        for i, (saved, computed) in enumerate(zip(ctx.saved_tensors, ctx.computed))
    ]


def _loss_setup(ctx, output, reduction: str, computed: tuple[bool, ...]) -> None:
    ctx.set_materialize_grads(False)  # the gradient outputs get no gradient: skip their zero fill
    ctx.reduction = reduction
    ctx.computed = computed
    ctx.mark_non_differentiable(*output[1:])
    ctx.save_for_backward(*output[1:])


def _validate_rows(name_x: str, x: Tensor, name_y: str, y: Tensor) -> None:
    if _matching_pair(x, y):
        return
    _check_float_tensor(name_x, x)
    _check_float_tensor(name_y, y)
    _check_same_kind(name_y, y, name_x, x)
    _check_same_shape(name_y, y, name_x, x)


def _rows_and_cols(t: Tensor) -> tuple[int, int]:
    rows = t.shape[0]
    return rows, (t.numel() // rows if rows else 0)


# kl_divergence -----------------------------------------------------------------------------


def _validate_kl(mu, logvar, reduction) -> None:
    _validate_rows("mu", mu, "logvar", logvar)
    _check_batched("mu", mu)
    _check_reduction(reduction)


def _kl_divergence_impl(
    mu: Tensor, logvar: Tensor, reduction: str, compute_grad: bool
) -> tuple[Tensor, Tensor, Tensor]:
    _validate_kl(mu, logvar, reduction)
    mu, logvar = mu.contiguous(), logvar.contiguous()
    rows, cols = _rows_and_cols(mu)
    loss, g_mu, g_logvar, _, _ = _run_fused_loss(
        term_a="kl", x_a=mu, y_a=logvar, rows=rows, cols_a=cols, reduction=reduction,
        grad_x_a=compute_grad, grad_y_a=compute_grad,
    )
    return loss, g_mu, g_logvar


def _kl_divergence_fake(mu, logvar, reduction, compute_grad):
    _validate_kl(mu, logvar, reduction)
    loss = mu.new_empty((mu.shape[0],) if reduction == "none" else ())
    grad_shape = mu.shape if compute_grad else _NO_GRAD
    return loss, mu.new_empty(grad_shape), mu.new_empty(grad_shape)


def _kl_setup(ctx, inputs, output):
    _loss_setup(ctx, output, inputs[2], (inputs[3], inputs[3]))


def _kl_grad(ctx, grad_loss, *_unused):
    return *_scaled_grads(ctx, grad_loss, per_row=True), None, None


_KL_DIVERGENCE = _define("kl_divergence", _kl_divergence_impl, _kl_divergence_fake, _kl_setup, _kl_grad)


# binary_cross_entropy and binary_cross_entropy_with_logits -----------------------------------


def _validate_bce(x, target, reduction, x_name) -> None:
    _validate_rows(x_name, x, "target", target)
    _check_reduction(reduction)


def _bce(term: str, x: Tensor, target: Tensor, reduction: str, grad_x: bool, grad_target: bool):
    x, target = x.contiguous(), target.contiguous()
    n = x.numel()
    loss, gx, gt, _, _ = _run_fused_loss(
        term_a=term, x_a=x, y_a=target, rows=-(-n // _FLAT_ROW), cols_a=_FLAT_ROW,
        reduction=reduction, grad_x_a=grad_x, grad_y_a=grad_target, elementwise=True,
    )
    return loss, gx, gt


def _bce_fake(x, target, reduction, grad_x, grad_target):
    loss = x.new_empty(x.shape if reduction == "none" else ())
    return (loss, x.new_empty(x.shape if grad_x else _NO_GRAD),
            x.new_empty(x.shape if grad_target else _NO_GRAD))


def _bce_setup(ctx, inputs, output):
    _loss_setup(ctx, output, inputs[2], (inputs[3], inputs[4]))


def _bce_grad(ctx, grad_loss, *_unused):
    return *_scaled_grads(ctx, grad_loss, per_row=False), None, None, None


def _binary_cross_entropy_impl(
    probs: Tensor, target: Tensor, reduction: str, grad_probs: bool, grad_target: bool
) -> tuple[Tensor, Tensor, Tensor]:
    _validate_bce(probs, target, reduction, "probs")
    return _bce("bce", probs, target, reduction, grad_probs, grad_target)


def _binary_cross_entropy_fake(probs, target, reduction, grad_probs, grad_target):
    _validate_bce(probs, target, reduction, "probs")
    return _bce_fake(probs, target, reduction, grad_probs, grad_target)


_BINARY_CROSS_ENTROPY = _define("binary_cross_entropy", _binary_cross_entropy_impl,
                                _binary_cross_entropy_fake, _bce_setup, _bce_grad)


def _binary_cross_entropy_with_logits_impl(
    logits: Tensor, target: Tensor, reduction: str, grad_logits: bool, grad_target: bool
) -> tuple[Tensor, Tensor, Tensor]:
    _validate_bce(logits, target, reduction, "logits")
    return _bce("bce_logits", logits, target, reduction, grad_logits, grad_target)


def _binary_cross_entropy_with_logits_fake(logits, target, reduction, grad_logits, grad_target):
    _validate_bce(logits, target, reduction, "logits")
    return _bce_fake(logits, target, reduction, grad_logits, grad_target)


_BINARY_CROSS_ENTROPY_WITH_LOGITS = _define(
    "binary_cross_entropy_with_logits", _binary_cross_entropy_with_logits_impl,
    _binary_cross_entropy_with_logits_fake, _bce_setup, _bce_grad)


# vae_loss ------------------------------------------------------------------------------------


def _validate_vae(recon, target, mu, logvar, beta, reduction) -> None:
    _validate_rows("recon", recon, "target", target)
    _validate_rows("mu", mu, "logvar", logvar)
    _check_same_kind("mu", mu, "recon", recon)
    _check_batched("recon", recon)
    _check_batched("mu", mu)
    if mu.shape[0] != recon.shape[0]:
        raise ValueError(f"mu has batch size {mu.shape[0]} but recon has {recon.shape[0]}")
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not math.isfinite(beta):
        raise ValueError(f"beta must be a finite float, got {beta!r}")
    _check_reduction(reduction)


def _vae_loss_impl(
    recon: Tensor, target: Tensor, mu: Tensor, logvar: Tensor, beta: float, from_logits: bool,
    reduction: str, grad_inputs: bool, grad_target: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    _validate_vae(recon, target, mu, logvar, beta, reduction)
    recon, target, mu, logvar = (t.contiguous() for t in (recon, target, mu, logvar))
    rows, cols_a = _rows_and_cols(recon)
    loss, g_recon, g_target, g_mu, g_logvar = _run_fused_loss(
        term_a="bce_logits" if from_logits else "bce", x_a=recon, y_a=target, rows=rows,
        cols_a=cols_a, reduction=reduction, grad_x_a=grad_inputs, grad_y_a=grad_target, term_b="kl",
        x_b=mu, y_b=logvar, cols_b=_rows_and_cols(mu)[1], weight_b=float(beta), grad_b=grad_inputs,
    )
    return loss, g_recon, g_target, g_mu, g_logvar


def _vae_loss_fake(recon, target, mu, logvar, beta, from_logits, reduction, grad_inputs, grad_target):
    _validate_vae(recon, target, mu, logvar, beta, reduction)
    loss = recon.new_empty((recon.shape[0],) if reduction == "none" else ())
    grad = lambda t, wanted: t.new_empty(t.shape if wanted else _NO_GRAD)  # noqa: E731
    return (loss, grad(recon, grad_inputs), grad(target, grad_target), grad(mu, grad_inputs),
            grad(logvar, grad_inputs))


def _vae_setup(ctx, inputs, output):
    grad_inputs, grad_target = inputs[7], inputs[8]
    _loss_setup(ctx, output, inputs[6], (grad_inputs, grad_target, grad_inputs, grad_inputs))


def _vae_grad(ctx, grad_loss, *_unused):
    return *_scaled_grads(ctx, grad_loss, per_row=True), None, None, None, None, None


_VAE_LOSS = _define("vae_loss", _vae_loss_impl, _vae_loss_fake, _vae_setup, _vae_grad)


# --------------------------------------------------------------------------------------------
# Public functions


def _wants_grad(*tensors: Tensor) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def _draw_seed_offset(
    device: torch.device, seed: Optional[int], offset: int, generator: Optional[torch.Generator]
) -> Tensor:
    if seed is None:
        # Seed and offset drawn from torch's generator for this device.
        return torch.randint(-(2**63), 2**63 - 1, (2,), dtype=torch.int64, device=device,
                             generator=generator)
    for name, v in (("seed", seed), ("offset", offset)):
        if isinstance(v, bool) or not isinstance(v, int) or not (-(2**63) <= v < 2**64):
            raise ValueError(f"{name} must be an integer in [-2**63, 2**64), got {v!r}")
    as_int64 = lambda v: v - 2**64 if v >= 2**63 else v  # noqa: E731  (same 64 bits)
    return torch.tensor([as_int64(seed), as_int64(offset)], dtype=torch.int64, device=device)


def reparameterise(
    mu: Tensor, logvar: Tensor, *, seed: Optional[int] = None, offset: int = 0,
    generator: Optional[torch.Generator] = None,
) -> Tensor:
    """z = mu + eps * exp(logvar / 2), eps ~ N(0, I) drawn in the kernel (Philox4x32-10).

    With ``seed`` (and ``offset``) the noise is fixed: the same seed gives the same eps on CPU and
    CUDA. Otherwise they are drawn from torch's generator for the device (or ``generator``).
    """
    _check_float_tensor("mu", mu)
    _check_float_tensor("logvar", logvar)
    return _call(_REPARAMETERISE, mu, logvar, _draw_seed_offset(mu.device, seed, offset, generator))


def dropout_corrupt(
    x: Tensor, p: float = 0.5, *, seed: Optional[int] = None, offset: int = 0,
    generator: Optional[torch.Generator] = None,
) -> tuple[Tensor, Tensor]:
    """The practicum's corruption ``x * Dropout(p)(ones)``: returns (x * m, keep_mask).

    m is 1/(1-p) where kept and 0 where dropped (so x*m is x*2 or 0 at p = 0.5, like the seed);
    keep_mask is True where the pixel was kept, for inpainting exactly the dropped pixels.
    """
    _check_float_tensor("x", x)
    p = _check_probability(p)
    return _call(_DROPOUT_CORRUPT, x, p, _draw_seed_offset(x.device, seed, offset, generator))


def kl_divergence(mu: Tensor, logvar: Tensor, reduction: str = "sum") -> Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) = 0.5 * sum(exp(logvar) - logvar - 1 + mu^2).

    Rows are samples (dim 0). reduction: 'sum' over everything, 'none' one value per sample,
    'mean' the mean of those per-sample values.
    """
    _check_float_tensor("mu", mu)
    _check_float_tensor("logvar", logvar)
    return _call(_KL_DIVERGENCE, mu, logvar, reduction, _wants_grad(mu, logvar))[0]


def binary_cross_entropy(probs: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    """Matches torch.nn.functional.binary_cross_entropy (logs clamped at -100) and its gradients.

    Unlike torch it does not scan the input for values outside [0, 1] (that would cost a device
    synchronisation): such inputs give NaN.
    """
    _check_float_tensor("probs", probs)
    _check_float_tensor("target", target)
    return _call(_BINARY_CROSS_ENTROPY, probs, target, reduction, _wants_grad(probs),
                 _wants_grad(target))[0]


def binary_cross_entropy_with_logits(logits: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    """Numerically stable BCE on logits, matching torch.nn.functional.binary_cross_entropy_with_logits."""
    _check_float_tensor("logits", logits)
    _check_float_tensor("target", target)
    return _call(_BINARY_CROSS_ENTROPY_WITH_LOGITS, logits, target, reduction, _wants_grad(logits),
                 _wants_grad(target))[0]


def vae_loss(
    recon: Tensor, target: Tensor, mu: Tensor, logvar: Tensor, beta: float = 1.0,
    from_logits: bool = False, reduction: str = "sum",
) -> Tensor:
    """The VAE free energy BCE(recon, target, sum) + beta * KL(mu, logvar), in one kernel launch.

    recon are probabilities (or logits with ``from_logits=True``); dim 0 is the batch. reduction:
    'sum' (the practicum's), 'none' per sample, 'mean' the mean over samples.
    """
    for name, t in (("recon", recon), ("target", target), ("mu", mu), ("logvar", logvar)):
        _check_float_tensor(name, t)
    return _call(_VAE_LOSS, recon, target, mu, logvar, beta, bool(from_logits), reduction,
                 _wants_grad(recon, mu, logvar), _wants_grad(target))[0]
