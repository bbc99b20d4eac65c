"""The analyses and ``genfast report`` on tiny trained runs: numbers in range and consistent, figures
with content, the exact inpainting mask, the classifier cache, the HTML report."""

import base64
import json

import numpy as np
import pytest
import torch

pytest.importorskip("matplotlib")
pytest.importorskip("sklearn")
pytest.importorskip("skimage")
cv2 = pytest.importorskip("cv2")

import genfast  # noqa: E402
from genfast import analysis, models  # noqa: E402
from genfast.analysis import autoencoders, classifier  # noqa: E402
from genfast.images import to_unit  # noqa: E402


def pixels(fig) -> np.ndarray:
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3]


def has_content(fig) -> bool:
    """More than a blank canvas: many distinct grey levels."""
    return len(np.unique(pixels(fig).reshape(-1, 3), axis=0)) > 20


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Tiny trained runs of the DAE, VAE (with snapshots at epochs 0, 1, 2), EBGAN and DCGAN."""
    root = tmp_path_factory.mktemp("runs")
    settings = {
        "dae": dict(epochs=2, max_steps=25, d=128),
        "vae": dict(epochs=2, max_steps=10, snapshot_every=1),
        "ebgan": dict(epochs=1, max_steps=3, hidden=32),
        "dcgan": dict(epochs=2, max_steps=2, image_size=16, ngf=8, ndf=8, batch_size=32),
    }
    for name, options in settings.items():
        genfast.train(name, run_dir=root / name, device="cpu", progress=False, **options)
    return root


def test_psnr_ssim_auroc_frechet_basics():
    clean = np.random.default_rng(0).random((4, 28, 28))
    assert np.all(analysis.psnr(clean, clean) == 100.0)  # identity: infinite, capped
    np.testing.assert_allclose(analysis.psnr(np.clip(clean + 0.1, None, 10), clean), 20.0)
    np.testing.assert_allclose(analysis.ssim(clean, clean), 1.0)
    assert np.all(analysis.ssim(np.random.default_rng(1).random((4, 28, 28)), clean) < 0.2)
    assert analysis.detector_auroc(np.ones(50), np.ones(70)) == 0.5  # a constant score
    assert analysis.detector_auroc(np.zeros(5), np.ones(5)) == 1.0
    features = np.random.default_rng(2).normal(size=(4000, 3))
    assert abs(analysis.frechet_distance(features, features)) < 1e-6
    assert analysis.frechet_distance(features, features + 1.0) == pytest.approx(3.0, rel=1e-6)


def test_report_helpers_edge_cases(tmp_path):
    import importlib

    report = importlib.import_module("genfast.analysis.report")  # the module (the package exports the function)
    rows = dict(report._rows(report._finite({"values": [float("inf")] * 13 + [1.0], "x": float("nan")})))
    assert rows == {"values": "14 values, 1 to 1", "x": "null"}
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(NotADirectoryError, match="run directory"):
        analysis.load_run(tmp_path / "model.safetensors")
    one_class = torch.zeros(30, dtype=torch.long)  # e.g. a folder data set of one class: no endless search
    result = autoencoders.garbage_test(models.Autoencoder(d=4).eval(), torch.rand(30, 1, 28, 28) * 2 - 1,
                                       one_class, pairs=20)
    assert len(result.numbers["interpolation_energy"]) == 16


def test_kernel_roughness_separates_smooth_from_salt_and_pepper():
    smooth, noisy = models.Autoencoder(d=4), models.Autoencoder(d=4)
    grid = torch.stack(torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij"))
    blobs = torch.stack([torch.exp(-((grid - c[:, None, None]) ** 2).sum(0) / 40)
                         for c in torch.tensor([[7, 7], [7, 20], [20, 7], [20, 20]])]).flatten(1)
    with torch.no_grad():
        smooth.encoder[0].weight.copy_(blobs - blobs.mean(1, keepdim=True))
        noisy.encoder[0].weight.normal_()
    rough = autoencoders.encoder_kernels(noisy)
    fine = autoencoders.encoder_kernels(smooth)
    assert fine.numbers["roughness"] < 0.2 < 1.0 < rough.numbers["roughness"]
    assert has_content(fine.figures["encoder_kernels"])


def test_denoising_uses_the_exact_dropped_pixels_and_the_dae_beats_its_input(runs, monkeypatch):
    run = analysis.load_run(runs / "dae")
    images = run.test_images[:40]
    masks = []
    real_inpaint = cv2.inpaint

    def recording_inpaint(image, mask, radius, method):
        assert radius == 3 and image.dtype == np.uint8 and image.shape == mask.shape == (28, 28)
        masks.append(mask.copy())
        return real_inpaint(image, mask, radius, method)

    monkeypatch.setattr(cv2, "inpaint", recording_inpaint)
    result = autoencoders.denoising_vs_inpainting(run.model, images, drop_rates=(0.5,), seed=3)
    _, keep = genfast.dropout_corrupt(images, 0.5, seed=3)
    dropped = (~keep[:, 0]).numpy().astype(np.uint8)
    assert len(masks) == 2 * len(images)  # Telea, then Navier-Stokes
    for i, mask in enumerate(masks):
        np.testing.assert_array_equal(mask, dropped[i % len(images)])
    numbers = result.numbers["p=0.5"]
    assert set(numbers) == {"corrupted", "dae", "dae_known_pixels", "telea", "ns"}
    assert numbers["dae"]["psnr"] > numbers["corrupted"]["psnr"]
    for method in numbers.values():
        assert 0 < method["psnr"] <= 100 and -1 <= method["ssim"] <= 1
    assert has_content(result.figures["denoising_vs_inpainting"])


def test_garbage_test_numbers(runs):
    run = analysis.load_run(runs / "dae")
    result = autoencoders.garbage_test(run.model, run.test_images, run.test_labels, pairs=200)
    assert set(result.numbers["auroc"]) == {"alpha=0.1", "alpha=0.2", "alpha=0.3", "alpha=0.4", "alpha=0.5"}
    assert all(0.0 <= v <= 1.0 for v in result.numbers["auroc"].values())
    assert 0.0 <= result.numbers["auroc_overlay"] <= 1.0
    assert result.numbers["baseline_auroc_grey_pixels"]["alpha=0.5"] > 0.9  # averaged strokes are grey
    energies = result.numbers["interpolation_energy"]
    assert len(energies) == 16 and min(energies) >= 0
    # The ends of the pixel-space path are the two test digits themselves.
    a_b = autoencoders.energy(run.model, run.test_images).numpy()
    assert min(abs(energies[0] - a_b)) < 1e-3 * max(1.0, energies[0])
    assert has_content(result.figures["garbage_histogram"]) and has_content(result.figures["garbage_interpolation"])


def test_vae_interpolation_and_tsne(runs):
    run = analysis.load_run(runs / "vae")
    result = analysis.interpolation(run.model, run.test_images, run.test_labels)
    a, b = result.numbers["pair"]
    assert run.test_labels[a] != run.test_labels[b]
    assert len(result.numbers["latent_energy"]) == len(result.numbers["pixel_energy"]) == 16
    assert all(e > 0 for e in result.numbers["pixel_energy"])
    assert sorted(run.snapshots()) == [0, 1, 2]
    tsne = analysis.tsne(run.snapshots(), run.test_images, run.test_labels, points=300)
    assert sorted(tsne.numbers) == ["epoch=0", "epoch=1", "epoch=2"]
    assert all(0.0 <= v["knn_accuracy"] <= 1.0 for v in tsne.numbers.values())
    assert has_content(tsne.figures["tsne"])


def test_classifier_is_cached_in_the_run_and_scores_samples(runs, monkeypatch):
    run = analysis.load_run(runs / "vae")
    model, accuracy = classifier.classifier_for(run)
    assert (runs / "vae" / classifier.CLASSIFIER_FILE).is_file() and accuracy > 0.8
    monkeypatch.setattr(classifier, "train_classifier", lambda *a, **k: pytest.fail("retrained"))
    again, cached_accuracy = classifier.classifier_for(run)
    assert cached_accuracy == accuracy
    real = to_unit(run.test_images, "unit")[torch.randperm(1000, generator=torch.Generator().manual_seed(0))]
    on_real = classifier.sample_quality(again, real[500:], real[:500])
    on_noise = classifier.sample_quality(again, torch.rand(500, 1, 28, 28), real[:500])
    assert on_real["classes_covered"] == 10 and on_real["class_coverage"] == 1.0
    assert 0.1 <= on_noise["mean_confidence"] <= 1.0 and on_real["mean_confidence"] > 0.8
    assert 0 <= on_real["fid_mnist"] < on_noise["fid_mnist"]


def test_report_writes_every_figure_and_number(runs, tmp_path, capsys):
    from PIL import Image

    from genfast import cli

    out = tmp_path / "report"
    assert cli.main(["report", str(runs / "dae"), str(runs / "vae"), str(runs / "ebgan"), str(runs / "dcgan"),
                     "-o", str(out), "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["genfast_version"] == genfast.__version__
    assert set(summary["runs"]) == {"dae", "vae", "ebgan", "dcgan"}
    dae, vae, dcgan = summary["runs"]["dae"], summary["runs"]["vae"], summary["runs"]["dcgan"]
    assert dae["header"]["model"] == "dae" and dae["header"]["epochs"] == 2 and dae["header"]["data"] == "mnist-5k"
    assert {"reconstructions", "encoder_kernels", "garbage_test", "denoising"} <= set(dae)
    assert dae["denoising"]["p=0.5"]["dae"]["psnr"] > dae["denoising"]["p=0.5"]["corrupted"]["psnr"]
    assert {"reconstructions", "samples", "interpolation", "tsne", "sample_quality"} <= set(vae)
    assert {"samples", "training", "sample_quality"} <= set(dcgan)
    assert 0 <= dcgan["sample_quality"]["class_coverage"] <= 1 and dcgan["sample_quality"]["fid_mnist"] >= 0
    assert set(dcgan["training"]["first_epoch"]) == {"Loss_D", "Loss_G", "D(x)", "D(G(z))_before", "D(G(z))_after"}
    page = (out / "index.html").read_text()
    figures = sorted(out.glob("*.png"))
    assert len(figures) >= 14
    for path in figures:
        image = np.asarray(Image.open(path).convert("L"))
        assert image.std() > 5, path.name  # not blank
        assert f"data-file='{path.name}'" in page and base64.b64encode(path.read_bytes()).decode() in page
    markdown = (out / "summary.md").read_text()
    assert "fid_mnist" in markdown and "p=0.5 / dae / psnr" in markdown
