"""ONNX export: every graph of every model, verified against PyTorch; graph content; failures."""

import json

import numpy as np
import pytest
import torch

import genfast
from genfast import models

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
from genfast.export import onnx_export  # noqa: E402
from genfast.export.onnx_export import ExportError, to_onnx  # noqa: E402

from conftest import small_models  # noqa: E402

ALL_GRAPHS = [(kind, g.name) for kind in ("ae", "dae", "vae", "ebgan", "dcgan") for g in models.get(kind).graphs]


def _metadata(proto) -> dict:
    return {p.key: p.value for p in proto.metadata_props}


def _reference(model, graph, x):
    job = onnx_export._Job(model, models.spec_of(model).graph(graph)).eval()
    with torch.no_grad():
        out = job(x)
    return [t.numpy() for t in (out if isinstance(out, tuple) else (out,))]


def _input(model, graph, batch, seed=1):
    spec = models.spec_of(model)
    return onnx_export._example(spec.graph(graph), onnx_export.describe(model, spec.name), batch,
                                torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("kind,graph", ALL_GRAPHS)
def test_graph_is_standard_eval_only_and_self_contained(onnx_exports, kind, graph):
    model, folder = onnx_exports[kind]
    path = folder / f"{kind}_{graph}.onnx"
    proto = onnx.load(str(path), load_external_data=False)
    onnx.checker.check_model(str(path), full_check=True)
    assert not [t for t in proto.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{kind}_{g.name}.onnx" for g in models.get(kind).graphs)
    assert {o.domain for o in proto.opset_import} <= {"", "ai.onnx"}
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [20]
    assert not proto.functions
    ops = {n.op_type for n in proto.graph.node}
    assert not ops & onnx_export.RANDOM_OPS
    assert all(n.domain in ("", "ai.onnx") for n in proto.graph.node)
    for node in proto.graph.node:
        if node.op_type == "BatchNormalization":
            assert not any(a.name == "training_mode" and a.i for a in node.attribute)
    spec = models.get(kind).graph(graph)
    assert [i.name for i in proto.graph.input] == list(spec.inputs)
    assert [o.name for o in proto.graph.output] == list(spec.outputs)
    for value in list(proto.graph.input) + list(proto.graph.output):
        assert value.type.tensor_type.shape.dim[0].dim_param == "batch"
    meta = _metadata(proto)
    info = onnx_export.describe(model, kind)
    assert meta["genfast_version"] == genfast.__version__
    assert meta["model_kind"] == kind and meta["graph"] == graph and meta["opset"] == "20"
    assert json.loads(meta["image_shape"]) == info["image_shape"]
    assert int(meta["latent_size"]) == info["latent_size"]
    assert json.loads(meta["input_range"]) == ([0.0, 1.0] if kind == "vae" else [-1.0, 1.0])
    assert 0.0 <= float(meta["parity_error"]) <= 1e-5


@pytest.mark.parametrize("kind,graph", ALL_GRAPHS)
@pytest.mark.parametrize("batch", [1, 7, 64])
def test_onnxruntime_matches_pytorch_at_any_batch(onnx_exports, kind, graph, batch):
    model, folder = onnx_exports[kind]
    session = ort.InferenceSession(str(folder / f"{kind}_{graph}.onnx"), providers=["CPUExecutionProvider"])
    x = _input(model, graph, batch, seed=batch)
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    for have, want in zip(got, _reference(model, graph, x), strict=True):
        assert have.shape == want.shape
        np.testing.assert_allclose(have, want, rtol=1e-5, atol=1e-5)


def test_export_leaves_the_callers_model_as_it_was(tmp_path):
    model = models.VAE().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    to_onnx(model, "decode", tmp_path / "d.onnx")
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_a_failed_check_writes_nothing(tmp_path, monkeypatch):
    path = tmp_path / "vae_decode.onnx"
    monkeypatch.setitem(onnx_export.PARITY_BOUND, "float32", 0.0)
    model = models.VAE()
    with torch.no_grad():
        model.decoder[2].weight.mul_(1e3)  # large logits: float32 ORT vs PyTorch differ by an ulp or more
    with pytest.raises(ExportError, match="differs from PyTorch"):
        to_onnx(model, "decode", path)
    assert list(tmp_path.iterdir()) == []


def _proto_with(node):
    graph = onnx.helper.make_graph([node], "g", [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
                                   [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])])
    return onnx.helper.make_model(graph)


@pytest.mark.parametrize("node,message", [
    (onnx.helper.make_node("RandomNormalLike", ["x"], ["y"]), "random node"),
    (onnx.helper.make_node("Dropout", ["x"], ["y"]), "random node"),
    (onnx.helper.make_node("VaeLoss", ["x"], ["y"], domain="genfast"), "custom domain"),
    (onnx.helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], training_mode=1),
     "training-mode"),
])
def test_content_check_rejects_training_and_custom_nodes(node, message):
    with pytest.raises(ExportError, match=message):
        onnx_export._check_content(_proto_with(node))


