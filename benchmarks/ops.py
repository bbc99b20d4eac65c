"""Times each fused op against the eager plain-PyTorch reference, torch.compile of it and a copy of
the bytes the op must move, all sampled in one interleaved run.

    python benchmarks/ops.py                          # CPU (and CUDA when present), B = 128 and 4096
    python benchmarks/ops.py --device cuda --batch 4096 65536 --bandwidth

One cell per op, batch and mode (forward; forward + backward) samples these sides round robin, one
call each per round (the order rotating), for --cell-seconds and at least --min-rounds rounds, and
keeps each side's median, so that the shared machine's load reaches every side alike:
genfast; the eager reference; torch.compile of it; a float32 ``dst.copy_(src)`` moving as many
bytes (read + written) as the fused genfast kernels must; genfast and eager at B = 1, whose time is
the fixed cost of a call (Python, checks, dispatcher, autograd), kernel time = time(B) - that.
--repeats repeats the whole measurement; the table gives the median over repeats and, for ratios,
their range (min-max over repeats). Forward + backward is forward then ``torch.autograd.grad`` with
a ready-made grad_output, the inputs' gradients returned (as for activations inside a network, no
``.grad`` accumulation).

Writes <out>/ops_<device>.csv (one row per op, batch, mode and repeat: that repeat's medians and
ratios, and the machine's load average) and ops_<device>.md (the machine, the method and the
table), and prints the table; with --threads N the files are ops_<device>_threadsN. On a machine
shared with other work, a parallel region waits whenever another process holds one of its cores
(milliseconds on a 2-core machine): --threads 1 measures the kernels without those waits.
"""

from __future__ import annotations

import argparse
import csv
import gc
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

import genfast
from genfast import reference

PIXELS, LATENT = 784, 20
F32 = 4  # bytes per element: every input here is float32; dropout's keep-mask is 1-byte bool
RESULTS = Path(__file__).resolve().parent / "results"
MODES = (("fwd", False), ("fwd+bwd", True))


@dataclass
class Case:
    name: str
    make_inputs: Callable[[int, str], tuple]  # (batch, device) -> tensors (first n_grad get gradients)
    n_grad: int                               # how many leading inputs get gradients
    genfast_fn: Callable
    reference_fn: Callable
    width: int                                # elements per sample of the main input
    forward_bytes: Callable[[int], int]       # batch -> bytes the fused forward reads + writes
    forward_backward_bytes: Callable[[int], int]  # batch -> the same for forward + backward


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
    """Bytes are what genfast's kernels read and write (8- and 16-byte Philox keys and scalar losses
    left out). Losses compute their gradients in the forward pass when autograd needs them, and the
    backward returns them as they are (grad_output is 1)."""
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    latent, image = lambda b: b * LATENT * F32, lambda b: b * PIXELS * F32  # noqa: E731
    return [
        # fwd: mu, logvar -> z (and, when logvar needs a gradient, dz/dlogvar). bwd: grad_mu is
        # grad_z itself; grad_z, dz/dlogvar -> grad_logvar.
        Case("reparameterise", lambda b, d: _latent(b, d, gen()), 2,
             genfast.reparameterise, reference.reparameterise, LATENT,
             lambda b: 3 * latent(b), lambda b: 7 * latent(b)),
        # fwd: mu, logvar -> loss; with gradients also -> grad_mu, grad_logvar.
        Case("kl_divergence", lambda b, d: _latent(b, d, gen()), 2,
             lambda m, v: genfast.kl_divergence(m, v, "sum"), lambda m, v: reference.kl_divergence(m, v, "sum"),
             LATENT, lambda b: 2 * latent(b), lambda b: 4 * latent(b)),
        # fwd: x, target -> loss; with gradients also -> grad_x (the target needs none).
        Case("binary_cross_entropy", lambda b, d: _images(b, d, gen()), 1,
             lambda p, t: genfast.binary_cross_entropy(p, t, "sum"),
             lambda p, t: reference.binary_cross_entropy(p, t, "sum"),
             PIXELS, lambda b: 2 * image(b), lambda b: 3 * image(b)),
        Case("bce_with_logits", lambda b, d: _images(b, d, gen(), logits=True), 1,
             lambda x, t: genfast.binary_cross_entropy_with_logits(x, t, "sum"),
             lambda x, t: reference.binary_cross_entropy_with_logits(x, t, "sum"),
             PIXELS, lambda b: 2 * image(b), lambda b: 3 * image(b)),
        # fwd: recon, target, mu, logvar -> loss; with gradients also -> grad_recon, grad_mu, grad_logvar.
        Case("vae_loss", lambda b, d: _vae_inputs(b, d, gen()), 3,
             lambda r, m, v, t: genfast.vae_loss(r, t, m, v), lambda r, m, v, t: reference.vae_loss(r, t, m, v),
             PIXELS, lambda b: 2 * image(b) + 2 * latent(b), lambda b: 3 * image(b) + 4 * latent(b)),
        # fwd: x -> out, keep-mask (bool, 1 byte). bwd: grad_out, keep-mask -> grad_x.
        Case("dropout_corrupt", lambda b, d: (_images(b, d, gen())[0],), 1,
             lambda x: genfast.dropout_corrupt(x, 0.5)[0], lambda x: reference.dropout_corrupt(x, 0.5)[0],
             PIXELS, lambda b: 2 * image(b) + b * PIXELS, lambda b: 4 * image(b) + 2 * b * PIXELS),
    ]


