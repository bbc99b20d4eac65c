import pytest
import torch

import genfast
from genfast import reference
import philox_reference
from conftest import PRIME_BATCH, SIZES, as64, assert_close, bits, grad_output, requires_cuda


@pytest.mark.parametrize("p", [0.0, 0.5, 0.25, 0.9])
@pytest.mark.parametrize("shape", [(n,) for n in SIZES] + [(PRIME_BATCH, 784), (0, 3)], ids=str)
def test_matches_reference_given_the_mask(device, dtype, p, shape):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1)).to(device, dtype).requires_grad_()
    out, mask = genfast.dropout_corrupt(x, p, seed=123)
    assert mask.dtype == torch.bool and mask.shape == x.shape and out.dtype == dtype
    (x64,) = as64(x)
    ref, ref_mask = reference.dropout_corrupt(x64, p, keep_mask=mask.cpu())
    assert_close(out, ref, dtype)
    if p == 0.0:
        assert mask.all()
    grad_out = grad_output(shape, dtype)
    out.backward(grad_out.to(device, dtype))
    ref.backward(grad_out)
    assert_close(x.grad, x64.grad, dtype)


@pytest.mark.parametrize("p", [0.5, 0.13])
def test_mask_and_output_bits_match_an_independent_philox(dtype, p):
    """The CPU keep-mask against tests/philox_reference.py (numpy's Philox and keep rule), and
    x * m against torch's product in the kernel's compute type, bit for bit, in every dtype."""
    n, seed, offset = 4099, 2**40 + 5, 17
    x = torch.randn(n, generator=torch.Generator().manual_seed(2)).to(dtype)
    out, mask = genfast.dropout_corrupt(x, p, seed=seed, offset=offset)
    keep = torch.from_numpy(philox_reference.keep_mask(n, p, seed, offset))
    assert torch.equal(mask, keep)
    compute = torch.float64 if dtype == torch.float64 else torch.float32
    m = torch.where(keep, torch.tensor(1.0 / (1.0 - p), dtype=compute), torch.tensor(0.0, dtype=compute))
    assert torch.equal(bits(out), bits((x.to(compute) * m).to(dtype)))


def test_seed_semantics_match_the_practicum():
    """img * Dropout(0.5)(ones): kept pixels doubled, dropped pixels 0 (mid-grey in [-1, 1])."""
    x = torch.rand(10_000) * 2 - 1
    out, mask = genfast.dropout_corrupt(x, 0.5)
    assert torch.equal(out[mask], 2 * x[mask])
    assert (out[~mask] == 0).all()


@pytest.mark.parametrize("p", [0.5, 0.1, 0.8])
def test_keep_rate(device, p):
    n = 1_000_000
    _, mask = genfast.dropout_corrupt(torch.ones(n, device=device), p, seed=7)
    rate = mask.double().mean().item()
    sigma = ((1 - p) * p / n) ** 0.5
    assert abs(rate - (1 - p)) < 5 * sigma
    # Neighbours are independent: P(keep, keep) of adjacent pairs is (1 - p)^2.
    pairs = (mask[:-1] & mask[1:]).double().mean().item()
    assert abs(pairs - (1 - p) ** 2) < 6 * sigma


def test_reproducible_and_seeded_by_torch_manual_seed(device):
    x = torch.randn(5000, device=device)
    assert torch.equal(genfast.dropout_corrupt(x, seed=3)[1], genfast.dropout_corrupt(x, seed=3)[1])
    assert not torch.equal(genfast.dropout_corrupt(x, seed=3)[1], genfast.dropout_corrupt(x, seed=4)[1])
    assert not torch.equal(genfast.dropout_corrupt(x, seed=3)[1], genfast.dropout_corrupt(x, seed=3, offset=1)[1])
    torch.manual_seed(11)
    first = genfast.dropout_corrupt(x)[1]
    second = genfast.dropout_corrupt(x)[1]
    torch.manual_seed(11)
    assert torch.equal(genfast.dropout_corrupt(x)[1], first)
    assert not torch.equal(first, second)


def test_nan_and_inf_propagate_like_the_reference(device):
    x = torch.tensor([float("nan"), float("inf"), -float("inf"), 1.0] * 64, device=device)
    out, mask = genfast.dropout_corrupt(x, 0.5, seed=5)
    ref, _ = reference.dropout_corrupt(x.cpu(), 0.5, keep_mask=mask.cpu())
    torch.testing.assert_close(out.cpu(), ref, equal_nan=True)
    assert torch.isnan(out[0::4]).all()  # NaN * 0 is NaN, as x * mask in the practicum


def test_mask_independent_of_dtype_and_threads():
    x = torch.randn(100_003)
    masks = [genfast.dropout_corrupt(x.to(d), 0.5, seed=9)[1] for d in (torch.float32, torch.float16, torch.float64)]
    assert all(torch.equal(masks[0], m) for m in masks)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = genfast.dropout_corrupt(x, 0.5, seed=9)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one[1], masks[0])


@requires_cuda
def test_cpu_and_cuda_masks_are_bit_identical():
    x = torch.randn(1_000_003)
    cpu_out, cpu_mask = genfast.dropout_corrupt(x, 0.3, seed=2**40 + 5, offset=17)
    gpu_out, gpu_mask = genfast.dropout_corrupt(x.cuda(), 0.3, seed=2**40 + 5, offset=17)
    assert torch.equal(cpu_mask, gpu_mask.cpu())
    assert torch.equal(cpu_out, gpu_out.cpu())


def test_gradcheck():
    x = torch.randn(4, 7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: genfast.dropout_corrupt(t, 0.4, seed=1)[0], (x,))
    assert torch.autograd.gradgradcheck(lambda t: genfast.dropout_corrupt(t, 0.4, seed=1)[0], (x,))


def test_opcheck(device):
    x = torch.randn(6, 5, device=device, requires_grad=True)
    seed = torch.tensor([1, 2], device=device)
    torch.library.opcheck(torch.ops.genfast.dropout_corrupt.default, (x, 0.5, seed))


def test_module_form_corrupts_in_eval_too():
    layer = genfast.nn.DropoutCorrupt(0.5).eval()
    out, mask = layer(torch.ones(1000))
    assert not mask.all() and mask.any()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
def test_every_half_precision_value_round_trips(device, dtype):
    """With p = 0 the corruption multiplies by 1: all 2^16 bit patterns (subnormals, infinities,
    NaNs) go through genfast's own half/bfloat16 conversions and come back unchanged."""
    x = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16).view(dtype).to(device)
    out, mask = genfast.dropout_corrupt(x, 0.0, seed=1)
    assert mask.all()
    nan = torch.isnan(x)
    assert torch.isnan(out[nan]).all()
    assert torch.equal(out[~nan].view(torch.int16), x[~nan].view(torch.int16))
