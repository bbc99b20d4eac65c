"""Trained genfast models to ONNX: one verified, self-contained graph per job.

Every graph is exported from the model in eval mode (the VAE's z = mu, no DAE corruption, BatchNorm
with its running statistics), so no fused training op and no random node reaches it; noise is an
input. Each export is checked before it is reported done: ``onnx.checker`` (full check), the graph's
content (no random nodes, no training-mode BatchNormalization, only the standard ONNX domain), and
onnxruntime against PyTorch on fresh random inputs at batch 1 and 64. The file is written only after
all of that passed, atomically: a failed export leaves no file behind.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from .. import models
from ..files import atomic_write
from ..images import value_range_bounds
from ..models import GraphSpec
from ..training import load_model
from ..version import __version__

DEFAULT_OPSET = 20
# The torch.onnx dynamo exporter writes opset 18 and newer (it silently raises older requests).
MIN_OPSET = 18
# Largest allowed |onnxruntime - PyTorch| relative to max(1, |PyTorch|): outputs in [-1, 1] get the
# bound as an absolute error, energies (sums over 784 pixels) a relative one.
PARITY_BOUND = {"float32": 1e-5, "float16": 1e-2}
PARITY_BATCHES = (1, 64)
# Node types that would make a graph non-deterministic or a training graph.
RANDOM_OPS = {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Bernoulli",
              "Multinomial", "Dropout"}
STANDARD_DOMAINS = {"", "ai.onnx"}


class ExportError(RuntimeError):
    """An export that failed its verification; no file was written."""


def describe(model: nn.Module, kind: str) -> dict[str, object]:
    """What a serving runtime needs to know about a model: latent size, image shape, value range."""
    value_range = list(value_range_bounds(model.value_range))
    shape = tuple(model.image_shape)
    return {"model_kind": kind, "latent_size": model.latent_size, "image_shape": list(shape), "channels": shape[0],
            "input_range": value_range, "output_range": value_range}


class _Job(nn.Module):
    """A graph as a module of one input, for torch.onnx.export."""

    def __init__(self, model: nn.Module, graph: GraphSpec):
        super().__init__()
        self.model, self.graph = model, graph

    def forward(self, x: Tensor):
        return self.graph.forward(self.model, x)


def _example(graph: GraphSpec, info: dict, batch: int, generator: torch.Generator) -> Tensor:
    """Fresh random inputs: standard normal noise, or uniform images in the model's input range."""
    if graph.inputs[0] == "z":
        return torch.randn(batch, info["latent_size"], generator=generator)
    low, high = info["input_range"]
    return low + (high - low) * torch.rand(batch, *info["image_shape"], generator=generator)


def _check_content(proto) -> None:
    for node in proto.graph.node:
        if node.op_type in RANDOM_OPS:
            raise ExportError(f"graph has a random node {node.op_type} ({node.name})")
        if node.domain not in STANDARD_DOMAINS:
            raise ExportError(f"graph has a node of custom domain {node.domain!r} ({node.op_type})")
        if node.op_type == "BatchNormalization" and any(a.name == "training_mode" and a.i for a in node.attribute):
            raise ExportError(f"graph has a training-mode BatchNormalization ({node.name})")
    if len(proto.functions):
        raise ExportError(f"graph has local functions {[f.name for f in proto.functions]}")


def _parity(data: bytes, job: _Job, graph: GraphSpec, info: dict, dtype: str, seed: int) -> float:
    """Largest |onnxruntime - PyTorch (float32)| / max(1, |PyTorch|) over batches 1 and 64."""
    import onnxruntime as ort

    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(seed)
    worst = 0.0
    for batch in PARITY_BATCHES:
        x = _example(graph, info, batch, generator)
        with torch.no_grad():
            expected = job(x)
        expected = expected if isinstance(expected, tuple) else (expected,)
        feed = x.numpy().astype(np.float16 if dtype == "float16" else np.float32)
        got = session.run(list(graph.outputs), {graph.inputs[0]: feed})
        for want, have in zip(expected, got, strict=True):
            want = want.double().numpy()
            if have.shape != want.shape:
                raise ExportError(f"{graph.name}: onnxruntime gives shape {have.shape}, PyTorch {want.shape}")
            error = np.abs(have.astype(np.float64) - want).max(initial=0.0) / max(1.0, np.abs(want).max(initial=0.0))
            worst = max(worst, float(error) if np.isfinite(error) else math.inf)
    return worst


@dataclass(frozen=True)
class Exported:
    path: Path
    kind: str
    graph: str
    dtype: str
    opset: int
    parity_error: float  # max |onnxruntime - PyTorch| / max(1, |PyTorch|) at batch 1 and 64
    parity_bound: float


