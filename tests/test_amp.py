"""--amp bf16: bfloat16 autocast of the training steps' forward passes and losses, CPU and CUDA."""

import json

import pytest
import torch

import genfast
from genfast import cli, training

# One small configuration of every trainer (DCGAN at 16x16 and narrow: seconds, not minutes).
MODELS = [("vae", {}), ("ae", {}), ("dae", {}), ("ebgan", {}), ("dcgan", {"ngf": 8, "ndf": 8, "image_size": 16})]


def _one_step(model: str, amp: str, options: dict) -> dict[str, torch.Tensor]:
    session = training.prepare(model, device="cpu", amp=amp, batch_size=16, max_steps=1, progress=False, **options)
    record, _ = session.run_epoch(1)
    assert all(torch.isfinite(torch.tensor(v)) for v in record.values())
    return session.trainer.model.state_dict()


@pytest.mark.parametrize("model, options", MODELS)
def test_a_bf16_step_trains_float32_weights(model, options):
    initial = training.prepare(model, device="cpu", progress=False, **options).trainer.model.state_dict()
    in_bf16 = _one_step(model, "bf16", options)
    in_fp32 = _one_step(model, "off", options)
    weights = [k for k, v in in_bf16.items() if v.is_floating_point() and "running" not in k]
    for key in weights:
        assert in_bf16[key].dtype == torch.float32 and torch.isfinite(in_bf16[key]).all(), key
    # The step trained every model, and in bfloat16: its rounding moves the weights off the
    # float32 step's (bit-identical if autocast were off).
    assert any(not torch.equal(in_bf16[k], initial[k]) for k in weights)
    assert any(not torch.equal(in_bf16[k], in_fp32[k]) for k in weights)


def test_amp_defaults_to_off_and_old_configurations_read_as_off():
    assert training.Config(model="vae").resolved().amp == "off"
    # Runs saved before "off" existed wrote amp: null.
    assert training.Config.from_json({"model": "vae", "amp": None}).resolved().amp == "off"


def test_amp_is_a_cli_flag_with_its_choices(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "vae", "--amp", "fp16"])
    assert exit_info.value.code == 2 and "invalid choice: 'fp16'" in capsys.readouterr().err


def test_resume_keeps_amp_unless_given_anew(tmp_path):
    assert cli.main(["train", "vae", "--run-dir", str(tmp_path), "--amp", "bf16", "--epochs", "1",
                     "--batch-size", "16", "--max-steps", "1", "--no-progress"]) == 0
    assert json.loads((tmp_path / "config.json").read_text())["amp"] == "bf16"
    resumed = training.prepare(run_dir=tmp_path, resume=True, epochs=2)
    assert resumed.cfg.amp == "bf16" and resumed.trainer.amp
    genfast.train(run_dir=tmp_path, resume=True, epochs=2, amp="off", max_steps=1, progress=False)
    again = training.prepare(run_dir=tmp_path, resume=True, epochs=3)
    assert again.cfg.amp == "off" and not again.trainer.amp
