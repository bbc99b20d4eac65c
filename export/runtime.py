"""Serving exported genfast graphs with onnxruntime. It needs only numpy and onnxruntime: on a
serving machine without torch, importing it loads neither torch nor genfast's kernels (where torch
is installed, ``import genfast`` registers the kernels as usual). Torch tensors handed to ``run``
use torch, imported then.

    from genfast.export import runtime
    model = runtime.load("onnx/")                  # a folder of one model's graphs, or one .onnx file
    images = model.generate(64, seed=0)            # (64, C, H, W) in [0, 1]
    runtime.save_grid(images, "samples.png")
    restored = model.reconstruct(images)           # numpy arrays, PIL images or uint8 arrays in
    z = model.run("decode", z_cuda_tensor)[0]      # torch CUDA tensors in and out (IO binding)

Images in and out of the typed helpers are in [0, 1] (uint8 arrays and PIL images are converted);
the helpers map them to and from the model's own range ([-1, 1] for the tanh models) as stored in
the graph's metadata.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from collections.abc import Iterable
from typing import Any

import numpy as np
import onnxruntime as ort

from ..images import grid, png_bytes, save_grid  # noqa: F401  (re-exported: runtime.grid, ...)

DEVICES = ("auto", "cuda", "cpu")
CUDA, CPU = "CUDAExecutionProvider", "CPUExecutionProvider"
_NUMPY_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


class GraphSession:
    """The onnxruntime session of one exported genfast graph, with the metadata written at export."""

    def __init__(self, path: Path, session: ort.InferenceSession, metadata: dict[str, str]):
        self.path, self.session, self.metadata = path, session, metadata
        self.name = metadata["graph"]
        self.input = session.get_inputs()[0]
        self.outputs = [o.name for o in session.get_outputs()]
        self.dtype = _NUMPY_TYPES.get(self.input.type)
        if self.dtype is None:
            raise ValueError(f"{path}: input type {self.input.type} is not float or float16")
        self.provider = session.get_providers()[0]
        self.sample_shape = tuple(self.input.shape[1:])

    def check_shape(self, shape: tuple[int, ...]) -> None:
        """A batch of this graph's input: (batch >= 1, *sample_shape), numpy or torch."""
        if tuple(shape[1:]) != self.sample_shape or len(shape) != len(self.sample_shape) + 1:
            raise ValueError(f"{self.name}: input {self.input.name!r} must have shape (batch, "
                             f"{', '.join(map(str, self.sample_shape))}), got {tuple(shape)}")
        if shape[0] == 0:
            raise ValueError(f"{self.name}: input {self.input.name!r} is an empty batch")

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        self.check_shape(x.shape)
        outputs = self.session.run(self.outputs, {self.input.name: np.ascontiguousarray(x, dtype=self.dtype)})
        if self.dtype is np.float32:
            return outputs
        return [o.astype(np.float32) for o in outputs]


