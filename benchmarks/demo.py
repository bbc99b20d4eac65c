"""Each fused op on one VAE-sized batch next to the plain-PyTorch reference: values, the largest
gradient difference and the median time of forward + backward (a quick look, not a benchmark:
benchmarks/ops.py interleaves the sides and measures properly).

    python benchmarks/demo.py [--batch 128] [--device auto] [--seed 1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from genfast import ops, reference


def _median_us(fn, repeats: int = 30) -> float:
    fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return 1e6 * statistics.median(samples)


def demo(batch: int, device: str, seed: int) -> int:
    """Each fused op on one VAE-sized batch next to the plain-PyTorch reference: values, the
    largest gradient difference and the time of forward + backward."""
    torch.manual_seed(seed)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    images = torch.rand(batch, 784, device=dev)
    recon = torch.rand(batch, 784, device=dev).requires_grad_()
    logits = torch.randn(batch, 784, device=dev).requires_grad_()
    mu = torch.randn(batch, 20, device=dev).requires_grad_()
    logvar = (0.5 * torch.randn(batch, 20, device=dev)).requires_grad_()
    eps = ops.reparameterise(torch.zeros_like(mu), torch.zeros_like(logvar), seed=seed)
    _, keep = ops.dropout_corrupt(images, 0.5, seed=seed)
    cases = {
        "vae_loss": (lambda m: m.vae_loss(recon, images, mu, logvar), (recon, mu, logvar)),
        "kl_divergence": (lambda m: m.kl_divergence(mu, logvar), (mu, logvar)),
        "binary_cross_entropy": (lambda m: m.binary_cross_entropy(recon, images, "sum"), (recon,)),
        "bce_with_logits": (lambda m: m.binary_cross_entropy_with_logits(logits, images, "sum"), (logits,)),
        "reparameterise": (
            lambda m: (m.reparameterise(mu, logvar, seed=seed) if m is ops
                       else m.reparameterise(mu, logvar, eps=eps)).sum(), (mu, logvar)),
        "dropout_corrupt": (
            lambda m: (m.dropout_corrupt(logits, 0.5, seed=seed) if m is ops
                       else m.dropout_corrupt(logits, 0.5, keep_mask=keep))[0].sum(), (logits,)),
    }
    print(f"genfast demo: batch {batch} x 784 pixels, 20-d latent, on {device}; "
          f"{json.dumps(ops.build_info())}")
    print(f"{'op':<22}{'genfast':>16}{'reference':>16}{'max |grad diff|':>18}{'fwd+bwd µs':>14}{'reference µs':>14}")
    for name, (loss_of, leaves) in cases.items():
        values, grads = [], []
        for module in (ops, reference):
            loss = loss_of(module)
            values.append(loss.item())
            grads.append(torch.autograd.grad(loss, leaves))
        diff = max((a - b).abs().max().item() for a, b in zip(*grads))
        times = [_median_us(lambda m=m: torch.autograd.grad(loss_of(m), leaves)) for m in (ops, reference)]
        print(f"{name:<22}{values[0]:>16.6g}{values[1]:>16.6g}{diff:>18.3g}{times[0]:>14.1f}{times[1]:>14.1f}")
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    demo(args.batch, args.device, args.seed)


if __name__ == "__main__":
    main()
