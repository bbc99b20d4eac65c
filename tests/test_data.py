import gzip
import struct

import numpy as np
import pytest
import torch

from genfast import data
from conftest import requires_embedded_data


@requires_embedded_data
def test_embedded_split_is_class_balanced_and_deterministic():
    train, test = data.load("mnist-5k", "train"), data.load("mnist-5k", "test")
    assert train.images.shape == (4000, 1, 28, 28) and test.images.shape == (1000, 1, 28, 28)
    assert train.images.dtype == torch.uint8
    assert torch.equal(torch.bincount(train.labels), torch.full((10,), 400))
    assert torch.equal(torch.bincount(test.labels), torch.full((10,), 100))
    assert torch.equal(data.load("mnist-5k", "train").images, train.images)
    # Real digits: ink in the middle, blank corners, and no test image in the training set.
    assert train.images[:, :, 10:18, 10:18].float().mean() > 50 > train.images[:, :, :3, :3].float().mean()
    flat_train = {bytes(t) for t in train.images.flatten(1).numpy()}
    assert not any(bytes(t) in flat_train for t in test.images.flatten(1).numpy())


def test_normalise_ranges():
    x = torch.tensor([0, 255, 51], dtype=torch.uint8)
    assert torch.allclose(data.normalise(x, "unit"), torch.tensor([0.0, 1.0, 0.2]))
    assert torch.allclose(data.normalise(x, "tanh"), torch.tensor([-1.0, 1.0, -0.6]))


def _write_idx(path, array, magic_type=0x08, compress=False, truncate=0):
    header = bytes([0, 0, magic_type, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    payload = payload[:len(payload) - truncate] if truncate else payload
    (gzip.open if compress else open)(path, "wb").write(payload)


@pytest.fixture
def mnist_root(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("t10k", 5)):
        _write_idx(raw / f"{split}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)), compress=True)
        _write_idx(raw / f"{split}-labels-idx1-ubyte", rng.integers(0, 10, n))
    return tmp_path


def test_idx_in_torchvision_layout(mnist_root):
    train = data.load(f"mnist:{mnist_root}", "train")
    assert train.images.shape == (12, 1, 28, 28) and train.labels.shape == (12,)
    assert data.load(f"mnist:{mnist_root}", "test").images.shape == (5, 1, 28, 28)
    assert data.load(f"mnist:{mnist_root}", "train", size=64).images.shape == (12, 1, 64, 64)


def test_idx_errors_name_the_file(tmp_path, mnist_root):
    raw = mnist_root / "MNIST" / "raw"
    with pytest.raises(data.DataError, match="train-images-idx3-ubyte: no such file"):
        data.load(f"fashion-mnist:{tmp_path / 'missing'}", "train")
    _write_idx(raw / "t10k-labels-idx1-ubyte", np.zeros(4))
    with pytest.raises(data.DataError, match="4 labels for 5 images"):
        data.load(f"mnist:{mnist_root}", "test")
    bad = tmp_path / "bad"
    _write_idx(bad, np.zeros((2, 3)), magic_type=0x0D)
    with pytest.raises(data.DataError, match=f"{bad}: not an IDX file"):
        data.read_idx(bad)
    short = tmp_path / "short"
    _write_idx(short, np.zeros((2, 28, 28)), truncate=10)
    with pytest.raises(data.DataError, match=f"{short}: .*truncated"):
        data.read_idx(short)


def test_image_folder(tmp_path):
    from PIL import Image

    for label in ("cat", "dog"):
        (tmp_path / label).mkdir()
        for i in range(5):
            Image.new("RGB", (40, 30), (i * 40, 0, 200)).save(tmp_path / label / f"{i}.png")
    train = data.load(f"folder:{tmp_path}", "train", size=32, channels=3)
    assert train.images.shape == (8, 3, 32, 32) and train.labels.tolist() == [0] * 4 + [1] * 4
    assert data.load(f"folder:{tmp_path}", "test").images.shape == (2, 1, 28, 28)
    (tmp_path / "dog" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(data.DataError, match="broken.png: unreadable image"):
        data.load(f"folder:{tmp_path}", "test")


def test_batches_cover_an_epoch_and_shard_disjointly():
    seen = [torch.cat(list(data.batches(103, 10, torch.Generator().manual_seed(3), "cpu", rank, 2)))
            for rank in (0, 1)]
    assert set(seen[0].tolist()).isdisjoint(seen[1].tolist())
    together = seen[0].tolist() + seen[1].tolist()
    assert len(together) == 102 and len(set(together)) == 102  # one image waits for the next epoch


def test_shards_have_equal_batch_counts():
    """Uneven shards would leave one DDP rank waiting for the other forever."""
    counts = [len(list(data.batches(129, 64, torch.Generator().manual_seed(0), "cpu", rank, 2))) for rank in (0, 1)]
    assert counts[0] == counts[1]


def test_hidden_and_empty_folders_are_not_classes(tmp_path):
    from PIL import Image

    for label in ("a", "b"):
        (tmp_path / label).mkdir()
        for i in range(5):
            Image.new("L", (28, 28), i * 50).save(tmp_path / label / f"{i}.png")
    (tmp_path / ".ipynb_checkpoints").mkdir()
    (tmp_path / "empty").mkdir()
    assert data.load(f"folder:{tmp_path}", "train").labels.unique().tolist() == [0, 1]


def test_unknown_source():
    with pytest.raises(ValueError, match="unknown data source"):
        data.load("cifar")
