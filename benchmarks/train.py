"""Per-epoch training time: genfast's trainer vs the practicum notebooks' way, and the GEMM floor.

    python benchmarks/train.py                 # VAE, AE, DAE (epochs) and DCGAN (iterations), CPU
    python benchmarks/train.py --models vae --rounds 9 --repeats 3

For each model, in one run, on the same data (the embedded MNIST split) and hyperparameters, and
interleaved: each round runs one epoch of every side in turn, so that the shared machine's slow
and fast spells hit all sides alike (medians over the rounds; the first round is warm-up):
- genfast: the library's own epoch loop (``training.prepare`` and ``Session.run_epoch``: data
  resident on the device, sliced batches, fused ops), eager, with ``--compile`` and with
  ``--amp bf16`` (a float32 run's "best genfast" is eager or compile, never bf16);
- notebook: the same architecture trained the way the course notebooks do it (a DataLoader over a
  dataset, plain-PyTorch losses and reparameterisation written inline);
- floor (AE/DAE/VAE): the model's matrix products alone, forward and backward, for one epoch's
  batches (the last one short, as in training; no input gradient for the first layer, whose input,
  the images, needs none): what no framework overhead can go below.
The VAE is timed at batch 128 and 256, the AE and DAE at the notebooks' 256. DCGAN is timed per
iteration at batch 64, 64x64: genfast in float32, genfast with ``--amp bf16`` and pytorch/examples'
loop (Sigmoid + BCELoss), the three taking turns iteration by iteration.

``--repeats N`` runs all of it N times; the table gives each number's median and range over the
repeats (each repeat's number being its median over the rounds). Writes benchmarks/results/train_<device>.csv
(one row per repeat and case) and .md, naming the CPU or GPU and the thread count.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

import genfast
from genfast import data, models, training

RESULTS = Path(__file__).resolve().parent / "results"
# (model, batch size); lr 1e-3 for all, the notebooks'. The VAE also at 128 (issue 14).
CASES = (("vae", 128), ("vae", 256), ("ae", 256), ("dae", 256))
LR = 1e-3


def genfast_epoch(model: str, batch: int, lr: float, device: str, compile: bool = False, amp: str = "off"):
    """One epoch of the library's own loop (``training.prepare`` + ``Session.run_epoch``: data
    resident on the device, sliced batches, fused ops; no evaluation, no files) per call."""
    session = training.prepare(model, device=device, batch_size=batch, lr=lr, compile=compile, amp=amp,
                               progress=False)
    epoch = [0]

    def run():
        epoch[0] += 1
        session.run_epoch(epoch[0])
    return run


def notebook_epoch(model: str, batch: int, lr: float, device: str):
    """The notebooks' loop: DataLoader(shuffle=True), .to(device) per batch, losses inline."""
    torch.manual_seed(1)
    value_range = "unit" if model == "vae" else "tanh"
    images = data.normalise(data.load().images, value_range)
    loader = DataLoader(TensorDataset(images), batch_size=batch, shuffle=True)
    if model == "vae":
        net = models.VAE(backend="reference").to(device)
    else:
        net = models.Autoencoder(d=30 if model == "ae" else 500, backend="reference").to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    do = torch.nn.Dropout()

    def run():
        for (x,) in loader:
            x = x.to(device)
            if model == "vae":
                mu_logvar = net.encoder(x.view(-1, 784)).view(-1, 2, net.d)
                mu, logvar = mu_logvar[:, 0, :], mu_logvar[:, 1, :]
                std = logvar.mul(0.5).exp_()
                eps = std.new_empty(std.size()).normal_()
                x_hat = net.decoder(eps.mul(std).add_(mu))
                bce = F.binary_cross_entropy(x_hat, x.view(-1, 784), reduction="sum")
                kld = 0.5 * torch.sum(logvar.exp() - logvar - 1 + mu.pow(2))
                loss = bce + kld
            else:
                img = x.view(x.size(0), -1)
                if model == "dae":
                    img = img * do(torch.ones(img.shape, device=device))
                loss = F.mse_loss(net.decoder(net.encoder(img)), x.view(x.size(0), -1))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return run


