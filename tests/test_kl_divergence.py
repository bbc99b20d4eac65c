import pytest
import torch

import genfast
from genfast import _C, reference
from conftest import PRIME_BATCH, as64, assert_close, grad_output

# (2, 3 * 8192 + 5): rows wider than the CPU kernel's scratch, summed in pieces.
SHAPES = [(1, 1), (3, 20), (PRIME_BATCH, 20), (2, 4097), (2, 3 * 8192 + 5), (4, 3, 5), (0, 20)]


def _inputs(shape, device, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    mu = torch.randn(shape, generator=g).to(device, dtype).requires_grad_()
    logvar = (0.7 * torch.randn(shape, generator=g)).to(device, dtype).requires_grad_()
    return mu, logvar


@pytest.mark.parametrize("reduction", ["sum", "mean", "none"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_matches_reference(device, dtype, reduction, shape):
    mu, logvar = _inputs(shape, device, dtype)
    mu64, logvar64 = as64(mu, logvar)
    out = genfast.kl_divergence(mu, logvar, reduction)
    ref = reference.kl_divergence(mu64, logvar64, reduction)
    assert out.dtype == dtype and out.shape == ref.shape and out.device.type == device
    assert_close(out, ref, dtype)

    grad_out = grad_output(ref.shape, dtype)
    out.backward(grad_out.to(device, dtype))
    ref.backward(grad_out)
    assert_close(mu.grad, mu64.grad, dtype, roundings=2)
    assert_close(logvar.grad, logvar64.grad, dtype, roundings=2)


def test_empty_batch_mean_is_nan_like_torch():
    mu = torch.zeros(0, 5)
    assert torch.isnan(genfast.kl_divergence(mu, mu, "mean"))
    assert genfast.kl_divergence(mu, mu, "sum").item() == 0.0


@pytest.mark.parametrize("reduction", ["sum", "mean", "none"])
def test_gradcheck(reduction):
    mu, logvar = (t.detach().requires_grad_() for t in _inputs((5, 7), "cpu", torch.float64))
    assert torch.autograd.gradcheck(lambda m, v: genfast.kl_divergence(m, v, reduction), (mu, logvar))
    assert torch.autograd.gradgradcheck(lambda m, v: genfast.kl_divergence(m, v, reduction), (mu, logvar))


def test_opcheck(device):
    mu, logvar = _inputs((6, 4), device, torch.float32)
    for reduction in ("sum", "none"):
        torch.library.opcheck(torch.ops.genfast.kl_divergence.default, (mu, logvar, reduction, True))


def test_nan_and_inf_propagate(device):
    mu = torch.tensor([[0.0, float("nan")], [1.0, 2.0], [0.5, 0.5]], device=device)
    logvar = torch.tensor([[0.0, 0.0], [float("inf"), 0.0], [float("-inf"), 0.0]], device=device)
    out = genfast.kl_divergence(mu, logvar, "none")
    ref = reference.kl_divergence(mu.double(), logvar.double(), "none")
    torch.testing.assert_close(out.double(), ref, equal_nan=True)


def test_noncontiguous_input(device):
    mu, logvar = _inputs((8, 10), device, torch.float32)
    mu_t, logvar_t = mu.detach().t(), logvar.detach().t()
    assert not mu_t.is_contiguous()
    assert_close(genfast.kl_divergence(mu_t, logvar_t, "none"),
                 reference.kl_divergence(mu_t.double(), logvar_t.double(), "none"), torch.float32)


def test_gradients_flags_are_respected():
    """Without autograd the kernel does not compute gradients; forcing backward then is an error."""
    mu, logvar = _inputs((3, 4), "cpu", torch.float32)
    loss, g_mu, g_logvar = torch.ops.genfast.kl_divergence(mu, logvar, "sum", False)
    assert g_mu.numel() == 0 and g_logvar.numel() == 0
    with pytest.raises(RuntimeError, match="without that input's gradient"):
        loss.backward()


def test_cpu_scratch_stays_bounded():
    """The CPU kernel's per-thread scratch has a fixed size, whatever the rows it has seen (it used
    to keep the widest row's size forever: 512 MB after a (2, 2**25) float64 loss)."""
    wide = torch.rand(2, 2**21, dtype=torch.float64, requires_grad=True)
    genfast.kl_divergence(wide, wide, "none").sum().backward()
    genfast.vae_loss(wide, wide.detach(), wide, wide, reduction="none")
    held = _C.fused_loss_scratch_bytes()
    per_thread = 2 * 8192 * 8
    assert per_thread <= held <= 16 * per_thread, held  # a few threads' scratch, not a 16 MB row
