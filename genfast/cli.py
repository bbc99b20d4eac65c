"""The genfast command line: ``genfast train | export | sample | reconstruct | serve | info | demo``.

Serving commands (sample, reconstruct, serve) need only numpy and onnxruntime (and Pillow): they
work on a machine without torch.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

TRAIN_SETTINGS = {"data", "epochs", "batch_size", "lr", "seed", "device", "backend", "compile", "amp",
                  "max_steps", "snapshot_every", "model", "run_dir", "resume", "progress"}


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
    import torch

    from . import ops, reference

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="genfast", description="Fused kernels for generative models.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="what this build contains (CUDA, archs, OpenMP, compiler)")
    demo_parser = sub.add_parser("demo", help="run every fused op against the PyTorch reference")
    demo_parser.add_argument("--batch", type=int, default=128)
    demo_parser.add_argument("--device", default="auto")
    demo_parser.add_argument("--seed", type=int, default=1)
    train_parser = sub.add_parser("train", help="train a model of the practicum")
    train_parser.add_argument("model", help="ae, ae-over, dae, vae, ebgan or dcgan")
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
    train_parser.add_argument("--snapshot-every", type=int,
                              help="weights at epoch 0, every N epochs and the last (default 5; DCGAN 0: none)")
    train_parser.add_argument("--no-progress", action="store_true")
    train_parser.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                              help="model option, e.g. d=500, beta=2, p=0.5, margin=10, image_size=32")
    _add_serving_commands(sub)
    args = parser.parse_args(argv)
    if args.command in SERVING_COMMANDS:
        try:
            return SERVING_COMMANDS[args.command](args)
        except (ValueError, OSError, LookupError, RuntimeError) as error:
            parser.exit(2, f"genfast {args.command}: error: {error}\n")
    if args.command == "train":
        from .training import train

        settings = {k: getattr(args, k) for k in ("data", "epochs", "batch_size", "lr", "seed", "device",
                                                  "backend", "compile", "amp", "max_steps", "snapshot_every")
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
        from .ops import build_info

        print(json.dumps(build_info(), indent=2))
        return 0
    return demo(args.batch, args.device, args.seed)


def _add_serving_commands(sub) -> None:
    """export, sample, reconstruct, serve and report: they import what they need when run."""
    export = sub.add_parser("export", help="export a trained run to verified ONNX graphs")
    export.add_argument("source", help="a run directory, or its model.safetensors / checkpoint.safetensors")
    export.add_argument("-o", "--out", required=True, help="output folder for MODEL_GRAPH.onnx files")
    export.add_argument("--opset", type=int, default=20)
    export.add_argument("--fp16", action="store_true", help="also write float16 graphs for GPU serving")
    export.add_argument("--graph", action="append", help="only this graph (repeatable)")
    for name, helptext in (("sample", "PNG grid of samples from a generate/decode graph"),
                           ("reconstruct", "PNG grid of images and their reconstructions")):
        command = sub.add_parser(name, help=helptext)
        command.add_argument("model", help="an exported .onnx file or a folder of one model's graphs")
        if name == "sample":
            command.add_argument("-n", type=int, default=64)
            command.add_argument("--seed", type=int)
        else:
            command.add_argument("images", nargs="+", help="image files (PNG, JPEG, ...)")
        command.add_argument("-o", "--out", required=True, help="the PNG grid to write")
        command.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
        command.add_argument("--dtype", default="float32", choices=["float32", "float16"],
                             help="which graphs of a folder (float16: those of export --fp16)")
    report = sub.add_parser("report", help="the practicum's analyses of trained runs: figures, HTML, summary.json")
    report.add_argument("runs", nargs="+", help="run directories (genfast train's --run-dir)")
    report.add_argument("-o", "--out", required=True, help="output folder")
    report.add_argument("--no-progress", action="store_true")
    serve = sub.add_parser("serve", help="HTTP endpoint for an exported model (loopback by default)")
    serve.add_argument("model", help="an exported .onnx file or a folder of one model's graphs")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    serve.add_argument("--threads", type=int, help="onnxruntime intra-op threads")
    serve.add_argument("--dtype", default="float32", choices=["float32", "float16"],
                       help="which graphs of a folder (float16: those of export --fp16)")
    serve.add_argument("--max-batch", type=int, default=256)
    serve.add_argument("--max-bytes", type=int, default=8 << 20)


def _require(extra: str, *modules: str) -> None:
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise RuntimeError(f"this needs {', '.join(missing)}: pip install 'genfast[{extra}]'")


def _export(args) -> int:
    _require("onnx", "torch", "onnx", "onnxscript", "onnxruntime")
    from .export import onnx_export

    for dtype in ("float32", "float16") if args.fp16 else ("float32",):
        for done in onnx_export.export_run(args.source, args.out, opset=args.opset, dtype=dtype,
                                           graphs=tuple(args.graph) if args.graph else None):
            print(f"{done.path}: {done.kind} {done.graph} {done.dtype}, opset {done.opset}, "
                  f"onnxruntime vs PyTorch {done.parity_error:.2e} (bound {done.parity_bound:g})")
    return 0


def _sample(args) -> int:
    _require("onnx", "onnxruntime")
    from .export import runtime

    model = runtime.load(args.model, device=args.device, dtype=args.dtype)
    runtime.save_grid(model.generate(args.n, args.seed), args.out)
    print(f"{args.out}: {args.n} samples from {model}")
    return 0


def _reconstruct(args) -> int:
    import numpy as np

    _require("onnx", "onnxruntime")
    from .export import runtime

    model = runtime.load(args.model, device=args.device, dtype=args.dtype)
    images = runtime.read_images(args.images, model)
    runtime.save_grid(np.concatenate([images, model.reconstruct(images)]), args.out, columns=len(images))
    print(f"{args.out}: {len(images)} images (top) and their reconstructions (bottom) by {model}")
    return 0


def _report(args) -> int:
    _require("analysis", "torch", "matplotlib", "sklearn", "skimage", "cv2")
    from .analysis import report

    summary = report(args.runs, args.out, progress=not args.no_progress)
    print(f"{args.out}/index.html, summary.md, summary.json: {', '.join(summary['runs'])}")
    return 0


def _serve(args) -> int:
    _require("onnx", "onnxruntime")
    from .export import runtime, serve

    if args.max_batch < 1 or args.max_bytes < 1:
        raise ValueError("--max-batch and --max-bytes must be positive")
    model = runtime.load(args.model, device=args.device, threads=args.threads, dtype=args.dtype)
    serve.serve(model, args.host, args.port, max_batch=args.max_batch, max_bytes=args.max_bytes)
    return 0


SERVING_COMMANDS = {"export": _export, "sample": _sample, "reconstruct": _reconstruct, "serve": _serve,
                    "report": _report}


if __name__ == "__main__":
    sys.exit(main())
