"""A model is one file: a tiny model registered here, and nowhere else, trains, resumes, loads,
exports and is reported by the library's own trainer, exporter and report."""

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import genfast
from genfast import models
from genfast.models.trainer import Trainer, eval_mode


class TinyAutoencoder(nn.Module):
    """A linear autoencoder on 28x28 images in [-1, 1]."""
    value_range = "tanh"
    image_shape = (1, 28, 28)

    def __init__(self, width: int = 4, backend: str = "fused"):
        super().__init__()
        self.encoder, self.decoder = nn.Linear(784, width), nn.Linear(width, 784)

    @property
    def latent_size(self) -> int:
        return self.encoder.out_features

    def forward(self, y):
        return torch.tanh(self.decoder(self.encoder(y.flatten(1)))).view_as(y)

    reconstruct = forward

    def energy(self, y):
        return (self(y) - y).flatten(1).pow(2).sum(1)


class TinyTrainer(Trainer):
    def __init__(self, model, lr, betas, seed=1):
        super().__init__(model, {"model": model}, lr, betas, seed)

    def train_step(self, x):
        loss = F.mse_loss(self.nets["model"](x), x)
        self.step("model", loss)
        return {"tiny_loss": loss.item()}

    @torch.no_grad()
    def evaluate(self, x):
        with eval_mode(self.model):
            return {"tiny_test_mse": F.mse_loss(self.model(x), x).item()}

    @torch.no_grad()
    def picture(self, x):
        return ((self.model(x[:8]) + 1) / 2).clamp(0, 1)


TINY = models.ModelSpec(
    name="tiny", summary="a linear autoencoder (test only)", model_class=TinyAutoencoder,
    build=TinyAutoencoder, trainer=TinyTrainer,
    defaults=models.Defaults(lr=1e-2, batch_size=100, epochs=2, snapshot_every=0),
    options={"width": models.Option(4, int, 1, 64)},
    graphs=(models.GraphSpec("reconstruct", ("image",), ("reconstruction",), lambda m, y: m.reconstruct(y)),
            models.GraphSpec("energy", ("image",), ("energy",), lambda m, y: m.energy(y))),
    analyses=("reconstructions",))


@pytest.fixture
def tiny():
    models.register(TINY)
    yield TINY
    models.unregister(TINY.name)


def test_registry_names_the_practicum_s_models():
    assert models.names()[:6] == ("ae", "ae-over", "dae", "vae", "ebgan", "dcgan")
    assert models.spec_of(models.DenoisingAutoencoder()).name == "dae"
    assert models.spec_of(models.Autoencoder()).name == "ae"
    with pytest.raises(ValueError, match="registered already"):
        models.register(models.get("vae"))
    with pytest.raises(ValueError, match="model must be one of"):
        models.get("gan")


def test_options_are_range_checked():
    vae = models.get("vae")
    assert vae.resolve_options({}) == {"d": 20, "beta": 1.0}
    assert vae.resolve_options({"beta": 2}) == {"d": 20, "beta": 2.0}
    for options, message in (({"d": 3000}, r"d must be in \[1, 256\]"), ({"d": 2.5}, "must be an integer"),
                             ({"beta": float("nan")}, "finite"), ({"d": True}, "must be an integer"),
                             ({"beta": "1"}, "must be a number")):
        with pytest.raises(ValueError, match=message):
            vae.resolve_options(options)
    with pytest.raises(ValueError, match=r"p must be in \[0, 1\)"):
        models.get("dae").resolve_options({"p": 1.0})
    with pytest.raises(ValueError, match="one of"):
        models.get("dcgan").resolve_options({"image_size": 48})


def test_a_model_registered_in_one_file_trains_exports_and_reports(tiny, tmp_path):
    run = tmp_path / "run"
    history = genfast.train("tiny", run_dir=run, max_steps=3, progress=False).history
    assert [r["epoch"] for r in history] == [1, 2] and "tiny_test_mse" in history[-1]
    assert json.loads((run / "config.json").read_text())["options"] == {"width": 4}
    genfast.train(run_dir=run, resume=True, epochs=3, max_steps=3, progress=False)
    model, cfg = genfast.load_model(run)
    assert isinstance(model, TinyAutoencoder) and cfg.model == "tiny" and cfg.batch_size == 100

    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from genfast.export import onnx_export, runtime

    done = onnx_export.export_run(run, tmp_path / "onnx")
    assert [d.graph for d in done] == ["reconstruct", "energy"]
    served = runtime.load(tmp_path / "onnx")
    images = torch.rand(3, 1, 28, 28).numpy()
    expected = ((model(torch.from_numpy(images) * 2 - 1) + 1) / 2).detach().numpy()
    assert abs(served.reconstruct(images) - expected).max() < 1e-5

    pytest.importorskip("matplotlib")
    pytest.importorskip("skimage")
    from genfast.analysis import report

    summary = report([run], tmp_path / "report", progress=False)
    assert list(summary["runs"]["run"]) == ["header", "reconstructions"]
    assert (tmp_path / "report" / "run_reconstructions.png").is_file()
