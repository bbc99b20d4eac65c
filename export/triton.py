"""Exported graphs as an NVIDIA Triton Inference Server model repository (onnxruntime backend):

    REPO/<model>_<graph>[_fp16]/config.pbtxt
    REPO/<model>_<graph>[_fp16]/1/model.onnx

Each ``config.pbtxt`` is Triton's ``ModelConfig`` in protobuf text format: the onnxruntime
platform, ``max_batch_size``, inputs and outputs with names, data types and dims (batch dimension
left out, as Triton wants with batching on), ``dynamic_batching`` with preferred batch sizes, an
``instance_group`` (GPU by default, CPU on request) and the graph's genfast metadata as
parameters. Everything in it is read back from the ONNX file, so it states what the file holds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..files import write_text_atomic

PLATFORM = "onnxruntime_onnx"
# Triton's data type names for the ONNX element types genfast graphs use (onnx.TensorProto values).
DATA_TYPES = {1: "TYPE_FP32", 10: "TYPE_FP16"}
INSTANCE_KINDS = {"gpu": "KIND_GPU", "cpu": "KIND_CPU"}


@dataclass(frozen=True)
class Batching:
    max_batch_size: int = 256
    preferred_batch_sizes: tuple[int, ...] = (16, 64, 256)
    max_queue_delay_us: int = 500  # how long a request may wait for others to batch with

    def check(self) -> None:
        if not 1 <= self.max_batch_size <= 1 << 20:
            raise ValueError(f"max_batch_size must be in [1, {1 << 20}], got {self.max_batch_size}")
        bad = [b for b in self.preferred_batch_sizes if not 1 <= b <= self.max_batch_size]
        if bad or not self.preferred_batch_sizes:
            raise ValueError(f"preferred batch sizes must be in [1, max_batch_size = {self.max_batch_size}], "
                             f"got {list(self.preferred_batch_sizes)}")
        if self.max_queue_delay_us < 0:
            raise ValueError(f"max_queue_delay_us must be >= 0, got {self.max_queue_delay_us}")


def _quote(text: str) -> str:
    return json.dumps(text)  # a JSON string is a valid protobuf text-format string


def _tensor_entries(values) -> list[str]:
    """Triton input/output entries of ONNX graph values: the batch dimension dropped; a value
    that is one number per sample gets dims [1] reshaped to [] (Triton needs a non-empty dims)."""
    entries = []
    for value in values:
        tensor = value.type.tensor_type
        if tensor.elem_type not in DATA_TYPES:
            raise ValueError(f"{value.name}: ONNX element type {tensor.elem_type} has no Triton type here")
        dims = [d.dim_value for d in tensor.shape.dim[1:]]
        if any(d <= 0 for d in dims):
            raise ValueError(f"{value.name}: only the batch dimension may be dynamic, got {dims}")
        shape = f"dims: [ {', '.join(map(str, dims))} ]" if dims else "dims: [ 1 ]\n    reshape: { shape: [ ] }"
        entries.append(f"  {{\n    name: {_quote(value.name)}\n    data_type: {DATA_TYPES[tensor.elem_type]}\n"
                       f"    {shape}\n  }}")
    return entries


def _check_instances(instance_kind: str, instances: int) -> None:
    if instance_kind not in INSTANCE_KINDS:
        raise ValueError(f"instance_kind must be one of {tuple(INSTANCE_KINDS)}, got {instance_kind!r}")
    if isinstance(instances, bool) or not isinstance(instances, int) or not 1 <= instances <= 64:
        raise ValueError(f"instances must be an integer in [1, 64], got {instances!r}")


def config_text(onnx_path: str | Path, name: str, batching: Batching = Batching(), instance_kind: str = "gpu",
                instances: int = 1) -> str:
    """The config.pbtxt of one exported genfast graph, from the file itself."""
    import onnx

    _check_instances(instance_kind, instances)
    batching.check()
    proto = onnx.load(str(onnx_path), load_external_data=False)
    graph = proto.graph
    parameters = "\n".join(
        f"parameters {{\n  key: {_quote('genfast_' + p.key if not p.key.startswith('genfast') else p.key)}\n"
        f"  value: {{ string_value: {_quote(p.value)} }}\n}}" for p in proto.metadata_props)
    preferred = ", ".join(map(str, sorted(set(batching.preferred_batch_sizes))))
    return "\n".join([
        f"name: {_quote(name)}",
        f"platform: {_quote(PLATFORM)}",
        f"max_batch_size: {batching.max_batch_size}",
        "input [\n" + ",\n".join(_tensor_entries(graph.input)) + "\n]",
        "output [\n" + ",\n".join(_tensor_entries(graph.output)) + "\n]",
        f"dynamic_batching {{\n  preferred_batch_size: [ {preferred} ]\n"
        f"  max_queue_delay_microseconds: {batching.max_queue_delay_us}\n}}",
        f"instance_group [\n  {{\n    count: {instances}\n    kind: {INSTANCE_KINDS[instance_kind]}\n  }}\n]",
        parameters,
    ]) + "\n"


def write_repository(source: str | Path, repo: str | Path, *, dtypes: tuple[str, ...] = ("float32",),
                     graphs: tuple[str, ...] | None = None, opset: int | None = None,
                     batching: Batching = Batching(), instance_kind: str = "gpu", instances: int = 1) -> list[Path]:
    """Every graph (or ``graphs``) of a trained run, in every dtype, as a Triton model (verified
    ONNX plus its config.pbtxt); returns the model folders."""
    from ..training import load_model
    from .onnx_export import DEFAULT_OPSET, check_opset, to_onnx

    opset = DEFAULT_OPSET if opset is None else opset
    check_opset(opset)
    batching.check()
    _check_instances(instance_kind, instances)
    model, cfg = load_model(source)
    names = graphs or tuple(g.name for g in cfg.spec.graphs)
    for graph in names:
        cfg.spec.graph(graph)  # unknown names fail before anything is written
    folders = []
    for dtype in dtypes:
        for graph in names:
            name = f"{cfg.model}_{graph}" + ("_fp16" if dtype == "float16" else "")
            folder = Path(repo) / name
            (folder / "1").mkdir(parents=True, exist_ok=True)
            done = to_onnx(model, graph, folder / "1" / "model.onnx", opset=opset, dtype=dtype, kind=cfg.model)
            write_text_atomic(folder / "config.pbtxt", config_text(done.path, name, batching, instance_kind, instances))
            folders.append(folder)
    return folders
