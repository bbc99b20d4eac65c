"""genfast.export.runtime: torch-free import, helpers equal to PyTorch, inputs, errors, IO binding."""

import io
import os
import struct
import subprocess
import sys
import textwrap
import threading
import zlib

import numpy as np
import pytest
import torch

ort = pytest.importorskip("onnxruntime")
from genfast.export import runtime  # noqa: E402


def _unit(t, model):
    """A model-range tensor as images in [0, 1]."""
    low, high = (0.0, 1.0) if model.value_range == "unit" else (-1.0, 1.0)
    return ((t - low) / (high - low)).clamp(0, 1).numpy()


def _model_range(images, model):
    low, high = (0.0, 1.0) if model.value_range == "unit" else (-1.0, 1.0)
    return torch.from_numpy(low + (high - low) * images).float()


def _images(n, shape, seed=0):
    return np.random.default_rng(seed).random((n, *shape), dtype=np.float32)


def test_runtime_imports_and_serves_without_torch(onnx_exports, tmp_path):
    _, folder = onnx_exports["vae"]
    script = textwrap.dedent(f"""
        import importlib.abc, sys

        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name.split(".")[0] in ("torch", "onnx", "onnxscript") or name == "genfast._C":
                    raise ModuleNotFoundError(f"No module named {{name!r}} (blocked)", name=name)

        sys.meta_path.insert(0, Block())
        from genfast.export import runtime
        model = runtime.load({str(folder)!r})
        images = model.generate(4, seed=1)
        assert images.shape == (4, 1, 28, 28), images.shape
        runtime.save_grid(model.reconstruct(images), {str(tmp_path / "r.png")!r})
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "onnx") or m == "genfast._C")
        print("loaded:", loaded)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "loaded: []" in done.stdout
    assert (tmp_path / "r.png").stat().st_size > 100


def test_generate_equals_pytorch_for_the_same_noise(onnx_exports):
    for kind in ("vae", "ebgan", "dcgan"):
        model, folder = onnx_exports[kind]
        served = runtime.load(folder, device="cpu")
        z = served.noise(5, seed=3)
        np.testing.assert_array_equal(z, np.random.default_rng(3).standard_normal((5, served.latent_size),
                                                                                   dtype=np.float32))
        with torch.no_grad():
            z_t = torch.from_numpy(z)
            if kind == "vae":
                expected = model.decoder(z_t).view(-1, 1, 28, 28)
            elif kind == "ebgan":
                expected = model.generator(z_t).view(-1, 1, 28, 28)
            else:
                expected = model.generator(z_t[:, :, None, None])
        np.testing.assert_allclose(served.generate(5, seed=3), _unit(expected, model), atol=1e-5)
        assert not np.array_equal(served.generate(5, seed=3), served.generate(5, seed=4))


@pytest.mark.parametrize("kind", ["ae", "dae", "vae"])
def test_reconstruct_equals_pytorch(onnx_exports, kind):
    model, folder = onnx_exports[kind]
    served = runtime.load(folder)
    images = _images(6, (1, 28, 28))
    with torch.no_grad():
        out = model(_model_range(images, model))
        expected = out[0] if kind == "vae" else out
    np.testing.assert_allclose(served.reconstruct(images), _unit(expected, model), atol=1e-5)


def test_encode_energy_discriminate_equal_pytorch(onnx_exports):
    vae, folder = onnx_exports["vae"]
    images = _images(3, (1, 28, 28))
    mu, logvar = runtime.load(folder).encode(images)
    with torch.no_grad():
        mu_t, logvar_t = vae.encode(_model_range(images, vae))
    np.testing.assert_allclose(mu, mu_t.numpy(), atol=1e-5)
    np.testing.assert_allclose(logvar, logvar_t.numpy(), atol=1e-5)
    for kind, reference in (("ae", lambda m, x: m.energy(x)), ("ebgan", lambda m, x: m.cost(x)),
                            ("dcgan", lambda m, x: torch.sigmoid(m.discriminator(x)))):
        model, folder = onnx_exports[kind]
        served = runtime.load(folder)
        images = _images(4, served.image_shape)
        got = served.discriminate(images) if kind == "dcgan" else served.energy(images)
        with torch.no_grad():
            expected = reference(model, _model_range(images, model)).numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_denoise_corrupts_as_in_training(onnx_exports):
    model, folder = onnx_exports["dae"]
    served = runtime.load(folder)
    images = _images(4, (1, 28, 28))
    keep = np.random.default_rng(7).random(images.shape) >= 0.5
    corrupted = np.where(keep, 2.0 * _model_range(images, model).numpy(), 0.0).astype(np.float32)
    with torch.no_grad():
        expected = _unit(model(torch.from_numpy(corrupted)), model)
    np.testing.assert_allclose(served.denoise(images, p=0.5, seed=7), expected, atol=1e-5)
    np.testing.assert_allclose(served.denoise(images), served.reconstruct(images))
    with pytest.raises(ValueError, match="p must be"):
        served.denoise(images, p=1.0)


def test_inputs_as_pil_uint8_and_unbatched(onnx_exports):
    from PIL import Image

    served = runtime.load(onnx_exports["ae"][1])
    pixels = (np.random.default_rng(0).random((28, 28)) * 255).astype(np.uint8)
    expected = served.reconstruct(pixels.astype(np.float32)[None, None] / 255)
    for given in (pixels, pixels[None], pixels[None, None], Image.fromarray(pixels), [Image.fromarray(pixels)],
                  Image.fromarray(pixels).convert("RGB")):
        np.testing.assert_allclose(served.reconstruct(given), expected, atol=1e-6)
    big = Image.fromarray(pixels).resize((56, 56))
    assert served.reconstruct(big).shape == (1, 1, 28, 28)


def test_input_batch_maps_unit_images_to_the_model_range(onnx_exports):
    quarter = np.full((2, 1, 28, 28), 0.25)
    tanh_model, unit_model = runtime.load(onnx_exports["ae"][1]), runtime.load(onnx_exports["vae"][1])
    for served, expected in ((tanh_model, -0.5), (unit_model, 0.25)):
        batch = served.input_batch(quarter)
        assert batch.dtype == np.float32 and batch.shape == (2, 1, 28, 28)
        np.testing.assert_array_equal(batch, expected)


def png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height pixels (what Image.open reads), with no pixel data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grey
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def test_sixteen_bit_pngs_scale_to_unit(onnx_exports, tmp_path):
    from PIL import Image

    levels = (np.arange(28 * 28).reshape(28, 28) * 83).astype(np.uint16)  # 784 grey levels up to 65072
    Image.fromarray(levels).save(tmp_path / "deep.png")
    unit = (levels / 65535.0).astype(np.float32)
    served = runtime.load(onnx_exports["ae"][1])
    np.testing.assert_allclose(runtime.read_images([tmp_path / "deep.png"], served)[0, 0], unit, atol=1e-7)
    with Image.open(tmp_path / "deep.png") as image:  # a PIL image handed to the helpers
        assert image.mode == "I;16"
        np.testing.assert_allclose(served.reconstruct(image), served.reconstruct(unit), atol=1e-6)
    Image.fromarray(np.kron(levels, np.ones((2, 2), np.uint16))).save(tmp_path / "deep56.png")
    rgb = runtime.open_image(tmp_path / "deep56.png", (3, 28, 28))  # resized, and grey to 3 channels
    assert rgb.shape == (3, 28, 28) and (rgb[0] == rgb[2]).all()
    assert abs(rgb.mean() - unit.mean()) < 2e-3 and rgb.max() > 0.98
    Image.fromarray(levels.astype(np.int32) * 1000).save(tmp_path / "wide.tif")  # 32-bit: no known range
    with pytest.raises(ValueError, match="wide.tif: .*I-mode image"):
        runtime.read_images([tmp_path / "wide.tif"], served)


def test_oversized_images_fifos_and_other_formats_are_clear_errors(onnx_exports, tmp_path):
    from PIL import Image

    served = runtime.load(onnx_exports["ae"][1])
    (tmp_path / "bomb.png").write_bytes(png_declaring(100_000, 100_000))  # over Pillow's own bomb limit
    (tmp_path / "big.png").write_bytes(png_declaring(5000, 5000))  # over read_images' limit only
    for name in ("bomb.png", "big.png"):
        with pytest.raises(runtime.ImageTooLarge, match=f"{name}: .*pixels"):
            runtime.read_images([tmp_path / name], served)
    with pytest.raises(runtime.ImageTooLarge, match="limit of 100 pixels"):
        runtime.read_images([tmp_path / "big.png"], served, max_pixels=100)
    os.mkfifo(tmp_path / "pipe.png")
    outcome = []  # opening a FIFO blocks until a writer comes: a daemon thread bounds the wait

    def read_fifo():
        try:
            runtime.read_images([tmp_path / "pipe.png"], served)
        except ValueError as error:
            outcome.append(str(error))

    reader = threading.Thread(target=read_fifo, daemon=True)
    reader.start()
    reader.join(timeout=10)
    assert outcome and "pipe.png: not a regular file" in outcome[0], "read_images blocked on a FIFO"
    tiff = io.BytesIO()
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(tiff, format="TIFF")
    assert runtime.open_image(io.BytesIO(tiff.getvalue()), (1, 28, 28)).shape == (1, 28, 28)
    with pytest.raises(ValueError, match=r"not a readable image \(not PNG or JPEG\)"):
        runtime.open_image(io.BytesIO(tiff.getvalue()), (1, 28, 28), formats=("PNG", "JPEG"))
    dds = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(dds, format="DDS")
    damaged = bytearray(dds.getvalue())
    damaged[80] = 3  # unknown pixel-format flags: Pillow raises NotImplementedError, not OSError
    with pytest.raises(ValueError, match=r"not a readable image \(NotImplementedError"):
        runtime.open_image(io.BytesIO(bytes(damaged)), (1, 28, 28))
    png = io.BytesIO()
    Image.fromarray(_images(1, (28, 28))[0] > 0.5).save(png, format="PNG")
    for cut in (40, 100):  # the header cut (Pillow's message holds the BytesIO's repr), the pixels cut
        with pytest.raises(ValueError, match="not a readable image") as error:
            runtime.open_image(io.BytesIO(png.getvalue()[:cut]), (1, 28, 28), formats=("PNG",))
        assert " at 0x" not in str(error.value)


@pytest.mark.parametrize("bad,message", [
    (np.zeros((2, 1, 27, 28), np.float32), "shape"),
    (np.zeros((0, 1, 28, 28), np.float32), "empty"),
    (np.full((1, 1, 28, 28), 1.5, np.float32), r"in \[0, 1\]"),
    (np.full((1, 1, 28, 28), np.nan, np.float32), r"in \[0, 1\]"),
    (np.zeros((1, 1, 28, 28), np.int64), "dtype"),
])
def test_bad_images_are_clear_errors(onnx_exports, bad, message):
    served = runtime.load(onnx_exports["ae"][1])
    with pytest.raises(ValueError, match=message):
        served.reconstruct(bad)


def test_bad_calls(onnx_exports):
    served = runtime.load(onnx_exports["vae"][1])
    with pytest.raises(LookupError, match="no energy graph"):
        served.energy(_images(1, (1, 28, 28)))
    with pytest.raises(ValueError, match="n must be"):
        served.generate(0)
    with pytest.raises(ValueError, match=r"z must have shape \(n, 20\)"):
        served.decode(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match="shape"):
        served.run("decode", np.zeros((2, 21), np.float32))


def test_load_errors(onnx_exports, tmp_path):
    import onnx

    with pytest.raises(FileNotFoundError):
        runtime.load(tmp_path / "missing.onnx")
    with pytest.raises(FileNotFoundError, match="no float32 .onnx files"):
        runtime.load(tmp_path)
    (tmp_path / "text.onnx").write_text("hello")
    with pytest.raises(ValueError, match="not an ONNX model"):
        runtime.load(tmp_path / "text.onnx")
    graph = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["x"], ["y"])], "g",
                                   [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
                                   [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])])
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 20)]),
              tmp_path / "plain.onnx")
    with pytest.raises(ValueError, match="not a genfast export"):
        runtime.load(tmp_path / "plain.onnx")
    folder = onnx_exports["vae"][1]
    with pytest.raises(ValueError, match="device"):
        runtime.load(folder, device="gpu")
    with pytest.raises(ValueError, match="threads"):
        runtime.load(folder, threads=0)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for kind in ("vae", "ae"):
        source = onnx_exports[kind][1]
        for file in source.iterdir():
            (mixed / file.name).write_bytes(file.read_bytes())
    with pytest.raises(ValueError, match="several models"):
        runtime.load(mixed)


def test_one_file_loads_one_graph_and_threads_apply(onnx_exports):
    served = runtime.load(onnx_exports["vae"][1] / "vae_decode.onnx", device="cpu", threads=1)
    assert list(served.graphs) == ["decode"] and served.provider == "CPUExecutionProvider"
    assert served.graphs["decode"].session.get_session_options().intra_op_num_threads == 1
    assert "vae" in repr(served)


def test_provider_is_what_loaded_not_what_is_available(onnx_exports, monkeypatch):
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA: the fallback is tested where it lacks it")
    folder = onnx_exports["vae"][1]
    with pytest.raises(RuntimeError, match="no CUDA execution provider"):
        runtime.load(folder, device="cuda")
    # An onnxruntime that lists CUDA but cannot load it (missing libraries) falls back to the CPU.
    monkeypatch.setattr(runtime.ort, "get_available_providers",
                        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert runtime.load(folder, device="auto").provider == "CPUExecutionProvider"
    with pytest.raises(RuntimeError, match="did not load"):
        runtime.load(folder, device="cuda")


def test_float16_folder_and_dtype_choice(onnx_exports, tmp_path):
    from conftest import small_models
    from genfast.export import onnx_export

    model = small_models()["vae"]
    for dtype, name in (("float32", "vae_decode.onnx"), ("float16", "vae_decode.fp16.onnx")):
        onnx_export.to_onnx(model, "decode", tmp_path / name, dtype=dtype)
    assert runtime.load(tmp_path).graphs["decode"].dtype == np.float32
    with pytest.raises(ValueError, match="dtype"):
        runtime.load(tmp_path, dtype="bfloat16")
    half = runtime.load(tmp_path, dtype="float16")
    assert half.graphs["decode"].dtype == np.float16
    np.testing.assert_allclose(half.generate(3, seed=0), runtime.load(tmp_path).generate(3, seed=0), atol=1e-2)


def test_io_binding_with_torch_tensors(onnx_exports):
    served = runtime.load(onnx_exports["vae"][1], device="cpu")
    z = torch.randn(40, 5).t()  # non-contiguous (5, 40) -> make a (5, 20) strided view
    z = z[:, ::2]
    out = served.run("decode", z)
    assert isinstance(out[0], torch.Tensor) and out[0].shape == (5, 1, 28, 28)
    np.testing.assert_allclose(out[0].numpy(), served.run("decode", z.contiguous().numpy())[0], atol=0)
    mu, logvar = served.run("encode", torch.rand(3, 1, 28, 28, dtype=torch.float64))
    assert mu.dtype == torch.float32 and mu.shape == logvar.shape == (3, 20)
    with pytest.raises(ValueError, match="shape"):
        served.run("decode", torch.zeros(2, 3))


def test_grid_pixels_and_png(tmp_path):
    from PIL import Image

    images = np.zeros((3, 1, 4, 4), np.float32)
    images[1] = 1.0
    picture = runtime.grid(images, columns=2)
    assert picture.shape == (2 * 6 + 2, 2 * 6 + 2)
    assert picture[2:6, 8:12].min() == 255 and picture[2:6, 2:6].max() == 0 and picture[8:12, 2:6].max() == 0
    path = runtime.save_grid(images, tmp_path / "g.png", columns=2)
    np.testing.assert_array_equal(np.asarray(Image.open(path)), picture)
    with pytest.raises(ValueError, match="shape"):
        runtime.grid(np.zeros((2, 2, 4, 4)))


def test_sample_and_reconstruct_commands(onnx_exports, tmp_path, capsys):
    from PIL import Image

    from genfast import cli

    folder = onnx_exports["vae"][1]
    assert cli.main(["sample", str(folder), "-n", "6", "--seed", "2", "-o", str(tmp_path / "s.png")]) == 0
    picture = np.asarray(Image.open(tmp_path / "s.png"))
    served = runtime.load(folder)
    np.testing.assert_array_equal(picture, runtime.grid(served.generate(6, seed=2)))
    pixels = (np.random.default_rng(1).random((28, 28)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    assert cli.main(["reconstruct", str(folder), str(tmp_path / "a.png"), "-o", str(tmp_path / "r.png")]) == 0
    picture = np.asarray(Image.open(tmp_path / "r.png"))
    expected = np.concatenate([pixels[None, None] / 255.0, served.reconstruct(pixels)])
    np.testing.assert_array_equal(picture, runtime.grid(expected, columns=1))
    (tmp_path / "bad.png").write_text("no")
    with pytest.raises(SystemExit):
        cli.main(["reconstruct", str(folder), str(tmp_path / "bad.png"), "-o", str(tmp_path / "x.png")])
    assert "not a readable image" in capsys.readouterr().err
    (tmp_path / "bomb.png").write_bytes(png_declaring(100_000, 100_000))
    with pytest.raises(SystemExit):
        cli.main(["reconstruct", str(folder), str(tmp_path / "bomb.png"), "-o", str(tmp_path / "x.png")])
    assert "bomb.png: " in capsys.readouterr().err


@pytest.mark.skipif(not (torch.cuda.is_available() and "CUDAExecutionProvider" in ort.get_available_providers()),
                    reason="needs a GPU and onnxruntime-gpu")
def test_cuda_provider_and_io_binding(onnx_exports):
    model, folder = onnx_exports["dcgan"]
    served = runtime.load(folder, device="cuda")
    assert served.provider == "CUDAExecutionProvider"
    z = torch.randn(9, served.latent_size, device="cuda")
    image, = served.run("generate", z)
    assert image.device.type == "cuda" and image.shape == (9, *served.image_shape)
    with torch.no_grad():
        expected = model.to("cuda").generator(z[:, :, None, None])
    model.cpu()
    torch.testing.assert_close(image, expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(served.run("generate", z.cpu().numpy())[0], image.cpu().numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="CPU tensor"):
        served.run("generate", z.cpu())


def test_commands_name_the_missing_extra(monkeypatch, capsys):
    import importlib.util

    from genfast import cli

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    with pytest.raises(SystemExit):
        cli.main(["sample", "x.onnx", "-o", "x.png"])
    assert "pip install 'genfast[onnx]'" in capsys.readouterr().err


@pytest.mark.parametrize("key, value, message", [
    ("image_shape", "[1, 28", "image_shape is not JSON"),
    ("image_shape", "[2, 28, 28]", "image_shape must be"),
    ("image_shape", "[1, -28, 28]", "image_shape must be"),
    ("latent_size", "\"20\"", "latent_size must be"),
    ("input_range", "[1.0, 0.0]", "input_range must be"),
    ("output_range", "[0, Infinity]", "output_range must be"),
])
def test_malformed_metadata_names_the_file(onnx_exports, tmp_path, key, value, message):
    import onnx

    source = onnx_exports["vae"][1] / "vae_decode.onnx"
    proto = onnx.load(str(source))
    for prop in proto.metadata_props:
        if prop.key == key:
            prop.value = value
    damaged = tmp_path / "vae_decode.onnx"
    onnx.save(proto, str(damaged))
    with pytest.raises(ValueError, match=f"vae_decode.onnx: malformed genfast metadata: {message}"):
        runtime.load(damaged)
