"""genfast train --tensorboard: per-step and per-epoch metrics and the epoch grids as TensorBoard
events, read back; a resume after a kill shows no step twice."""

import shutil

import pytest

import genfast
from genfast import cli

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")


def _events(run):
    accumulator = event_accumulator.EventAccumulator(str(run / "tensorboard"),
                                                     size_guidance={event_accumulator.SCALARS: 0,
                                                                    event_accumulator.IMAGES: 0})
    accumulator.Reload()
    return accumulator


def _steps(accumulator, tag):
    return [e.step for e in accumulator.Scalars(tag)]


def test_metrics_and_grids_are_logged(tmp_path):
    run = tmp_path / "run"
    history = genfast.train("vae", run_dir=run, epochs=2, max_steps=3, tensorboard=True, progress=False).history
    events = _events(run)
    assert _steps(events, "step/loss") == [1, 2, 3, 4, 5, 6]
    assert _steps(events, "epoch/test_loss") == [3, 6]
    assert [round(e.value, 3) for e in events.Scalars("epoch/test_loss")] == [round(r["test_loss"], 3) for r in history]
    assert [e.step for e in events.Images("epoch_grid")] == [3, 6]
    assert events.Images("epoch_grid")[0].height > 28


def test_resume_after_a_kill_logs_no_step_twice(tmp_path):
    run = tmp_path / "run"
    genfast.train("vae", run_dir=run, epochs=1, max_steps=2, tensorboard=True, progress=False)
    shutil.copy(run / "checkpoint.safetensors", tmp_path / "epoch1.safetensors")
    genfast.train(run_dir=run, resume=True, epochs=2, progress=False)  # epoch 2 logged ...
    shutil.copy(tmp_path / "epoch1.safetensors", run / "checkpoint.safetensors")  # ... but killed before its checkpoint
    redone = genfast.train(run_dir=run, resume=True, epochs=3, progress=False).history
    events = _events(run)
    assert _steps(events, "step/loss") == [1, 2, 3, 4, 5, 6]
    assert _steps(events, "epoch/loss") == [2, 4, 6]
    assert events.Scalars("epoch/loss")[1].value == pytest.approx(redone[0]["loss"])


def test_tensorboard_from_the_command_line_and_a_config_file(tmp_path):
    run = tmp_path / "run"
    assert cli.main(["train", "ae", "--run-dir", str(run), "--epochs", "1", "--max-steps", "2",
                     "--tensorboard", "--no-progress"]) == 0
    assert _steps(_events(run), "step/loss") == [1, 2]
    config = tmp_path / "settings.toml"
    config.write_text('model = "ae"\nepochs = 2\nmax_steps = 1\nlr = 0.002\n[options]\nd = 12\n')
    assert cli.main(["train", "--config", str(config), "--run-dir", str(tmp_path / "toml"), "--epochs", "1",
                     "--no-progress"]) == 0
    model, cfg = genfast.load_model(tmp_path / "toml")
    assert (cfg.model, cfg.epochs, cfg.max_steps, cfg.lr, cfg.options) == ("ae", 1, 1, 0.002, {"d": 12})
    # A run's own config.json reproduces it.
    assert cli.main(["train", "--config", str(tmp_path / "toml" / "config.json"), "--run-dir",
                     str(tmp_path / "again"), "--no-progress"]) == 0
    assert genfast.load_model(tmp_path / "again")[1] == cfg
