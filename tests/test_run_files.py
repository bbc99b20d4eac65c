"""Run directories and the files a user loads: damaged, crafted or stale files and bad settings
give one clear error naming the file or the setting; nothing is lost or silently overwritten."""

import json
import math

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import genfast
from genfast import cli, models, training
from genfast.training import CheckpointError, TrainingError

QUICK = dict(epochs=1, max_steps=2, progress=False)


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("vae_run")
    genfast.train("vae", run_dir=run, **QUICK)
    return run


def _rewrite(path, out, change_tensors=lambda t: t, change_metadata=lambda m: m):
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    save_file(change_tensors(tensors), str(out), metadata=change_metadata(metadata))


def _copy_run(run, to):
    to.mkdir()
    for name in ("config.json", "metrics.jsonl", "steps.jsonl", "checkpoint.safetensors", "model.safetensors"):
        (to / name).write_bytes((run / name).read_bytes())
    return to


@pytest.mark.parametrize("damage, message", [
    (lambda t: {**t, **{k: torch.zeros(1) for k in t if k.endswith("exp_avg")}}, r"exp_avg is torch.float32 \(1,\)"),
    (lambda t: {**t, "optim/model/0/exp_avg_sq": torch.full_like(t["optim/model/0/exp_avg_sq"], float("nan"))},
     "holds NaN"),
    (lambda t: {**t, "optim/model/0/exp_avg_sq": -torch.ones_like(t["optim/model/0/exp_avg_sq"])}, "negative"),
    (lambda t: {**t, "model/encoder.0.weight": t["model/encoder.0.weight"].double()}, "encoder.0.weight is torch.float64"),
    (lambda t: {k: v for k, v in t.items() if k != "model/decoder.2.bias"}, "missing"),
    (lambda t: {**t, "optim/model/99/exp_avg": torch.zeros(1)}, "unexpected optimizer tensor"),
], ids=["moments-shape", "moments-nan", "moments-negative", "weight-dtype", "weight-missing", "extra-state"])
def test_a_crafted_checkpoint_is_refused_before_use(vae_run, tmp_path, damage, message):
    run = _copy_run(vae_run, tmp_path / "run")
    _rewrite(vae_run / "checkpoint.safetensors", run / "checkpoint.safetensors", change_tensors=damage)
    with pytest.raises(CheckpointError, match=message) as error:
        genfast.train(run_dir=run, resume=True, epochs=2, progress=False)
    assert "checkpoint.safetensors" in str(error.value)
    assert json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["epoch"] == 1  # nothing written


def test_configuration_from_a_file_is_bounded_before_anything_is_built(vae_run, tmp_path):
    """An embedded d = 3000 would build a 28 GB VAE: refused by the option's range first."""
    bad = tmp_path / "model.safetensors"

    def huge(metadata):
        config = json.loads(metadata["config"])
        return {**metadata, "config": json.dumps({**config, "options": {"d": 3000}})}

    _rewrite(vae_run / "model.safetensors", bad, change_metadata=huge)
    with pytest.raises(CheckpointError, match=r"model.safetensors: bad configuration: option d must be in"):
        genfast.load_model(bad)
    _rewrite(vae_run / "model.safetensors", bad, change_metadata=lambda m: {**m, "config": "[1, 2"})
    with pytest.raises(CheckpointError, match="bad configuration"):
        genfast.load_model(bad)
    _rewrite(vae_run / "model.safetensors", bad,
             change_tensors=lambda t: {**t, "model/encoder.0.bias": torch.full((400,), math.inf)})
    with pytest.raises(CheckpointError, match="encoder.0.bias holds NaN or infinity"):
        genfast.load_model(bad)


def test_weights_written_before_options_were_resolved_still_load(vae_run, tmp_path):
    old = tmp_path / "model.safetensors"

    def without_options(metadata):  # as genfast 0.1 wrote them: only the options given
        return {**metadata, "config": json.dumps({**json.loads(metadata["config"]), "options": {}})}

    _rewrite(vae_run / "model.safetensors", old, change_metadata=without_options)
    model, cfg = genfast.load_model(old)
    assert cfg.options == {"d": 20, "beta": 1.0}
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                 genfast.load_model(vae_run)[0].state_dict().values()))