def _runner(fn: Callable, inputs: tuple, n_grad: int, backward: bool) -> Callable[[], object]:
    if not backward:
        def forward_only():
            with torch.no_grad():
                return fn(*inputs)
        return forward_only
    leaves = [t.detach().requires_grad_() for t in inputs[:n_grad]]
    rest = inputs[n_grad:]
    with torch.no_grad():
        grad_output = torch.ones_like(fn(*inputs))

    def forward_backward():
        return torch.autograd.grad(fn(*leaves, *rest), leaves, grad_output)
    return forward_backward


def _timed_call(fn: Callable[[], object], device: str) -> float:
    """Seconds of one call; on CUDA between events, synchronised, so launch costs count too."""
    if device == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def interleaved_medians(sides: dict[str, Callable[[], object]], device: str, cell_seconds: float,
                        min_rounds: int) -> dict[str, float]:
    """Median seconds per side over rounds that call every side once, the order rotating by one
    each round, for cell_seconds (at least min_rounds rounds). Warm-up calls (torch.compile's
    compilation among them) come first, outside the budget; garbage collection waits till the end."""
    names = list(sides)
    for fn in sides.values():
        fn()
        fn()
    if device == "cuda":
        torch.cuda.synchronize()
    samples: dict[str, list[float]] = {name: [] for name in names}
    gc_enabled = gc.isenabled()
    gc.disable()
    try:
        deadline = time.perf_counter() + cell_seconds
        rounds = 0
        while rounds < min_rounds or time.perf_counter() < deadline:
            for i in range(len(names)):
                name = names[(rounds + i) % len(names)]
                samples[name].append(_timed_call(sides[name], device))
            rounds += 1
    finally:
        if gc_enabled:
            gc.enable()
    return {name: statistics.median(s) for name, s in samples.items()}


def measure_call_overhead(case: Case, backward: bool, device: str, cell_seconds: float,
                          min_rounds: int) -> dict[str, float]:
    """µs of genfast's and eager's calls at B = 1, interleaved with each other only: a call right
    after a large one finds the caches cold (a 1-row BCE takes 9 µs alone, 40-60 µs after a
    B = 4096 call or copy here), which is not the fixed cost of a call."""
    one = case.make_inputs(1, device)
    sides = {"genfast_b1": _runner(case.genfast_fn, one, case.n_grad, backward),
             "eager_b1": _runner(case.reference_fn, one, case.n_grad, backward)}
    return {name: 1e6 * s for name, s in interleaved_medians(sides, device, cell_seconds, min_rounds).items()}