class GenfastModel:
    """The graphs of one exported model (one or several of encode, decode, reconstruct, generate,
    energy, discriminate) and typed helpers over them."""

    def __init__(self, graphs: dict[str, GraphSession]):
        self.graphs = graphs
        first = next(iter(graphs.values())).metadata
        self.kind: str = first["model_kind"]
        self.latent_size: int = int(first["latent_size"])
        self.image_shape: tuple[int, ...] = tuple(json.loads(first["image_shape"]))
        self.input_range: tuple[float, float] = tuple(json.loads(first["input_range"]))
        self.output_range: tuple[float, float] = tuple(json.loads(first["output_range"]))
        self.provider: str = next(iter(graphs.values())).provider  # what really runs

    def __repr__(self) -> str:
        return (f"GenfastModel({self.kind}, graphs {sorted(self.graphs)}, image {self.image_shape}, "
                f"latent {self.latent_size}, on {self.provider})")

    def graph(self, *names: str) -> GraphSession:
        for name in names:
            if name in self.graphs:
                return self.graphs[name]
        raise LookupError(f"this {self.kind} export has no {' or '.join(names)} graph "
                          f"(it has {', '.join(sorted(self.graphs))})")

    # -- raw graphs -----------------------------------------------------------------------------

    def run(self, graph: str, x: Any) -> list:
        """One graph on a batch in the model's own value range: numpy in, numpy out; torch tensors
        in, torch tensors out on the same device, bound without copies (IO binding)."""
        if type(x).__module__.startswith("torch"):
            return _run_torch(self.graph(graph), x)
        return self.graph(graph).run(np.asarray(x))

    # -- typed helpers: images in [0, 1] --------------------------------------------------------

    def noise(self, n: int, seed: int | None = None) -> np.ndarray:
        """z ~ N(0, I), as in training, from a seeded numpy Generator."""
        if not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        return np.random.default_rng(seed).standard_normal((int(n), self.latent_size), dtype=np.float32)

    def decode(self, z: np.ndarray) -> np.ndarray:
        """Images in [0, 1] from latent codes (the VAE's decoder or a GAN's generator)."""
        z = np.asarray(z, dtype=np.float32)
        if z.ndim != 2 or z.shape[1] != self.latent_size:
            raise ValueError(f"z must have shape (n, {self.latent_size}), got {z.shape}")
        return self._to_unit(self.graph("generate", "decode").run(z)[0])

    def generate(self, n: int, seed: int | None = None) -> np.ndarray:
        """n samples: standard normal noise through the generator or the VAE's decoder."""
        return self.decode(self.noise(n, seed))

    def reconstruct(self, images) -> np.ndarray:
        """Autoencoder reconstructions (the VAE's via z = mu), in [0, 1]."""
        return self._to_unit(self.graph("reconstruct").run(self.input_batch(images))[0])

    def denoise(self, images, p: float | None = None, seed: int | None = None) -> np.ndarray:
        """The DAE's restoration of corrupted images; with ``p``, the clean ``images`` are first
        corrupted as in training (each pixel dropped with probability p, kept ones scaled by 1/(1-p))."""
        x = self.input_batch(images)
        if p is not None:
            if not 0.0 <= p < 1.0:
                raise ValueError(f"p must be in [0, 1), got {p}")
            keep = np.random.default_rng(seed).random(x.shape) >= p
            x = np.where(keep, x / (1.0 - p), 0.0).astype(np.float32)
        return self._to_unit(self.graph("reconstruct").run(x)[0])

    def encode(self, images) -> tuple[np.ndarray, np.ndarray]:
        """The VAE's (mu, logvar)."""
        mu, logvar = self.graph("encode").run(self.input_batch(images))
        return mu, logvar

    def energy(self, images) -> np.ndarray:
        """Per-image energy: ‖y − ỹ‖² of an autoencoder, C(y) of the EBGAN's cost network."""
        return self.graph("energy").run(self.input_batch(images))[0]

    def discriminate(self, images) -> np.ndarray:
        """DCGAN's D(x): the probability that each image is real."""
        return self.graph("discriminate").run(self.input_batch(images))[0]

    def input_batch(self, images) -> np.ndarray:
        """A batch (N, C, H, W) in the model's input range from images in [0, 1]: a float array
        (N, C, H, W), (N, H, W) or (H, W), a uint8 array (0-255), a PIL image or a list of them."""
        c, h, w = self.image_shape
        if _is_pil(images):
            images = [images]
        if isinstance(images, (list, tuple)) and images and all(_is_pil(i) for i in images):
            images = np.stack([from_pil(i, c, h, w) for i in images])
        x = np.asarray(images)
        if x.dtype == np.uint8:
            x = x.astype(np.float32) / 255.0
        elif x.dtype.kind != "f":
            raise ValueError(f"images must be float in [0, 1] or uint8, got dtype {x.dtype}")
        if x.ndim == 2:
            x = x[None]
        if x.ndim == 3 and c == 1:
            x = x[:, None]
        if x.ndim != 4 or tuple(x.shape[1:]) != (c, h, w):
            raise ValueError(f"images must have shape (N, {c}, {h}, {w}), got {tuple(np.shape(images))}")
        if x.shape[0] == 0:
            raise ValueError("images is an empty batch")
        if not np.isfinite(x).all():
            raise ValueError("images must be in [0, 1]: they hold NaN or infinity")
        if x.min() < 0.0 or x.max() > 1.0:
            raise ValueError(f"images must be in [0, 1] (got values in [{x.min():.3g}, {x.max():.3g}]); "
                             "uint8 images are divided by 255")
        low, high = self.input_range
        return (low + (high - low) * x).astype(np.float32)

    def _to_unit(self, y: np.ndarray) -> np.ndarray:
        """In place (y is onnxruntime's fresh output). Image outputs end in a Sigmoid or a Tanh, so
        they are already inside the output range: nothing to clip."""
        low, high = self.output_range
        if (low, high) != (0.0, 1.0):
            y -= low
            y *= 1.0 / (high - low)
        return y


