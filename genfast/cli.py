"""The genfast command line, from one table of commands grouped by what they do:

- train:  ``genfast train MODEL`` (flags derived from the training configuration's fields)
- export: ``genfast export RUN -o OUT``
- serve:  ``genfast serve``, and ``genfast sample`` / ``genfast reconstruct`` on exported graphs
- report: ``genfast report RUN... -o OUT``
- info:   ``genfast info``

Serving commands need only numpy and onnxruntime (and Pillow): they work on a machine without
torch. Expected failures (bad settings, damaged files, missing devices, full disks) end in one line
on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import typing
from dataclasses import dataclass
from typing import Callable

EXIT_ERROR = 2


@dataclass(frozen=True)
class Command:
    name: str
    group: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    # (extra, modules): the optional dependencies the command needs, named when missing.
    needs: tuple[str, tuple[str, ...]] | None = None


# ------------------------------------------------------------------------------------------------
# train


def _train_arguments(parser: argparse.ArgumentParser) -> None:
    from .models import get, names
    from .training.config import Config, setting_fields

    hints = typing.get_type_hints(Config)
    parser.add_argument("model", nargs="?", help=f"{', '.join(names())} (default: the --config file's, or vae)")
    parser.add_argument("--config", metavar="FILE",
                        help="settings from a TOML file or a run's config.json; flags given override them")
    parser.add_argument("--run-dir", help="default runs/MODEL")
    parser.add_argument("--resume", action="store_true", help="continue the run in --run-dir")
    parser.add_argument("--overwrite", action="store_true",
                        help="start afresh where --run-dir holds a run (deletes its files)")
    parser.add_argument("--no-progress", action="store_true")
    for field in setting_fields():
        flag = "--" + field.name.replace("_", "-")
        kind = typing.get_args(hints[field.name])[0] if typing.get_origin(hints[field.name]) else hints[field.name]
        if kind is bool:
            parser.add_argument(flag, action="store_true", default=None, help=field.metadata["help"])
        else:
            parser.add_argument(flag, type=kind, choices=field.metadata.get("choices"),
                                help=field.metadata["help"])
    options = "; ".join(f"{spec.name}: " + ", ".join(f"{name}={option.default} in {option.describe_range()}"
                                                       for name, option in spec.options.items())
                        for spec in map(get, names()))
    parser.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                        help=f"a model option (JSON value). {options}")


def _train(args) -> int:
    from .training import train
    from .training.config import read_config_file, setting_fields

    settings = read_config_file(args.config) if args.config else {}
    options = dict(settings.pop("options", {}))
    model = args.model or settings.pop("model", None)
    settings.pop("model", None)
    settings.update({f.name: getattr(args, f.name) for f in setting_fields() if getattr(args, f.name) is not None})
    for item in args.option:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ValueError(f"--option wants NAME=VALUE, got {item!r}")
        if any(f.name == name for f in setting_fields()):
            raise ValueError(f"--option {name}: use --{name.replace('_', '-')} for that")
        try:
            options[name] = json.loads(value)
        except json.JSONDecodeError:
            raise ValueError(f"--option {name}: {value!r} is not a number or JSON value") from None
    train(model, run_dir=args.run_dir, resume=args.resume, overwrite=args.overwrite,
          progress=not args.no_progress, **settings, **options)
    return 0


# ------------------------------------------------------------------------------------------------
# export, serve, sample, reconstruct


def _export_arguments(parser) -> None:
    parser.add_argument("source", help="a run directory, or its model.safetensors / checkpoint.safetensors")
    parser.add_argument("-o", "--out", help="output folder for MODEL_GRAPH.onnx files")
    parser.add_argument("--triton", metavar="REPO",
                        help="write a Triton model repository: REPO/MODEL_GRAPH/config.pbtxt and 1/model.onnx")
    parser.add_argument("--triton-cpu", action="store_true", help="Triton instances on the CPU (default: GPU)")
    parser.add_argument("--triton-instances", type=int, default=1, help="model instances per device")
    parser.add_argument("--triton-max-batch", type=int, default=256, help="Triton's max_batch_size")
    parser.add_argument("--opset", type=int, default=20)
    parser.add_argument("--fp16", action="store_true", help="also write float16 graphs for GPU serving")
    parser.add_argument("--graph", action="append", help="only this graph (repeatable)")


def _export(args) -> int:
    if not args.out and not args.triton:
        raise ValueError("give -o OUT (ONNX files) and/or --triton REPO (a Triton model repository)")
    dtypes = ("float32", "float16") if args.fp16 else ("float32",)
    graphs = tuple(args.graph) if args.graph else None
    if args.out:
        from .export import onnx_export

        for dtype in dtypes:
            for done in onnx_export.export_run(args.source, args.out, opset=args.opset, dtype=dtype, graphs=graphs):
                print(f"{done.path}: {done.kind} {done.graph} {done.dtype}, opset {done.opset}, "
                      f"onnxruntime vs PyTorch {done.parity_error:.2e} (bound {done.parity_bound:g})")
    if args.triton:
        from .export import triton

        batching = triton.Batching(args.triton_max_batch,
                                   tuple(b for b in (16, 64, 256) if b <= args.triton_max_batch) or (1,))
        for folder in triton.write_repository(args.source, args.triton, dtypes=dtypes, graphs=graphs,
                                              opset=args.opset, batching=batching,
                                              instance_kind="cpu" if args.triton_cpu else "gpu",
                                              instances=args.triton_instances):
            print(f"{folder}: config.pbtxt, 1/model.onnx")
    return 0


def _exported_model_arguments(parser) -> None:
    parser.add_argument("model", help="an exported .onnx file or a folder of one model's graphs")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16"],
                        help="which graphs of a folder (float16: those of export --fp16)")


def _sample_arguments(parser) -> None:
    _exported_model_arguments(parser)
    parser.add_argument("-n", type=int, default=64)
    parser.add_argument("--seed", type=int)
    parser.add_argument("-o", "--out", required=True, help="the PNG grid to write")


def _sample(args) -> int:
    from .export import runtime

    model = runtime.load(args.model, device=args.device, dtype=args.dtype)
    runtime.save_grid(model.generate(args.n, args.seed), args.out)
    print(f"{args.out}: {args.n} samples from {model}")
    return 0


def _reconstruct_arguments(parser) -> None:
    _exported_model_arguments(parser)
    parser.add_argument("images", nargs="+", help="image files (PNG, JPEG, ...)")
    parser.add_argument("-o", "--out", required=True, help="the PNG grid to write")


def _reconstruct(args) -> int:
    import numpy as np

    from .export import runtime

    model = runtime.load(args.model, device=args.device, dtype=args.dtype)
    images = runtime.read_images(args.images, model)
    runtime.save_grid(np.concatenate([images, model.reconstruct(images)]), args.out, columns=len(images))
    print(f"{args.out}: {len(images)} images (top) and their reconstructions (bottom) by {model}")
    return 0


# The server's limits: (flag, keyword of serve.make_server, type, help); defaults from export/serve.py.
_SERVE_LIMITS = (
    ("--max-batch", "max_batch", int, "images in one request (default 256)"),
    ("--max-bytes", "max_bytes", int, "bytes of one request body (default 8 MiB)"),
    ("--max-pixels", "max_pixels", int, "decoded width x height in one request (default 2048^2)"),
    ("--max-connections", "max_connections", int, "connections served at once; more wait (default 64)"),
    ("--max-jobs", "max_jobs", int, "requests computing at once (default: the CPU count)"),
    ("--backlog", "backlog", int, "connections waiting to be accepted (default 1024)"),
    ("--request-timeout", "request_timeout", float,
     "seconds for a whole request to arrive, and for its answer to be taken (default 30)"),
)


def _serve_arguments(parser) -> None:
    _exported_model_arguments(parser)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--threads", type=int, help="onnxruntime intra-op threads")
    for flag, keyword, kind, help in _SERVE_LIMITS:
        parser.add_argument(flag, dest=keyword, type=kind, help=help)


def _serve(args) -> int:
    from .export import runtime, serve

    limits = {keyword: getattr(args, keyword) for _, keyword, _, _ in _SERVE_LIMITS
              if getattr(args, keyword) is not None}
    serve.check_limits(**limits)  # before the model is loaded
    model = runtime.load(args.model, device=args.device, threads=args.threads, dtype=args.dtype)
    serve.serve(model, args.host, args.port, **limits)
    return 0


# ------------------------------------------------------------------------------------------------
# report, info


def _report_arguments(parser) -> None:
    parser.add_argument("runs", nargs="+", help="run directories (genfast train's --run-dir)")
    parser.add_argument("-o", "--out", required=True, help="output folder")
    parser.add_argument("--no-progress", action="store_true")


def _report(args) -> int:
    from .analysis import report

    summary = report(args.runs, args.out, progress=not args.no_progress)
    print(f"{args.out}/index.html, summary.md, summary.json: {', '.join(summary['runs'])}")
    return 0


def _info(args) -> int:
    from . import __version__, build_info

    print(json.dumps({"genfast": __version__, **build_info()}, indent=2))
    return 0


_ONNX = ("onnx", ("onnxruntime",))
COMMANDS = (
    Command("train", "train", "train a model of the practicum", _train_arguments, _train),
    Command("export", "export", "export a trained run to verified ONNX graphs", _export_arguments, _export,
            ("onnx", ("torch", "onnx", "onnxscript", "onnxruntime"))),
    Command("serve", "serve", "HTTP endpoint for an exported model (loopback by default)", _serve_arguments,
            _serve, _ONNX),
    Command("sample", "serve", "PNG grid of samples from an exported generate/decode graph",
            _sample_arguments, _sample, _ONNX),
    Command("reconstruct", "serve", "PNG grid of images and their reconstructions by an exported model",
            _reconstruct_arguments, _reconstruct, _ONNX),
    Command("report", "report", "the practicum's analyses of trained runs: figures, HTML, summary.json",
            _report_arguments, _report, ("analysis", ("torch", "matplotlib", "sklearn", "skimage", "cv2"))),
    Command("info", "info", "what this build contains (version, CUDA, archs, OpenMP, compiler)",
            lambda parser: None, _info),
)


def _missing(needs) -> str | None:
    if needs is None:
        return None
    extra, modules = needs
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    return f"this needs {', '.join(missing)}: pip install 'genfast[{extra}]'" if missing else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="genfast", description="Fused kernels for generative models.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    argv = sys.argv[1:] if argv is None else list(argv)
    # Only the chosen command's arguments are defined: train's come from the training
    # configuration, which needs torch, and a serving machine may have none.
    chosen = next((a for a in argv if not a.startswith("-")), None)
    by_name = {}
    for command in COMMANDS:
        label = command.help if command.group == command.name else f"({command.group}) {command.help}"
        command_parser = sub.add_parser(command.name, help=label)
        if command.name == chosen:
            command.add_arguments(command_parser)
        by_name[command.name] = command
    args = parser.parse_args(argv)
    command = by_name[args.command]
    try:
        missing = _missing(command.needs)
        if missing:
            raise RuntimeError(missing)
        return command.run(args)
    except (ValueError, OSError, LookupError, RuntimeError) as error:  # DataError, CheckpointError: ValueError
        message = str(error) or type(error).__name__
        if isinstance(error, OSError) and error.filename and str(error.filename) not in message:
            message = f"{error.filename}: {message}"
        parser.exit(EXIT_ERROR, f"genfast {args.command}: error: {' '.join(message.split())}\n")


if __name__ == "__main__":
    sys.exit(main())
