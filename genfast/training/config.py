"""A training run's configuration: the settings, their valid ranges, and the model's defaults.

The fields' metadata (``help``, ``flag``) is what ``genfast train`` turns into its flags.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Optional

import torch

from .. import data as datasets
from .. import models

# Settings that may change when a run is resumed; every other one must stay as it was.
RUNTIME_SETTINGS = ("epochs", "device", "max_steps", "amp", "compile", "snapshot_every", "tensorboard")
BACKENDS = ("fused", "reference")
AMP_MODES = ("off", "bf16")
MAX_EPOCHS = 100_000
MAX_BATCH_SIZE = 1 << 20


def _setting(help: str, default=None, **metadata):
    return field(default=default, metadata={"help": help, **metadata})


@dataclass
class Config:
    model: str = _setting("model name", "vae", flag=False)
    data: str = _setting("mnist-5k (embedded, default), mnist:ROOT, fashion-mnist:ROOT, folder:PATH",
                         datasets.EMBEDDED)
    epochs: Optional[int] = _setting("epochs to train (default: the model's)")
    batch_size: Optional[int] = _setting("images per step and process (default: the model's)")
    lr: Optional[float] = _setting("Adam's learning rate (default: the model's)")
    seed: int = _setting("seeds the weights, batch order and noise", 1)
    device: str = _setting("cpu, cuda, cuda:N or auto (cuda when available)", "auto")
    backend: str = _setting("fused (genfast's kernels) or reference (plain PyTorch)", "fused", choices=BACKENDS)
    compile: bool = _setting("torch.compile the networks", False)
    amp: str = _setting("off, or bf16: bfloat16 autocast of the forward passes and losses (CPUs with "
                        "AVX-512-BF16 or AMX, CUDA); the weights stay float32", "off", choices=AMP_MODES)
    max_steps: Optional[int] = _setting("at most this many steps per epoch (quick runs, tests)")
    options: dict[str, Any] = field(default_factory=dict, metadata={"help": "model options", "flag": False})
    # Weights-only snapshots (snapshots/epoch_NNN.safetensors) at epoch 0, every this many epochs
    # and at the last, for analyses across training (t-SNE at epochs 0, 5, 10); 0: none.
    snapshot_every: Optional[int] = _setting(
        "weights at epoch 0, every N epochs and the last (default 5; DCGAN 0: none)")
    tensorboard: bool = _setting("also log metrics and grids to TensorBoard (RUN_DIR/tensorboard; "
                                 "pip install 'genfast[tensorboard]')", False)

    @property
    def spec(self) -> models.ModelSpec:
        return models.get(self.model)

    def resolved(self) -> "Config":
        """A copy with the model's defaults filled in and every setting checked."""
        spec = self.spec
        device = self.device
        if not isinstance(device, str):
            raise ValueError(f"device must be a string, got {device!r}")
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        pick = lambda value, default: default if value is None else value  # noqa: E731
        cfg = Config(self.model, self.data, pick(self.epochs, spec.defaults.epochs),
                     pick(self.batch_size, spec.defaults.batch_size), pick(self.lr, spec.defaults.lr),
                     # amp None: a configuration saved before "off" existed
                     self.seed, device, self.backend, self.compile, pick(self.amp, "off"), self.max_steps,
                     spec.resolve_options(dict(self.options)),
                     pick(self.snapshot_every, spec.defaults.snapshot_every), self.tensorboard)
        cfg.check()
        return cfg

    def check(self) -> None:
        _integer("epochs", self.epochs, 1, MAX_EPOCHS)
        _integer("batch_size", self.batch_size, 1, MAX_BATCH_SIZE)
        _integer("seed", self.seed, 0, 2**32 - 1)
        _integer("snapshot_every", self.snapshot_every, 0, MAX_EPOCHS)
        if self.max_steps is not None:
            _integer("max_steps", self.max_steps, 1, 2**62)
        if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)) or not (
                math.isfinite(self.lr) and 0 < self.lr <= 10):
            raise ValueError(f"lr must be a number in (0, 10], got {self.lr!r}")
        if not isinstance(self.data, str) or not self.data:
            raise ValueError(f"data must be a data set name or SOURCE:PATH, got {self.data!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        for name in ("compile", "tensorboard"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.amp not in AMP_MODES:
            raise ValueError(f"amp must be one of {AMP_MODES}, got {self.amp!r}")
        try:
            device = torch.device(self.device)
        except (RuntimeError, TypeError):
            raise ValueError(f"device must be cpu, cuda, cuda:N or auto, got {self.device!r}") from None
        if device.type not in ("cpu", "cuda"):
            raise ValueError(f"device must be cpu, cuda, cuda:N or auto, got {self.device!r}")
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {self.device}: no CUDA device is available here")
        if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {self.device}: there are {torch.cuda.device_count()} CUDA devices")

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, saved: dict) -> "Config":
        """A configuration read back from a file (unknown keys, such as config.json's build
        information, are ignored); checked when resolved."""
        if not isinstance(saved, dict):
            raise ValueError(f"a configuration must be a JSON object, got {type(saved).__name__}")
        known = {f.name for f in fields(cls)}
        config = cls(**{k: v for k, v in saved.items() if k in known})
        if not isinstance(config.options, dict):
            raise ValueError(f"options must be a JSON object, got {config.options!r}")
        return config


def read_config_file(path: str | Path) -> dict:
    """Settings from a TOML file or the JSON of a run's config.json: the Config fields it names
    (other keys, such as config.json's build information, are ignored); checked when resolved."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise ValueError(f"{path}: cannot read the configuration ({error.strerror or error})") from None
    try:
        if path.suffix.lower() == ".toml":
            try:
                import tomllib
            except ModuleNotFoundError:  # Python 3.10: the same parser as the tomli package
                import tomli as tomllib

            saved = tomllib.loads(text)
        else:
            saved = json.loads(text)
    except ValueError as error:  # JSONDecodeError and TOMLDecodeError
        raise ValueError(f"{path}: not a valid {'TOML' if path.suffix.lower() == '.toml' else 'JSON'} "
                         f"configuration ({error})") from None
    if not isinstance(saved, dict):
        raise ValueError(f"{path}: a configuration is a table of settings, got {type(saved).__name__}")
    known = {f.name for f in fields(Config)}
    settings = {k: v for k, v in saved.items() if k in known}
    if not isinstance(settings.get("options", {}), dict):
        raise ValueError(f"{path}: options must be a table, got {settings['options']!r}")
    return settings


def setting_fields():
    """The settings ``genfast train`` has flags for: (name, type, help, choices)."""
    for f in fields(Config):
        if f.metadata.get("flag", True):
            yield f


def _integer(name: str, value, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name} must be an integer in [{low}, {high}], got {value!r}")
