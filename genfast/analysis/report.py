"""``genfast report RUN_DIR... -o report/``: every analysis that applies to each run, as PNG
figures, one self-contained HTML page (figures embedded), a markdown summary and summary.json."""

from __future__ import annotations

import base64
import html
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from tqdm import tqdm

from ..files import atomic_write, write_text_atomic
from ..images import to_unit
from ..version import __version__
from . import autoencoders, generative
from .classifier import classifier_for, sample_quality
from .common import Analysis, Run, load_run

QUALITY_SAMPLES = 1000


@dataclass(frozen=True)
class ReportAnalysis:
    """An analysis the report can run on a trained run (a model's spec names those that apply)."""
    run: Callable[[Run, bool], Analysis]  # (run, progress) -> Analysis
    needs_labels: bool = False


def _quality(run: Run, progress: bool) -> Analysis:
    classifier, test_accuracy = classifier_for(run, progress=progress)
    generated = generative.generate(run.model, QUALITY_SAMPLES, seed=1)
    real = to_unit(run.test_images, run.model.value_range)
    return Analysis({}, {"classifier_test_accuracy": test_accuracy, "samples": QUALITY_SAMPLES,
                         **sample_quality(classifier, generated, real)})


ANALYSES: dict[str, ReportAnalysis] = {
    "reconstructions": ReportAnalysis(lambda run, _: autoencoders.reconstructions(run.model, run.test_images)),
    "encoder_kernels": ReportAnalysis(lambda run, _: autoencoders.encoder_kernels(run.model)),
    "garbage_test": ReportAnalysis(
        lambda run, _: autoencoders.garbage_test(run.model, run.test_images, run.test_labels)),
    "denoising": ReportAnalysis(lambda run, _: autoencoders.denoising_vs_inpainting(run.model, run.test_images)),
    "samples": ReportAnalysis(lambda run, _: generative.samples(run.model)),
    "interpolation": ReportAnalysis(
        lambda run, _: generative.interpolation(run.model, run.test_images, run.test_labels)),
    "tsne": ReportAnalysis(lambda run, progress: generative.tsne(run.snapshots(), run.test_images, run.test_labels,
                                                                 progress=progress), needs_labels=True),
    "training": ReportAnalysis(lambda run, _: generative.gan_training(run.path)),
    "sample_quality": ReportAnalysis(_quality, needs_labels=True),
}


def analyses_for(run: Run, progress: bool = False) -> list[tuple[str, Callable[[], Analysis]]]:
    """(name, thunk) of every analysis the run's model declares that its data allows."""
    names = run.cfg.spec.analyses
    unknown = [name for name in names if name not in ANALYSES]
    if unknown:
        raise ValueError(f"the {run.cfg.model} model names analyses the report does not have: {unknown}")
    return [(name, lambda analysis=ANALYSES[name]: analysis.run(run, progress))
            for name in names if run.test_labels is not None or not ANALYSES[name].needs_labels]


def report(run_dirs: list[str | Path], out_dir: str | Path, progress: bool = True) -> dict:
    """Runs every applicable analysis on each run; writes the figures, index.html, summary.md and
    summary.json to ``out_dir``; returns the summary."""
    from matplotlib import pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary: dict = {"genfast_version": __version__, "created": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "runs": {}}
    sections = []
    names = _unique_names([Path(r) for r in run_dirs])
    for run_dir, name in zip(run_dirs, names):
        run = load_run(run_dir)
        header = {"model": run.cfg.model, "options": run.cfg.options, "data": run.cfg.data,
                  "epochs": run.epochs_trained, "seed": run.cfg.seed, "run_dir": str(Path(run_dir).resolve()),
                  "test_images": len(run.test_images), "trained_with": _trained_with(run)}
        entry = {"header": header}
        figures: list[tuple[str, str, Path]] = []
        jobs = analyses_for(run, progress)
        for analysis_name, job in tqdm(jobs, desc=f"report {name}", disable=not progress):
            result = job()
            entry[analysis_name] = _finite(result.numbers)
            for figure_name, fig in result.figures.items():
                path = out / f"{name}_{figure_name}.png"
                atomic_write(path, lambda tmp, fig=fig: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))
                plt.close(fig)
                figures.append((analysis_name, figure_name, path))
        summary["runs"][name] = entry
        sections.append((name, entry, figures))
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=2))
    write_text_atomic(out / "summary.md", _markdown(summary))
    write_text_atomic(out / "index.html", _html(summary, sections))
    return summary


