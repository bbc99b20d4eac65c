"""What a model file declares about its model, for the trainer, the exporter, ``load_model`` and
the report: defaults, options with their valid ranges, how to build it, how it trains, the ONNX
graphs it exports and the analyses that apply. Nothing outside a model's file branches on its type.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from torch import Tensor, nn

from .. import ops, reference

BACKENDS = {"fused": ops, "reference": reference}


def backend_ops(backend: str):
    """genfast.ops for 'fused' (genfast's kernels), genfast.reference for 'reference' (plain PyTorch)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {tuple(BACKENDS)}, got {backend!r}")
    return BACKENDS[backend]


@dataclass(frozen=True)
class Option:
    """A model option (``--option NAME=VALUE``): its default, type and valid range (inclusive
    bounds; ``choices`` for a finite set). Integers are accepted where floats are asked for."""
    default: Any
    kind: type
    low: Optional[float] = None
    high: Optional[float] = None
    choices: Optional[tuple] = None
    below_high: bool = False  # the high bound is excluded (a probability in [0, 1))
    help: str = ""

    def validate(self, name: str, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, (int, float) if self.kind is float else self.kind):
            raise ValueError(f"option {name} must be {'a number' if self.kind is float else 'an integer'}, "
                             f"got {value!r}")
        value = self.kind(value)
        if self.choices is not None:
            if value not in self.choices:
                raise ValueError(f"option {name} must be one of {self.choices}, got {value!r}")
            return value
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"option {name} must be finite, got {value!r}")
        too_high = self.high is not None and (value >= self.high if self.below_high else value > self.high)
        if (self.low is not None and value < self.low) or too_high:
            raise ValueError(f"option {name} must be in {self.describe_range()}, got {value!r}")
        return value

    def describe_range(self) -> str:
        if self.choices is not None:
            return "{" + ", ".join(map(str, self.choices)) + "}"
        low = "-inf" if self.low is None else f"{self.low:g}"
        high = "inf" if self.high is None else f"{self.high:g}"
        return f"[{low}, {high}{')' if self.below_high else ']'}"


@dataclass(frozen=True)
class Defaults:
    """The practicum's training settings for a model."""
    lr: float
    batch_size: int
    epochs: int
    betas: tuple[float, float] = (0.9, 0.999)
    snapshot_every: int = 5  # weights-only snapshots every this many epochs (0: none)


@dataclass(frozen=True)
class GraphSpec:
    """One ONNX graph a model exports: a job with one input, its output names, and the function
    computing them from the model (in eval mode) and the input batch."""
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    forward: Callable[[nn.Module, Tensor], Tensor | tuple[Tensor, ...]]


def image_shape_28(options: dict) -> tuple[int, int, int]:
    """MNIST's shape: the practicum's MLP models take 28x28 grey images."""
    return (1, 28, 28)


@dataclass(frozen=True)
class ModelSpec:
    """Everything genfast needs to know about one model name (``genfast train NAME``)."""
    name: str
    summary: str
    model_class: type                       # the nn.Module that build() returns
    build: Callable[..., nn.Module]         # build(backend=..., **options) -> model
    trainer: type                           # a genfast.models.trainer.Trainer subclass
    defaults: Defaults
    options: dict[str, Option]
    graphs: tuple[GraphSpec, ...]
    analyses: tuple[str, ...]               # names of genfast.analysis.report.ANALYSES
    image_shape: Callable[[dict], tuple[int, int, int]] = image_shape_28  # (C, H, W) from the options
    notes: tuple[str, ...] = field(default_factory=tuple)  # where we knowingly differ from the practicum

    def resolve_options(self, given: dict) -> dict:
        """The given options validated, with the defaults of those not given."""
        unknown = set(given) - set(self.options)
        if unknown:
            raise ValueError(f"unknown option(s) {sorted(unknown)} for {self.name}; it takes "
                             f"{sorted(self.options)}")
        return {name: option.validate(name, given[name]) if name in given else option.default
                for name, option in self.options.items()}

    def graph(self, name: str) -> GraphSpec:
        for graph in self.graphs:
            if graph.name == name:
                return graph
        raise ValueError(f"a {self.name} model has the graphs {tuple(g.name for g in self.graphs)}, not {name!r}")
