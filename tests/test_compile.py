"""All ops inside one torch.compile(fullgraph=True) graph give the eager results."""

import torch

import genfast


def _step(x, target, mu, logvar):
    z = genfast.reparameterise(mu, logvar, seed=3)
    corrupted, mask = genfast.dropout_corrupt(x, 0.5, seed=4)
    probs = torch.sigmoid(corrupted)
    loss = genfast.vae_loss(probs, target, mu, logvar, beta=0.5)
    loss = loss + genfast.kl_divergence(z, logvar, "mean")
    loss = loss + genfast.binary_cross_entropy(probs, target) + genfast.binary_cross_entropy_with_logits(x, target, "sum")
    return loss, mask


def test_fullgraph_compile_matches_eager():
    g = torch.Generator().manual_seed(0)
    x, target = torch.randn(6, 10, generator=g), torch.rand(6, 10, generator=g)
    mu, logvar = torch.randn(6, 3, generator=g), torch.randn(6, 3, generator=g)
    inputs = [t.clone().requires_grad_() for t in (x, mu, logvar)]
    eager_loss, eager_mask = _step(inputs[0], target, inputs[1], inputs[2])
    eager_loss.backward()

    compiled = torch.compile(_step, fullgraph=True)
    again = [t.clone().requires_grad_() for t in (x, mu, logvar)]
    loss, mask = compiled(again[0], target, again[1], again[2])
    loss.backward()

    assert torch.equal(mask, eager_mask)
    torch.testing.assert_close(loss, eager_loss)
    for got, want in zip(again, inputs):
        torch.testing.assert_close(got.grad, want.grad)
