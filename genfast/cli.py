"""The genfast command line: ``genfast train``, ``genfast info`` and ``genfast demo``."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch

from . import ops, reference
from .training import MODELS, train

TRAIN_SETTINGS = {"data", "epochs", "batch_size", "lr", "seed", "device", "backend", "compile", "amp",
                  "max_steps", "model", "run_dir", "resume", "progress"}


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="genfast", description="Fused kernels for generative models.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="what this build contains (CUDA, archs, OpenMP, compiler)")
    demo_parser = sub.add_parser("demo", help="run every fused op against the PyTorch reference")
    demo_parser.add_argument("--batch", type=int, default=128)
    demo_parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    demo_parser.add_argument("--seed", type=int, default=1)
    train_parser = sub.add_parser("train", help="train a model of the practicum")
    train_parser.add_argument("model", choices=MODELS)
    train_parser.add_argument("--data", help="mnist-5k (embedded, default), mnist:ROOT, fashion-mnist:ROOT, folder:PATH")
    train_parser.add_argument("--run-dir", help="default runs/MODEL")
    train_parser.add_argument("--epochs", type=int)
    train_parser.add_argument("--batch-size", type=int)
    train_parser.add_argument("--lr", type=float)
    train_parser.add_argument("--seed", type=int, help="default 1")
    train_parser.add_argument("--device", help="cpu, cuda, cuda:N or auto (default)")
    train_parser.add_argument("--backend", choices=["fused", "reference"], help="default fused")
    train_parser.add_argument("--compile", action="store_true", default=None, help="torch.compile the networks")
    train_parser.add_argument("--amp", choices=["bf16"], help="bfloat16 autocast (CUDA)")
    train_parser.add_argument("--resume", action="store_true", help="continue the run in --run-dir")
    train_parser.add_argument("--max-steps", type=int, help="at most this many steps per epoch")
    train_parser.add_argument("--no-progress", action="store_true")
    train_parser.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                              help="model option, e.g. d=500, beta=2, p=0.5, margin=10, image_size=32")
    args = parser.parse_args(argv)
    if args.command == "train":
        settings = {k: getattr(args, k) for k in ("data", "epochs", "batch_size", "lr", "seed", "device",
                                                  "backend", "compile", "amp", "max_steps")
                    if getattr(args, k) is not None}
        for item in args.option:
            name, sep, value = item.partition("=")
            if not sep or not name:
                parser.error(f"--option wants NAME=VALUE, got {item!r}")
            if name in settings or name in TRAIN_SETTINGS:
                parser.error(f"--option {name}: use --{name.replace('_', '-')} for that")
            try:
                settings[name] = json.loads(value)
            except json.JSONDecodeError:
                parser.error(f"--option {name}: {value!r} is not a number or JSON value")
        try:
            train(args.model, run_dir=args.run_dir, resume=args.resume, progress=not args.no_progress,
                  **settings)
        except (ValueError, FileNotFoundError) as error:  # DataError is a ValueError
            parser.exit(2, f"genfast train: error: {error}\n")
        return 0
    if args.command == "info":
        print(json.dumps(ops.build_info(), indent=2))
        return 0
    return demo(args.batch, args.device, args.seed)


if __name__ == "__main__":
    sys.exit(main())
