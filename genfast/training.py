"""One trainer for every model: ``genfast.train("vae", epochs=10)`` or ``genfast train vae``.

A run directory holds ``config.json``, ``metrics.jsonl`` (one line per epoch), ``steps.jsonl``
(the training metrics of every step), ``model.safetensors``
(weights), ``checkpoint.safetensors`` (weights and optimizer state, for ``resume``) and a PNG
grid per epoch. Files are written atomically (temporary file, fsync, rename): a kill during a save
leaves the previous checkpoint intact. Nothing is pickled: tensors go to safetensors, the rest to JSON.

The data set lives as one tensor on the training device; each epoch's batches are slices of a
permutation drawn from a generator seeded by (seed, epoch), and its noise (VAE sampling, DAE
corruption, GAN latents) from torch's generator seeded by (seed, epoch, rank), so a resumed run
continues exactly.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import data as datasets
from . import models
from .files import atomic_write
from .images import save_grid, to_unit
from .ops import build_info, dropout_corrupt

MODELS = ("ae", "ae-over", "dae", "vae", "ebgan", "dcgan")
# The model options each model takes (``--option NAME=VALUE``).
OPTIONS = {
    "ae": {"d"}, "ae-over": {"d"}, "dae": {"d", "p"}, "vae": {"d", "beta"},
    "ebgan": {"nz", "hidden", "margin"}, "dcgan": {"nz", "ngf", "ndf", "image_size", "channels"},
}
# The practicum's settings per model: (lr, batch size, epochs). The practicum gives none for its
# EBGAN: it takes DCGAN's.
DEFAULTS = {
    "ae": (1e-3, 256, 20),
    "ae-over": (1e-3, 256, 20),
    "dae": (1e-3, 256, 20),
    "vae": (1e-3, 256, 10),
    "ebgan": (2e-4, 64, 25),
    "dcgan": (2e-4, 64, 25),
}


@dataclass
class Config:
    model: str = "vae"
    data: str = datasets.EMBEDDED
    epochs: Optional[int] = None
    batch_size: Optional[int] = None
    lr: Optional[float] = None
    seed: int = 1
    device: str = "auto"
    backend: str = "fused"
    compile: bool = False
    amp: Optional[str] = None
    max_steps: Optional[int] = None  # stop each epoch after this many steps (quick runs, tests)
    options: dict[str, Any] = field(default_factory=dict)  # model options: d, beta, p, nz, margin, ...
    # Weights-only snapshots (snapshots/epoch_NNN.safetensors) at epoch 0, every this many epochs
    # and at the last, for analyses across training (t-SNE at epochs 0, 5, 10); 0: none. Default 5,
    # and 0 for DCGAN (25 MB a snapshot).
    snapshot_every: Optional[int] = None

    def resolved(self) -> "Config":
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {MODELS}, got {self.model!r}")
        unknown = set(self.options) - OPTIONS[self.model]
        if unknown:
            raise ValueError(f"unknown option(s) {sorted(unknown)} for {self.model}; it takes "
                             f"{sorted(OPTIONS[self.model])}")
        lr, batch_size, epochs = DEFAULTS[self.model]
        device = self.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if self.amp not in (None, "bf16"):
            raise ValueError(f"amp must be None or 'bf16', got {self.amp!r}")
        if self.amp and not device.startswith("cuda"):
            raise ValueError("--amp bf16 needs a CUDA device")
        pick = lambda value, default: default if value is None else value  # noqa: E731
        snapshot_every = pick(self.snapshot_every, 0 if self.model == "dcgan" else 5)
        if not isinstance(snapshot_every, int) or snapshot_every < 0:
            raise ValueError(f"snapshot_every must be a non-negative integer, got {snapshot_every!r}")
        return Config(self.model, self.data, pick(self.epochs, epochs), pick(self.batch_size, batch_size),
                      pick(self.lr, lr), self.seed, device, self.backend, self.compile, self.amp,
                      self.max_steps, dict(self.options), snapshot_every)


# ------------------------------------------------------------------------------------------------
# Tasks: what one training step, one evaluation and one picture mean for each model.


class Task:
    """A model, its optimizers, and its step / evaluation / picture.

    ``nets`` are the networks that run forward passes in training: each is wrapped in
    DistributedDataParallel under torchrun, separately (wrapping one module holding both networks
    of a GAN breaks its training). ``modules`` are the unwrapped ones, for checkpoints.
    """

    def __init__(self, cfg: Config, model: nn.Module, nets: dict[str, nn.Module], lr_betas=(0.9, 0.999)):
        self.cfg, self.model = cfg, model
        self.nets = dict(nets)
        self.optimizers = {name: _adam(net.parameters(), cfg.lr, lr_betas) for name, net in nets.items()}

    memory_format = torch.contiguous_format

    def modules(self) -> dict[str, nn.Module]:
        return {"model": self.model}

    def to(self, device) -> None:
        for module in self.modules().values():
            module.to(device, memory_format=self.memory_format)

    def prepare(self, images: Tensor) -> Tensor:
        """A data set tensor in the memory format the networks want."""
        return images.contiguous(memory_format=self.memory_format)

    def wrap(self, wrapper) -> None:
        self.nets = {name: wrapper(net) for name, net in self.nets.items()}

    def _step(self, name: str, loss: Tensor) -> None:
        optimizer = self.optimizers[name]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def train_step(self, x: Tensor) -> dict[str, float]:
        raise NotImplementedError

    @torch.no_grad()
    def evaluate(self, x: Tensor) -> dict[str, float]:
        return {}

    @torch.no_grad()
    def picture(self, x: Tensor) -> Tensor:
        """Images in [0, 1] for the epoch's grid."""
        raise NotImplementedError


