"""Hypothesis over damaged weights and checkpoint files: loading one either works or raises one
CheckpointError naming the file; never another exception, a crash or NaN weights."""

import json
import math
import struct

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import genfast
from genfast.training import CheckpointError, checkpoint


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    run = tmp_path_factory.mktemp("fuzz_run")
    result = genfast.train("ae", run_dir=run, epochs=1, max_steps=1, progress=False, d=4)
    return run, (run / "model.safetensors").read_bytes(), (run / "checkpoint.safetensors").read_bytes(), result


def _header_length(data: bytes) -> int:
    return 8 + struct.unpack("<Q", data[:8])[0]


damage = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 1 << 20), st.integers(1, 255)),
    st.tuples(st.just("cut"), st.integers(0, 1 << 20), st.just(0)),
    st.tuples(st.just("header"), st.integers(0, 1 << 20), st.integers(0, 255)),
)


def _damaged(data: bytes, how) -> bytes:
    kind, where, value = how
    if kind == "cut":
        return data[:where % (len(data) + 1)]
    if kind == "header":  # a byte of the JSON header: names, dtypes, shapes, offsets, metadata
        where = 8 + where % (_header_length(data) - 8)
        return data[:where] + bytes([value]) + data[where + 1:]
    where %= len(data)
    return data[:where] + bytes([data[where] ^ value]) + data[where + 1:]


@settings(max_examples=150, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(how=damage, which=st.sampled_from(["model", "checkpoint"]))
def test_damaged_files_load_or_raise_one_clear_error(files, tmp_path, how, which):
    run, model_bytes, checkpoint_bytes, result = files
    path = tmp_path / f"{which}.safetensors"
    path.write_bytes(_damaged(model_bytes if which == "model" else checkpoint_bytes, how))
    try:
        if which == "model":
            model, _ = genfast.load_model(path)
            assert all(torch.isfinite(p).all() for p in model.parameters())
        else:
            checkpoint.load_checkpoint(path, result.trainer, "cpu")
            for state in result.trainer.optimizers["model"].state.values():
                assert all(torch.isfinite(v).all() for v in state.values() if torch.is_tensor(v))
    except CheckpointError as error:
        assert str(path) in str(error)


def test_metadata_fuzz_examples(files, tmp_path):
    """Configurations that are valid JSON but wrong in type or range."""
    run, model_bytes, _, _ = files
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(run / "model.safetensors"), framework="pt") as f:
        tensors, metadata = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()
    config = json.loads(metadata["config"])
    for change in ({"options": {"d": 10**12}}, {"options": []}, {"model": 3}, {"epochs": math.inf},
                   {"batch_size": "64"}, {"lr": -1}, {"seed": 2**70}, {"options": {"d": None}}):
        path = tmp_path / "bad.safetensors"
        save_file(tensors, str(path), metadata={**metadata, "config": json.dumps({**config, **change})})
        with pytest.raises(CheckpointError, match="bad.safetensors: bad configuration"):
            genfast.load_model(path)