def test_float16_export_for_gpu_serving(tmp_path):
    model = small_models()["dcgan"]
    done = to_onnx(model, "generate", tmp_path / "g.fp16.onnx", dtype="float16")
    assert done.dtype == "float16" and done.parity_error <= onnx_export.PARITY_BOUND["float16"] == 1e-2
    session = ort.InferenceSession(str(done.path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].type == "tensor(float16)"
    assert _metadata(onnx.load(str(done.path)))["dtype"] == "float16"


def test_opset_option(tmp_path):
    done = to_onnx(models.Autoencoder(), "reconstruct", tmp_path / "r.onnx", opset=18)
    proto = onnx.load(str(done.path))
    assert [o.version for o in proto.opset_import if o.domain == ""] == [18]
    assert _metadata(proto)["opset"] == "18"
    for bad in (5, 17, onnx.defs.onnx_opset_version() + 1, "20", True):
        with pytest.raises(ValueError, match=r"opset must be an integer in \[18, "):
            to_onnx(models.Autoencoder(), "reconstruct", tmp_path / "bad.onnx", opset=bad)
    assert not (tmp_path / "bad.onnx").exists()


def test_metadata_states_the_written_opset(tmp_path, monkeypatch):
    """Should the exporter write another opset than asked, there is no file with a false label."""
    real_export = torch.onnx.export
    monkeypatch.setattr(torch.onnx, "export", lambda *a, **k: real_export(*a, **{**k, "opset_version": 18}))
    with pytest.raises(ExportError, match=r"asked for opset 20, the exporter wrote \[18\]"):
        to_onnx(models.Autoencoder(), "reconstruct", tmp_path / "r.onnx", opset=20)
    assert not (tmp_path / "r.onnx").exists()


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="graphs"):
        to_onnx(models.VAE(), "generate", tmp_path / "x.onnx")
    with pytest.raises(ValueError, match="dtype"):
        to_onnx(models.VAE(), "decode", tmp_path / "x.onnx", dtype="bfloat16")
    with pytest.raises(TypeError, match="genfast model"):
        to_onnx(torch.nn.Linear(2, 2), "decode", tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()


def test_export_run_directory_and_checkpoint_and_cli(tmp_path, capsys):
    from genfast import cli

    run = tmp_path / "run"
    genfast.train("ae", run_dir=run, epochs=1, max_steps=2, progress=False, d=16)
    done = onnx_export.export_run(run, tmp_path / "out")
    assert [d.path.name for d in done] == ["ae_reconstruct.onnx", "ae_energy.onnx"]
    model, _ = genfast.load_model(run)
    x = _input(model, "reconstruct", 5)
    session = ort.InferenceSession(str(done[0].path), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"image": x.numpy()})[0], _reference(model, "reconstruct", x)[0],
                               rtol=1e-5, atol=1e-5)
    done = onnx_export.export_run(run / "checkpoint.safetensors", tmp_path / "ckpt", graphs=("energy",))
    assert [d.graph for d in done] == ["energy"]
    with pytest.raises(ValueError, match="bogus"):
        onnx_export.export_run(run, tmp_path / "none", graphs=("energy", "bogus"))
    assert not (tmp_path / "none").exists()
    assert cli.main(["export", str(run), "-o", str(tmp_path / "cli"), "--graph", "reconstruct"]) == 0
    assert "ae_reconstruct.onnx" in capsys.readouterr().out
    assert (tmp_path / "cli" / "ae_reconstruct.onnx").is_file()


def test_export_errors_from_the_command_line(tmp_path, capsys):
    from genfast import cli

    (tmp_path / "junk.safetensors").write_bytes(b"not safetensors")
    for source, message in ((tmp_path / "missing", "no trained model"),
                            (tmp_path / "junk.safetensors", "not a readable safetensors file")):
        with pytest.raises(SystemExit) as exit_info:
            cli.main(["export", str(source), "-o", str(tmp_path / "out")])
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