def _trained_with(run: Run) -> str:
    config = run.path / "config.json"
    if config.is_file():
        return json.loads(config.read_text()).get("genfast", {}).get("version", "unknown")
    return "unknown"


def _unique_names(paths: list[Path]) -> list[str]:
    names, seen = [], {}
    for path in paths:
        base = path.resolve().name if path.is_dir() else path.resolve().parent.name
        seen[base] = seen.get(base, 0) + 1
        names.append(base if seen[base] == 1 else f"{base}-{seen[base]}")
    return names


def _finite(value):
    """JSON has no inf/NaN: they become null."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _rows(numbers: dict, prefix: str = "") -> list[tuple[str, str]]:
    """Flattened (key path, value) rows of a numbers dict; long lists are summarised."""
    rows = []
    for key, value in numbers.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            rows += _rows(value, path + " / ")
        elif isinstance(value, list) and len(value) > 12:
            finite = [v for v in value if isinstance(v, (int, float))]
            span = f", {min(finite):.4g} to {max(finite):.4g}" if finite else ""
            rows.append((path, f"{len(value)} values{span}"))
        elif isinstance(value, float):
            rows.append((path, f"{value:.4g}"))
        else:
            rows.append((path, json.dumps(value)))
    return rows


def _markdown(summary: dict) -> str:
    lines = [f"# genfast report\n\ngenfast {summary['genfast_version']}, {summary['created']}\n"]
    for name, entry in summary["runs"].items():
        h = entry["header"]
        lines.append(f"## {name}: {h['model']} on {h['data']}, {h['epochs']} epochs, options {h['options']}\n")
        for analysis, numbers in entry.items():
            if analysis == "header":
                continue
            lines.append(f"### {analysis}\n\n| number | value |\n|---|---|")
            lines += [f"| {k} | {v} |" for k, v in _rows(numbers)]
            lines.append("")
    return "\n".join(lines)


def _html(summary: dict, sections) -> str:
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>genfast report</title><style>",
             "body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:2px 8px;font-size:13px}img{max-width:100%}</style></head><body>",
             f"<h1>genfast report</h1><p>genfast {html.escape(summary['genfast_version'])}, "
             f"{html.escape(summary['created'])}</p>"]
    for name, entry, figures in sections:
        h = entry["header"]
        parts.append(f"<h2>{html.escape(name)}: {html.escape(h['model'])}</h2><p>data {html.escape(h['data'])}, "
                     f"{h['epochs']} epochs, options {html.escape(json.dumps(h['options']))}, "
                     f"trained with genfast {html.escape(h['trained_with'])}</p>")
        for analysis, numbers in entry.items():
            if analysis == "header":
                continue
            parts.append(f"<h3>{html.escape(analysis)}</h3>")
            for owner, figure_name, path in figures:
                if owner == analysis:
                    data = base64.b64encode(path.read_bytes()).decode()
                    parts.append(f"<figure><img alt='{html.escape(figure_name)}' data-file='{html.escape(path.name)}' "
                                 f"src='data:image/png;base64,{data}'><figcaption>{html.escape(path.name)}"
                                 "</figcaption></figure>")
            parts.append("<table><tr><th>number</th><th>value</th></tr>" + "".join(
                f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>" for k, v in _rows(numbers)) + "</table>")
    parts.append("</body></html>")
    return "\n".join(parts)
