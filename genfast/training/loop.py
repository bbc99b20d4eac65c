"""The training loop, callable whole (:func:`train`) or in parts (:func:`prepare`, then
:meth:`Session.run_epoch` per epoch, as ``benchmarks/train.py`` times it).

The data set lives as one tensor on the training device; each epoch's batches are slices of a
permutation drawn from a generator seeded by (seed, epoch), and its noise (VAE sampling, DAE
corruption, GAN latents) from torch's generator seeded by (seed, epoch, rank), so a resumed run
continues exactly. Under torchrun every rank trains its shard with DistributedDataParallel and
only rank 0 writes files.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
import warnings
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Optional

import torch

from .. import data as datasets
from .. import models
from ..files import atomic_write, remove_stale_temporaries, write_text_atomic
from ..images import save_grid
from ..ops import build_info
from .checkpoint import CheckpointError, load_checkpoint, read_metadata, save_checkpoint, save_weights, saved_config
from .config import RUNTIME_SETTINGS, Config

CHECKPOINT, WEIGHTS, CONFIG = "checkpoint.safetensors", "model.safetensors", "config.json"
METRICS, STEPS, SNAPSHOTS, TENSORBOARD = "metrics.jsonl", "steps.jsonl", "snapshots", "tensorboard"


class TrainingError(RuntimeError):
    """Training cannot go on (a non-finite loss); the last good checkpoint is kept."""


@dataclass
class Result:
    history: list[dict[str, float]]  # one record per epoch trained in this call
    trainer: models.Trainer          # the trained model and optimizers
    rank: int = 0
    world_size: int = 1


def _distributed() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) without it."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), world_size, int(os.environ.get("LOCAL_RANK", "0"))


class Session:
    """A run set up for training: its configuration, data on the device, the model's trainer."""

    def __init__(self, cfg: Config, run_dir: Optional[Path], resume: bool, progress: bool):
        self.cfg, self.run_dir = cfg, run_dir
        self.rank, self.world_size, local_rank = _distributed()
        self.device = torch.device(cfg.device)
        if self.world_size > 1:
            import torch.distributed as dist

            if self.device.type == "cuda":
                self.device = torch.device("cuda", local_rank)
                torch.cuda.set_device(self.device)
            if not dist.is_initialized():
                dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        self.writer = run_dir is not None and self.rank == 0
        self.progress = progress and self.rank == 0
        self.tensorboard = None  # a SummaryWriter, opened by open_tensorboard()
        self.global_step = 0     # steps trained in this run so far, over all epochs

        spec = cfg.spec
        torch.manual_seed(cfg.seed)  # the same initial weights on every rank
        channels, size, _ = spec.image_shape(cfg.options)
        train_set = datasets.load(cfg.data, "train", size=size, channels=channels)
        test_set = datasets.load(cfg.data, "test", size=size, channels=channels)
        self.train_images, self.test_images = len(train_set), len(test_set)
        model = spec.build(backend=cfg.backend, **cfg.options)
        self.trainer: models.Trainer = spec.trainer(model, cfg.lr, spec.defaults.betas, cfg.seed)
        self.trainer.amp = cfg.amp == "bf16"
        self.trainer.to(self.device)
        self.x_train = self.trainer.prepare(datasets.normalise(train_set.images.to(self.device), model.value_range))
        self.x_test = self.trainer.prepare(datasets.normalise(test_set.images.to(self.device), model.value_range))

        self.start_epoch = 0
        if resume:
            self.start_epoch = load_checkpoint(run_dir / CHECKPOINT, self.trainer, self.device)
        if cfg.compile:
            model.compile()
        if self.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.trainer.wrap(lambda net: DistributedDataParallel(net, device_ids=ids))

    def run_epoch(self, epoch: int) -> tuple[dict[str, float], list[dict[str, float]]]:
        """Trains one epoch; returns (its record: mean step metrics, seconds, images/s; the
        metrics of every step). Raises TrainingError on a non-finite metric."""
        cfg = self.cfg
        # Every epoch's randomness is a function of (seed, epoch, rank): the batch order (the same
        # on all ranks) and the noise (each rank its own), so a resumed run continues exactly.
        order = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
        torch.manual_seed((cfg.seed * 1_000_003 + epoch) * 1_009 + self.rank)
        steps = list(islice(datasets.batches(len(self.x_train), cfg.batch_size, order, self.device,
                                             self.rank, self.world_size), cfg.max_steps))
        bar = _progress(steps, f"{cfg.model} epoch {epoch}/{cfg.epochs}", self.progress)
        sums: dict[str, float] = {}
        step_records = []
        started = time.perf_counter()
        for step, index in enumerate(bar, 1):
            # index_select, not x_train[index]: the same rows, 2.5x faster than advanced indexing
            metrics = self.trainer.train_step(torch.index_select(self.x_train, 0, index))
            bad = [k for k, v in metrics.items() if not math.isfinite(v)]
            if bad:
                raise TrainingError(f"{cfg.model}: {', '.join(bad)} became {metrics[bad[0]]} at epoch {epoch}, "
                                    f"step {step} (lr {cfg.lr:g}); training stopped, the last good checkpoint "
                                    "is kept")
            step_records.append({"epoch": epoch, "step": step, **metrics})
            for k, v in metrics.items():
                sums[k] = sums.get(k, 0.0) + v
            if hasattr(bar, "set_postfix"):
                bar.set_postfix({k: f"{v:.4g}" for k, v in metrics.items()})
        if self.world_size > 1:  # BatchNorm statistics drift per rank after DDP's last forward pass
            for buffer in self.trainer.model.buffers():
                torch.distributed.broadcast(buffer, src=0)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
        record = {"epoch": epoch, **{k: v / max(1, len(steps)) for k, v in sums.items()},
                  "seconds": seconds,
                  "images_per_s": sum(len(i) for i in steps) * self.world_size / seconds}
        return record, step_records

    def evaluate(self) -> dict[str, float]:
        metrics = self.trainer.evaluate(self.x_test)
        bad = [k for k, v in metrics.items() if not math.isfinite(v)]
        if bad:
            raise TrainingError(f"{self.cfg.model}: test metric {bad[0]} is {metrics[bad[0]]}; "
                                "training stopped, the last good checkpoint is kept")
        return metrics

    def write_epoch(self, epoch: int, record: dict, step_records: list[dict]) -> None:
        """The epoch's logs, grid, checkpoint, weights and snapshot; the logs first, so that a kill
        in between leaves lines past the checkpoint, which a resume drops."""
        run_dir, cfg = self.run_dir, self.cfg
        _append_lines(run_dir / METRICS, [record])
        _append_lines(run_dir / STEPS, step_records)  # per step: the loss and D(x) curves
        picture = self.trainer.picture(self.x_test).float().cpu().numpy()
        # Enlarged to about 100 pixels an image, each row labelled: readable at a glance.
        save_grid(picture, run_dir / f"epoch_{epoch:03d}.png", row_labels=self.trainer.picture_rows,
                  scale=max(1, 100 // picture.shape[-1]))
        if self.tensorboard is not None:
            self._log_tensorboard(record, step_records, picture)
        save_checkpoint(run_dir / CHECKPOINT, self.trainer, epoch, cfg)
        save_weights(run_dir / WEIGHTS, self.trainer, cfg)
        if cfg.snapshot_every and (epoch % cfg.snapshot_every == 0 or epoch == cfg.epochs):
            (run_dir / SNAPSHOTS).mkdir(exist_ok=True)
            save_weights(run_dir / SNAPSHOTS / f"epoch_{epoch:03d}.safetensors", self.trainer, cfg)

    def open_tensorboard(self) -> None:
        """TensorBoard event files in RUN_DIR/tensorboard. The x axis is the global step; on a
        resume, events a killed run wrote past the checkpoint are purged (purge_step), so no step
        appears twice."""
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise RuntimeError("--tensorboard needs the tensorboard package: pip install 'genfast[tensorboard]'") \
                from None
        steps = self.run_dir / STEPS
        if steps.is_file():
            with open(steps) as lines:
                self.global_step = sum(1 for _ in lines)
        self.tensorboard = SummaryWriter(str(self.run_dir / TENSORBOARD), purge_step=self.global_step + 1)

    def _log_tensorboard(self, record: dict, step_records: list[dict], picture) -> None:
        from ..images import grid

        for metrics in step_records:
            self.global_step += 1
            for key, value in metrics.items():
                if key not in ("epoch", "step"):
                    self.tensorboard.add_scalar(f"step/{key}", value, self.global_step)
        for key, value in record.items():
            if key != "epoch":
                self.tensorboard.add_scalar(f"epoch/{key}", value, self.global_step)
        image = grid(picture)
        self.tensorboard.add_image("epoch_grid", image, self.global_step,
                                   dataformats="HW" if image.ndim == 2 else "HWC")
        self.tensorboard.flush()

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()
            self.tensorboard = None

    def write_start(self) -> None:
        """A fresh run's config.json and epoch-0 snapshot."""
        write_text_atomic(self.run_dir / CONFIG, json.dumps(
            {**self.cfg.to_json(), "genfast": build_info(), "world_size": self.world_size,
             "train_images": self.train_images, "test_images": self.test_images}, indent=2))
        if self.cfg.snapshot_every:
            (self.run_dir / SNAPSHOTS).mkdir(exist_ok=True)
            save_weights(self.run_dir / SNAPSHOTS / "epoch_000.safetensors", self.trainer, self.cfg)


def prepare(model: Optional[str] = None, *, run_dir: Optional[str | Path] = None, resume: bool = False,
            overwrite: bool = False, progress: bool = True, **settings) -> Session:
    """Sets a run up: checks the settings (or, with ``resume``, reads the run's own), loads the
    data onto the device, builds the model's trainer and restores the checkpoint. ``run_dir=None``
    sets up a session that writes nothing (benchmarks)."""
    known = {f for f in Config.__dataclass_fields__ if f not in ("model", "options")}
    options = {k: settings.pop(k) for k in list(settings) if k not in known}
    run_dir = Path(run_dir) if run_dir is not None else None
    if resume:
        if run_dir is None:
            raise ValueError("resume needs the run directory")
        cfg = _resumed_config(run_dir, model, settings, options)
    else:
        cfg = Config(model=model or "vae", options=options, **settings).resolved()
        if run_dir is not None and _distributed()[0] == 0:
            _claim_run_dir(run_dir, overwrite)
    session = Session(cfg, run_dir, resume, progress)
    if session.writer:
        remove_stale_temporaries(run_dir)
        if resume:  # lines written after the checkpoint (a kill between the two) are redone
            for name in (METRICS, STEPS):
                _drop_epochs_after(run_dir / name, session.start_epoch)
        else:
            session.write_start()
        if session.cfg.tensorboard:
            session.open_tensorboard()
    return session


def train(model: Optional[str] = None, *, run_dir: Optional[str | Path] = None, resume: bool = False,
          overwrite: bool = False, progress: bool = True, **settings) -> Result:
    """Trains ``model`` (a name of :func:`genfast.models.names`, default 'vae') into ``run_dir``
    (default runs/MODEL); returns the per-epoch metrics and the trainer.

    With ``resume`` the run in ``run_dir`` continues with its saved configuration; only the
    run-time settings (epochs, device, max_steps, amp, compile, snapshot_every) may be given anew.
    A fresh run into a directory that holds a run is refused unless ``overwrite`` (which deletes
    that run's files first).

    settings: the fields of :class:`Config` (epochs, batch_size, lr, seed, device, backend, data,
    compile, amp, max_steps, snapshot_every) and the model's options (d, beta, p, nz, margin, ...).
    Launched by torchrun with several processes, it trains with DistributedDataParallel: each rank
    takes its shard of every epoch's permutation (batch_size is per process) and only rank 0
    writes files.
    """
    run_dir = Path(run_dir) if run_dir is not None else Path("runs") / (model or "vae")
    session = prepare(model, run_dir=run_dir, resume=resume, overwrite=overwrite, progress=progress, **settings)
    history = []
    try:
        for epoch in range(session.start_epoch + 1, session.cfg.epochs + 1):
            record, step_records = session.run_epoch(epoch)
            if session.writer:
                record = {**record, **session.evaluate()}
            history.append(record)
            if session.writer:
                print(json.dumps(record), flush=True)
                session.write_epoch(epoch, record, step_records)
    finally:
        session.close()
    return Result(history, session.trainer, session.rank, session.world_size)


def _resumed_config(run_dir: Path, model: Optional[str], settings: dict, options: dict) -> Config:
    """The run's saved configuration with the run-time settings given anew; any other setting
    given must equal the saved one."""
    checkpoint = run_dir / CHECKPOINT
    if not checkpoint.is_file():
        raise FileNotFoundError(f"{checkpoint}: nothing to resume")
    metadata = read_metadata(checkpoint)  # the tensors are read once, by load_checkpoint
    runtime = {k: settings[k] for k in RUNTIME_SETTINGS if settings.get(k) is not None}
    saved = saved_config(checkpoint, metadata, **runtime)
    changed = {k for k, v in settings.items() if k not in RUNTIME_SETTINGS and v != getattr(saved, k)}
    changed |= {k for k, v in options.items() if saved.options.get(k) != v}
    if model is not None and model != saved.model:
        changed.add("model")
    if changed:
        raise ValueError(f"{run_dir} was trained with other {sorted(changed)}; --resume continues a run "
                         f"as it was (only {', '.join(RUNTIME_SETTINGS)} may change)")
    return saved


# The files a run writes; a fresh run refuses a directory holding any of them (unless overwrite).
_RUN_FILES = (CONFIG, METRICS, STEPS, CHECKPOINT, WEIGHTS)


def _claim_run_dir(run_dir: Path, overwrite: bool) -> None:
    if run_dir.exists() and not run_dir.is_dir():
        raise NotADirectoryError(f"{run_dir}: exists and is not a directory")
    if run_dir.is_dir():
        existing = [name for name in _RUN_FILES if (run_dir / name).exists()]
        if existing and not overwrite:
            raise FileExistsError(f"{run_dir} holds a run ({', '.join(existing)}); continue it with --resume, "
                                  "or start afresh with --overwrite (deletes its files)")
        if existing or overwrite:
            for path in run_dir.iterdir():
                if path.name in _RUN_FILES or path.name == "classifier.safetensors" or \
                        (path.name.startswith("epoch_") and path.suffix == ".png"):
                    path.unlink()
                elif path.name in (SNAPSHOTS, TENSORBOARD) and path.is_dir():
                    shutil.rmtree(path)
    run_dir.mkdir(parents=True, exist_ok=True)


def _append_lines(path: Path, records: list[dict]) -> None:
    """Appends JSON lines (strict JSON: no NaN), flushed to the disk."""
    text = "".join(json.dumps(r, allow_nan=False) + "\n" for r in records)
    with open(path, "a") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _drop_epochs_after(path: Path, epoch: int) -> None:
    """Keeps the lines of epochs up to ``epoch``; a torn last line (a kill or a full disk while
    appending) is dropped with a warning, any other unreadable line is an error naming the file."""
    if not path.is_file():
        return
    lines = path.read_text(errors="replace").splitlines()
    kept = []
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
            keep = record["epoch"] <= epoch
        except (ValueError, KeyError, TypeError):
            if number == len(lines):
                warnings.warn(f"{path}: dropped its torn last line {number} (an interrupted write)", stacklevel=2)
                break
            raise CheckpointError(f"{path}: line {number} is not a JSON record with an epoch") from None
        if keep:
            kept.append(line)
    write_text_atomic(path, "".join(line + "\n" for line in kept))


def _progress(steps, description: str, enabled: bool):
    if not enabled:
        return steps
    from tqdm import tqdm

    return tqdm(steps, desc=description, leave=False, dynamic_ncols=True)
