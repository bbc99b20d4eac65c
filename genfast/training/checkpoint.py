"""Run files: weights (``model.safetensors``, snapshots) and checkpoints (weights, optimizer state
and configuration, what ``--resume`` needs), written atomically and read back with every tensor
checked against the model and optimizer it goes into before anything uses it. Nothing is pickled:
tensors go to safetensors, the rest to JSON in its metadata.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .. import models
from ..files import atomic_write
from ..version import __version__
from .config import Config

MODEL_PREFIX = "model/"
OPTIMIZER_PREFIX = "optim/"


class CheckpointError(ValueError):
    """A weights or checkpoint file that cannot be used: named, with what is wrong."""


def save_weights(path: Path, trainer: models.Trainer, cfg: Config) -> None:
    from safetensors.torch import save_file

    weights = _model_tensors(trainer.model)
    metadata = {"config": json.dumps(cfg.to_json()), "genfast_version": __version__}
    atomic_write(path, lambda tmp: save_file(weights, tmp, metadata=metadata))


def save_checkpoint(path: Path, trainer: models.Trainer, epoch: int, cfg: Config) -> None:
    from safetensors.torch import save_file

    tensors = _model_tensors(trainer.model)
    optimizer_meta: dict[str, Any] = {}
    for name, optimizer in trainer.optimizers.items():
        state = optimizer.state_dict()
        scalars = {}
        for index, entry in state["state"].items():
            for key, value in entry.items():
                if isinstance(value, Tensor):
                    tensors[f"{OPTIMIZER_PREFIX}{name}/{index}/{key}"] = value.detach().cpu().contiguous()
                else:
                    scalars[f"{index}/{key}"] = value
        optimizer_meta[name] = {"param_groups": state["param_groups"], "scalars": scalars}
    metadata = {"epoch": str(epoch), "config": json.dumps(cfg.to_json()),
                "optimizers": json.dumps(optimizer_meta), "genfast_version": __version__}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def _model_tensors(model: nn.Module) -> dict[str, Tensor]:
    return {MODEL_PREFIX + k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def read_metadata(path: Path) -> dict[str, str]:
    """The metadata of a safetensors file alone (its tensors are not read), or a CheckpointError."""
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"{path}: not a readable safetensors file ({error})") from None


def read_file(path: Path) -> tuple[dict[str, str], dict[str, Tensor]]:
    """(metadata, tensors) of a safetensors file, or a CheckpointError naming it."""
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {}), {key: f.get_tensor(key) for key in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"{path}: not a readable safetensors file ({error})") from None


def saved_config(path: Path, metadata: dict[str, str], **overrides) -> Config:
    """The configuration embedded in a weights or checkpoint file (or, for files written before
    configurations were embedded, the config.json beside it), with ``overrides``, resolved: every
    setting and model option range-checked before anything is built from it."""
    if "config" in metadata:
        text, source = metadata["config"], path
    elif (path.parent / "config.json").is_file():
        source = path.parent / "config.json"
        text = source.read_text()
    else:
        raise CheckpointError(f"{path}: no configuration (neither in the file nor a config.json beside it)")
    try:
        saved = Config.from_json(json.loads(text))
        return Config.from_json({**saved.to_json(), **overrides}).resolved()
    except (ValueError, TypeError) as error:
        raise CheckpointError(f"{source}: bad configuration: {error}") from None


def load_weights(path: Path, model: nn.Module, tensors: dict[str, Tensor]) -> None:
    """Loads the ``model/`` tensors of a file into model after checking each one."""
    expected = model.state_dict()
    state = {k[len(MODEL_PREFIX):]: v for k, v in tensors.items() if k.startswith(MODEL_PREFIX)}
    _check_tensors(path, "weight", state, expected)
    model.load_state_dict(state)


def _check_tensors(path: Path, what: str, got: dict[str, Tensor], expected: dict[str, Tensor]) -> None:
    missing, unexpected = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{path}: {what} names do not fit the model: missing {missing[:5]}, "
                              f"unexpected {unexpected[:5]}")
    for key, want in expected.items():
        have = got[key]
        if have.shape != want.shape or have.dtype != want.dtype:
            raise CheckpointError(f"{path}: {what} {key} is {have.dtype} {tuple(have.shape)}, the model "
                                  f"wants {want.dtype} {tuple(want.shape)}")
        if have.is_floating_point() and not torch.isfinite(have).all():
            raise CheckpointError(f"{path}: {what} {key} holds NaN or infinity")


def load_model(path: str | Path) -> tuple[nn.Module, Config]:
    """The trained model of a run directory (or of its model.safetensors, checkpoint.safetensors
    or a snapshot) and its configuration; the model is on the CPU, in eval mode."""
    path = Path(path)
    weights = path / "model.safetensors" if path.is_dir() else path
    if not weights.is_file():
        raise FileNotFoundError(f"{weights}: no trained model here (a run directory holds model.safetensors)")
    metadata, tensors = read_file(weights)
    cfg = saved_config(weights, metadata, device="cpu", compile=False, amp="off")
    spec = cfg.spec
    model = spec.build(backend=cfg.backend, **cfg.options)
    load_weights(weights, model, tensors)
    return model.eval(), cfg


def load_checkpoint(path: Path, trainer: models.Trainer, device) -> int:
    """Restores weights and optimizer state; returns the epoch the checkpoint finished."""
    metadata, tensors = read_file(path)
    try:
        epoch = int(metadata["epoch"])
        optimizer_meta = json.loads(metadata["optimizers"])
        if epoch < 0 or not isinstance(optimizer_meta, dict):
            raise ValueError("bad epoch or optimizer record")
    except (KeyError, ValueError, TypeError) as error:
        raise CheckpointError(f"{path}: not a genfast checkpoint ({error})") from None
    load_weights(path, trainer.model, tensors)
    for name, optimizer in trainer.optimizers.items():
        state = _optimizer_state(path, name, optimizer, optimizer_meta.get(name), tensors, device)
        optimizer.load_state_dict(state)
    return epoch


def _optimizer_state(path: Path, name: str, optimizer: torch.optim.Optimizer, meta, tensors: dict[str, Tensor],
                     device) -> dict:
    """The saved state of one Adam optimizer, checked against its parameters: each moment has
    its parameter's shape and dtype and is finite (the second non-negative), steps are finite."""
    current = optimizer.state_dict()
    if not isinstance(meta, dict) or not isinstance(meta.get("param_groups"), list) \
            or not isinstance(meta.get("scalars"), dict):
        raise CheckpointError(f"{path}: no state for the optimizer of {name!r}")
    groups = meta["param_groups"]
    if [g.get("params") if isinstance(g, dict) else None for g in groups] != \
            [g["params"] for g in current["param_groups"]]:
        raise CheckpointError(f"{path}: the optimizer of {name!r} has other parameter groups than the model")
    for group, now in zip(groups, current["param_groups"]):
        for key in ("lr", "eps", "weight_decay"):
            if not _finite_number(group.get(key, now[key])):
                raise CheckpointError(f"{path}: optimizer {name!r} has {key} = {group.get(key)!r}")
        betas = group.get("betas", now["betas"])
        if not (isinstance(betas, list) and len(betas) == 2 and all(_finite_number(b) for b in betas)):
            raise CheckpointError(f"{path}: optimizer {name!r} has betas = {betas!r}")
    parameters = {index: p for group, now in zip(optimizer.param_groups, current["param_groups"])
                  for index, p in zip(now["params"], group["params"])}
    state: dict[int, dict[str, Any]] = {}
    prefix = f"{OPTIMIZER_PREFIX}{name}/"
    for key, value in tensors.items():
        if not key.startswith(prefix):
            continue
        index_text, _, entry = key[len(prefix):].partition("/")
        index = int(index_text) if index_text.isdigit() else -1
        if index not in parameters or entry not in ("exp_avg", "exp_avg_sq", "step", "max_exp_avg_sq"):
            raise CheckpointError(f"{path}: unexpected optimizer tensor {key}")
        parameter = parameters[index]
        if entry == "step":
            if value.numel() != 1 or not value.is_floating_point() and value.dtype != torch.int64:
                raise CheckpointError(f"{path}: {key} must be one number, got {value.dtype} {tuple(value.shape)}")
        elif value.shape != parameter.shape or value.dtype != parameter.dtype:
            raise CheckpointError(f"{path}: {key} is {value.dtype} {tuple(value.shape)}, its parameter is "
                                  f"{parameter.dtype} {tuple(parameter.shape)}")
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise CheckpointError(f"{path}: {key} holds NaN or infinity")
        if entry in ("exp_avg_sq", "max_exp_avg_sq", "step") and (value < 0).any():
            raise CheckpointError(f"{path}: {key} holds negative values")
        state.setdefault(index, {})[entry] = value.to(device) if entry != "step" else value
    for key, value in meta["scalars"].items():
        index_text, _, entry = str(key).partition("/")
        if not index_text.isdigit() or int(index_text) not in parameters or not _finite_number(value):
            raise CheckpointError(f"{path}: bad optimizer value {key} = {value!r}")
        state.setdefault(int(index_text), {})[entry] = value
    incomplete = [i for i, entries in state.items() if not {"exp_avg", "exp_avg_sq", "step"} <= set(entries)]
    if incomplete:
        raise CheckpointError(f"{path}: optimizer {name!r} lacks moments or steps for parameters {incomplete[:5]}")
    return {"state": state, "param_groups": groups}


def _finite_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