def gemm_floor_epoch(model: str, batch: int, device: str, n_images: int):
    """One epoch of the model's forward and backward matrix products alone, per call: every
    layer's forward and weight gradient, and the input gradient of every layer but the first."""
    if model == "vae":
        layers = [(784, 400), (400, 40), (20, 400), (400, 784)]
    else:
        d = 30 if model == "ae" else 500
        layers = [(784, d), (d, 784)]
    sizes = [batch] * (n_images // batch) + ([n_images % batch] if n_images % batch else [])
    weights = [torch.randn(o, i, device=device) for i, o in layers]
    acts = {n: [torch.randn(n, i, device=device) for i, _ in layers] for n in set(sizes)}
    grads = {n: [torch.randn(n, o, device=device) for _, o in layers] for n in set(sizes)}

    def run():
        for n in sizes:
            for layer, (w, a, g) in enumerate(zip(weights, acts[n], grads[n])):
                torch.mm(a, w.t())           # forward
                torch.mm(g.t(), a)           # weight gradient
                if layer:
                    torch.mm(g, w)           # input gradient
    return run


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def interleaved(sides: dict, rounds: int, device: str) -> dict[str, float]:
    """Median seconds per call of each side, the sides taking turns; round 1 is warm-up."""
    samples: dict[str, list[float]] = {name: [] for name in sides}
    for round_ in range(rounds + 1):
        for name, run in sides.items():
            _sync(device)
            start = time.perf_counter()
            run()
            _sync(device)
            if round_:
                samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(times) for name, times in samples.items()}


