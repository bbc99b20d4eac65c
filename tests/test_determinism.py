"""Reductions are deterministic: bit-identical run to run, and on CPU whatever the thread count."""

import pytest
import torch

import genfast


def _losses():
    g = torch.Generator().manual_seed(5)
    probs, target = torch.rand(131, 784, generator=g), torch.rand(131, 784, generator=g)
    mu, logvar = torch.randn(131, 20, generator=g), torch.randn(131, 20, generator=g)
    flat = torch.rand(100_003, generator=g)
    wide = torch.randn(3, 3 * 8192 + 5, generator=g)  # rows summed in pieces
    return [
        genfast.kl_divergence(wide, wide.flip(1), "none"),
        genfast.vae_loss(probs, target, mu, logvar),
        genfast.vae_loss(probs, target, mu, logvar, reduction="none"),
        genfast.kl_divergence(mu, logvar),
        genfast.binary_cross_entropy(flat, flat.flip(0)),
        genfast.binary_cross_entropy_with_logits(flat, flat.flip(0), "sum"),
    ]


def test_run_to_run_bit_identical():
    first, second = _losses(), _losses()
    assert all(torch.equal(a, b) for a, b in zip(first, second))


@pytest.mark.parametrize("threads", [1, 3])
def test_independent_of_thread_count(threads):
    default = _losses()
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        other = _losses()
    finally:
        torch.set_num_threads(before)
    assert all(torch.equal(a, b) for a, b in zip(default, other))
