"""One trainer for every model: ``genfast.train("vae", epochs=10)`` or ``genfast train vae``.

- :mod:`.config`: the settings and their checks;
- :mod:`.checkpoint`: weights and checkpoint files (save, load with checks, ``load_model``);
- :mod:`.loop`: the loop, whole (:func:`train`) or in parts (:func:`prepare`, ``Session.run_epoch``).

A run directory holds ``config.json``, ``metrics.jsonl`` (one line per epoch), ``steps.jsonl``
(the training metrics of every step), ``model.safetensors`` (weights), ``checkpoint.safetensors``
(weights and optimizer state, for ``resume``), ``snapshots/`` and a PNG grid per epoch. Files are
written atomically (temporary file, fsync, rename): a kill during a save leaves the previous
checkpoint intact. Nothing is pickled.
"""

from .checkpoint import CheckpointError, load_model
from .config import RUNTIME_SETTINGS, Config
from .loop import Result, Session, TrainingError, prepare, train

__all__ = ["CheckpointError", "Config", "RUNTIME_SETTINGS", "Result", "Session", "TrainingError", "load_model",
           "prepare", "train"]