def dcgan_iterations(device: str, iterations: int) -> dict[str, float]:
    """Median seconds per iteration (batch 64, 64x64) of genfast's step in float32 and with
    --amp bf16, and of pytorch/examples' step."""
    torch.manual_seed(1)
    x = data.normalise(data.load(size=64).images[:64 * (iterations + 1)], "tanh").to(device)

    def genfast_steps(amp: str):
        trainer = training.prepare("dcgan", device=device, amp=amp, progress=False).trainer
        x_prepared = trainer.prepare(x)
        batches = iter(range(iterations + 1))

        def step():
            i = next(batches)
            trainer.train_step(x_prepared[64 * i:64 * (i + 1)])
        return step

    gan = models.DCGAN(backend="reference").to(device)
    net_d = torch.nn.Sequential(gan.discriminator, torch.nn.Sigmoid())
    criterion = torch.nn.BCELoss()
    opt_d = torch.optim.Adam(gan.discriminator.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_g = torch.optim.Adam(gan.generator.parameters(), lr=2e-4, betas=(0.5, 0.999))
    loader = iter(DataLoader(TensorDataset(x.cpu()), batch_size=64, shuffle=True))

    def examples_step():
        (real,) = next(loader)
        real = real.to(device)
        net_d.zero_grad()
        label = torch.full((real.size(0),), 1.0, device=device)
        criterion(net_d(real), label).backward()
        fake = gan.generator(torch.randn(real.size(0), 100, 1, 1, device=device))
        label.fill_(0.0)
        criterion(net_d(fake.detach()), label).backward()
        opt_d.step()
        gan.generator.zero_grad()
        label.fill_(1.0)
        criterion(net_d(fake), label).backward()
        opt_g.step()

    return interleaved({"genfast_s": genfast_steps("off"), "genfast_bf16_s": genfast_steps("bf16"),
                        "notebook_s": examples_step}, iterations, device)


def processor(device: str) -> str:
    """The CPU's model name (or the GPU's), its cores and torch's thread count."""
    if device.startswith("cuda"):
        return f"{torch.cuda.get_device_name(device)}"
    name = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as info:
            name = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{name}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"


def measure(models: list[str], rounds: int, dcgan_iterations_: int, device: str) -> list[dict]:
    """One repeat: a row of medians per case."""
    rows = []
    for model, batch in CASES:
        if model not in models:
            continue
        n_images = len(data.load())  # the embedded training split, as the sides train on
        medians = interleaved({
            "genfast_s": genfast_epoch(model, batch, LR, device),
            "genfast_compile_s": genfast_epoch(model, batch, LR, device, compile=True),
            "genfast_bf16_s": genfast_epoch(model, batch, LR, device, amp="bf16"),
            "notebook_s": notebook_epoch(model, batch, LR, device),
            "floor_s": gemm_floor_epoch(model, batch, device, n_images)}, rounds, device)
        rows.append({"case": f"{model} (per epoch, batch {batch})", **medians})
        print(rows[-1], flush=True)
    if "dcgan" in models:
        rows.append({"case": "dcgan (per iteration, batch 64, 64x64)", "genfast_compile_s": math.nan,
                     "floor_s": math.nan, **dcgan_iterations(device, dcgan_iterations_)})
        print(rows[-1], flush=True)
    return rows


def _span(values: list[float], form: str, unit: str = "") -> str:
    """The median over the repeats and, with several, their range: a noisy repeat shows as a wide
    range without moving the median far."""
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return "–"
    median = format(statistics.median(values), form) + unit
    if len(values) == 1:
        return median
    return f"{median} ({format(min(values), form)}–{format(max(values), form)}{unit})"


def markdown(runs: list[list[dict]], about: str) -> str:
    """The table: each number's median and range over the repeats."""
    best = lambda r: min(r["genfast_s"], r["genfast_compile_s"]) if not math.isnan(r["genfast_compile_s"]) \
        else r["genfast_s"]  # noqa: E731
    lines = ["| case | genfast s | genfast --compile s | genfast --amp bf16 s | notebook-style s | GEMM floor s | "
             "best genfast / floor | genfast bf16 / floor | notebook / best genfast | notebook / genfast bf16 |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for i, row in enumerate(runs[0]):
        rows = [run[i] for run in runs]
        column = lambda key, form=".4f": _span([r[key] for r in rows], form)  # noqa: E731
        ratio = lambda f: _span([f(r) for r in rows], ".2f", "x")  # noqa: E731
        lines.append(f"| {row['case']} | {column('genfast_s')} | {column('genfast_compile_s')} | "
                     f"{column('genfast_bf16_s')} | {column('notebook_s')} | {column('floor_s')} | "
                     f"{ratio(lambda r: best(r) / r['floor_s'])} | {ratio(lambda r: r['genfast_bf16_s'] / r['floor_s'])} | "
                     f"{ratio(lambda r: r['notebook_s'] / best(r))} | "
                     f"{ratio(lambda r: r['notebook_s'] / r['genfast_bf16_s'])} |")
    return "\n".join(lines) + f"\n\n{about} The floor is float32 GEMMs; bf16 / floor compares across precisions.\n"


def pooled(paths: list[Path]) -> list[list[dict]]:
    """The repeats of several CSVs written by this script, as measure() returns them."""
    runs: dict[tuple, list[dict]] = {}
    for path in paths:
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                runs.setdefault((str(path), row.pop("repeat")), []).append(
                    {"case": row.pop("case"), **{k: float(v) for k, v in row.items()}})
    return list(runs.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["vae", "ae", "dae", "dcgan"])
    parser.add_argument("--rounds", type=int, default=7, help="timed epochs per side (after one warm-up)")
    parser.add_argument("--dcgan-iterations", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=1, help="times to run it all (ranges over them)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--pool", nargs="+", type=Path, default=[], metavar="CSV",
                        help="measure nothing: pool the repeats of earlier runs' CSVs (same machine and "
                             "settings) into one table")
    args = parser.parse_args()
    if min(args.rounds, args.dcgan_iterations, args.repeats) < 1:
        parser.error("--rounds, --dcgan-iterations and --repeats must be at least 1")
    unknown = set(args.models) - {model for model, _ in CASES} - {"dcgan"}
    if unknown:
        parser.error(f"--models: unknown {sorted(unknown)}")
    about = (f"genfast {genfast.__version__}, torch {torch.__version__}, {args.device}: {processor(args.device)}. "
             f"Each number is a median over {args.rounds} interleaved rounds (DCGAN: "
             f"{args.dcgan_iterations} iterations) after one warm-up; median (range) over {args.repeats} repeats.")
    if args.pool:
        runs = pooled(args.pool)
        about = about.replace(f"over {args.repeats} repeats", f"over {len(runs)} repeats ({len(args.pool)} runs)")
    else:
        print(about, flush=True)
        runs = [measure(args.models, args.rounds, args.dcgan_iterations, args.device) for _ in range(args.repeats)]
    table = markdown(runs, about)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"train_{args.device.split(':')[0]}"
    with open(stem.with_suffix(".csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["repeat", "case", "genfast_s", "genfast_compile_s", "genfast_bf16_s",
                                               "notebook_s", "floor_s"])
        writer.writeheader()
        writer.writerows({"repeat": repeat, **row} for repeat, run in enumerate(runs, 1) for row in run)
    stem.with_suffix(".md").write_text(table)


if __name__ == "__main__":
    main()
