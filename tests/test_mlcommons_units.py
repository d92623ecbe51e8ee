"""ml-commons interop pieces that need no cluster: plugin sets, the ORT 1.16 header rewrite, the
register body, the spec field and the neural-search token convention."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest


def test_parse_plugins_normalises_and_refuses_unknown():
    from osneural.node.errors import NodeError
    from osneural.node.plugins import parse_plugins, plugin_artifacts

    assert parse_plugins("neural-search, ML-Commons") == ("ml-commons", "neural-search")
    assert parse_plugins(["ml-commons", "ml-commons"]) == ("ml-commons",)
    assert parse_plugins(None) == ()
    with pytest.raises(NodeError, match="unknown plugin"):
        parse_plugins("ml-commons,securty")
    # dependencies first, each once, built for exactly the node's version
    names = [(a.artifact, a.version) for a in plugin_artifacts("3.6.0", ("neural-search",))]
    assert names == [("opensearch-job-scheduler", "3.6.0.0"), ("opensearch-ml-plugin", "3.6.0.0"),
                     ("neural-search", "3.6.0.0")]


def test_plugins_home_name_has_no_plus():
    """'+' in the install path breaks the plugin installer (URL-decoded to a space)."""
    from osneural.node.plugins import plugins_home

    name = plugins_home("3.6.0", ("ml-commons", "neural-search")).name
    assert "+" not in name and " " not in name and name.endswith("ml-commons-neural-search")


def test_launcher_records_plugins(tmp_path, monkeypatch):
    from osneural.node.launcher import LocalCluster

    monkeypatch.setenv("OSNEURAL_CACHE", str(tmp_path))
    cluster = LocalCluster(name="p", http_port=19990, plugins=("ml-commons",))
    cluster.root.mkdir(parents=True)
    cluster._save()
    assert LocalCluster.load("p").plugins == ("ml-commons",)
    assert json.loads((cluster.root / "cluster.json").read_text())["plugins"] == ["ml-commons"]


def _tiny_model(path: Path, ir_version: int, extra_opsets: list[tuple[str, int]]) -> None:
    import onnx
    from onnx import TensorProto, helper

    node = helper.make_node("Relu", ["x"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    opsets = [helper.make_opsetid("", 17)] + [helper.make_opsetid(d, v) for d, v in extra_opsets]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = ir_version
    onnx.save(model, str(path))


def test_ort16_header_rewrite(tmp_path):
    """An unused ai.onnx.ml opset 5 import (what ORT 1.16 refused) is dropped, IR capped at 8,
    and the rewritten graph still computes the same thing."""
    import onnx
    import onnxruntime as ort

    from osneural.encoders.mlcommons import make_ort16_compatible

    path = tmp_path / "m.onnx"
    _tiny_model(path, 10, [("ai.onnx.ml", 5)])
    header = make_ort16_compatible(path, 17)
    model = onnx.load(str(path))
    assert model.ir_version == 8
    assert {e.domain for e in model.opset_import} == {""}
    assert header["opset_import"] == {"ai.onnx": 17}
    x = np.array([-1.0, 2.0], dtype=np.float32)
    y = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_array_equal(y, np.maximum(x, 0))


def test_ort16_header_refuses_new_default_opset(tmp_path):
    import onnx

    from osneural.encoders.errors import ExportError
    from osneural.encoders.mlcommons import make_ort16_compatible

    path = tmp_path / "m.onnx"
    _tiny_model(path, 8, [])
    model = onnx.load(str(path))
    model.opset_import[0].version = 21
    onnx.save(model, str(path))
    with pytest.raises(ExportError, match="opset 21"):
        make_ort16_compatible(path, 21)


def test_register_body_per_function():
    from osneural.encoders.mlcommons import register_body

    base = {"name": "osneural/x", "version": "1.0.0", "source": "/ck", "weights_sha256": "ab" * 32,
            "zip_sha256": "cd" * 32, "zip_bytes": 25_000_001, "model_type": "bert", "dim": 384,
            "pooling_mode": "MEAN", "normalize_result": True}
    dense = register_body(dict(base, kind="dense", function_name="TEXT_EMBEDDING"),
                          chunk_bytes=10_000_000)
    assert dense["total_chunks"] == 3 and dense["model_format"] == "ONNX"
    assert dense["model_config"] == {"model_type": "bert", "embedding_dimension": 384,
                                     "framework_type": "sentence_transformers",
                                     "pooling_mode": "MEAN", "normalize_result": True}
    sparse = register_body(dict(base, kind="sparse", function_name="SPARSE_ENCODING"))
    # a model_config on a sparse model fails ml-commons' deploy (BaseModelConfig cast)
    assert "model_config" not in sparse and "total_chunks" not in sparse


def test_spec_accepts_encode_cluster_and_skips_local_encoder():
    from osneural.plugin.resources import spec_encoder_kinds
    from osneural.plugin.spec import SpecError, parse_spec

    spec = parse_spec({"first_stages": [{"type": "dense", "encode": "cluster"},
                                        {"type": "sparse", "encode": "cluster", "model_id": "m1"},
                                        {"type": "bm25"}]})
    assert spec.first_stages[0].encode == "cluster"
    assert spec.first_stages[1].model_id == "m1"
    assert spec_encoder_kinds(spec) == []  # query nodes need no ONNX files
    with pytest.raises(SpecError, match="encode"):
        parse_spec({"first_stages": [{"type": "dense", "encode": "remote"}]})


def test_neural_search_token_convention():
    from osneural.plugin import cluster_encoding

    weights = {"hello": 1.0, ".": 0.5, "u.s": 0.2, "##ing": 0.1}
    assert cluster_encoding.neural_search_tokens(weights) == {"hello": 1.0, "##ing": 0.1}

    class Res:
        index = "docs"
        meta = {"encoders": {"dense": {"sha256": "a" * 64}},
                "ml_commons": {"dense": {"model_id": "m", "weights_sha256": "b" * 64}}}

    class Stage:
        model_id = None

    from osneural.plugin.resources import StageError

    with pytest.raises(StageError, match="vectors come from"):
        cluster_encoding.model_for(Stage(), Res(), "dense", "first_stages (dense)")
    with pytest.raises(StageError, match="models register"):
        cluster_encoding.model_for(Stage(), Res(), "sparse", "first_stages (sparse)")


def test_opensearch_start_refuses_unknown_plugin(tmp_path, monkeypatch, capsys):
    from osneural.cli import main

    monkeypatch.setenv("OSNEURAL_CACHE", str(tmp_path))
    assert main(["opensearch", "start", "--name", "p", "--plugins", "ml-commons,securty"]) == 1
    assert "unknown plugin" in capsys.readouterr().err
    assert not (tmp_path / "clusters" / "p").exists()  # refused before anything was prepared
