"""The fused losses: kl_divergence, binary_cross_entropy, binary_cross_entropy_with_logits and
vae_loss, four custom ops over one kernel, ``_C.fused_loss`` (csrc/cpu/fused_loss.cpp,
csrc/cuda/fused_loss.cu), whose per-element math is KlTerm, BceTerm and BceLogitsTerm in
csrc/genfast_math.h.

Each op computes the input gradients in the same pass as the loss when asked to (its grad_* flags,
set by the public function when autograd needs them); its backward then only scales the saved
gradients by grad_output, unless it must build a graph (see Autograd below).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .. import _C
from . import _checks as check
from ._registration import DTYPES, REDUCTIONS, call, define, launch, new_output, wants_grad


def _segment(segment, term, x: Tensor, y: Tensor, cols: int, grad_x: Optional[Tensor],
             grad_y: Optional[Tensor], weight: float = 1.0) -> None:
    """Describes one segment of a _C.LossProblem (fields left unset keep kernels.h's defaults)."""
    segment.term, segment.cols, segment.n, segment.x, segment.y = term, cols, x.numel(), x.data_ptr(), y.data_ptr()
    if grad_x is not None:
        segment.grad_x = grad_x.data_ptr()
    if grad_y is not None:
        segment.grad_y = grad_y.data_ptr()
    if weight != 1.0:
        segment.weight = weight


def _fused_loss(term_a, x_a, y_a, reduction: str, grad_x_a: bool, grad_y_a: bool,
                per_element: bool = False, b: Optional[tuple] = None):
    """Runs _C.fused_loss on contiguous inputs: segment A is (term_a, x_a, y_a) with rows along
    dim 0 (per_element: flat, in rows of _C.FLAT_ROW_ELEMENTS); segment B, when given, is
    (term, x, y, weight, grad wanted) on the same rows. Returns (loss, grad_x_a, grad_y_a[,
    grad_x_b, grad_y_b]), a gradient not asked for as an empty placeholder."""
    problem = _C.LossProblem()
    problem.dtype, problem.reduction, problem.per_element = DTYPES[x_a.dtype], REDUCTIONS[reduction], per_element
    if per_element:
        cols = _C.FLAT_ROW_ELEMENTS
        rows = -(-x_a.numel() // cols)
    else:
        rows = x_a.shape[0]
        cols = x_a.numel() // rows if rows else 0
    problem.rows = rows
    if reduction == "none":
        loss = new_output(x_a) if per_element else new_output(x_a, (rows,))
    else:
        loss = new_output(x_a, ())
    problem.out = loss.data_ptr()
    gx_a, gy_a = new_output(x_a) if grad_x_a else None, new_output(y_a) if grad_y_a else None
    _segment(problem.a, term_a, x_a, y_a, cols, gx_a, gy_a)
    grads = [gx_a, gy_a]
    if b is not None:
        term_b, x_b, y_b, weight_b, grad_b = b
        gx_b, gy_b = (new_output(x_b), new_output(y_b)) if grad_b else (None, None)
        _segment(problem.b, term_b, x_b, y_b, x_b.numel() // rows if rows else 0, gx_b, gy_b, weight_b)
        grads += [gx_b, gy_b]
    device, stream, threads = launch(x_a)
    if device >= 0 and reduction != "none":
        workspace = x_a.new_zeros(_C.LossProblem.workspace_bytes(rows), dtype=torch.uint8)
        problem.workspace = workspace.data_ptr()
    _C.fused_loss(problem, device, stream, threads)
    # A custom op returns tensors: an empty placeholder for each gradient not asked for.
    return (loss, *(g if g is not None else x_a.new_empty(0) for g in grads))


# Autograd. A plain backward scales the gradients the forward pass saved by grad_output. Those are
# constants to autograd, so a backward that builds a graph (create_graph=True: higher derivatives,
# gradient penalties) recomputes the gradients from the saved inputs with torch ops instead,
# which autograd differentiates further.


def _setup(ctx, inputs: tuple, output: tuple, segments: tuple, reduction: str, per_row: bool,
           computed: tuple[bool, ...]) -> None:
    """segments: (term, weight) of each segment, whose (x, y) are the next two tensor inputs."""
    ctx.set_materialize_grads(False)  # the gradient outputs get no gradient: skip their zero fill
    ctx.segments, ctx.reduction, ctx.per_row, ctx.computed = segments, reduction, per_row, computed
    ctx.mark_non_differentiable(*output[1:])
    ctx.save_for_backward(*inputs[:len(computed)], *output[1:])


def _backward(ctx, grad_loss: Optional[Tensor]) -> list[Optional[Tensor]]:
    """Gradients for the tensor inputs of a fused loss op, in order (None where not needed, and
    all None for an undefined grad_loss: gradients are not materialised)."""
    if grad_loss is None:
        return [None] * len(ctx.computed)
    n_inputs = len(ctx.computed)
    inputs, saved_grads = ctx.saved_tensors[:n_inputs], ctx.saved_tensors[n_inputs:]
    if torch.is_grad_enabled():
        grads = _differentiable_grads(ctx, inputs, grad_loss)
        return [g if ctx.needs_input_grad[i] else None for i, g in enumerate(grads)]
    return [_scaled(ctx, saved, computed, grad_loss) if ctx.needs_input_grad[i] else None
            for i, (saved, computed) in enumerate(zip(saved_grads, ctx.computed))]


def _scaled(ctx, saved: Tensor, computed: bool, grad_out: Tensor) -> Tensor:
    if not computed:
        raise RuntimeError(
            "genfast: this loss was computed without that input's gradient (its grad_* flag was "
            "False); call the public genfast function, which sets the flags when autograd needs them"
        )
    if ctx.reduction == "none" and ctx.per_row:
        grad_out = grad_out.reshape(grad_out.shape + (1,) * (saved.dim() - 1))
    elif type(grad_out) is Tensor and grad_out.dim() == 0 and grad_out.is_cpu and grad_out.item() == 1.0:
        # loss.backward() on CPU: the saved gradient is the answer. Returning it is safe: while
        # ctx holds it, autograd neither steals it as a leaf's .grad (it copies) nor adds into it.
        # (Not on CUDA, where .item() would synchronise; not while tracing, where it is symbolic.)
        return saved
    return saved * grad_out


def _differentiable_grads(ctx, inputs: tuple[Tensor, ...], grad_loss: Tensor) -> list[Tensor]:
    count = inputs[0].shape[0] if ctx.per_row else inputs[0].numel()
    if ctx.reduction == "mean" and count > 0:
        grad_loss = grad_loss / count
    grads = []
    for (term, weight), x, y in zip(ctx.segments, inputs[0::2], inputs[1::2]):
        scale = weight * grad_loss.reshape(grad_loss.shape + (1,) * (x.dim() - grad_loss.dim()))
        grads += [d * scale for d in _term_derivatives(term, x, y)]
    return grads


def _term_derivatives(term, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """d term / dx and d term / dy per element in torch ops: csrc/genfast_math.h's grad_x and
    grad_y (BCE: torch's log clamp at -100 and denominator floor at 1e-12, NaN where a probability
    or target is outside [0, 1])."""
    if term == _C.LossTerm.kl:
        return x, 0.5 * (torch.exp(y) - 1)
    if term == _C.LossTerm.bce_logits:
        return torch.sigmoid(x) - y, -x
    d_x = (x - y) / ((1 - x) * x).clamp_min(1e-12)
    d_y = torch.log1p(-x).clamp_min(-100) - torch.log(x).clamp_min(-100)
    outside = ~((x >= 0) & (x <= 1) & (y >= 0) & (y <= 1))  # NaN included, as BceTerm::in_domain
    return d_x.masked_fill(outside, float("nan")), d_y.masked_fill(outside, float("nan"))


def _grad_like(t: Tensor, wanted: bool) -> Tensor:
    return t.new_empty(t.shape if wanted else (0,))


# kl_divergence -----------------------------------------------------------------------------


def kl_divergence(mu: Tensor, logvar: Tensor, reduction: str = "sum") -> Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) = 0.5 * sum(exp(logvar) - logvar - 1 + mu^2).

    Rows are samples (dim 0). reduction: 'sum' over everything, 'none' one value per sample,
    'mean' the mean of those per-sample values.
    """
    return call(_KL_DIVERGENCE, mu, logvar, reduction, wants_grad(mu, logvar))[0]


def _check_kl(mu, logvar, reduction) -> None:
    check.matching_pair("mu", mu, "logvar", logvar)
    check.batched("mu", mu)
    check.reduction(reduction)


def _kl_divergence(mu: Tensor, logvar: Tensor, reduction: str, compute_grad: bool
                   ) -> tuple[Tensor, Tensor, Tensor]:
    _check_kl(mu, logvar, reduction)
    loss, g_mu, g_logvar = _fused_loss(_C.LossTerm.kl, mu.contiguous(), logvar.contiguous(), reduction,
                                       compute_grad, compute_grad)
    return loss, g_mu, g_logvar


def _kl_divergence_fake(mu, logvar, reduction, compute_grad):
    _check_kl(mu, logvar, reduction)
    loss = mu.new_empty((mu.shape[0],) if reduction == "none" else ())
    return loss, _grad_like(mu, compute_grad), _grad_like(logvar, compute_grad)


def _kl_divergence_setup(ctx, inputs, output):
    compute_grad = inputs[3]
    _setup(ctx, inputs, output, ((_C.LossTerm.kl, 1.0),), inputs[2], True, (compute_grad, compute_grad))


def _kl_divergence_backward(ctx, grad_loss, *_unused):
    return *_backward(ctx, grad_loss), None, None


_KL_DIVERGENCE = define("kl_divergence", _kl_divergence, _kl_divergence_fake, _kl_divergence_setup,
                        _kl_divergence_backward)


# binary_cross_entropy and binary_cross_entropy_with_logits: elementwise, so flat rows ---------


def binary_cross_entropy(probs: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    """Matches torch.nn.functional.binary_cross_entropy (logs clamped at -100) and its gradients.

    Where torch raises, for a probability or target outside [0, 1], genfast gives NaN: the loss
    (of that element, and so any reduction over it) and the gradients of that element are NaN.
    genfast does not scan the inputs first, which would cost a device synchronisation.
    """
    return call(_BINARY_CROSS_ENTROPY, probs, target, reduction, wants_grad(probs), wants_grad(target))[0]


def binary_cross_entropy_with_logits(logits: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    """Numerically stable BCE on logits, matching torch.nn.functional.binary_cross_entropy_with_logits
    (which, like genfast, accepts targets outside [0, 1] and computes the same formula for them)."""
    return call(_BINARY_CROSS_ENTROPY_WITH_LOGITS, logits, target, reduction, wants_grad(logits),
                wants_grad(target))[0]


def _check_bce(x_name, x, target, reduction) -> None:
    check.matching_pair(x_name, x, "target", target)
    check.reduction(reduction)


def _bce(term, x: Tensor, target: Tensor, reduction: str, grad_x: bool, grad_target: bool):
    return _fused_loss(term, x.contiguous(), target.contiguous(), reduction, grad_x, grad_target,
                       per_element=True)


def _bce_fake(x, reduction, grad_x, grad_target):
    loss = x.new_empty(x.shape if reduction == "none" else ())
    return loss, _grad_like(x, grad_x), _grad_like(x, grad_target)


def _bce_setup(ctx, inputs, output):
    _setup(ctx, inputs, output, ((_C.LossTerm.bce, 1.0),), inputs[2], False, (inputs[3], inputs[4]))


def _bce_logits_setup(ctx, inputs, output):
    _setup(ctx, inputs, output, ((_C.LossTerm.bce_logits, 1.0),), inputs[2], False, (inputs[3], inputs[4]))


def _bce_backward(ctx, grad_loss, *_unused):
    return *_backward(ctx, grad_loss), None, None, None


def _binary_cross_entropy(probs: Tensor, target: Tensor, reduction: str, grad_probs: bool,
                          grad_target: bool) -> tuple[Tensor, Tensor, Tensor]:
    _check_bce("probs", probs, target, reduction)
    return _bce(_C.LossTerm.bce, probs, target, reduction, grad_probs, grad_target)


def _binary_cross_entropy_fake(probs, target, reduction, grad_probs, grad_target):
    _check_bce("probs", probs, target, reduction)
    return _bce_fake(probs, reduction, grad_probs, grad_target)


def _binary_cross_entropy_with_logits(logits: Tensor, target: Tensor, reduction: str, grad_logits: bool,
                                      grad_target: bool) -> tuple[Tensor, Tensor, Tensor]:
    _check_bce("logits", logits, target, reduction)
    return _bce(_C.LossTerm.bce_logits, logits, target, reduction, grad_logits, grad_target)


def _binary_cross_entropy_with_logits_fake(logits, target, reduction, grad_logits, grad_target):
    _check_bce("logits", logits, target, reduction)
    return _bce_fake(logits, reduction, grad_logits, grad_target)


_BINARY_CROSS_ENTROPY = define("binary_cross_entropy", _binary_cross_entropy, _binary_cross_entropy_fake,
                               _bce_setup, _bce_backward)
_BINARY_CROSS_ENTROPY_WITH_LOGITS = define(
    "binary_cross_entropy_with_logits", _binary_cross_entropy_with_logits,
    _binary_cross_entropy_with_logits_fake, _bce_logits_setup, _bce_backward)


# vae_loss: BCE per sample (segment A) + beta * KL per sample (segment B), one launch -------------


def vae_loss(
    recon: Tensor, target: Tensor, mu: Tensor, logvar: Tensor, beta: float = 1.0,
    from_logits: bool = False, reduction: str = "sum",
) -> Tensor:
    """The VAE free energy BCE(recon, target, sum) + beta * KL(mu, logvar), in one kernel launch.

    recon are probabilities (or logits with ``from_logits=True``); dim 0 is the batch. reduction:
    'sum' (the practicum's), 'none' per sample, 'mean' the mean over samples. Out-of-range
    probabilities and targets give NaN as in :func:`binary_cross_entropy`.
    """
    return call(_VAE_LOSS, recon, target, mu, logvar, beta, bool(from_logits), reduction,
                wants_grad(recon, mu, logvar), wants_grad(target))[0]


def _check_vae(recon, target, mu, logvar, beta, reduction) -> None:
    check.matching_pair("recon", recon, "target", target)
    check.matching_pair("mu", mu, "logvar", logvar)
    check.same_kind("mu", mu, "recon", recon)
    check.batched("recon", recon)
    check.batched("mu", mu)
    if mu.shape[0] != recon.shape[0]:
        raise ValueError(f"mu has batch size {mu.shape[0]} but recon has {recon.shape[0]}")
    check.finite_float("beta", beta)
    check.reduction(reduction)


def _vae_loss(
    recon: Tensor, target: Tensor, mu: Tensor, logvar: Tensor, beta: float, from_logits: bool,
    reduction: str, grad_inputs: bool, grad_target: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    _check_vae(recon, target, mu, logvar, beta, reduction)
    kl = (_C.LossTerm.kl, mu.contiguous(), logvar.contiguous(), float(beta), grad_inputs)
    loss, g_recon, g_target, g_mu, g_logvar = _fused_loss(
        _C.LossTerm.bce_logits if from_logits else _C.LossTerm.bce, recon.contiguous(), target.contiguous(), reduction,
        grad_inputs, grad_target, b=kl)
    return loss, g_recon, g_target, g_mu, g_logvar


def _vae_loss_fake(recon, target, mu, logvar, beta, from_logits, reduction, grad_inputs, grad_target):
    _check_vae(recon, target, mu, logvar, beta, reduction)
    loss = recon.new_empty((recon.shape[0],) if reduction == "none" else ())
    return (loss, _grad_like(recon, grad_inputs), _grad_like(target, grad_target), _grad_like(mu, grad_inputs),
            _grad_like(logvar, grad_inputs))


def _vae_loss_setup(ctx, inputs, output):
    beta, from_logits, reduction, grad_inputs, grad_target = inputs[4:]
    segments = ((_C.LossTerm.bce_logits if from_logits else _C.LossTerm.bce, 1.0), (_C.LossTerm.kl, float(beta)))
    _setup(ctx, inputs, output, segments, reduction, True, (grad_inputs, grad_target, grad_inputs, grad_inputs))


def _vae_loss_backward(ctx, grad_loss, *_unused):
    return *_backward(ctx, grad_loss), None, None, None, None, None


_VAE_LOSS = define("vae_loss", _vae_loss, _vae_loss_fake, _vae_loss_setup, _vae_loss_backward)