# ------------------------------------------------------------------------------------------------


def load(path: str | Path, device: str = "auto", threads: int | None = None,
         dtype: str = "float32") -> GenfastModel:
    """Loads one exported graph, or every graph of one model in a folder: the ``dtype`` ones, by
    genfast's file names (``*.fp16.onnx`` is float16) and then by their metadata.

    ``device``: "cuda" (or "cuda:N") requires the CUDA execution provider to really load and
    raises otherwise; "auto" uses it when it loads and falls back to the CPU; "cpu". The provider
    that runs is in ``model.provider``. ``threads``: onnxruntime's intra-op threads (CPU).
    """
    if dtype not in ("float32", "float16"):
        raise ValueError(f"dtype must be 'float32' or 'float16', got {dtype!r}")
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    if path.is_dir():
        files = [f for f in sorted(path.glob("*.onnx")) if f.name.endswith(".fp16.onnx") == (dtype == "float16")]
        if not files:
            raise FileNotFoundError(f"{path}: no {dtype} .onnx files in this folder")
    else:
        files = [path]
    providers, options = _providers(device), ort.SessionOptions()
    if threads is not None:
        if not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads must be a positive integer, got {threads!r}")
        options.intra_op_num_threads = threads
    graphs: dict[str, GraphSession] = {}
    for file in files:
        graph = _open(file, providers, options, device)
        if path.is_dir() and graph.metadata.get("dtype", "float32") != dtype:
            continue
        if graphs:
            first = next(iter(graphs.values()))
            if graph.metadata["model_kind"] != first.metadata["model_kind"] or graph.name in graphs:
                raise ValueError(f"{path}: holds graphs of several models ({first.path.name}, {file.name}); "
                                 "load one file, or keep one model per folder")
        graphs[graph.name] = graph
    if not graphs:
        raise FileNotFoundError(f"{path}: no {dtype} genfast graphs in this folder")
    return GenfastModel(graphs)


def _providers(device: str) -> list:
    kind, _, index = device.partition(":")
    if kind not in DEVICES or (index and (kind != "cuda" or not index.isdigit())):
        raise ValueError(f"device must be one of {DEVICES} or 'cuda:N', got {device!r}")
    has_cuda = CUDA in ort.get_available_providers()
    if kind == "cuda" and not has_cuda:
        raise RuntimeError("device='cuda', but this onnxruntime has no CUDA execution provider: "
                           "install genfast[gpu] (onnxruntime-gpu) instead of onnxruntime")
    if kind == "cpu" or not has_cuda:
        return [CPU]
    _preload_cuda_libraries()
    return [(CUDA, {"device_id": int(index or 0)}), CPU]


def _preload_cuda_libraries() -> None:
    """Loads the CUDA and cuDNN libraries of the nvidia-* wheels that genfast[gpu] installs, which
    the dynamic loader does not search by itself (a no-op once torch has loaded them)."""
    if hasattr(ort, "preload_dlls") and not _preload_cuda_libraries.done:
        _preload_cuda_libraries.done = True
        try:
            ort.preload_dlls()
        except OSError:  # a system-wide CUDA installation serves instead
            pass


