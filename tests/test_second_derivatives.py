"""Second derivatives through every op equal plain PyTorch's (genfast.reference) in float64:
Hessian-vector products, and a gradient penalty (a loss on the gradient, then backward), through
both call routes. (gradgradcheck of each op is in its own test file.)"""

import contextlib

import pytest
import torch

import genfast
from genfast import reference
from conftest import PassThrough

REDUCTIONS = ["sum", "mean", "none"]


def _reduced(out: torch.Tensor) -> torch.Tensor:
    """A scalar from any output, weighting its elements unequally (a plain sum hides scaling bugs)."""
    weights = torch.linspace(0.5, 1.5, out.numel(), dtype=out.dtype).reshape(out.shape)
    return (out * weights).sum()


def _cases():
    """name -> (inputs, genfast function, plain PyTorch function), each function of the inputs."""
    g = torch.Generator().manual_seed(3)
    probs = 0.05 + 0.9 * torch.rand(4, 6, generator=g, dtype=torch.float64)
    logits = 2 * torch.randn(4, 6, generator=g, dtype=torch.float64)
    target = torch.rand(4, 6, generator=g, dtype=torch.float64)
    mu = torch.randn(4, 3, generator=g, dtype=torch.float64)
    logvar = 0.5 * torch.randn(4, 3, generator=g, dtype=torch.float64)
    x = torch.randn(4, 6, generator=g, dtype=torch.float64)
    zeros = torch.zeros_like(mu)
    eps = genfast.reparameterise(zeros, zeros, seed=11)  # with mu = 0, logvar = 0, z is eps
    keep = genfast.dropout_corrupt(x, 0.3, seed=12)[1]
    cases = {
        "reparameterise": ((mu, logvar), lambda m, v: _reduced(genfast.reparameterise(m, v, seed=11) ** 2),
                           lambda m, v: _reduced(reference.reparameterise(m, v, eps=eps) ** 2)),
        "dropout_corrupt": ((x,), lambda t: _reduced(genfast.dropout_corrupt(t, 0.3, seed=12)[0] ** 2),
                            lambda t: _reduced(reference.dropout_corrupt(t, 0.3, keep_mask=keep)[0] ** 2)),
    }
    for r in REDUCTIONS:
        cases[f"kl_divergence-{r}"] = (
            (mu, logvar), lambda m, v, r=r: _reduced(genfast.kl_divergence(m, v, r)),
            lambda m, v, r=r: _reduced(reference.kl_divergence(m, v, r)))
        cases[f"binary_cross_entropy-{r}"] = (
            (probs, target), lambda p, t, r=r: _reduced(genfast.binary_cross_entropy(p, t, r)),
            lambda p, t, r=r: _reduced(reference.binary_cross_entropy(p, t, r)))
        cases[f"binary_cross_entropy_with_logits-{r}"] = (
            (logits, target), lambda z, t, r=r: _reduced(genfast.binary_cross_entropy_with_logits(z, t, r)),
            lambda z, t, r=r: _reduced(reference.binary_cross_entropy_with_logits(z, t, r)))
        for from_logits, recon in ((False, probs), (True, logits)):
            cases[f"vae_loss-{'logits' if from_logits else 'probs'}-{r}"] = (
                (recon, target, mu, logvar),
                lambda a, t, m, v, r=r, fl=from_logits: _reduced(genfast.vae_loss(a, t, m, v, 0.7, fl, r)),
                lambda a, t, m, v, r=r, fl=from_logits: _reduced(reference.vae_loss(a, t, m, v, 0.7, fl, r)))
    return cases


CASES = _cases()
ROUTES = {"eager": contextlib.nullcontext, "dispatcher": PassThrough}


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("name", CASES)
def test_hessian_vector_product_matches_pytorch(name, route):
    inputs, fused, plain = CASES[name]
    vectors = tuple(torch.randn(t.shape, generator=torch.Generator().manual_seed(5), dtype=t.dtype) for t in inputs)
    with ROUTES[route]():
        _, got = torch.autograd.functional.hvp(fused, inputs, vectors)
    _, want = torch.autograd.functional.hvp(plain, inputs, vectors)
    for g, w in zip(got, want):
        assert w.abs().max() > 0  # not a vacuous comparison of zeros
        torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", CASES)
def test_gradient_penalty_matches_pytorch(name):
    """loss + |d loss / d inputs|^2, differentiated again: a WGAN-GP-style penalty."""
    inputs, fused, plain = CASES[name]
    results = []
    for fn in (fused, plain):
        leaves = [t.clone().requires_grad_() for t in inputs]
        loss = fn(*leaves)
        grads = torch.autograd.grad(loss, leaves, create_graph=True)
        (loss + sum((g**2).sum() for g in grads)).backward()
        results.append([t.grad for t in leaves])
    for got, want in zip(*results):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)


def test_kl_hessian_is_the_identity_in_mu():
    """The issue's example: d^2 KL / d mu^2 = I, so hvp(v) = v (it was 0)."""
    mu, logvar, v = torch.randn(3, 4, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64)
    _, hv = torch.autograd.functional.hvp(lambda m: genfast.kl_divergence(m, logvar), mu, v)
    torch.testing.assert_close(hv, v)


def test_third_derivative_of_reparameterise():
    """The backward kernels are differentiable ops too, to any order."""
    mu, logvar = torch.randn(5, dtype=torch.float64), torch.randn(5, dtype=torch.float64, requires_grad=True)
    eps = genfast.reparameterise(torch.zeros(5, dtype=torch.float64), torch.zeros(5, dtype=torch.float64), seed=2)
    derivatives = []
    for z in (genfast.reparameterise(mu, logvar, seed=2), reference.reparameterise(mu, logvar, eps=eps)):
        d1 = torch.autograd.grad(z.sum(), logvar, create_graph=True)[0]
        d2 = torch.autograd.grad(d1.sum(), logvar, create_graph=True)[0]
        derivatives.append(torch.autograd.grad(d2.sum(), logvar)[0])
    torch.testing.assert_close(*derivatives)
