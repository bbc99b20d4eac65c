"""Is --amp bf16 training as good as float32? Runs trained alike but for --amp, side by side.

    genfast train dcgan --seed S --epochs 10 --amp off|bf16 --option image_size=32 --run-dir RUN
    python benchmarks/amp_quality.py RUN... [-o benchmarks/results/amp_quality_cpu.md]

Per run: the report's sample quality (``sample_quality.score``: classes covered and FID-MNIST of
1,000 samples by the run's digit classifier; a VAE's test loss or an autoencoder's test MSE where
it has no sampler) and its training curves in brief: each logged metric's mean over the epochs and
its value at the last epoch (metrics.jsonl). Then, per amp setting, the mean and range over seeds.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from genfast.analysis.common import load_run
from sample_quality import score, trained_amp

SKIPPED = {"epoch", "seconds", "images_per_s"}


def summary(run_dir: Path) -> dict:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    run = load_run(run_dir)
    row = {"amp": trained_amp(run_dir), "seed": run.cfg.seed, "epochs": len(records)}
    if "sample_quality" in run.cfg.spec.analyses:
        quality = score(run_dir)
        row.update(classes=quality["classes_covered"], fid_mnist=quality["fid_mnist"])
    for key in records[-1]:
        if key not in SKIPPED:
            row[f"{key} (mean)"] = statistics.mean(r[key] for r in records)
            row[f"{key} (last)"] = records[-1][key]
    return row


def markdown(rows: list[dict]) -> str:
    keys = [k for k in rows[0] if k not in ("amp", "seed", "epochs")]
    lines = ["| amp | seed | epochs | " + " | ".join(keys) + " |", "|---" * (len(keys) + 3) + "|"]
    for row in sorted(rows, key=lambda r: (r["amp"] != "off", r["seed"])):
        lines.append(f"| {row['amp']} | {row['seed']} | {row['epochs']} | "
                     + " | ".join(f"{row[k]:.4g}" for k in keys) + " |")
    for amp in sorted({r["amp"] for r in rows}, key=lambda a: a != "off"):
        group = [r for r in rows if r["amp"] == amp]
        cells = [f"{statistics.mean(r[k] for r in group):.4g} ({min(r[k] for r in group):.4g}–"
                 f"{max(r[k] for r in group):.4g})" for k in keys]
        lines.append(f"| **{amp}** | mean (range) of {len(group)} | | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("-o", "--output", type=Path, help="markdown file to write")
    args = parser.parse_args()
    table = markdown([summary(run) for run in args.runs])
    print(table)
    if args.output:
        args.output.write_text(table)


if __name__ == "__main__":
    main()
