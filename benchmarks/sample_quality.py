"""The report's sample-quality numbers for several trained runs, per model over seeds (mean and range).

    python benchmarks/sample_quality.py RUN_DIR... [-o benchmarks/results/sample_quality.md]

Each run is scored exactly as ``genfast report`` scores it (its ``sample_quality`` analysis: 1,000
samples from z ~ N(0, I), the run's cached digit classifier, classes covered and FID-MNIST); runs
are grouped by model (with the options that differ from its defaults), data and epochs. The table lists every run, then each group's mean and range.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from genfast.analysis.common import load_run
from genfast.analysis.report import ANALYSES

COLUMNS = ("classes_covered", "fid_mnist", "mean_confidence")


def trained_amp(run_dir: Path) -> str:
    """The run's --amp as trained (its loaded configuration is set to float32 for analysis)."""
    return json.loads((run_dir / "config.json").read_text()).get("amp") or "off"


def score(run_dir: Path) -> dict:
    run = load_run(run_dir)
    numbers = ANALYSES["sample_quality"].run(run, False).numbers
    options = run.cfg.spec.options
    changed = " ".join([f"{k}={v}" for k, v in run.cfg.options.items() if v != options[k].default]
                       + ([f"amp={amp}"] if (amp := trained_amp(run_dir)) != "off" else []))
    return {"model": run.cfg.model + (f" ({changed})" if changed else ""), "data": run.cfg.data,
            "image_size": run.test_images.shape[-1], "epochs": run.epochs_trained, "seed": run.cfg.seed, "lr": run.cfg.lr, "batch_size": run.cfg.batch_size,
            "classifier_test_accuracy": numbers["classifier_test_accuracy"], **{k: numbers[k] for k in COLUMNS}}


def _spread(values: list[float], digits: int) -> str:
    mean = statistics.mean(values)
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ({min(values):.{digits}f}–{max(values):.{digits}f})"


def markdown(rows: list[dict], note: str = "") -> str:
    lines = ["| model | data | image size | epochs | seed | classes covered (of 10) | FID-MNIST | mean confidence |",
             "|---|---|---|---|---|---|---|---|"]
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["model"], row["data"], row["image_size"], row["epochs"]), []).append(row)
    for (model, data, size, epochs), members in groups.items():
        for r in sorted(members, key=lambda r: r["seed"]):
            lines.append(f"| {model} | {data} | {size} | {epochs} | {r['seed']} | {r['classes_covered']} | "
                         f"{r['fid_mnist']:.0f} | {r['mean_confidence']:.2f} |")
        if len(members) > 1:
            lines.append(f"| **{model}** | | | | mean (range) of {len(members)} | "
                         f"{_spread([r['classes_covered'] for r in members], 1)} | "
                         f"{_spread([r['fid_mnist'] for r in members], 0)} | "
                         f"{_spread([r['mean_confidence'] for r in members], 2)} |")
    accuracies = sorted({round(r["classifier_test_accuracy"], 3) for r in rows})
    lines.append(f"\n1,000 samples per run, scored by each run's cached digit classifier (test accuracy "
                 f"{', '.join(map(str, accuracies))}); FID-MNIST is the Fréchet distance of its 128 penultimate "
                 "features between the test split and the samples (not comparable with Inception FID). Each run's "
                 "classifier is trained on its own training split at its own image size (brought to 28x28 by area "
                 "averaging), and its real reference is the test split at that size: FID-MNIST compares runs of "
                 "the same data and image size only.")
    if note:
        lines.append(f"\n{note}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("-o", "--output", type=Path, help="markdown file to write")
    parser.add_argument("--note", default="", help="a closing paragraph: how the runs were made")
    args = parser.parse_args()
    rows = [score(run) for run in args.runs]
    table = markdown(rows, args.note)
    print(table)
    if args.output:
        args.output.write_text(table)


if __name__ == "__main__":
    main()
