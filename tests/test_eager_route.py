"""The public functions reach the kernels through the custom op, or in plain eager mode through
an autograd.Function around the same implementation (genfast/ops/_registration.py): both routes
give the same bits."""

import torch

import genfast
from genfast.ops import _registration
from conftest import PassThrough


def _run_all():
    g = torch.Generator().manual_seed(1)
    probs = torch.rand(5, 12, generator=g).requires_grad_()
    logits = torch.randn(5, 12, generator=g).requires_grad_()
    target = torch.rand(5, 12, generator=g)
    mu = torch.randn(5, 3, generator=g).requires_grad_()
    logvar = torch.randn(5, 3, generator=g).requires_grad_()
    outputs = [
        genfast.reparameterise(mu, logvar, seed=1),
        genfast.dropout_corrupt(logits, 0.3, seed=2)[0],
        genfast.kl_divergence(mu, logvar, "none"),
        genfast.binary_cross_entropy(probs, target, "none"),
        genfast.binary_cross_entropy_with_logits(logits, target),
        genfast.vae_loss(probs, target, mu, logvar, 0.5),
    ]
    leaves = (probs, logits, mu, logvar)
    grads = [torch.autograd.grad(out.sum(), leaves, allow_unused=True) for out in outputs]
    return outputs, grads


def test_both_routes_agree():
    fast_outputs, fast_grads = _run_all()
    assert fast_outputs[-1].grad_fn.name() == "GenfastVaeLossBackward"  # the autograd.Function
    with PassThrough() as mode:
        op_outputs, op_grads = _run_all()
    # (The backward passes run in autograd's engine, outside the mode.)
    assert mode.genfast_ops == {"reparameterise", "dropout_corrupt", "kl_divergence", "binary_cross_entropy",
                                "binary_cross_entropy_with_logits", "vae_loss"}
    assert "genfast_vae_loss" in op_outputs[-1].grad_fn.name()  # the custom op's autograd
    for a, b in zip(fast_outputs, op_outputs):
        assert torch.equal(a, b)
    for ga, gb in zip(fast_grads, op_grads):
        for a, b in zip(ga, gb):
            assert (a is None and b is None) or torch.equal(a, b)


def test_fast_path_only_in_plain_eager():
    t = torch.ones(2)
    assert _registration.plain_eager([t])
    from torch._subclasses.fake_tensor import FakeTensorMode
    with FakeTensorMode():
        assert not _registration.plain_eager([torch.ones(2)])
    with PassThrough():
        assert not _registration.plain_eager([t])
    assert not _registration.plain_eager([torch.nn.Parameter(t)])  # a subclass takes the dispatcher
    assert not _registration.plain_eager([t.to("meta")])
    assert not torch.func.vmap(lambda x: torch.tensor(_registration.plain_eager([x])))(torch.ones(3, 2)).any()

