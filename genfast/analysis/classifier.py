"""A small digit classifier, trained on a run's own data and cached in the run, that scores generated
images without internet: class coverage, mean confidence, and the Fréchet distance between its
penultimate-layer features of real and generated images ("FID-MNIST": the FID formula on this
classifier's 128 features, not Inception's 2048, so not comparable with published FID values)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..files import atomic_write
from ..images import to_unit
from .common import Run

CLASSIFIER_FILE = "classifier.safetensors"
SIZE = 28  # inputs are brought to 28x28 (DCGAN's 64x64 by area averaging)


class DigitClassifier(nn.Module):
    def __init__(self, channels: int = 1, classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),   # 14x14
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),         # 7x7
            nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU())
        self.head = nn.Linear(128, classes)

    def forward(self, unit_images: Tensor) -> Tensor:
        return self.head(self.embed(unit_images))

    def embed(self, unit_images: Tensor) -> Tensor:
        """Penultimate features of images in [0, 1], any square size."""
        x = unit_images.float()
        if x.shape[-1] != SIZE:
            x = F.interpolate(x, size=(SIZE, SIZE), mode="area")
        return self.features(x * 2 - 1)


def train_classifier(images: Tensor, labels: Tensor, epochs: int = 4, seed: int = 0,
                     progress: bool = False) -> DigitClassifier:
    """Adam 1e-3, batch 128, on images in [0, 1] with their labels."""
    from tqdm import tqdm

    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = DigitClassifier(images.shape[1], int(labels.max()) + 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in tqdm(range(epochs), desc="classifier", disable=not progress, leave=False):
        order = torch.randperm(len(images), generator=generator)
        for start in range(0, len(images), 128):
            index = order[start:start + 128]
            loss = F.cross_entropy(model(images[index]), labels[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return model.eval()


@torch.no_grad()
def accuracy(model: DigitClassifier, images: Tensor, labels: Tensor) -> float:
    predictions = torch.cat([model(images[i:i + 500]).argmax(1) for i in range(0, len(images), 500)])
    return (predictions == labels).float().mean().item()


def classifier_for(run: Run, progress: bool = False) -> tuple[DigitClassifier, float]:
    """The run's cached classifier (trained on its train split, once) and its test accuracy."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from .. import data as datasets

    path = run.path / CLASSIFIER_FILE
    channels = run.test_images.shape[1]
    if path.is_file():
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata()
            state = {k: f.get_tensor(k) for k in f.keys()}
        if meta.get("data") == run.cfg.data and int(meta.get("channels", -1)) == channels:
            model = DigitClassifier(channels, state["head.weight"].shape[0])
            model.load_state_dict(state)
            return model.eval(), float(meta["test_accuracy"])
    train = run.train_split()
    if train.labels is None or run.test_labels is None:
        raise ValueError(f"{run.cfg.data} has no labels: the classifier-based scores need a labelled data set")
    model = train_classifier(datasets.normalise(train.images, "unit"), train.labels, progress=progress)
    test_accuracy = accuracy(model, to_unit(run.test_images, run.model.value_range), run.test_labels)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    meta = {"data": run.cfg.data, "channels": str(channels), "test_accuracy": repr(test_accuracy)}
    atomic_write(path, lambda tmp: save_file(state, tmp, metadata=meta))
    return model, test_accuracy


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """‖μa − μb‖² + Tr(Σa + Σb − 2 (Σa Σb)^½) between two feature sets (rows are samples)."""
    import warnings

    from scipy import linalg

    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", linalg.LinAlgWarning)  # features that are always 0 (ReLU)
        root = linalg.sqrtm(cov_a @ cov_b)
        if not np.isfinite(root).all():  # singular product: the usual small ridge
            ridge = 1e-6 * np.eye(len(cov_a))
            root = linalg.sqrtm((cov_a + ridge) @ (cov_b + ridge))
    root = root.real  # rounding leaves an imaginary part of the order of the error
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root))


@torch.no_grad()
def sample_quality(classifier: DigitClassifier, generated: Tensor, real: Tensor) -> dict[str, float]:
    """Scores of generated images (N, C, H, W) in [0, 1] against real ones, by the classifier."""
    probabilities = torch.cat([F.softmax(classifier(generated[i:i + 500]), 1) for i in range(0, len(generated), 500)])
    classes = probabilities.argmax(1)
    counts = torch.bincount(classes, minlength=probabilities.shape[1])
    features = [torch.cat([classifier.embed(x[i:i + 500]) for i in range(0, len(x), 500)]).double().numpy()
                for x in (real, generated)]
    return {"classes_covered": int((counts > 0).sum()), "class_coverage": float((counts > 0).float().mean()),
            "class_histogram": counts.tolist(), "mean_confidence": float(probabilities.max(1).values.mean()),
            "fid_mnist": frechet_distance(*features)}