def measure_cell(case: Case, batch: int, backward: bool, device: str, compiled: Callable | None,
                 overhead: dict[str, float], cell_seconds: float, min_rounds: int) -> dict:
    """One op, batch and mode: genfast, eager, compile and a copy interleaved; times in µs and the
    ratios, with the call overheads measured by measure_call_overhead."""
    inputs = case.make_inputs(batch, device)
    n_bytes = (case.forward_backward_bytes if backward else case.forward_bytes)(batch)
    src = torch.rand(n_bytes // (2 * F32), device=device)  # src + dst = n_bytes
    dst = torch.empty_like(src)
    sides = {
        "genfast": _runner(case.genfast_fn, inputs, case.n_grad, backward),
        "eager": _runner(case.reference_fn, inputs, case.n_grad, backward),
        "copy": lambda: dst.copy_(src),
    }
    if compiled is not None:
        sides["compile"] = _runner(compiled, inputs, case.n_grad, backward)
    us = {name: 1e6 * s for name, s in interleaved_medians(sides, device, cell_seconds, min_rounds).items()}
    genfast_us, compile_us = us["genfast"], us.get("compile", math.nan)
    return {
        "op": case.name, "device": device, "batch": batch, "mode": "fwd+bwd" if backward else "fwd",
        "genfast_us": genfast_us, "overhead_us": overhead["genfast_b1"],
        "kernel_us": genfast_us - overhead["genfast_b1"],
        "eager_us": us["eager"], "eager_b1_us": overhead["eager_b1"], "compile_us": compile_us, "copy_us": us["copy"],
        "bytes": n_bytes, "ns_per_element": 1e3 * genfast_us / (batch * case.width),
        "genfast_GBps": n_bytes / genfast_us / 1e3, "copy_GBps": n_bytes / us["copy"] / 1e3,
        "x_eager": us["eager"] / genfast_us, "x_compile": compile_us / genfast_us,
        "x_copy_time": genfast_us / us["copy"], "of_copy_bw": us["copy"] / genfast_us,
    }


def measure(device: str, batches: list[int], repeats: int, cell_seconds: float, min_rounds: int,
            use_compile: bool) -> list[dict]:
    """Rows of every repeat, op, batch and mode (each repeat a whole pass, so that slow drifts in
    the machine's load spread over all cells)."""
    compiled: dict[tuple[str, int], Callable] = {}  # compiled once, reused by every repeat
    rows = []
    for repeat in range(repeats):
        for case in _cases():
            for mode, backward in MODES:
                overhead = measure_call_overhead(case, backward, device, cell_seconds, min_rounds)
                for batch in batches:
                    if use_compile and (case.name, batch) not in compiled:
                        compiled[case.name, batch] = torch.compile(case.reference_fn, dynamic=False)
                    row = measure_cell(case, batch, backward, device, compiled.get((case.name, batch)),
                                       overhead, cell_seconds, min_rounds)
                    row["repeat"], row["load_1min"] = repeat, os.getloadavg()[0]
                    rows.append(row)
                    print(f"repeat {repeat} {row['op']} B={batch} {mode}: genfast {row['genfast_us']:.1f} µs, "
                          f"x{row['x_eager']:.2f} eager, x{row['x_compile']:.2f} compile, "
                          f"{100 * row['of_copy_bw']:.0f}% of copy bandwidth", flush=True)
    return rows


COLUMNS = ("op", "batch", "mode", "genfast µs", "call overhead µs", "kernel µs", "eager µs", "eager B=1 µs",
           "compile µs", "vs eager", "vs compile", "ns/element", "MB moved", "genfast GB/s", "copy GB/s",
           "× copy time", "% of copy BW")


def _ratio(values: list[float], scale: float = 1.0, suffix: str = "×", digits: int = 2) -> str:
    values = [scale * v for v in values]
    if any(math.isnan(v) for v in values):
        return "–"
    return f"{statistics.median(values):.{digits}f}{suffix} ({min(values):.{digits}f}–{max(values):.{digits}f})"


def table(rows: list[dict]) -> str:
    """Markdown: one line per op, batch and mode; medians over repeats, ratios with their range."""
    cells: dict[tuple, list[dict]] = {}
    for row in rows:
        cells.setdefault((row["op"], row["batch"], row["mode"]), []).append(row)
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for (op, batch, mode), repeats in cells.items():
        med = {key: statistics.median(r[key] for r in repeats)
               for key, value in repeats[0].items() if isinstance(value, float)}
        get = lambda key: [r[key] for r in repeats]  # noqa: E731
        compile_us = "–" if math.isnan(med["compile_us"]) else f"{med['compile_us']:.1f}"
        lines.append("| " + " | ".join([
            op, str(batch), mode, f"{med['genfast_us']:.1f}", f"{med['overhead_us']:.1f}", f"{med['kernel_us']:.1f}",
            f"{med['eager_us']:.1f}", f"{med['eager_b1_us']:.1f}", compile_us,
            _ratio(get("x_eager")), _ratio(get("x_compile")), f"{med['ns_per_element']:.2f}",
            f"{repeats[0]['bytes'] / 1e6:.2f}", f"{med['genfast_GBps']:.1f}", f"{med['copy_GBps']:.1f}",
            _ratio(get("x_copy_time")), _ratio(get("of_copy_bw"), 100, "%", 0),
        ]) + " |")
    return "\n".join(lines)


LEGEND = """Columns: times are medians (over repeats of per-cell medians); ratios give the median and
(min–max) over repeats. *call overhead*: genfast's time at B = 1 (one row of 784 or 20 values), the
fixed cost of a call (Python, checks, dispatcher, autograd), timed against eager's B = 1 call only
(after a large call the caches are cold); *kernel*: genfast − call overhead;
*eager B=1*: the reference's fixed cost, for comparison. *vs eager*, *vs compile*: their time ÷
genfast's (> 1: genfast faster). *ns/element*: genfast's time ÷ elements of the main input (B·784
image ops, B·20 reparameterise and kl_divergence). *MB moved*: bytes the fused genfast kernels read
and write (benchmarks/ops.py `_cases`); *copy*: a float32 `dst.copy_(src)` of as many bytes (src +
dst), timed in the same rounds; *× copy time*: genfast ÷ copy time; *% of copy BW*: copy ÷ genfast
time."""


def cpu_description() -> str:
    """The CPU's model, family and model numbers, logical CPUs and its AVX-512 support."""
    info: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    flags = set(info.get("flags", "").split())
    isa = ", ".join(f"{flag} {'yes' if flag in flags else 'no'}" for flag in ("avx512f", "avx512_bf16"))
    name = info.get("model name") or platform.processor() or platform.machine()
    family = f" (family {info['cpu family']}, model {info['model']})" if "cpu family" in info else ""
    return f"{name}{family}, {os.cpu_count()} logical CPUs; {isa}"


def machine_header(device: str) -> list[str]:
    lines = [f"CPU: {cpu_description()}",
             f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads; "
             f"genfast {genfast.__version__} {genfast.build_info()}"]
    if device == "cuda":
        lines.append(f"GPU: {torch.cuda.get_device_name()}")
    return lines


def peak_copy_GBps(device: str, cell_seconds: float, min_rounds: int) -> float:
    """The device's copy rate on a buffer far larger than its caches (1 GiB CUDA, 256 MiB CPU)."""
    n_bytes = (1 << 30) if device == "cuda" else (256 << 20)
    src = torch.rand(n_bytes // (2 * F32), device=device)
    dst = torch.empty_like(src)
    seconds = interleaved_medians({"copy": lambda: dst.copy_(src)}, device, cell_seconds, min_rounds)["copy"]
    return n_bytes / seconds / 1e9


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda", "all"], default="all")
    parser.add_argument("--batch", type=int, nargs="+", default=[128, 4096])
    parser.add_argument("--repeats", type=int, default=3, help="whole measurements; ranges are over these")
    parser.add_argument("--cell-seconds", type=float, default=2.0,
                        help="sampling time of each op, batch and mode per repeat (after warm-up)")
    parser.add_argument("--min-rounds", type=int, default=7, help="rounds per cell at least, whatever the time")
    parser.add_argument("--threads", type=int, help="CPU threads for every side (default: torch's)")
    parser.add_argument("--no-compile", action="store_true", help="leave torch.compile out (its compilation is slow)")
    parser.add_argument("--bandwidth", action="store_true",
                        help="also measure the peak copy rate on a large buffer, in the header")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.min_rounds < 1 or args.cell_seconds < 0 or min(args.batch) < 1 \
            or (args.threads is not None and args.threads < 1):
        parser.error("--repeats, --min-rounds, --threads and --batch must be >= 1, --cell-seconds >= 0")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    devices = [d for d in devices if d == "cpu" or torch.cuda.is_available()]
    args.out.mkdir(parents=True, exist_ok=True)
    for device in devices:
        started, load_at_start = time.perf_counter(), os.getloadavg()[0]
        header = machine_header(device)
        if args.bandwidth:
            header.append(f"peak copy: {peak_copy_GBps(device, args.cell_seconds, args.min_rounds):.1f} GB/s "
                          "(read + written, large buffer)")
        print("\n".join(header), flush=True)
        rows = measure(device, args.batch, args.repeats, args.cell_seconds, args.min_rounds, not args.no_compile)
        header.append(f"load average (1 min) {load_at_start:.1f} at the start, {os.getloadavg()[0]:.1f} at the end "
                      "(others' work on the machine)")
        header.append(f"{args.repeats} repeats, each cell sampled {args.cell_seconds:g} s (>= {args.min_rounds} "
                      f"interleaved rounds); run took {time.perf_counter() - started:.0f} s: "
                      f"`python benchmarks/ops.py {' '.join(sys.argv[1:] if argv is None else argv)}`")
        stem = args.out / (f"ops_{device}" if args.threads is None else f"ops_{device}_threads{args.threads}")
        with open(stem.with_suffix(".csv"), "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        text = table(rows)
        stem.with_suffix(".md").write_text(
            f"# genfast ops on {device}\n\n" + "  \n".join(header) + f"\n\n{text}\n\n{LEGEND}\n")
        print(text)
        print(f"wrote {stem}.csv and {stem}.md")


if __name__ == "__main__":
    main()