_preload_cuda_libraries.done = False


def _open(file: Path, providers: list, options: ort.SessionOptions, device: str) -> GraphSession:
    if not file.is_file():
        raise FileNotFoundError(f"{file}: no such file")
    try:
        session = ort.InferenceSession(str(file), options, providers=providers)
    except Exception as error:  # onnxruntime's own exception types, one per status code
        message = str(error).strip()[:300]
        if "INVALID_PROTOBUF" in message or "Protobuf parsing failed" in message:
            raise ValueError(f"{file}: not an ONNX model ({message})") from None
        raise RuntimeError(f"{file}: onnxruntime could not load it ({message})") from None
    metadata = session.get_modelmeta().custom_metadata_map
    missing = {"genfast_version", "graph", "model_kind", "image_shape", "latent_size", "input_range",
               "output_range"} - set(metadata)
    if missing:
        raise ValueError(f"{file}: an ONNX model, but not a genfast export (no {sorted(missing)} metadata)")
    _check_metadata(file, metadata)
    # The available list says what was compiled in; get_providers() what loaded (the CUDA provider
    # drops out when its libraries are missing).
    running = session.get_providers()[0]
    if device.startswith("cuda") and running != CUDA:
        raise RuntimeError(f"{file}: the CUDA execution provider did not load (CUDA 13 and cuDNN 9 "
                           f"libraries are needed); it would run on {running}")
    return GraphSession(file, session, metadata)


def _check_metadata(file: Path, metadata: dict[str, str]) -> None:
    """The genfast metadata the helpers rely on, checked: an edited or damaged file is named."""
    def parsed(key: str):
        try:
            return json.loads(metadata[key])
        except ValueError:
            raise ValueError(f"{file}: malformed genfast metadata: {key} is not JSON") from None

    def is_int(v) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    shape, latent = parsed("image_shape"), parsed("latent_size")
    if not (isinstance(shape, list) and len(shape) == 3 and all(is_int(d) and 1 <= d <= 1 << 14 for d in shape)
            and shape[0] in (1, 3)):
        raise ValueError(f"{file}: malformed genfast metadata: image_shape must be [1 or 3, H, W], "
                         f"got {metadata['image_shape'][:80]}")
    if not (is_int(latent) and 1 <= latent <= 1 << 16):
        raise ValueError(f"{file}: malformed genfast metadata: latent_size must be a positive integer, "
                         f"got {metadata['latent_size'][:80]}")
    for key in ("input_range", "output_range"):
        bounds = parsed(key)
        if not (isinstance(bounds, list) and len(bounds) == 2
                and all(isinstance(b, (int, float)) and not isinstance(b, bool) and math.isfinite(b) for b in bounds)
                and bounds[0] < bounds[1]):
            raise ValueError(f"{file}: malformed genfast metadata: {key} must be [low, high], "
                             f"got {metadata[key][:80]}")


def _run_torch(graph: GraphSession, x) -> list:
    """IO binding of torch tensors: onnxruntime reads and writes torch's memory directly."""
    import torch

    dtype = torch.float16 if graph.dtype == np.float16 else torch.float32
    x = x.detach().to(dtype).contiguous()
    on_cuda = x.device.type == "cuda"
    if on_cuda and graph.provider != CUDA:
        raise ValueError(f"{graph.name}: a CUDA tensor, but the graph runs on {graph.provider}")
    if not on_cuda and graph.provider == CUDA:
        raise ValueError(f"{graph.name}: a CPU tensor, but the graph runs on CUDA: move it with .cuda()")
    graph.check_shape(tuple(x.shape))
    device_type, device_id = ("cuda", x.device.index or 0) if on_cuda else ("cpu", 0)
    if on_cuda:
        session_device = int(graph.session.get_provider_options()[CUDA].get("device_id", 0))
        if device_id != session_device:
            raise ValueError(f"{graph.name}: the tensor is on cuda:{device_id}, the graph runs on cuda:{session_device}")
    if on_cuda:
        torch.cuda.current_stream(x.device).synchronize()  # x is written on torch's stream
    binding = graph.session.io_binding()
    binding.bind_input(graph.input.name, device_type, device_id, graph.dtype, tuple(x.shape), x.data_ptr())
    outputs = []
    for meta in graph.session.get_outputs():
        shape = [x.shape[0] if isinstance(d, str) or d is None else d for d in meta.shape]
        out = torch.empty(shape, dtype=dtype, device=x.device)
        binding.bind_output(meta.name, device_type, device_id, graph.dtype, tuple(shape), out.data_ptr())
        outputs.append(out)
    graph.session.run_with_iobinding(binding)
    binding.synchronize_outputs()
    return outputs


