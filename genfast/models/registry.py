"""The one table from model names (``ae``, ``vae``, ...) to their :class:`ModelSpec`."""

from __future__ import annotations

from torch import nn

from .spec import ModelSpec

_SPECS: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    """Adds a model; its name must be new."""
    if spec.name in _SPECS:
        raise ValueError(f"a model named {spec.name!r} is registered already")
    _SPECS[spec.name] = spec
    return spec


def unregister(name: str) -> None:
    _SPECS.pop(name, None)


def names() -> tuple[str, ...]:
    return tuple(_SPECS)


def get(name: str) -> ModelSpec:
    if name not in _SPECS:
        raise ValueError(f"model must be one of {names()}, got {name!r}")
    return _SPECS[name]


def spec_of(model: nn.Module) -> ModelSpec:
    """The spec of a model instance: the first registered name whose class is exactly its class
    (``ae`` and ``ae-over`` share a class; their graphs and analyses are the same)."""
    model = getattr(model, "_orig_mod", model)  # a torch.compile'd model: its module
    for spec in _SPECS.values():
        if type(model) is spec.model_class:
            return spec
    raise TypeError(f"model must be a registered genfast model ({', '.join(names())}), "
                    f"got {type(model).__name__}")
