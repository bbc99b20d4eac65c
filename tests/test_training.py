import json
import math
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import genfast
from genfast import files, models, training


def test_vae_learns_on_the_embedded_data(tmp_path):
    history = genfast.train("vae", run_dir=tmp_path, epochs=3, batch_size=64, progress=False).history
    untrained = 784 * math.log(2)  # BCE of predicting 0.5 everywhere, about 543 per image
    assert history[-1]["test_loss"] < 0.5 * untrained
    assert history[-1]["test_loss"] < history[0]["test_loss"]
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model"] == "vae" and config["train_images"] == 4000 and config["test_images"] == 1000
    grid = np.asarray(Image.open(tmp_path / "epoch_003.png"))
    assert grid.std() > 20  # digits and samples, not a blank picture
    weights = load_file(tmp_path / "model.safetensors")
    assert weights["model/encoder.0.weight"].shape == (400, 784)


@pytest.mark.parametrize("model", ["ae", "dae"])
def test_autoencoders_learn(tmp_path, model):
    history = genfast.train(model, run_dir=tmp_path, epochs=3, batch_size=64, progress=False).history
    # An untrained model is near 0.9 on [-1, 1] digits.
    assert history[-1]["test_mse"] < min(0.3, history[0]["test_mse"])
    if model == "dae":
        assert history[-1]["test_denoise_mse"] < 0.3


@pytest.mark.parametrize("model, options", [("ebgan", {}), ("dcgan", {"ngf": 8, "ndf": 8, "image_size": 32})])
def test_gans_run(tmp_path, model, options):
    history = genfast.train(model, run_dir=tmp_path, epochs=1, max_steps=5, progress=False, **options).history
    assert all(math.isfinite(v) for v in history[0].values())
    steps = [json.loads(line) for line in (tmp_path / "steps.jsonl").read_text().splitlines()]
    assert [s["step"] for s in steps] == [1, 2, 3, 4, 5]
    if model == "dcgan":
        assert {"Loss_D", "Loss_G", "D(x)", "D(G(z))_before", "D(G(z))_after"} <= steps[0].keys()
    if model == "ebgan":
        assert {"loss_cost", "loss_generator", "energy_real", "energy_fake", "hinge_active", "pull_away"} <= steps[0].keys()
        assert all(0 <= s["hinge_active"] <= 1 and 0 <= s["pull_away"] <= 1 for s in steps)
        # The stall of issue 11: with C summed over the pixels, no fake was ever under the margin.
        assert steps[0]["hinge_active"] > 0.5
        from genfast.analysis import generative

        curves = generative.gan_training(tmp_path).figures["gan_curves"]
        assert [ax.get_ylabel() for ax in curves.axes] == ["loss", "energy", "probability / fraction"]
        raw_energy_real = curves.axes[1].get_lines()[0].get_ydata()
        assert np.array_equal(raw_energy_real, [s["energy_real"] for s in steps])
        assert np.array_equal(generative._running_mean(np.arange(5.0), 2), [0.5, 1.5, 2.5, 3.5])
    assert np.asarray(Image.open(tmp_path / "epoch_001.png")).std() > 0


def test_resume_continues_bit_identically(tmp_path):
    settings = dict(epochs=2, batch_size=50, max_steps=8, progress=False)
    genfast.train("vae", run_dir=tmp_path / "straight", **settings)
    genfast.train("vae", run_dir=tmp_path / "resumed", **{**settings, "epochs": 1})
    genfast.train("vae", run_dir=tmp_path / "resumed", resume=True, epochs=2, progress=False)
    straight = load_file(tmp_path / "straight" / "checkpoint.safetensors")
    resumed = load_file(tmp_path / "resumed" / "checkpoint.safetensors")
    assert straight.keys() == resumed.keys()
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key


def test_resume_without_checkpoint_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        genfast.train("vae", run_dir=tmp_path, resume=True)


def test_failed_save_keeps_the_previous_file(tmp_path):
    target = tmp_path / "file"
    files.atomic_write(target, lambda tmp: Path(tmp).write_text("old"))

    def broken(tmp):
        Path(tmp).write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        files.atomic_write(target, broken)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["file"]


def test_written_files_get_the_umask_mode_not_0600(tmp_path):
    """mkstemp makes 0600 files; a served .onnx or a report must be readable like any other file."""
    import os

    from genfast import files

    mask = os.umask(0)
    os.umask(mask)
    files.atomic_write(tmp_path / "f", lambda tmp: Path(tmp).write_text("x"))
    assert (tmp_path / "f").stat().st_mode & 0o777 == files.FILE_MODE == 0o666 & ~mask