def _is_pil(obj) -> bool:
    return type(obj).__module__.startswith("PIL.")


MAX_PIXELS = 1 << 24  # width x height of an image file that read_images decodes (Pillow's own limit is 89M)


class ImageTooLarge(ValueError):
    """An image file whose declared size is over the decoding limit (a decompression bomb, or just too big)."""


def from_pil(image, c: int, h: int, w: int) -> np.ndarray:
    """A PIL image as a (C, H, W) float array in [0, 1], converted to C channels and resized."""
    from PIL import Image

    if image.mode.startswith("I;16") or (image.mode == "I" and image.format == "PNG"):
        # 16-bit grey (older Pillow opens such PNGs as "I"): convert("L") would clip at 255.
        grey = Image.fromarray(np.asarray(image, dtype=np.float32) / 65535.0)
        if grey.size != (w, h):
            grey = grey.resize((w, h), Image.Resampling.BILINEAR)
        return np.repeat(np.asarray(grey, dtype=np.float32)[None], c, axis=0)
    if image.mode in ("I", "F"):
        raise ValueError(f"a {image.mode}-mode image (32-bit integers or floats) has no known value range: "
                         "save it as an 8- or 16-bit PNG")
    image = image.convert("L" if c == 1 else "RGB")
    if image.size != (w, h):
        image = image.resize((w, h), Image.Resampling.BILINEAR)
    pixels = np.asarray(image, dtype=np.float32) / 255.0
    return pixels[None] if c == 1 else pixels.transpose(2, 0, 1)


def open_image(source, shape: tuple[int, int, int], formats: tuple[str, ...] | None = None,
               max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """One image file (a path or a binary file object) as a (C, H, W) float array in [0, 1] for
    ``shape`` = (C, H, W). Its declared size is checked against ``max_pixels`` before any pixel is
    decoded (ImageTooLarge); ``formats`` (Pillow's names, e.g. ("PNG", "JPEG")) are the only decoders
    tried. Any other failure is a ValueError whose message names no Python object."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(source, formats=formats) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise ImageTooLarge(f"a {width}x{height} image: more than the limit of {max_pixels} pixels")
            return from_pil(image, *shape)
    except (ImageTooLarge, MemoryError):
        raise
    except Image.DecompressionBombError as error:  # over Pillow's own limit, checked in Image.open
        raise ImageTooLarge(str(error)) from None
    except UnidentifiedImageError:  # its message holds the file object's repr
        raise ValueError("not a readable image (" + (f"not {' or '.join(formats)})" if formats else
                                                     "no format Pillow knows)")) from None
    except Exception as error:  # decoders meet damaged bytes with many types: OSError, SyntaxError, struct.error...
        raise ValueError(f"not a readable image ({type(error).__name__}: {error})") from None


def read_images(paths: Iterable[str | Path], model: GenfastModel, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Image files (PNG, JPEG, ...) as a batch in [0, 1] at the model's size and channels."""
    batch = []
    for path in paths:
        if not Path(path).is_file():  # a FIFO or a device would block the read
            raise ValueError(f"{path}: not a regular file")
        try:
            batch.append(open_image(path, model.image_shape, max_pixels=max_pixels))
        except ValueError as error:  # ImageTooLarge stays itself
            raise type(error)(f"{path}: {error}") from None
    if not batch:
        raise ValueError("no images given")
    return np.stack(batch)
