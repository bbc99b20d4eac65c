"""The ops inside a captured CUDA graph: the loss matches eager, and noise drawn from torch's CUDA
generator changes from replay to replay (the graph advances the Philox offset)."""

import torch

import genfast
from conftest import requires_cuda


@requires_cuda
def test_capture_and_replay():
    g = torch.Generator().manual_seed(0)
    recon = torch.rand(64, 784, generator=g).cuda()
    target = torch.rand(64, 784, generator=g).cuda()
    mu, logvar = torch.randn(64, 20, generator=g).cuda(), torch.randn(64, 20, generator=g).cuda()
    expected = genfast.vae_loss(recon, target, mu, logvar)

    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # warm up outside the capture
        genfast.vae_loss(recon, target, mu, logvar)
        genfast.reparameterise(mu, logvar)
    torch.cuda.current_stream().wait_stream(stream)

    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        loss = genfast.vae_loss(recon, target, mu, logvar)
        z = genfast.reparameterise(mu, logvar)
        corrupted, keep = genfast.dropout_corrupt(recon, 0.5)
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(loss, expected)
    first_z, first_keep = z.clone(), keep.clone()
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(loss, expected)
    assert not torch.equal(z, first_z) and not torch.equal(keep, first_keep)
    assert torch.equal(corrupted, recon * keep * 2)