def to_onnx(model: nn.Module, graph: str, path: str | Path, *, opset: int = DEFAULT_OPSET,
            dtype: str = "float32", kind: str | None = None, seed: int = 0) -> Exported:
    """Exports one graph of a trained genfast model (its ModelSpec's graphs) to ``path`` and verifies it.

    ``dtype="float16"`` writes a half-precision graph for GPU serving, checked against the float32
    model with the looser bound PARITY_BOUND["float16"]. Raises ExportError (and writes nothing)
    when a check fails.
    """
    import onnx

    if dtype not in PARITY_BOUND:
        raise ValueError(f"dtype must be one of {tuple(PARITY_BOUND)}, got {dtype!r}")
    check_opset(opset)
    model = getattr(model, "_orig_mod", model)  # a torch.compile'd model: its module
    model_spec = models.get(kind) if kind else models.spec_of(model)
    kind = model_spec.name
    spec, info = model_spec.graph(graph), describe(model, kind)
    model = _cpu_copy(model)  # the caller's model stays where and as it is (device, mode)
    job = _Job(model, spec).eval()
    example = _example(spec, info, 2, torch.Generator().manual_seed(seed))
    exported = _Job(_cpu_copy(model).half(), spec).eval() if dtype == "float16" else job
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    with warnings.catch_warnings(), _quiet_exporter():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            exported, (example.to(torch.float16 if dtype == "float16" else torch.float32),), dynamo=True,
            opset_version=opset, input_names=list(spec.inputs), output_names=list(spec.outputs),
            dynamic_shapes={"x": {0: batch}}, external_data=False, verbose=False, optimize=True)
    proto = program.model_proto
    written = [o.version for o in proto.opset_import if o.domain in STANDARD_DOMAINS]
    if written != [opset]:  # the metadata states what is in the file, or there is no file
        raise ExportError(f"{kind} {graph}: asked for opset {opset}, the exporter wrote {written}")
    bound = PARITY_BOUND[dtype]
    metadata = {"genfast_version": __version__, **{k: json.dumps(v) if not isinstance(v, str) else v
                                                 for k, v in info.items()},
                "graph": graph, "inputs": json.dumps(list(spec.inputs)),
                "outputs": json.dumps(list(spec.outputs)), "dtype": dtype, "opset": str(opset),
                "parity_bound": str(bound),
                "parity_metric": "max |onnxruntime - pytorch| / max(1, max |pytorch|) at batch 1 and 64"}
    for key, value in metadata.items():
        proto.metadata_props.add(key=key, value=value)
    try:
        onnx.checker.check_model(proto, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as error:
        raise ExportError(f"{kind} {graph}: onnx.checker rejects the graph: {error}") from None
    _check_content(proto)
    error = _parity(proto.SerializeToString(), job, spec, info, dtype, seed)
    if not error <= bound:
        raise ExportError(f"{kind} {graph} ({dtype}): onnxruntime differs from PyTorch by {error:.3g} "
                          f"(relative to max(1, |output|)), more than {bound:g}")
    proto.metadata_props.add(key="parity_error", value=f"{error:.3e}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = proto.SerializeToString()
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))
    return Exported(path, kind, graph, dtype, opset, error, bound)


def check_opset(opset) -> None:
    """Opsets the exporter writes as asked: MIN_OPSET up to the newest the installed onnx knows."""
    import onnx

    newest = onnx.defs.onnx_opset_version()
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= newest:
        raise ValueError(f"opset must be an integer in [{MIN_OPSET}, {newest}], got {opset!r}")


def export_run(source: str | Path, out_dir: str | Path, *, opset: int = DEFAULT_OPSET,
               dtype: str = "float32", graphs: tuple[str, ...] | None = None) -> list[Exported]:
    """Every graph (or ``graphs``) of the trained model in a run directory or checkpoint file,
    as OUT_DIR/<model>_<graph>.onnx (…fp16.onnx for float16)."""
    check_opset(opset)
    model, cfg = load_model(source)
    available = tuple(g.name for g in cfg.spec.graphs)
    unknown = set(graphs or ()) - set(available)
    if unknown:  # before anything is written
        raise ValueError(f"a {cfg.model} model has the graphs {available}, not {sorted(unknown)}")
    names = graphs or available
    suffix = ".fp16.onnx" if dtype == "float16" else ".onnx"
    return [to_onnx(model, name, Path(out_dir) / f"{cfg.model}_{name}{suffix}", opset=opset, dtype=dtype,
                    kind=cfg.model) for name in names]


def _cpu_copy(model: nn.Module) -> nn.Module:
    """A float32 CPU copy in eval mode."""
    return copy.deepcopy(model).to("cpu", torch.float32, memory_format=torch.contiguous_format).eval()


class _quiet_exporter:
    """Silences the exporter's informational logging (e.g. torchvision ops it skips)."""

    def __enter__(self):
        self.loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "onnxscript")]
        self.levels = [logger.level for logger in self.loggers]
        for logger in self.loggers:
            logger.setLevel(logging.ERROR)

    def __exit__(self, *exc):
        for logger, level in zip(self.loggers, self.levels):
            logger.setLevel(level)
