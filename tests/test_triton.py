"""Triton model repositories: every config.pbtxt parses into Triton's own ModelConfig protobuf and
agrees with its ONNX graph, which runs in onnxruntime at the preferred batch sizes."""

import numpy as np
import pytest

import genfast

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")
from google.protobuf import text_format  # noqa: E402

from genfast import cli  # noqa: E402
from genfast.export import triton  # noqa: E402

TRITON_TYPES = {onnx.TensorProto.FLOAT: model_config_pb2.TYPE_FP32, onnx.TensorProto.FLOAT16: model_config_pb2.TYPE_FP16}
NUMPY_TYPES = {model_config_pb2.TYPE_FP32: np.float32, model_config_pb2.TYPE_FP16: np.float16}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("triton_runs")
    for model, options in (("ae", {"d": 8}), ("vae", {"d": 4})):
        genfast.train(model, run_dir=root / model, epochs=1, max_steps=1, progress=False, **options)
    return root


def _parse(folder):
    config = text_format.Parse((folder / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    return config, onnx.load(str(folder / "1" / "model.onnx"))


def _check_against_graph(config, proto):
    for entries, values in ((config.input, proto.graph.input), (config.output, proto.graph.output)):
        assert [e.name for e in entries] == [v.name for v in values]
        for entry, value in zip(entries, values):
            tensor = value.type.tensor_type
            assert entry.data_type == TRITON_TYPES[tensor.elem_type]
            dims = [d.dim_value for d in tensor.shape.dim[1:]]
            assert tensor.shape.dim[0].dim_param == "batch"
            if dims:
                assert list(entry.dims) == dims and not entry.HasField("reshape")
            else:  # one number per sample: [1] for Triton, reshaped to the graph's []
                assert list(entry.dims) == [1] and list(entry.reshape.shape) == []


def test_repository_configs_are_triton_model_configs(runs, tmp_path):
    repo = tmp_path / "repo"
    folders = triton.write_repository(runs / "vae", repo, dtypes=("float32", "float16"))
    folders += triton.write_repository(runs / "ae", repo, instance_kind="cpu", instances=2,
                                       batching=triton.Batching(64, (8, 64)))
    assert sorted(p.name for p in repo.iterdir()) == sorted(
        ["vae_encode", "vae_decode", "vae_reconstruct", "vae_encode_fp16", "vae_decode_fp16",
         "vae_reconstruct_fp16", "ae_reconstruct", "ae_energy"])
    for folder in folders:
        config, proto = _parse(folder)
        assert config.name == folder.name and config.platform == "onnxruntime_onnx"
        _check_against_graph(config, proto)
        parameters = {k: v.string_value for k, v in config.parameters.items()}
        metadata = {p.key: p.value for p in proto.metadata_props}
        assert parameters["genfast_version"] == genfast.__version__ == metadata["genfast_version"]
        assert parameters["genfast_graph"] == metadata["graph"] and parameters["genfast_dtype"] == metadata["dtype"]
        group = config.instance_group[0]
        if folder.name.startswith("ae"):
            assert (config.max_batch_size, list(config.dynamic_batching.preferred_batch_size)) == (64, [8, 64])
            assert group.kind == model_config_pb2.ModelInstanceGroup.KIND_CPU and group.count == 2
        else:
            assert (config.max_batch_size, list(config.dynamic_batching.preferred_batch_size)) == (256, [16, 64, 256])
            assert group.kind == model_config_pb2.ModelInstanceGroup.KIND_GPU and group.count == 1
        session = ort.InferenceSession(str(folder / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
        for batch in config.dynamic_batching.preferred_batch_size:
            feed = {i.name: np.random.default_rng(batch).random((batch, *i.dims), dtype=np.float32)
                    .astype(NUMPY_TYPES[i.data_type]) for i in config.input}
            for entry, out in zip(config.output, session.run(None, feed)):
                want = tuple(entry.reshape.shape) if entry.HasField("reshape") else tuple(entry.dims)
                assert out.shape == (batch, *want) and out.dtype == NUMPY_TYPES[entry.data_type]


def test_bad_repository_settings_write_nothing(runs, tmp_path):
    for kwargs, message in (({"batching": triton.Batching(8, (16,))}, "preferred batch sizes"),
                            ({"instance_kind": "tpu"}, "instance_kind"), ({"graphs": ("bogus",)}, "bogus"),
                            ({"opset": 5}, "opset")):
        with pytest.raises(ValueError, match=message):
            triton.write_repository(runs / "vae", tmp_path / "repo", **kwargs)
    assert not (tmp_path / "repo").exists()


def test_cli_writes_a_repository(runs, tmp_path, capsys):
    assert cli.main(["export", str(runs / "ae"), "--triton", str(tmp_path / "repo"), "--graph", "energy",
                     "--triton-cpu", "--triton-max-batch", "32"]) == 0
    config, proto = _parse(tmp_path / "repo" / "ae_energy")
    assert config.max_batch_size == 32 and list(config.dynamic_batching.preferred_batch_size) == [16]
    _check_against_graph(config, proto)
    assert "ae_energy" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli.main(["export", str(runs / "ae")])
    assert "-o OUT" in capsys.readouterr().err
