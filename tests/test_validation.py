"""Every invalid call raises a clear Python exception naming the argument, before any pointer
reaches C++."""

import pytest
import torch

import genfast

x = torch.rand(4, 5)
x64 = x.double()
lat = torch.randn(4, 3)

CASES = [
    ("int tensor", lambda: genfast.kl_divergence(torch.ones(4, 3, dtype=torch.int64), lat), TypeError, "mu must be float"),
    ("bool tensor", lambda: genfast.dropout_corrupt(torch.ones(3, dtype=torch.bool)), TypeError, "x must be float"),
    ("not a tensor", lambda: genfast.binary_cross_entropy([0.5], x), TypeError, "probs must be a torch.Tensor"),
    ("target not a tensor", lambda: genfast.binary_cross_entropy(x, 0.5), TypeError, "target must be a torch.Tensor"),
    ("mixed dtypes", lambda: genfast.binary_cross_entropy(x, x64), TypeError, "target has dtype"),
    ("mixed dtypes kl", lambda: genfast.kl_divergence(lat, lat.double()), TypeError, "logvar has dtype"),
    ("shape mismatch", lambda: genfast.binary_cross_entropy(x, x[:, :4]), ValueError, "target has shape"),
    ("shape mismatch kl", lambda: genfast.kl_divergence(lat, lat[:3]), ValueError, "logvar has shape"),
    ("shape mismatch reparam", lambda: genfast.reparameterise(lat, lat.t()), ValueError, "logvar has shape"),
    ("batch mismatch", lambda: genfast.vae_loss(x, x, lat[:3], lat[:3]), ValueError, "mu has batch size 3"),
    ("0-d kl", lambda: genfast.kl_divergence(torch.tensor(1.0), torch.tensor(1.0)), ValueError, "mu must have a batch"),
    ("bad reduction", lambda: genfast.kl_divergence(lat, lat, "avg"), ValueError, "reduction must be one of"),
    ("bad reduction bce", lambda: genfast.binary_cross_entropy(x, x, "batchmean"), ValueError, "reduction"),
    ("p = 1", lambda: genfast.dropout_corrupt(x, 1.0), ValueError, r"p must be in \[0, 1\)"),
    ("p < 0", lambda: genfast.dropout_corrupt(x, -0.1), ValueError, r"p must be in \[0, 1\)"),
    ("p nan", lambda: genfast.dropout_corrupt(x, float("nan")), ValueError, r"p must be in \[0, 1\)"),
    ("p not a number", lambda: genfast.dropout_corrupt(x, "0.5"), TypeError, "p must be a float"),
    ("beta inf", lambda: genfast.vae_loss(x, x, lat, lat, beta=float("inf")), ValueError, "beta must be a finite"),
    ("bad seed", lambda: genfast.reparameterise(lat, lat, seed=2**64), ValueError, "seed must be an integer"),
    ("bad seed type", lambda: genfast.dropout_corrupt(x, seed=1.5), ValueError, "seed must be an integer"),
    ("seed tensor shape", lambda: torch.ops.genfast.reparameterise(lat, lat, torch.zeros(3, dtype=torch.int64)), ValueError, "seed_offset must be an int64"),
    ("meta device", lambda: genfast.kl_divergence(lat.to("meta"), lat), ValueError, "logvar is on cpu but mu is on meta"),
]


@pytest.mark.parametrize("call, error, match", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_raises(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_cuda_tensor_without_cuda_build_is_a_clear_error(monkeypatch):
    from torch._subclasses.fake_tensor import FakeTensorMode

    from genfast.ops import _checks

    monkeypatch.setattr(_checks, "CUDA_BUILT", False)
    with FakeTensorMode():
        fake_cuda = torch.empty(2, device="cuda")
    with pytest.raises(RuntimeError, match="mu is a CUDA tensor but this genfast build has no CUDA"):
        _checks.float_tensor("mu", fake_cuda)


def test_meta_tensors_reach_only_the_fake_kernels():
    meta = torch.empty(4, 3, device="meta")
    assert genfast.kl_divergence(meta, meta).device.type == "meta"  # shape inference, no kernel
    assert genfast.reparameterise(meta, meta, seed=1).shape == (4, 3)
    from genfast.ops import losses
    with pytest.raises(ValueError, match="run on cpu and cuda tensors"):
        losses._kl_divergence(meta, meta, "sum", False)
    with pytest.raises(ValueError, match="mask is on meta but grad_out is on cpu"):
        torch.ops.genfast.dropout_corrupt_backward(torch.ones(3), torch.ones(3, dtype=torch.bool, device="meta"), 0.5)


def test_mixed_devices_named():
    meta = torch.empty(4, 3, device="meta")
    with pytest.raises(ValueError, match="target is on meta but recon is on cpu"):
        genfast.vae_loss(x, x.to("meta"), lat, lat)
    with pytest.raises(ValueError, match="mu is on meta but recon is on cpu"):
        genfast.vae_loss(x, x, meta, meta)
