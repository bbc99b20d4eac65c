import pytest
import torch
from torch.overrides import TorchFunctionMode

import genfast
from genfast.ops import _registration

CUDA = torch.cuda.is_available() and genfast.build_info()["cuda"]
requires_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA device and a CUDA build of genfast")
# Every device-parametrised test exists for CUDA too, and shows as skipped (with the reason) where
# it cannot run.
DEVICES = ["cpu", pytest.param("cuda", marks=requires_cuda)]
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
# assert_close compares with the exact float64 value of the same (rounded) inputs. The kernels
# compute float16 and bfloat16 in float32 and round once, so a result is within half a unit in the
# last place of the exact value, at most 2^-11 and 2^-8 of it, plus a float32 margin: (rtol per
# rounding, atol). float32 and float64: bounds of the kernels' own arithmetic.
TOLERANCES = {
    torch.float32: (2e-6, 2e-6),
    torch.float64: (1e-12, 1e-12),
    torch.float16: (2.0**-11 + 2.0**-16, 1e-6),
    torch.bfloat16: (2.0**-8 + 2.0**-13, 1e-6),
}
SIZES = [1, 3, 784, 4097]
PRIME_BATCH = 131


@pytest.fixture(autouse=True)
def poison_outputs():
    """Every kernel output starts as NaN (or 0xA5 bytes): an element left unwritten fails."""
    _registration.poison_outputs = True
    yield
    _registration.poison_outputs = False


@pytest.fixture(params=DEVICES)
def device(request):
    return request.param


@pytest.fixture(params=DTYPES, ids=lambda d: str(d).removeprefix("torch."))
def dtype(request):
    return request.param


def assert_close(actual, expected, dtype, scale=1.0, roundings=1):
    """actual (any dtype) against the exact float64 expected, within dtype's tolerances: rtol times
    the roundings to dtype on the way (a gradient scaled by grad_output: 2), atol times scale
    (for terms that cancel)."""
    rtol, atol = TOLERANCES[dtype]
    expected = expected.detach().double().cpu()
    overflow = expected.isfinite() & ~expected.to(dtype).isfinite()
    assert not overflow.any(), f"the expected value overflows {dtype}: the test must choose inputs that fit"
    torch.testing.assert_close(actual.detach().double().cpu(), expected, rtol=rtol * roundings,
                               atol=atol * scale, equal_nan=True)


def bits(t: torch.Tensor) -> torch.Tensor:
    """t's bit patterns as integers, to compare bits (not values: -0.0 == 0.0, NaN != NaN)."""
    return t.view({2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()])


def grad_output(shape, dtype) -> torch.Tensor:
    """A float64 grad_output in [0.5, 1.5) that dtype represents exactly (not 1: scaling must be right)."""
    return (torch.rand(shape, dtype=torch.float64) + 0.5).to(dtype).double()


class PassThrough(TorchFunctionMode):
    """Any torch-function mode sends genfast's calls through the dispatcher (the custom ops) instead
    of the eager shortcut; this one records which genfast ops it saw."""

    def __init__(self):
        super().__init__()
        self.genfast_ops = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if str(func).startswith("genfast."):
            self.genfast_ops.add(str(func).split(".")[1])
        return func(*args, **(kwargs or {}))


def as64(*tensors):
    """float64 copies that require grad, for the reference side of a comparison."""
    return [t.detach().double().requires_grad_(t.requires_grad) for t in tensors]



def small_models() -> dict:
    """One small model of each kind, with seeded random weights (exports need no training)."""
    from genfast import models

    torch.manual_seed(0)
    dcgan = models.DCGAN(nz=16, ngf=8, ndf=8, image_size=16)
    for module in dcgan.modules():  # non-trivial running statistics, so eval-mode BatchNorm is checked
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return {"ae": models.Autoencoder(d=30), "dae": models.DenoisingAutoencoder(d=64), "vae": models.VAE(),
            "ebgan": models.EnergyGAN(nz=8, hidden=32, code=8), "dcgan": dcgan}


@pytest.fixture(scope="session")
def onnx_exports(tmp_path_factory):
    """{kind: (model, folder)}: every graph of every small model exported to one folder per kind."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from genfast import models
    from genfast.export import onnx_export

    exports = {}
    for kind, model in small_models().items():
        folder = tmp_path_factory.mktemp(f"onnx_{kind}")
        for graph in models.get(kind).graphs:
            onnx_export.to_onnx(model, graph.name, folder / f"{kind}_{graph.name}.onnx")
        exports[kind] = (model.eval(), folder)
    return exports
