import math

import pytest
import torch

import genfast
from genfast import reference
import philox_reference
from conftest import PRIME_BATCH, SIZES, as64, assert_close, bits, grad_output, requires_cuda


def _eps(shape, device, seed, offset=0):
    """The noise genfast draws for (seed, offset): with mu = 0 and logvar = 0, z is eps itself."""
    zeros = torch.zeros(shape, device=device)
    return genfast.reparameterise(zeros, zeros, seed=seed, offset=offset)


@pytest.mark.parametrize("shape", [(n,) for n in SIZES] + [(PRIME_BATCH, 20), (0, 20)], ids=str)
def test_matches_reference_with_the_same_eps(device, dtype, shape):
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(shape, generator=g).to(device, dtype).requires_grad_()
    logvar = torch.randn(shape, generator=g).to(device, dtype).requires_grad_()
    z = genfast.reparameterise(mu, logvar, seed=42)
    eps = _eps(shape, device, 42).double()
    mu64, logvar64 = as64(mu, logvar)
    ref = reference.reparameterise(mu64, logvar64, eps=eps)
    assert z.dtype == dtype and z.shape == mu.shape
    assert_close(z, ref, dtype, scale=4)

    grad_out = grad_output(shape, dtype)
    z.backward(grad_out.to(device, dtype))
    ref.backward(grad_out)
    assert_close(mu.grad, mu64.grad, dtype)
    assert_close(logvar.grad, logvar64.grad, dtype, scale=4)


@pytest.mark.parametrize("seed, offset", [(8, 0), (2**64 - 5, 2**63 + 7)], ids=["small", "large"])
def test_eps_bits_match_an_independent_philox_box_muller(dtype, seed, offset):
    """eps on the CPU against tests/philox_reference.py (numpy), bit for bit, in every dtype:
    float32 eps itself, float64 exactly eps, float16 and bfloat16 eps rounded to nearest even."""
    n = 4099  # not a multiple of 4: the last Philox block is cut
    zeros = torch.zeros(n, dtype=dtype)
    z = genfast.reparameterise(zeros, zeros, seed=seed, offset=offset)  # mu = 0, logvar = 0: z = eps
    expected = torch.from_numpy(philox_reference.normals(n, seed, offset)).to(dtype)
    assert torch.equal(bits(z), bits(expected))


def test_eps_is_standard_normal(device):
    n = 1_000_000
    eps = _eps((n,), device, seed=2024).double().cpu()
    assert abs(eps.mean().item()) < 5 / math.sqrt(n)
    assert abs(eps.var().item() - 1) < 5 * math.sqrt(2 / n)
    # Third and fourth moments of N(0, 1): 0 and 3.
    assert abs((eps**3).mean().item()) < 5 * math.sqrt(15 / n)
    assert abs((eps**4).mean().item() - 3) < 5 * math.sqrt(96 / n)
    # Probability mass within one sigma, and neighbours uncorrelated (pairs share a Philox block).
    assert abs((eps.abs() < 1).double().mean().item() - 0.682689) < 5 * math.sqrt(0.2166 / n)
    assert abs((eps[:-1] * eps[1:]).mean().item()) < 5 / math.sqrt(n)
    assert eps.isfinite().all()


def test_reproducible_and_seeded_by_torch_manual_seed(device):
    mu, logvar = torch.zeros(1000, device=device), torch.zeros(1000, device=device)
    assert torch.equal(genfast.reparameterise(mu, logvar, seed=1), genfast.reparameterise(mu, logvar, seed=1))
    assert not torch.equal(genfast.reparameterise(mu, logvar, seed=1), genfast.reparameterise(mu, logvar, seed=2))
    torch.manual_seed(3)
    first, second = genfast.reparameterise(mu, logvar), genfast.reparameterise(mu, logvar)
    torch.manual_seed(3)
    assert torch.equal(genfast.reparameterise(mu, logvar), first)
    assert not torch.equal(first, second)


def test_eps_does_not_depend_on_dtype_or_threads():
    eps = _eps((50_001,), "cpu", seed=8)
    half = genfast.reparameterise(torch.zeros(50_001, dtype=torch.float64), torch.zeros(50_001, dtype=torch.float64), seed=8)
    assert torch.equal(half.float(), eps)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert torch.equal(_eps((50_001,), "cpu", seed=8), eps)
    finally:
        torch.set_num_threads(threads)


@requires_cuda
def test_cpu_and_cuda_are_bit_identical():
    g = torch.Generator().manual_seed(0)
    mu, logvar = torch.randn(100_003, generator=g), torch.randn(100_003, generator=g)
    cpu = genfast.reparameterise(mu, logvar, seed=99, offset=5)
    gpu = genfast.reparameterise(mu.cuda(), logvar.cuda(), seed=99, offset=5)
    assert torch.equal(cpu, gpu.cpu())
    assert torch.equal(_eps((4097,), "cpu", 7), _eps((4097,), "cuda", 7).cpu())


def test_gradcheck():
    mu = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    logvar = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda m, v: genfast.reparameterise(m, v, seed=4), (mu, logvar))
    assert torch.autograd.gradgradcheck(lambda m, v: genfast.reparameterise(m, v, seed=4), (mu, logvar))


def test_opcheck(device):
    mu = torch.randn(4, 6, device=device, requires_grad=True)
    logvar = torch.randn(4, 6, device=device, requires_grad=True)
    seed = torch.tensor([5, 0], device=device)
    torch.library.opcheck(torch.ops.genfast.reparameterise.default, (mu, logvar, seed))


def test_module_form_uses_mu_in_eval():
    layer = genfast.nn.Reparameterise()
    mu, logvar = torch.randn(2, 3), torch.randn(2, 3)
    assert torch.equal(layer.eval()(mu, logvar), mu)
    assert not torch.equal(layer.train()(mu, logvar), mu)
