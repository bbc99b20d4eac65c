"""benchmarks/ops.py's machinery on tiny sizes (speed itself is never tested): the sides are
interleaved, the byte counts are those of the tensors genfast's ops read and write, and a run writes
the table and the CSV with every column."""

import csv
import importlib.util
import statistics
import sys
from pathlib import Path

import pytest
import torch

import genfast

ROOT = Path(__file__).resolve().parents[1]
BATCH = 3


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("benchmark_ops", ROOT / "benchmarks" / "ops.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def _bytes(*tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def _counted(bench, name):
    case = next(c for c in bench._cases() if c.name == name)
    return case.forward_bytes(BATCH), case.forward_backward_bytes(BATCH)


def test_sides_are_sampled_round_robin_in_rotating_order(bench):
    calls = []
    sides = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    medians = bench.interleaved_medians(sides, "cpu", cell_seconds=0, min_rounds=3)
    assert set(medians) == {"a", "b", "c"} and all(m > 0 for m in medians.values())
    warm_up, rounds = calls[:6], calls[6:]
    assert warm_up == ["a", "a", "b", "b", "c", "c"]
    assert rounds == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]


def test_bytes_of_binary_cross_entropy_are_its_tensors(bench):
    probs, target = torch.rand(BATCH, 784, requires_grad=True), torch.rand(BATCH, 784)
    (grad_probs,) = torch.autograd.grad(genfast.binary_cross_entropy(probs, target, "sum"), probs)
    assert _counted(bench, "binary_cross_entropy") == (_bytes(probs, target), _bytes(probs, target, grad_probs))


def test_bytes_of_dropout_corrupt_count_its_keep_mask(bench):
    x = torch.rand(BATCH, 784, requires_grad=True)
    out, keep_mask = genfast.dropout_corrupt(x, 0.5)
    grad_out = torch.ones_like(out)
    (grad_x,) = torch.autograd.grad(out, x, grad_out)
    forward = _bytes(x, out, keep_mask)
    assert keep_mask.dtype == torch.bool
    assert _counted(bench, "dropout_corrupt") == (forward, forward + _bytes(grad_out, keep_mask, grad_x))


def test_bytes_of_reparameterise_count_the_kept_derivative(bench):
    mu, logvar = torch.randn(BATCH, 20, requires_grad=True), torch.randn(BATCH, 20, requires_grad=True)
    z = genfast.reparameterise(mu, logvar)
    half_noise = z.grad_fn.saved_tensors[2]  # dz/dlogvar, written by the forward kernel
    assert half_noise.shape == logvar.shape
    grad_z = torch.ones_like(z)
    _, grad_logvar = torch.autograd.grad(z, (mu, logvar), grad_z)  # grad_mu is grad_z: no kernel
    assert _counted(bench, "reparameterise") == (
        _bytes(mu, logvar, z), _bytes(mu, logvar, z, half_noise) + _bytes(grad_z, half_noise, grad_logvar))


def test_bytes_of_vae_loss_are_its_tensors(bench):
    recon, target = torch.rand(BATCH, 784, requires_grad=True), torch.rand(BATCH, 784)
    mu, logvar = torch.randn(BATCH, 20, requires_grad=True), torch.randn(BATCH, 20, requires_grad=True)
    grads = torch.autograd.grad(genfast.vae_loss(recon, target, mu, logvar), (recon, mu, logvar))
    forward = _bytes(recon, target, mu, logvar)
    assert _counted(bench, "vae_loss") == (forward, forward + _bytes(*grads))


def test_a_run_writes_the_table_and_every_repeat(bench, tmp_path):
    bench.main(["--device", "cpu", "--batch", "2", "--repeats", "2", "--cell-seconds", "0",
                "--min-rounds", "2", "--no-compile", "--bandwidth", "--out", str(tmp_path)])
    md = (tmp_path / "ops_cpu.md").read_text()
    assert "CPU: " in md and "avx512f " in md and "CPU threads" in md and "genfast " in md
    assert "peak copy: " in md and "load average" in md
    table = [line for line in md.splitlines() if line.startswith("|")]
    assert table[0] == "| " + " | ".join(bench.COLUMNS) + " |"
    assert len(table) == 2 + 6 * 2  # header, rule, 6 ops x 2 modes
    for line in table[2:]:
        cells = line.strip("|").split(" | ")
        assert len(cells) == len(bench.COLUMNS)
        assert cells[bench.COLUMNS.index("compile µs")] == "–"
        assert "(" in cells[bench.COLUMNS.index("vs eager")]  # median (min–max over repeats)
    with open(tmp_path / "ops_cpu.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * 6 * 2
    bce = next(r for r in rows if r["op"] == "binary_cross_entropy" and r["mode"] == "fwd+bwd")
    assert int(bce["bytes"]) == 3 * 2 * 784 * 4
    for row in rows:
        assert float(row["genfast_us"]) > 0 and float(row["copy_us"]) > 0 and float(row["overhead_us"]) > 0
        us, n_bytes = float(row["genfast_us"]), int(row["bytes"])
        assert float(row["genfast_GBps"]) == pytest.approx(n_bytes / us / 1e3)
        assert float(row["of_copy_bw"]) == pytest.approx(1 / float(row["x_copy_time"]))
    # The table's times are the medians over repeats of the CSV's, each in its column.
    cells = next(line for line in table if line.startswith("| vae_loss | 2 | fwd+bwd |")).strip("|").split(" | ")
    repeats = [r for r in rows if r["op"] == "vae_loss" and r["mode"] == "fwd+bwd"]
    for column, key in (("genfast µs", "genfast_us"), ("call overhead µs", "overhead_us"),
                        ("kernel µs", "kernel_us"), ("eager B=1 µs", "eager_b1_us")):
        assert cells[bench.COLUMNS.index(column)] == f"{statistics.median(float(r[key]) for r in repeats):.1f}"