def test_kill_during_save_keeps_the_previous_checkpoint(tmp_path):
    genfast.train("vae", run_dir=tmp_path, epochs=1, max_steps=2, progress=False)
    before = load_file(tmp_path / "checkpoint.safetensors")
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from genfast import files\n"
        "def slow(tmp):\n"
        "    with open(tmp, 'wb') as f:\n"
        "        f.write(b'partial'); f.flush()\n"
        "        print('writing', flush=True); time.sleep(60)\n"
        f"files.atomic_write(Path({str(tmp_path / 'checkpoint.safetensors')!r}), slow)\n"
    )
    # cwd: not the source tree, whose genfast/ has no compiled extension
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=tmp_path)
    assert child.stdout.readline().strip() == "writing"
    child.send_signal(signal.SIGKILL)
    child.wait()
    after = load_file(tmp_path / "checkpoint.safetensors")
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_bad_settings():
    with pytest.raises(ValueError, match="model must be one of"):
        training.Config(model="gan").resolved()
    for amp in ("fp16", "BF16", True, ""):
        with pytest.raises(ValueError, match=r"amp must be one of \('off', 'bf16'\)"):
            training.Config(model="vae", amp=amp).resolved()


def test_resume_refuses_changed_settings_but_takes_runtime_ones(tmp_path):
    genfast.train("vae", run_dir=tmp_path, epochs=1, max_steps=1, progress=False)
    with pytest.raises(ValueError, match=r"other \['d'\]"):
        genfast.train("vae", run_dir=tmp_path, resume=True, epochs=2, d=5)
    with pytest.raises(ValueError, match=r"other \['model'\]"):
        genfast.train("ae", run_dir=tmp_path, resume=True, epochs=2)
    result = genfast.train(run_dir=tmp_path, resume=True, epochs=2, max_steps=2, progress=False)
    assert [r["epoch"] for r in result.history] == [2]
    steps = [json.loads(line) for line in (tmp_path / "steps.jsonl").read_text().splitlines()]
    assert [(s["epoch"], s["step"]) for s in steps] == [(1, 1), (2, 1), (2, 2)]


def test_resume_drops_lines_written_after_the_checkpoint(tmp_path):
    """A kill between the metrics and the checkpoint leaves lines of an epoch that will be redone."""
    genfast.train("vae", run_dir=tmp_path, epochs=1, max_steps=1, progress=False)
    for name in ("metrics.jsonl", "steps.jsonl"):
        with open(tmp_path / name, "a") as f:
            f.write(json.dumps({"epoch": 2, "step": 1, "loss": -1.0}) + "\n")
    genfast.train(run_dir=tmp_path, resume=True, epochs=2, progress=False)
    metrics = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [1, 2] and metrics[1]["loss"] > 0


def test_unknown_model_option():
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['bata'\] for vae"):
        training.Config(model="vae", options={"bata": 2}).resolved()


def test_cli_train_errors_are_clean(tmp_path, capsys):
    from genfast import cli

    for argv, message in ((["train", "vae", "--option", "d=abc"], "not a number"),
                          (["train", "vae", "--option", "seed=3"], "use --seed"),
                          (["train", "vae", "--resume", "--run-dir", str(tmp_path)], "nothing to resume")):
        with pytest.raises(SystemExit) as exit_info:
            cli.main(argv)
        assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_snapshots_at_epoch_zero_every_n_and_the_last(tmp_path):
    genfast.train("vae", run_dir=tmp_path, epochs=3, max_steps=2, snapshot_every=2, progress=False)
    assert sorted(p.name for p in (tmp_path / "snapshots").iterdir()) == [
        "epoch_000.safetensors", "epoch_002.safetensors", "epoch_003.safetensors"]
    torch.manual_seed(1)  # the run's seed: the initial weights again
    initial = models.VAE().state_dict()
    saved = load_file(tmp_path / "snapshots" / "epoch_000.safetensors")
    assert all(torch.equal(saved[f"model/{k}"], v) for k, v in initial.items())
    final, _ = genfast.load_model(tmp_path / "snapshots" / "epoch_003.safetensors")
    assert all(torch.equal(a, b) for a, b in zip(final.state_dict().values(),
                                                 genfast.load_model(tmp_path)[0].state_dict().values()))
    genfast.train("dcgan", run_dir=tmp_path / "gan", epochs=1, max_steps=1, image_size=16, ngf=4, ndf=4,
                  progress=False)
    assert not (tmp_path / "gan" / "snapshots").exists()  # DCGAN: none by default
