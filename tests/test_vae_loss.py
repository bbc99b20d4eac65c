import pytest
import torch

import genfast
from genfast import reference
from conftest import PRIME_BATCH, as64, assert_close, grad_output


def _inputs(batch, device, dtype, from_logits=False, pixels=784, latent=20, seed=0):
    """Mostly binary targets, one pixel in 7 soft, and reconstructions that are mostly right: the
    KL term is a few percent of the loss (so a wrong beta shows in float16 and bfloat16), and a
    float16 sum over 131 images stays finite."""
    g = torch.Generator().manual_seed(seed)
    target = (torch.rand(batch, pixels, generator=g) < 0.5).float()
    target[:, ::7] = torch.rand(batch, len(range(0, pixels, 7)), generator=g)
    error = 0.3 * torch.rand(batch, pixels, generator=g)
    recon = (target - error).abs()
    if from_logits:
        recon = torch.logit(recon.clamp(0.01, 0.99))
    mu = torch.randn(batch, latent, generator=g)
    logvar = 0.5 * torch.randn(batch, latent, generator=g)
    recon, mu, logvar = (t.to(device, dtype).requires_grad_() for t in (recon, mu, logvar))
    return recon, target.to(device, dtype), mu, logvar


@pytest.mark.parametrize("from_logits", [False, True], ids=["probs", "logits"])
@pytest.mark.parametrize("reduction", ["sum", "mean", "none"])
@pytest.mark.parametrize("batch", [1, 3, PRIME_BATCH])
def test_matches_reference(device, dtype, from_logits, reduction, batch):
    beta = 0.7
    recon, target, mu, logvar = _inputs(batch, device, dtype, from_logits)
    r64, t64, mu64, lv64 = as64(recon, target, mu, logvar)
    out = genfast.vae_loss(recon, target, mu, logvar, beta, from_logits, reduction)
    ref = reference.vae_loss(r64, t64, mu64, lv64, beta, from_logits, reduction)
    assert out.dtype == dtype and out.shape == ref.shape
    assert_close(out, ref, dtype)

    grad_out = grad_output(ref.shape, dtype)
    out.backward(grad_out.to(device, dtype))
    ref.backward(grad_out)
    for got, want in ((recon, r64), (mu, mu64), (logvar, lv64)):
        assert_close(got.grad, want.grad, dtype, roundings=2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_rows_wider_than_the_cpu_scratch(device, dtype):
    """Rows of 3 * 8192 + 5 pixels and latents are summed (and differentiated) in pieces."""
    recon, target, mu, logvar = _inputs(3, device, dtype, pixels=3 * 8192 + 5, latent=3 * 8192 + 5)
    r64, t64, mu64, lv64 = as64(recon, target, mu, logvar)
    out = genfast.vae_loss(recon, target, mu, logvar, 0.7, reduction="none")
    ref = reference.vae_loss(r64, t64, mu64, lv64, 0.7, reduction="none")
    assert_close(out, ref, dtype)
    out.backward(torch.tensor([0.5, 1.0, 2.0], device=device, dtype=dtype))
    ref.backward(torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64))
    for got, want in ((recon, r64), (mu, mu64), (logvar, lv64)):
        assert_close(got.grad, want.grad, dtype)


def test_is_bce_sum_plus_beta_kl(device):
    recon, target, mu, logvar = _inputs(9, device, torch.float64)
    fused = genfast.vae_loss(recon, target, mu, logvar, beta=2.5)
    separate = (genfast.binary_cross_entropy(recon, target, "sum")
                + 2.5 * genfast.kl_divergence(mu, logvar, "sum"))
    torch.testing.assert_close(fused, separate)


def test_target_gradient(device):
    recon, target, mu, logvar = _inputs(4, device, torch.float64)
    target.requires_grad_()
    r64, t64, mu64, lv64 = as64(recon, target, mu, logvar)
    genfast.vae_loss(recon, target, mu, logvar).backward()
    reference.vae_loss(r64, t64, mu64, lv64).backward()
    torch.testing.assert_close(target.grad.cpu(), t64.grad)


def test_only_requested_gradients_are_computed():
    recon, target, mu, logvar = _inputs(3, "cpu", torch.float32)
    with torch.no_grad():
        genfast.vae_loss(recon, target, mu, logvar)  # no gradient buffers: must not fail
    out = torch.ops.genfast.vae_loss(recon, target, mu, logvar, 1.0, False, "sum", False, False)
    assert all(g.numel() == 0 for g in out[1:])


@pytest.mark.parametrize("from_logits", [False, True], ids=["probs", "logits"])
def test_gradcheck(from_logits):
    recon, target, mu, logvar = (t.detach() for t in _inputs(3, "cpu", torch.float64, from_logits, pixels=6, latent=2))
    if not from_logits:  # keep finite differences inside (0, 1), where the loss is defined
        recon, target = 0.05 + 0.9 * recon, 0.05 + 0.9 * target
    inputs = (recon.requires_grad_(), target.requires_grad_(), mu.requires_grad_(), logvar.requires_grad_())
    for reduction in ("sum", "mean", "none"):
        loss = lambda r, t, m, v: genfast.vae_loss(r, t, m, v, 0.5, from_logits, reduction)  # noqa: E731
        assert torch.autograd.gradcheck(loss, inputs)
        assert torch.autograd.gradgradcheck(loss, inputs)


def test_opcheck(device):
    recon, target, mu, logvar = _inputs(5, device, torch.float32, pixels=12, latent=3)
    for args in ((0.5, False, "sum"), (1.0, True, "none"), (1.0, False, "mean")):
        torch.library.opcheck(torch.ops.genfast.vae_loss.default,
                              (recon, target, mu, logvar, *args, True, False))


def test_module_form():
    recon, target, mu, logvar = _inputs(4, "cpu", torch.float32)
    loss = genfast.nn.VAELoss(beta=0.3)(recon, target, mu, logvar)
    torch.testing.assert_close(loss, genfast.vae_loss(recon, target, mu, logvar, 0.3))


@pytest.mark.parametrize("through_clone", [False, True])
def test_saved_gradient_survives_in_place_edits_of_grad(through_clone):
    """On CPU, loss.backward() hands back the gradient saved by the forward pass itself; editing
    .grad in place must not reach it (a second backward gives the same gradient)."""
    recon, target, mu, logvar = _inputs(3, "cpu", torch.float32)
    used = recon.clone() if through_clone else recon
    loss = genfast.vae_loss(used, target, mu, logvar)
    loss.backward(retain_graph=True)
    first = recon.grad.clone()
    recon.grad.zero_()
    loss.backward()
    assert torch.equal(recon.grad, first)
