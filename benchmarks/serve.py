"""Serving latency and throughput: genfast.export.runtime vs a bare onnxruntime session vs PyTorch eager.

    python benchmarks/serve.py                     # CPU; and CUDA too when torch and onnxruntime have it
    python benchmarks/serve.py --batch 1 256 --repeats 200 10

For VAE decode and DCGAN generate (64x64), at each batch, in one run. The onnxruntime sides are
interleaved (one call of each per round, in alternating order, so the machine's noise hits them
alike); torch is timed in its own block after them, because its OpenMP threads and onnxruntime's
spinning thread pool slow each other down when their calls alternate on few cores:
- bare: ``InferenceSession.run`` on the exported graph, the numpy noise prepared beforehand;
- genfast: ``model.decode(z)`` of genfast.export.runtime (input checks, dtype, output to [0, 1]);
- torch: the same model in PyTorch eager under ``torch.inference_mode`` (the output left in the
  model's range: the comparison favours torch slightly);
- on CUDA also ``model.run(graph, z)`` with torch CUDA tensors (IO binding, no host copies).
Medians in milliseconds; writes benchmarks/results/serve_<device>.csv and .md.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from genfast import models
from genfast.export import onnx_export, runtime

RESULTS = Path(__file__).resolve().parent / "results"


def _jobs():
    torch.manual_seed(0)
    vae, dcgan = models.VAE().eval(), models.DCGAN().eval()
    return [("vae decode", vae, "decode", lambda z: vae.decoder(z)),
            ("dcgan generate", dcgan, "generate", lambda z: dcgan.generator(z[:, :, None, None]))]


def _time_interleaved(sides: dict, repeats: int, sync) -> dict[str, float]:
    for fn in sides.values():  # warm-up (allocations, CUDA kernels, oneDNN primitives)
        fn()
        fn()
    samples = {name: [] for name in sides}
    order = list(sides.items())
    for round_ in range(repeats):
        for name, fn in order if round_ % 2 == 0 else order[::-1]:
            sync()
            start = time.perf_counter()
            fn()
            sync()
            samples[name].append(time.perf_counter() - start)
    return {name: 1e3 * statistics.median(times) for name, times in samples.items()}


def measure(device: str, batches: list[int], repeats: list[int], folder: Path) -> list[dict]:
    rows = []
    on_cuda = device == "cuda"
    sync = torch.cuda.synchronize if on_cuda else (lambda: None)
    for label, model, graph, torch_fn in _jobs():
        path = folder / f"{label.replace(' ', '_')}.onnx"
        if not path.exists():
            onnx_export.to_onnx(model, graph, path)
        served = runtime.load(path, device=device)
        session, input_name = served.graphs[graph].session, served.graphs[graph].input.name
        model = model.to(device)
        for batch, count in zip(batches, repeats):
            z = served.noise(batch, seed=0)
            z_torch = torch.from_numpy(z).to(device)
            sides = {
                "bare_ms": lambda: session.run(None, {input_name: z}),
                "genfast_ms": lambda: served.decode(z),
            }
            if on_cuda:
                sides["genfast_iobinding_ms"] = lambda: served.run(graph, z_torch)
            row = {"device": device, "job": label, "batch": batch, "provider": served.provider,
                   **_time_interleaved(sides, count, sync),
                   **_time_interleaved({"torch_ms": lambda: _torch_call(torch_fn, z_torch)}, count, sync)}
            row["genfast_overhead"] = row["genfast_ms"] / row["bare_ms"] - 1.0
            row["torch_over_genfast"] = row["torch_ms"] / row["genfast_ms"]
            row["images_per_s"] = 1e3 * batch / row["genfast_ms"]
            rows.append(row)
            print(_line(row), flush=True)
    return rows


def _torch_call(fn, z):
    with torch.inference_mode():
        return fn(z)


def _line(r: dict) -> str:
    extra = f" | {r['genfast_iobinding_ms']:.3f}" if "genfast_iobinding_ms" in r else " | -"
    return (f"| {r['job']} | {r['batch']} | {r['provider'].removesuffix('ExecutionProvider')} | {r['bare_ms']:.3f} | "
            f"{r['genfast_ms']:.3f} | {100 * r['genfast_overhead']:+.1f}% | {r['torch_ms']:.3f} | "
            f"{r['torch_over_genfast']:.2f}x | {r['images_per_s']:.0f}{extra} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", nargs="+", default=None, help="cpu and/or cuda (default: cpu, plus cuda if usable)")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 256])
    parser.add_argument("--repeats", type=int, nargs="+", default=[300, 12], help="one count per batch")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if len(args.repeats) != len(args.batch):
        parser.error("--repeats needs one count per --batch")
    devices = args.device or ["cpu"] + (["cuda"] if torch.cuda.is_available()
                                        and runtime.CUDA in runtime.ort.get_available_providers() else [])
    torch.set_num_threads(args.threads)
    header = ("| job | batch | provider | bare ORT ms | genfast runtime ms | runtime overhead | torch eager ms | "
              "torch / genfast | images/s | IO binding ms |\n|---|---|---|---|---|---|---|---|---|---|")
    print(f"torch {torch.__version__} ({torch.get_num_threads()} threads), onnxruntime {runtime.ort.__version__}")
    print(header)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        for device in devices:
            rows = measure(device, args.batch, args.repeats, Path(folder))
            stem = args.out / f"serve_{device}"
            with open(stem.with_suffix(".csv"), "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=sorted({k for r in rows for k in r}))
                writer.writeheader()
                writer.writerows(rows)
            stem.with_suffix(".md").write_text(header + "\n" + "\n".join(_line(r) for r in rows) + "\n")


if __name__ == "__main__":
    main()
