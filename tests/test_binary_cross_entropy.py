import pytest
import torch
import torch.nn.functional as F

import genfast
from genfast import reference
from conftest import PRIME_BATCH, SIZES, as64, assert_close, grad_output

TINY = 1e-40  # a float32 denormal
SHAPES = [(n,) for n in SIZES] + [(PRIME_BATCH, 784), (2, 3, 5), (0,)]
OPS = {
    "probs": (genfast.binary_cross_entropy, reference.binary_cross_entropy),
    "logits": (genfast.binary_cross_entropy_with_logits, reference.binary_cross_entropy_with_logits),
}


def _inputs(kind, shape, device, dtype, seed=0, confident=False):
    """Soft targets among hard ones; confident: hard targets that x mostly agrees with, for a small
    loss (a float16 sum over 131 x 784 soft targets would overflow)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=g) if kind == "probs" else 4 * torch.randn(shape, generator=g)
    target = torch.rand(shape, generator=g)
    target.view(-1)[::3] = 1.0  # hard labels among soft ones
    target.view(-1)[1::5] = 0.0
    if confident:
        target = (x > (0.5 if kind == "probs" else 0.0)).float()
        target.view(-1)[::10] = 1 - target.view(-1)[::10]
    if kind == "probs" and dtype in (torch.float16, torch.bfloat16):
        x = x.clamp(1e-2, 1 - 1e-2)  # (p - t) / (p (1 - p)) overflows half precision near 0 and 1
    return x.to(device, dtype).requires_grad_(), target.to(device, dtype)


@pytest.mark.parametrize("kind", OPS)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_matches_reference(kind, device, dtype, reduction, shape):
    op, ref_op = OPS[kind]
    x, target = _inputs(kind, shape, device, dtype, confident=dtype == torch.float16 and reduction == "sum")
    x64, target64 = as64(x, target)
    out = op(x, target, reduction)
    ref = ref_op(x64, target64, reduction)
    assert out.dtype == dtype and out.shape == ref.shape
    assert_close(out, ref, dtype)

    grad_out = grad_output(ref.shape, dtype)
    out.backward(grad_out.to(device, dtype))
    ref.backward(grad_out)
    assert_close(x.grad, x64.grad, dtype, roundings=2)


@pytest.mark.parametrize("kind", OPS)
def test_target_gradient(kind, device):
    op, ref_op = OPS[kind]
    x, target = _inputs(kind, (5, 7), device, torch.float32)
    target.requires_grad_()
    x64, target64 = as64(x, target)
    out, ref = op(x, target, "sum"), ref_op(x64, target64, "sum")
    out.backward(torch.tensor(0.7, device=device))
    ref.backward(torch.tensor(0.7, dtype=torch.float64))
    assert_close(target.grad, target64.grad, torch.float32)
    assert_close(x.grad, x64.grad, torch.float32)


def test_edge_probabilities_match_torch(device):
    """0, 1, denormals and values next to 0 and 1, with the -100 log clamp and the 1e-12 floor."""
    p = torch.tensor([0.0, 1.0, TINY, 1e-30, 1e-7, 0.5, 1 - 6e-8, 0.9999, 0.0, 1.0, TINY])
    t = torch.tensor([0.0, 1.0, 0.0, 1.0, 0.3, 0.5, 0.0, 1.0, 1.0, 0.0, 1.0])
    p_dev = p.to(device).requires_grad_()
    p64 = p.detach().double().requires_grad_()
    out = genfast.binary_cross_entropy(p_dev, t.to(device), "none")
    ref = F.binary_cross_entropy(p64, t.double(), reduction="none")
    assert_close(out, ref, torch.float32)
    out.sum().backward()
    ref.sum().backward()
    assert_close(p_dev.grad, p64.grad, torch.float32)


def test_edge_logits_match_torch(device):
    x = torch.tensor([0.0, 1e-30, -1e-30, 30.0, -30.0, 100.0, -100.0, 89.0, -104.0, float("inf"),
                      float("-inf"), float("nan")])
    t = torch.tensor([0.5, 1.0, 0.0, 0.0, 1.0, 0.2, 0.7, 1.0, 0.0, 0.0, 1.0, 0.5])
    x_dev = x.to(device).requires_grad_()
    x64 = x.detach().double().requires_grad_()
    out = genfast.binary_cross_entropy_with_logits(x_dev, t.to(device), "none")
    ref = F.binary_cross_entropy_with_logits(x64, t.double(), reduction="none")
    assert_close(out, ref, torch.float32)
    out.sum().backward()
    ref.sum().backward()
    assert_close(x_dev.grad, x64.grad, torch.float32)


def test_out_of_range_probabilities_and_targets_give_nan(device):
    """Where torch raises (a probability or target outside [0, 1]), genfast's loss and both
    gradients are NaN for those elements, and finite for the others (it does not scan the inputs:
    that would cost a synchronisation)."""
    # The edges of the domain: -0.0 is inside it (torch accepts it), the float after 1 is not.
    above_one = torch.nextafter(torch.tensor(1.0), torch.tensor(2.0)).item()
    p = torch.tensor([0.3, 0.3, -0.1, 1.5, float("nan"), float("inf"), 0.4, 0.4, 0.4, 0.0, 1.0,
                      -0.0, 0.5, above_one, 0.5], device=device)
    t = torch.tensor([float("nan"), 0.5, 0.5, 0.5, 0.5, 0.5, -0.2, 1.2, float("-inf"), 0.0, 1.0,
                      0.5, -0.0, 0.5, above_one], device=device)
    bad = torch.tensor([True, False, True, True, True, True, True, True, True, False, False,
                        False, False, True, True], device=device)
    for i in range(len(p)):
        if bad[i] and p[i].isfinite() and t[i].isfinite():
            with pytest.raises(RuntimeError, match="should be between 0 and 1"):
                F.binary_cross_entropy(p[i:i + 1].double(), t[i:i + 1].double())
    p, t = p.clone().requires_grad_(), t.clone().requires_grad_()
    out = genfast.binary_cross_entropy(p, t, "none")
    out.backward(torch.ones_like(out))
    graph_grads = torch.autograd.grad(genfast.binary_cross_entropy(p, t, "sum"), (p, t), create_graph=True)
    for value in (out, p.grad, t.grad, *graph_grads):
        assert torch.isnan(value[bad]).all() and torch.isfinite(value[~bad]).all(), value
    assert torch.isnan(genfast.binary_cross_entropy(p, t, "sum"))
    with torch.no_grad():  # the loss-only kernel path too
        assert torch.equal(torch.isnan(genfast.binary_cross_entropy(p, t, "none")), bad)
    # The VAE loss's reconstruction term is the same BCE: a bad pixel makes its sample's loss NaN.
    recon, target = p.detach()[1:3].reshape(1, 2).repeat(2, 1), t.detach()[1:3].reshape(1, 2).repeat(2, 1)
    recon[1, 1] = 0.5
    latent = torch.zeros(2, 3, device=device)
    vae = genfast.vae_loss(recon, target, latent, latent, reduction="none")
    assert torch.isnan(vae[0]) and torch.isfinite(vae[1])


def test_logits_accept_any_target_like_torch(device):
    """binary_cross_entropy_with_logits does not restrict targets in torch either: same values."""
    x = torch.tensor([-2.0, 0.5, 3.0], device=device, requires_grad=True)
    t = torch.tensor([-0.5, 1.5, 2.0], device=device)
    out = genfast.binary_cross_entropy_with_logits(x, t, "none")
    ref = F.binary_cross_entropy_with_logits(x.double().cpu(), t.double().cpu(), reduction="none")
    assert_close(out, ref, torch.float32)


@pytest.mark.parametrize("kind", OPS)
def test_gradcheck(kind):
    x, target = _inputs(kind, (4, 6), "cpu", torch.float64)
    target = target.detach()
    if kind == "probs":  # keep finite differences inside (0, 1), where the loss is defined
        x, target = 0.05 + 0.9 * x.detach(), 0.05 + 0.9 * target
    x, target = x.detach().requires_grad_(), target.requires_grad_()
    op = OPS[kind][0]
    for reduction in ("mean", "sum", "none"):
        assert torch.autograd.gradcheck(lambda a, b: op(a, b, reduction), (x, target))
        assert torch.autograd.gradgradcheck(lambda a, b: op(a, b, reduction), (x, target))


@pytest.mark.parametrize("name", ["binary_cross_entropy", "binary_cross_entropy_with_logits"])
def test_opcheck(name, device):
    x, target = _inputs("probs", (5, 9), device, torch.float32)
    op = getattr(torch.ops.genfast, name).default
    for reduction in ("mean", "none"):
        torch.library.opcheck(op, (x, target, reduction, True, False))


def test_empty_mean_is_nan_like_torch():
    x = torch.zeros(0)
    assert torch.isnan(genfast.binary_cross_entropy(x, x)) and torch.isnan(F.binary_cross_entropy(x, x))
    assert genfast.binary_cross_entropy_with_logits(x, x, "sum").item() == 0.0


def test_half_subnormals_survive_flush_to_zero():
    """Half-precision subnormals are converted with integer operations: flush-to-zero modes
    cannot turn p = 3e-5 into 0 (which would give the clamped loss 100 instead of 10.4)."""
    p = torch.tensor([3e-5, 6e-8], dtype=torch.float16)
    t = torch.ones(2, dtype=torch.float16)
    expected = F.binary_cross_entropy(p.double(), t.double(), reduction="none")
    try:
        torch.set_flush_denormal(True)
        out = genfast.binary_cross_entropy(p, t, "none")
    finally:
        torch.set_flush_denormal(False)
    torch.testing.assert_close(out.double(), expected, rtol=1e-2, atol=0)