def test_resume_drops_a_torn_last_line_and_says_so(vae_run, tmp_path):
    run = _copy_run(vae_run, tmp_path / "run")
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 2, "loss": 1')  # a kill mid-write
    with pytest.warns(UserWarning, match="metrics.jsonl: dropped its torn last line"):
        genfast.train(run_dir=run, resume=True, epochs=2, max_steps=2, progress=False)
    assert [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    (run / "steps.jsonl").write_text('not json\n{"epoch": 1, "step": 1}\n')
    with pytest.raises(CheckpointError, match="steps.jsonl: line 1"):
        genfast.train(run_dir=run, resume=True, epochs=3, progress=False)


def test_a_fresh_run_does_not_mix_with_an_old_one(tmp_path):
    run = tmp_path / "run"
    genfast.train("vae", run_dir=run, epochs=2, max_steps=1, progress=False)
    (run / ".checkpoint.safetensors.x1y2.tmp").write_bytes(b"left by a kill")
    with pytest.raises(FileExistsError, match="--resume.*--overwrite"):
        genfast.train("vae", run_dir=run, **QUICK)
    genfast.train("ae", run_dir=run, overwrite=True, **QUICK)
    assert sorted(p.name for p in run.iterdir()) == [
        "checkpoint.safetensors", "config.json", "epoch_001.png", "metrics.jsonl", "model.safetensors",
        "snapshots", "steps.jsonl"]
    assert sorted(p.name for p in (run / "snapshots").iterdir()) == ["epoch_000.safetensors", "epoch_001.safetensors"]
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1


@pytest.mark.parametrize("settings, message", [
    ({"epochs": -1}, r"epochs must be an integer in \[1,"),
    ({"epochs": 0}, "epochs must be"),
    ({"batch_size": -5}, "batch_size must be"),
    ({"lr": math.inf}, r"lr must be a number in \(0, 10\]"),
    ({"lr": 0.0}, "lr must be"),
    ({"max_steps": 0}, "max_steps must be"),
    ({"snapshot_every": -1}, "snapshot_every must be"),
    ({"seed": -3}, "seed must be"),
    ({"device": "tpu"}, "device must be cpu, cuda"),
    ({"device": "nonsense:x"}, "device must be cpu, cuda"),
    ({"backend": "triton"}, "backend must be one of"),
    ({"d": 0}, r"option d must be in \[1, 256\]"),
], ids=lambda v: str(v))
def test_settings_are_range_checked(tmp_path, settings, message):
    with pytest.raises(ValueError, match=message):
        genfast.train("vae", run_dir=tmp_path / "run", progress=False, **settings)
    assert not (tmp_path / "run" / "checkpoint.safetensors").exists()


def test_a_non_finite_loss_stops_training_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    run = tmp_path / "run"
    genfast.train("vae", run_dir=run, **QUICK)
    good = load_file(run / "checkpoint.safetensors")
    real_step = models.vae.VAETrainer.train_step

    def diverging(self, x):
        metrics = real_step(self, x)
        return {**metrics, "loss": math.nan}

    monkeypatch.setattr(models.vae.VAETrainer, "train_step", diverging)
    with pytest.raises(TrainingError, match="loss became nan at epoch 2, step 1"):
        genfast.train(run_dir=run, resume=True, epochs=2, progress=False)
    after = load_file(run / "checkpoint.safetensors")
    assert all(torch.equal(good[k], after[k]) for k in good)
    for name in ("metrics.jsonl", "steps.jsonl"):  # strict JSON, nothing of the bad epoch
        assert all(json.loads(line)["epoch"] == 1 for line in (run / name).read_text().splitlines())


@pytest.mark.parametrize("argv, message", [
    (["train", "vae", "--device", "cuda:7"], "device cuda:7"),
    (["train", "vae", "--epochs", "-1"], "epochs must be an integer"),
    (["train", "vae", "--option", "d=3000"], "option d must be in"),
    (["train", "vae", "--run-dir", "{file}"], "not a directory"),
    (["train", "vae", "--run-dir", "{file}/sub"], "{file}"),
    (["export", "{file}", "-o", "{tmp}/out"], "not a readable safetensors file"),
    (["train", "--config", "{file}"], "not a valid JSON configuration"),
    (["train", "--config", "{tmp}/missing.toml"], "cannot read the configuration"),
], ids=["no-cuda", "epochs", "option", "run-dir-is-a-file", "run-dir-under-a-file", "export-junk", "config-junk",
        "config-missing"])
def test_cli_failures_are_one_line(tmp_path, capsys, argv, message):
    file = tmp_path / "file"
    file.write_text("not a run")
    argv = [a.format(file=file, tmp=tmp_path) for a in argv]
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv + ["--no-progress"] if argv[0] == "train" else argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.count("\n") == 1 and err.startswith(f"genfast {argv[0]}: error: ")
    assert message.format(file=file) in err and "Traceback" not in err


@pytest.mark.parametrize("code, words", [(28, "No space left on device"), (13, "Permission denied")])
def test_cli_disk_full_and_permission_denied_are_one_line(tmp_path, capsys, monkeypatch, code, words):
    """(Simulated: root ignores permissions, and a full disk cannot be made here.)"""
    import os

    def failing_save(path, *args):
        raise OSError(code, os.strerror(code), str(path))

    monkeypatch.setattr(training.loop, "save_checkpoint", failing_save)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "vae", "--run-dir", str(tmp_path / "run"), "--max-steps", "1", "--no-progress"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1
    assert words in err and "checkpoint.safetensors" in err
