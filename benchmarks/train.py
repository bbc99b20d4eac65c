"""Per-epoch training time: genfast's trainer vs the practicum notebooks' way, and the GEMM floor.

    python benchmarks/train.py                 # VAE, AE, DAE (epochs) and DCGAN (iterations), CPU
    python benchmarks/train.py --models vae --rounds 9

For each model, in one run, on the same data (the embedded MNIST split) and hyperparameters, and
interleaved: each round runs one epoch of every side in turn, so that the shared machine's slow
and fast spells hit all sides alike (medians over the rounds; the first round is warm-up):
- genfast: the library's own epoch loop (``training.prepare`` and ``Session.run_epoch``: data
  resident on the device, sliced batches, fused ops), eager and with ``--compile``;
- notebook: the same architecture trained the way the course notebooks do it (a DataLoader over a
  dataset, plain-PyTorch losses and reparameterisation written inline);
- floor (AE/DAE/VAE): the model's matrix products alone, forward and backward, for one epoch's
  batches: what no framework overhead can go below.
DCGAN is timed per iteration at batch 64, 64x64, against pytorch/examples' loop (Sigmoid + BCELoss),
the two alternating iteration by iteration. Writes benchmarks/results/train_<device>.csv and .md.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

import genfast
from genfast import data, models, training

RESULTS = Path(__file__).resolve().parent / "results"
SETTINGS = {"vae": (256, 1e-3), "ae": (256, 1e-3), "dae": (256, 1e-3)}  # the notebooks' batch and lr


def genfast_epoch(model: str, batch: int, lr: float, device: str, compile: bool):
    """One epoch of the library's own loop (``training.prepare`` + ``Session.run_epoch``: data
    resident on the device, sliced batches, fused ops; no evaluation, no files) per call."""
    session = training.prepare(model, device=device, batch_size=batch, lr=lr, compile=compile, progress=False)
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


def gemm_floor_epoch(model: str, batch: int, device: str, n_images: int = 4000):
    """One epoch of the model's forward and backward matrix products alone, per call."""
    if model == "vae":
        layers = [(784, 400), (400, 40), (20, 400), (400, 784)]
    else:
        d = 30 if model == "ae" else 500
        layers = [(784, d), (d, 784)]
    weights = [torch.randn(o, i, device=device) for i, o in layers]
    acts = [torch.randn(batch, i, device=device) for i, _ in layers]
    grads = [torch.randn(batch, o, device=device) for _, o in layers]
    batches = -(-n_images // batch)

    def run():
        for _ in range(batches):
            for w, a, g in zip(weights, acts, grads):
                torch.mm(a, w.t())           # forward
                torch.mm(g.t(), a)           # weight gradient
                torch.mm(g, w)               # input gradient
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


def dcgan_iterations(device: str, iterations: int) -> tuple[float, float]:
    """Median seconds per iteration (batch 64, 64x64): genfast's step vs pytorch/examples' step."""
    torch.manual_seed(1)
    x = data.normalise(data.load(size=64).images[:64 * (iterations + 1)], "tanh").to(device)
    session = training.prepare("dcgan", device=device, progress=False)
    trainer = session.trainer
    x_prepared = trainer.prepare(x)
    batches = iter(range(iterations + 1))

    gan = models.DCGAN(backend="reference").to(device)
    net_d = torch.nn.Sequential(gan.discriminator, torch.nn.Sigmoid())
    criterion = torch.nn.BCELoss()
    opt_d = torch.optim.Adam(gan.discriminator.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_g = torch.optim.Adam(gan.generator.parameters(), lr=2e-4, betas=(0.5, 0.999))
    loader = iter(DataLoader(TensorDataset(x.cpu()), batch_size=64, shuffle=True))

    def genfast_step():
        i = next(batches)
        trainer.train_step(x_prepared[64 * i:64 * (i + 1)])

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

    medians = interleaved({"genfast": genfast_step, "examples": examples_step}, iterations, device)
    return medians["genfast"], medians["examples"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["vae", "ae", "dae", "dcgan"])
    parser.add_argument("--rounds", type=int, default=7, help="timed epochs per side (after one warm-up)")
    parser.add_argument("--dcgan-iterations", type=int, default=8)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.rounds < 1 or args.dcgan_iterations < 1:
        parser.error("--rounds and --dcgan-iterations must be at least 1")
    print(f"genfast {genfast.__version__} on {args.device}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    rows = []
    for model in args.models:
        if model == "dcgan":
            fused, plain = dcgan_iterations(args.device, args.dcgan_iterations)
            rows.append({"model": "dcgan (per iteration, batch 64, 64x64)", "genfast_s": fused,
                         "genfast_compile_s": float("nan"), "notebook_s": plain, "floor_s": float("nan")})
            continue
        batch, lr = SETTINGS[model]
        medians = interleaved({
            "genfast_s": genfast_epoch(model, batch, lr, args.device, compile=False),
            "genfast_compile_s": genfast_epoch(model, batch, lr, args.device, compile=True),
            "notebook_s": notebook_epoch(model, batch, lr, args.device),
            "floor_s": gemm_floor_epoch(model, batch, args.device)}, args.rounds, args.device)
        rows.append({"model": f"{model} (per epoch, batch {batch})", **medians})
        print(rows[-1], flush=True)
    header = ("| model | genfast s | genfast --compile s | notebook-style s | GEMM floor s | "
              "best genfast / floor | notebook / best genfast |\n|---|---|---|---|---|---|---|")
    best = lambda r: min(r["genfast_s"], r["genfast_compile_s"]) if r["genfast_compile_s"] == r["genfast_compile_s"] else r["genfast_s"]  # noqa: E731
    lines = [f"| {r['model']} | {r['genfast_s']:.4f} | {r['genfast_compile_s']:.4f} | {r['notebook_s']:.4f} | "
             f"{r['floor_s']:.4f} | {best(r) / r['floor_s']:.2f}x | {r['notebook_s'] / best(r):.2f}x |"
             for r in rows]
    table = header + "\n" + "\n".join(lines) + "\n"
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"train_{args.device.split(':')[0]}"
    with open(stem.with_suffix(".csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    stem.with_suffix(".md").write_text(table)


if __name__ == "__main__":
    main()