def _adam(params, lr: float, betas: tuple[float, float]) -> torch.optim.Optimizer:
    """Adam with the fused implementation (one kernel for all parameters) where torch has it."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, betas=betas, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(params, lr=lr, betas=betas)


def _showcase(x: Tensor, n: int = 8) -> Tensor:
    """n test images spread over the set (the test split is ordered by class)."""
    return x[torch.linspace(0, x.shape[0] - 1, n).long().to(x.device)]


class _EvalMode:
    """Puts a module in eval mode for a block, then back in training mode."""

    def __init__(self, module: nn.Module):
        self.module = module

    def __enter__(self):
        self.module.eval()

    def __exit__(self, *exc):
        self.module.train()


class AutoencoderTask(Task):
    def __init__(self, cfg: Config, model: models.Autoencoder):
        super().__init__(cfg, model, {"model": model})

    def train_step(self, x):
        loss = F.mse_loss(self.nets["model"](self.model.inputs(x)), x)
        self._step("model", loss)
        return {"loss": loss.item()}

    @torch.no_grad()
    def evaluate(self, x):
        with _EvalMode(self.model):
            metrics = {"test_mse": _batched_mean(lambda b: (self.model(b) - b).pow(2).mean(), x)}
            if isinstance(self.model, models.DenoisingAutoencoder):
                # The same corruption every epoch (fixed seed), whatever the training backend.
                corrupt = lambda b: dropout_corrupt(b, self.model.p, seed=len(b))[0]  # noqa: E731
                metrics["test_denoise_mse"] = _batched_mean(
                    lambda b: (self.model(corrupt(b)) - b).pow(2).mean(), x)
            return metrics

    @torch.no_grad()
    def picture(self, x):
        with _EvalMode(self.model):
            clean = _showcase(x)
            if isinstance(self.model, models.DenoisingAutoencoder):
                corrupted = self.model.inputs(clean)  # in [-2, 2], as the model sees it
                shown = [clean, corrupted.clamp(-1, 1), self.model(corrupted)]
            else:
                shown = [clean, self.model(clean)]
            return to_unit(torch.cat(shown), "tanh")


class VAETask(Task):
    def __init__(self, cfg: Config, model: models.VAE):
        super().__init__(cfg, model, {"model": model})

    def train_step(self, x):
        # The decoder's logits and BCE on logits: no Sigmoid pass forward and back.
        loss = self.model.loss(x, self.nets["model"](x, logits=True), from_logits=True)
        self._step("model", loss)
        return {"loss": loss.item() / x.shape[0]}  # per image, as the practicum prints

    @torch.no_grad()
    def evaluate(self, x):
        with _EvalMode(self.model):  # z = mu
            return {"test_loss": _batched_mean(lambda b: self.model.loss(b) / b.shape[0], x)}

    @torch.no_grad()
    def picture(self, x):
        with _EvalMode(self.model):
            shown = _showcase(x)
            samples = self.model.sample(16, torch.Generator().manual_seed(0)).view(-1, *x.shape[1:])
            return torch.cat([shown, self.model(shown)[0], samples])


class EnergyGANTask(Task):
    def __init__(self, cfg: Config, model: models.EnergyGAN):
        super().__init__(cfg, model, {"generator": model.generator, "cost": model.cost},
                         lr_betas=(0.5, 0.999))
        self.fixed_noise = model.noise(64, torch.Generator().manual_seed(cfg.seed))

    def train_step(self, x):
        generator, cost = self.nets["generator"], self.nets["cost"]
        fake = generator(self.model.noise(x.shape[0]).to(x.device))
        # Real and detached fake images in one forward pass (DDP allows one per backward).
        cost_real, cost_fake = cost(torch.cat([x.flatten(1), fake.detach()])).split(x.shape[0])
        cost_loss = self.model.cost_loss(cost_real, cost_fake)
        self._step("cost", cost_loss)
        generator_loss = self.model.generator_loss(cost(fake))
        self._step("generator", generator_loss)
        return {"loss_cost": cost_loss.item(), "loss_generator": generator_loss.item()}

    @torch.no_grad()
    def evaluate(self, x):
        fake = self.model.generate(self.fixed_noise.to(x.device))
        return {"test_energy_real": _batched_mean(lambda b: self.model.cost(b).mean(), x),
                "energy_fake": self.model.cost(fake).mean().item()}

    @torch.no_grad()
    def picture(self, x):
        fake = self.model.generate(self.fixed_noise.to(x.device)).view(-1, *x.shape[1:])
        return to_unit(fake, "tanh")


class DCGANTask(Task):
    # NHWC: oneDNN's and cuDNN's fast convolution layout (1.6x per iteration on the development CPU).
    memory_format = torch.channels_last

    def __init__(self, cfg: Config, model: models.DCGAN):
        super().__init__(cfg, model, {"generator": model.generator, "discriminator": model.discriminator},
                         lr_betas=(0.5, 0.999))
        self.fixed_noise = model.noise(64, torch.Generator().manual_seed(cfg.seed))

    def train_step(self, x):
        g, d, m = self.nets["generator"], self.nets["discriminator"], self.model
        # (1) D: maximise log D(x) + log(1 - D(G(z))): real batch, then the detached fake batch.
        self.optimizers["discriminator"].zero_grad(set_to_none=True)
        real_logits = d(x)
        loss_real = m.bce(real_logits, 1.0)
        loss_real.backward()
        fake = g(m.noise(x.shape[0]).to(x.device))
        fake_logits = d(fake.detach())
        loss_fake = m.bce(fake_logits, 0.0)
        loss_fake.backward()
        self.optimizers["discriminator"].step()
        # (2) G: maximise log D(G(z)), against real labels. Only G's gradients are computed:
        # pytorch/examples also computes D's weight gradients here and zeroes them unused (a sixth
        # of D's backward work). D runs unwrapped: under DDP this pass must not all-reduce D.
        after_logits = m.discriminator(fake)
        loss_g = m.bce(after_logits, 1.0)
        self.optimizers["generator"].zero_grad(set_to_none=True)
        loss_g.backward(inputs=list(g.parameters()))
        self.optimizers["generator"].step()
        return {"Loss_D": (loss_real + loss_fake).item(), "Loss_G": loss_g.item(),
                "D(x)": torch.sigmoid(real_logits).mean().item(),
                "D(G(z))_before": torch.sigmoid(fake_logits).mean().item(),
                "D(G(z))_after": torch.sigmoid(after_logits).mean().item()}

    @torch.no_grad()
    def picture(self, x):
        with _EvalMode(self.model.generator):
            return to_unit(self.model.generator(self.fixed_noise.to(x.device)), "tanh")


def build_task(cfg: Config, channels: int = 1) -> Task:
    opts, backend = cfg.options, cfg.backend
    if cfg.model in ("ae", "ae-over"):
        d = opts.get("d", 30 if cfg.model == "ae" else 1000)
        return AutoencoderTask(cfg, models.Autoencoder(d=d, backend=backend))
    if cfg.model == "dae":
        return AutoencoderTask(cfg, models.DenoisingAutoencoder(d=opts.get("d", 500), p=opts.get("p", 0.5),
                                                                backend=backend))
    if cfg.model == "vae":
        return VAETask(cfg, models.VAE(d=opts.get("d", 20), beta=opts.get("beta", 1.0), backend=backend))
    if cfg.model == "ebgan":
        return EnergyGANTask(cfg, models.EnergyGAN(nz=opts.get("nz", 64), hidden=opts.get("hidden", 512),
                                                   margin=opts.get("margin", 10.0)))
    return DCGANTask(cfg, models.DCGAN(nz=opts.get("nz", 100), ngf=opts.get("ngf", 64), ndf=opts.get("ndf", 64),
                                       nc=channels, image_size=opts.get("image_size", 64),
                                       backend=backend))


def _batched_mean(fn, x: Tensor, batch: int = 1000) -> float:
    """Mean of fn over test batches, weighted by batch size."""
    total = 0.0
    for start in range(0, x.shape[0], batch):
        part = x[start:start + batch]
        total += fn(part).item() * part.shape[0]
    return total / max(1, x.shape[0])


# ------------------------------------------------------------------------------------------------
# Files: atomic writes, safetensors checkpoints, PNG grids.


def _write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def save_checkpoint(path: Path, task: Task, epoch: int, cfg: Config) -> None:
    from safetensors.torch import save_file

    tensors: dict[str, Tensor] = {}
    optimizer_meta: dict[str, Any] = {}
    for name, module in task.modules().items():
        for key, value in module.state_dict().items():
            tensors[f"{name}/{key}"] = value.detach().cpu().contiguous()
    for name, opt in task.optimizers.items():
        state = opt.state_dict()
        scalars = {}
        for index, entry in state["state"].items():
            for key, value in entry.items():
                if isinstance(value, Tensor):
                    tensors[f"optim/{name}/{index}/{key}"] = value.detach().cpu().contiguous()
                else:
                    scalars[f"{index}/{key}"] = value
        optimizer_meta[name] = {"param_groups": state["param_groups"], "scalars": scalars}
    metadata = {"epoch": str(epoch), "config": json.dumps(asdict(cfg)),
                "optimizers": json.dumps(optimizer_meta), "genfast_version": build_info()["version"]}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def save_weights(path: Path, task: Task) -> None:
    from safetensors.torch import save_file

    weights = {f"{name}/{k}": v.detach().cpu().contiguous()
               for name, module in task.modules().items() for k, v in module.state_dict().items()}
    metadata = {"config": json.dumps(asdict(task.cfg)), "genfast_version": build_info()["version"]}
    atomic_write(path, lambda tmp: save_file(weights, tmp, metadata=metadata))


def load_model(path: str | Path) -> tuple[nn.Module, Config]:
    """The trained model of a run directory (or of its model.safetensors or checkpoint.safetensors
    file) and its configuration; the model is on the CPU, in eval mode."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    weights = path / "model.safetensors" if path.is_dir() else path
    if not weights.is_file():
        raise FileNotFoundError(f"{weights}: no trained model here (a run directory holds model.safetensors)")
    try:
        with safe_open(str(weights), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except (SafetensorError, OSError) as error:
        raise ValueError(f"{weights}: not a safetensors file ({error})") from None
    if "config" in metadata:
        saved = json.loads(metadata["config"])
    elif (weights.parent / "config.json").is_file():  # weights written before configs were embedded
        saved = json.loads((weights.parent / "config.json").read_text())
    else:
        raise ValueError(f"{weights}: no configuration (neither in the file nor a config.json beside it)")
    fields = {k: v for k, v in saved.items() if k in Config.__dataclass_fields__}
    cfg = Config(**{**fields, "device": "cpu", "compile": False, "amp": None}).resolved()
    prefix = "model/"
    state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    channels = state["discriminator.0.weight"].shape[1] if "discriminator.0.weight" in state else 1
    model = build_task(cfg, channels=channels).model
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise ValueError(f"{weights}: the weights do not fit a {cfg.model} model with options "
                         f"{cfg.options}: {error}") from None
    return model.eval(), cfg


def load_checkpoint(path: Path, task: Task, device) -> int:
    """Restores weights and optimizer state; returns the epoch the checkpoint finished."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata()
        tensors = {key: f.get_tensor(key) for key in f.keys()}
    for name, module in task.modules().items():
        prefix = f"{name}/"
        module.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
    optimizer_meta = json.loads(metadata["optimizers"])
    for name, opt in task.optimizers.items():
        meta = optimizer_meta[name]
        state: dict[int, dict[str, Any]] = {}
        prefix = f"optim/{name}/"
        for key, value in tensors.items():
            if key.startswith(prefix):
                index, entry = key[len(prefix):].split("/", 1)
                state.setdefault(int(index), {})[entry] = value.to(device) if entry != "step" else value
        for key, value in meta["scalars"].items():
            index, entry = key.split("/", 1)
            state.setdefault(int(index), {})[entry] = value
        opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    return int(metadata["epoch"])


# ------------------------------------------------------------------------------------------------
# The loop


@dataclass
class Result:
    history: list[dict[str, float]]  # one record per epoch trained in this call
    task: Task                       # the trained model and optimizers
    rank: int = 0
    world_size: int = 1


def _distributed() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) without it."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), world_size, int(os.environ.get("LOCAL_RANK", "0"))


RUNTIME_SETTINGS = ("epochs", "device", "max_steps", "amp", "compile", "snapshot_every")  # may change on --resume


def train(model: Optional[str] = None, *, run_dir: Optional[str | Path] = None, resume: bool = False,
          progress: bool = True, **settings) -> Result:
    """Trains ``model`` (one of MODELS, default 'vae'); returns the per-epoch metrics and the task.

    With ``resume`` the run in ``run_dir`` continues with its saved configuration; only the
    run-time settings (epochs, device, max_steps, amp, compile, snapshot_every) may be given anew.

    settings: the fields of :class:`Config` (epochs, batch_size, lr, seed, device, backend, data,
    compile, amp, max_steps) and model options (d, beta, p, nz, margin, ngf, ndf, image_size).
    Launched by torchrun with several processes, it trains with DistributedDataParallel: each rank
    takes its shard of every epoch's permutation (batch_size is per process) and only rank 0
    writes files.
    """
    known = {f for f in Config.__dataclass_fields__ if f not in ("model", "options")}
    options = {k: settings.pop(k) for k in list(settings) if k not in known}
    run_dir = Path(run_dir) if run_dir is not None else Path("runs") / (model or "vae")
    checkpoint = run_dir / "checkpoint.safetensors"
    if resume:
        if not checkpoint.is_file():
            raise FileNotFoundError(f"{checkpoint}: nothing to resume")
        from safetensors import safe_open

        with safe_open(str(checkpoint), framework="pt") as f:
            saved = Config(**json.loads(f.metadata()["config"]))
        changed = {k for k, v in settings.items() if k not in RUNTIME_SETTINGS and v != getattr(saved, k)}
        changed |= {k for k, v in options.items() if saved.options.get(k) != v}
        if model is not None and model != saved.model:
            changed.add("model")
        if changed:
            raise ValueError(f"{run_dir} was trained with other {sorted(changed)}; --resume continues a run "
                             f"as it was (only {', '.join(RUNTIME_SETTINGS)} may change)")
        runtime = {k: settings[k] for k in RUNTIME_SETTINGS if settings.get(k) is not None}
        cfg = Config(**{**asdict(saved), **runtime}).resolved()
    else:
        cfg = Config(model=model or "vae", options=options, **settings).resolved()

    rank, world_size, local_rank = _distributed()
    device = torch.device(cfg.device)
    if world_size > 1:
        import torch.distributed as dist

        if device.type == "cuda":
            device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    writer = rank == 0
    if writer:
        run_dir.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    size = cfg.options.get("image_size", 64) if cfg.model == "dcgan" else 28
    channels = cfg.options.get("channels", 1)  # 3 for RGB image folders (DCGAN)
    train_set = datasets.load(cfg.data, "train", size=size, channels=channels).to(device)
    test_set = datasets.load(cfg.data, "test", size=size, channels=channels).to(device)
    task = build_task(cfg, channels=train_set.images.shape[1])
    task.to(device)
    value_range = task.model.value_range
    x_train = task.prepare(datasets.normalise(train_set.images, value_range))
    x_test = task.prepare(datasets.normalise(test_set.images, value_range))

    start_epoch = 0
    if resume:
        start_epoch = load_checkpoint(checkpoint, task, device)
        if writer:  # lines written after the checkpoint (a kill between the two) are redone
            for name in ("metrics.jsonl", "steps.jsonl"):
                _drop_epochs_after(run_dir / name, start_epoch)
    elif writer:
        _write_text(run_dir / "config.json", json.dumps(
            {**asdict(cfg), "genfast": build_info(), "world_size": world_size,
             "train_images": len(train_set), "test_images": len(test_set)}, indent=2))
        if cfg.snapshot_every:
            (run_dir / "snapshots").mkdir(exist_ok=True)
            save_weights(run_dir / "snapshots" / "epoch_000.safetensors", task)
    if cfg.compile:
        for module in task.modules().values():
            module.compile()
    if world_size > 1:
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        task.wrap(lambda net: DistributedDataParallel(net, device_ids=ids))

    history = []
    for epoch in range(start_epoch + 1, cfg.epochs + 1):
        # Every epoch's randomness is a function of (seed, epoch, rank): the batch order (the same
        # on all ranks) and the noise (each rank its own), so a resumed run continues exactly.
        order = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
        torch.manual_seed((cfg.seed * 1_000_003 + epoch) * 1_009 + rank)
        steps = list(islice(datasets.batches(len(x_train), cfg.batch_size, order, device, rank, world_size),
                            cfg.max_steps))
        bar = _progress(steps, f"{cfg.model} epoch {epoch}/{cfg.epochs}", progress and writer)
        sums: dict[str, float] = {}
        step_records = []
        started = time.perf_counter()
        for step, index in enumerate(bar, 1):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.amp == "bf16"):
                step_metrics = task.train_step(x_train[index])
            step_records.append({"epoch": epoch, "step": step, **step_metrics})
            for k, v in step_metrics.items():
                sums[k] = sums.get(k, 0.0) + v
            if hasattr(bar, "set_postfix"):
                bar.set_postfix({k: f"{v:.4g}" for k, v in step_metrics.items()})
        if world_size > 1:  # BatchNorm statistics drift per rank after DDP's last forward pass
            for module in task.modules().values():
                for buffer in module.buffers():
                    torch.distributed.broadcast(buffer, src=0)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
        record = {"epoch": epoch, **{k: v / max(1, len(steps)) for k, v in sums.items()}}
        if writer:
            record.update(task.evaluate(x_test))
        record.update(seconds=seconds, images_per_s=sum(len(i) for i in steps) * world_size / seconds)
        history.append(record)
        if writer:
            print(json.dumps(record), flush=True)
            with open(run_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
            with open(run_dir / "steps.jsonl", "a") as f:  # per step: the loss and D(x) curves
                f.writelines(json.dumps(r) + "\n" for r in step_records)
            save_grid(task.picture(x_test).float().cpu().numpy(), run_dir / f"epoch_{epoch:03d}.png")
            save_checkpoint(checkpoint, task, epoch, cfg)
            save_weights(run_dir / "model.safetensors", task)
            if cfg.snapshot_every and (epoch % cfg.snapshot_every == 0 or epoch == cfg.epochs):
                (run_dir / "snapshots").mkdir(exist_ok=True)
                save_weights(run_dir / "snapshots" / f"epoch_{epoch:03d}.safetensors", task)
    return Result(history, task, rank, world_size)


def _drop_epochs_after(path: Path, epoch: int) -> None:
    if path.is_file():
        lines = [line for line in path.read_text().splitlines() if json.loads(line)["epoch"] <= epoch]
        _write_text(path, "".join(line + "\n" for line in lines))


def _progress(steps, description: str, enabled: bool):
    if not enabled:
        return steps
    from tqdm import tqdm

    return tqdm(steps, desc=description, leave=False, dynamic_ncols=True)
