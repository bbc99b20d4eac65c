"""Times each fused op against the eager plain-PyTorch reference and torch.compile of it.

    python benchmarks/ops.py                      # CPU (and CUDA when present), B = 128 and 4096
    python benchmarks/ops.py --device cuda --batch 65536 --bandwidth

Forward and forward+backward, median of many runs, all measured in this one run. Writes
benchmarks/results/ops_<device>.csv and .md and prints the markdown table of times and ratios.
With --bandwidth (CUDA) it also reports each genfast kernel's achieved GB/s against a measured
device-to-device copy.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

import genfast
from genfast import reference

PIXELS, LATENT = 784, 20
RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Case:
    name: str
    make_inputs: Callable[[int, str], tuple]  # (batch, device) -> tensors (first ones need grad)
    n_grad: int                               # how many leading inputs get gradients
    genfast_fn: Callable
    reference_fn: Callable
    bytes_moved: Callable[[int, int], int]    # (batch, element size) -> forward+grad bytes, fused


def _latent(b, device, g):
    return (torch.randn(b, LATENT, generator=g).to(device), 0.5 * torch.randn(b, LATENT, generator=g).to(device))


def _images(b, device, g, logits=False):
    x = 3 * torch.randn(b, PIXELS, generator=g) if logits else torch.rand(b, PIXELS, generator=g)
    return x.to(device), torch.rand(b, PIXELS, generator=g).to(device)


def _vae_inputs(b, device, g):
    """(recon, mu, logvar, target): the three inputs that get gradients first."""
    recon, target = _images(b, device, g)
    return (recon, *_latent(b, device, g), target)


def _cases() -> list[Case]:
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    return [
        Case("reparameterise", lambda b, d: _latent(b, d, gen()), 2,
             genfast.reparameterise, reference.reparameterise,
             lambda b, s: 3 * b * LATENT * s),
        Case("kl_divergence", lambda b, d: _latent(b, d, gen()), 2,
             lambda m, v: genfast.kl_divergence(m, v, "sum"), lambda m, v: reference.kl_divergence(m, v, "sum"),
             lambda b, s: 4 * b * LATENT * s),
        Case("binary_cross_entropy", lambda b, d: _images(b, d, gen()), 1,
             lambda p, t: genfast.binary_cross_entropy(p, t, "sum"),
             lambda p, t: reference.binary_cross_entropy(p, t, "sum"),
             lambda b, s: 3 * b * PIXELS * s),
        Case("bce_with_logits", lambda b, d: _images(b, d, gen(), logits=True), 1,
             lambda x, t: genfast.binary_cross_entropy_with_logits(x, t, "sum"),
             lambda x, t: reference.binary_cross_entropy_with_logits(x, t, "sum"),
             lambda b, s: 3 * b * PIXELS * s),
        Case("vae_loss", lambda b, d: _vae_inputs(b, d, gen()), 3,
             lambda r, m, v, t: genfast.vae_loss(r, t, m, v), lambda r, m, v, t: reference.vae_loss(r, t, m, v),
             lambda b, s: (3 * b * PIXELS + 4 * b * LATENT) * s),
        Case("dropout_corrupt", lambda b, d: (_images(b, d, gen())[0],), 1,
             lambda x: genfast.dropout_corrupt(x, 0.5)[0], lambda x: reference.dropout_corrupt(x, 0.5)[0],
             lambda b, s: 2 * b * PIXELS * s + b * PIXELS),
    ]


def median_time(fn: Callable[[], object], device: str, budget_s: float = 0.4, min_runs: int = 15) -> float:
    """Median seconds of fn over repeated runs (CUDA timed with events)."""
    for _ in range(3):
        fn()
    if device == "cuda":
        torch.cuda.synchronize()
    samples: list[float] = []
    deadline = time.perf_counter() + budget_s
    while len(samples) < min_runs or (time.perf_counter() < deadline and len(samples) < 2000):
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            samples.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def _runner(fn: Callable, inputs: tuple, n_grad: int, backward: bool) -> Callable[[], object]:
    if not backward:
        def forward_only():
            with torch.no_grad():
                return fn(*inputs)
        return forward_only
    leaves = [t.detach().requires_grad_() for t in inputs[:n_grad]]
    rest = inputs[n_grad:]

    def forward_backward():
        for t in leaves:
            t.grad = None
        out = fn(*leaves, *rest)
        out.backward(torch.ones_like(out))
    return forward_backward


def bench(device: str, batches: list[int], bandwidth: bool) -> list[dict]:
    rows = []
    copy_gbs = measure_copy_bandwidth() if bandwidth and device == "cuda" else None
    for case in _cases():
        for batch in batches:
            inputs = case.make_inputs(batch, device)
            compiled = torch.compile(case.reference_fn, dynamic=False)
            for mode, backward in (("fwd", False), ("fwd+bwd", True)):
                row = {"op": case.name, "device": device, "batch": batch, "mode": mode}
                for impl, fn in (("genfast", case.genfast_fn), ("eager", case.reference_fn), ("compile", compiled)):
                    row[f"{impl}_us"] = 1e6 * median_time(_runner(fn, inputs, case.n_grad, backward), device)
                row["x_eager"] = row["eager_us"] / row["genfast_us"]
                row["x_compile"] = row["compile_us"] / row["genfast_us"]
                if copy_gbs and mode == "fwd+bwd":
                    gbs = case.bytes_moved(batch, 4) / (row["genfast_us"] * 1e-6) / 1e9
                    row["genfast_GBps"] = gbs
                    row["copy_GBps"] = copy_gbs
                    row["of_copy"] = gbs / copy_gbs
                rows.append(row)
                print(_fmt_row(row), flush=True)
    return rows


def measure_copy_bandwidth(n_bytes: int = 1 << 30) -> float:
    """Device-to-device copy rate, counting bytes read plus bytes written."""
    src = torch.empty(n_bytes // 4, dtype=torch.float32, device="cuda").uniform_()
    dst = torch.empty_like(src)
    seconds = median_time(lambda: dst.copy_(src), "cuda")
    return 2 * n_bytes / seconds / 1e9


def _fmt_row(row: dict) -> str:
    s = (f"| {row['op']} | {row['device']} | {row['batch']} | {row['mode']} | {row['genfast_us']:.1f} | "
         f"{row['eager_us']:.1f} | {row['compile_us']:.1f} | {row['x_eager']:.2f}x | {row['x_compile']:.2f}x |")
    if "genfast_GBps" in row:
        s += f" {row['genfast_GBps']:.0f} GB/s ({100 * row['of_copy']:.0f}% of copy) |"
    return s


HEADER = ("| op | device | batch | mode | genfast µs | eager µs | compile µs | vs eager | vs compile |\n"
          "|---|---|---|---|---|---|---|---|---|")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda", "all"], default="all")
    parser.add_argument("--batch", type=int, nargs="+", default=[128, 4096])
    parser.add_argument("--bandwidth", action="store_true", help="CUDA: report GB/s against a device copy")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    devices = [d for d in devices if d == "cpu" or torch.cuda.is_available()]
    print(f"genfast {genfast.__version__} {genfast.build_info()}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} CPU threads")
    args.out.mkdir(parents=True, exist_ok=True)
    for device in devices:
        print(HEADER)
        rows = bench(device, args.batch, args.bandwidth)
        stem = args.out / f"ops_{device}"
        with open(stem.with_suffix(".csv"), "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
            writer.writeheader()
            writer.writerows(rows)
        stem.with_suffix(".md").write_text(HEADER + "\n" + "\n".join(_fmt_row(r) for r in rows) + "\n")
        print(f"wrote {stem}.csv and {stem}.md")


if __name__ == "__main__":
    main()
