"""Encoder pieces that need neither torch nor an exported model: IDF tables, input checks,
checkpoint inspection, default discovery."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from osneural.encoders import (
    CheckpointError,
    EncoderInputError,
    IdfTable,
    ModelNotFoundError,
    default_checkpoint,
    load_default,
    load_encoder,
)
from osneural.encoders.checkpoint import inspect_checkpoint
from osneural.encoders.idf import document_frequencies, idf_from_counts, merge
from osneural.encoders.runtime import check_texts


def _idf_reference(docs: list[list[int]], vocab: int) -> np.ndarray:
    n = len(docs)
    out = np.empty(vocab)
    for t in range(vocab):
        df = sum(1 for d in docs if t in d)
        out[t] = math.log(1 + (n - df + 0.5) / (df + 0.5))
    return out


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(st.integers(0, 19), max_size=12), min_size=0, max_size=15))
def test_idf_matches_plain_reference(docs: list[list[int]]) -> None:
    n, counts = document_frequencies(docs, 20)
    table = idf_from_counts(n, counts)
    assert n == len(docs)
    np.testing.assert_allclose(table.weights(), _idf_reference(docs, 20), rtol=1e-6)
    assert (table.weights() > 0).all()


def test_idf_roundtrip_json_and_merge() -> None:
    a = idf_from_counts(*document_frequencies([[1, 2, 2], [2, 3]], 5))
    b = idf_from_counts(*document_frequencies([[4], [2, 4]], 5))
    data = json.loads(json.dumps(a.to_dict()))
    assert IdfTable.from_dict(data) == a
    merged = merge([a, b])
    whole = idf_from_counts(*document_frequencies([[1, 2, 2], [2, 3], [4], [2, 4]], 5))
    assert merged == whole
    assert merged.df[2] == 3 and merged.n_docs == 4


def test_idf_from_dict_rejects_bad_data() -> None:
    with pytest.raises(ValueError, match="format"):
        IdfTable.from_dict({"n_docs": 1, "vocab_size": 3, "df": {}})
    with pytest.raises(ValueError, match="out of range"):
        IdfTable.from_dict({"format": "osneural-idf-v1", "n_docs": 1, "vocab_size": 3, "df": {"7": 1}})


def test_check_texts_errors_name_the_position() -> None:
    assert check_texts(["a", "é".encode()]) == ["a", "é"]
    with pytest.raises(EncoderInputError, match="text #1 is not valid UTF-8"):
        check_texts(["ok", b"\xff\xfe bad"])
    with pytest.raises(EncoderInputError, match="text #2 is int"):
        check_texts(["a", "b", 3])
    with pytest.raises(EncoderInputError, match="single string"):
        check_texts("not a list")


def _write_config(folder, **config) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))


def test_inspect_checkpoint_reports_missing_pieces(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="not a checkpoint folder"):
        inspect_checkpoint(tmp_path / "nope")
    ck = tmp_path / "ck"
    ck.mkdir()
    with pytest.raises(CheckpointError, match="no config.json"):
        inspect_checkpoint(ck)
    _write_config(ck, architectures=["Mystery"])
    with pytest.raises(CheckpointError, match="unknown architecture"):
        inspect_checkpoint(ck)
    _write_config(ck, model_type="bert")
    with pytest.raises(CheckpointError, match="no weights"):
        inspect_checkpoint(ck)
    (ck / "model.safetensors").write_bytes(b"\0" * 8)
    with pytest.raises(CheckpointError, match="no tokenizer files"):
        inspect_checkpoint(ck)


def test_inspect_default_minilm_reads_sentence_transformers_config() -> None:
    info = inspect_checkpoint(default_checkpoint("dense"))
    assert info.pooling == "mean" and info.normalize
    assert info.max_seq_length == 256
    assert info.projection is None
    assert info.tokenizer_json is not None and info.tokenizer_json.name == "tokenizer.json"


def test_default_sparse_is_located_without_importing_it() -> None:
    import sys

    path = default_checkpoint("sparse")
    assert (path / "config.json").is_file() and path.name == "model"
    assert "cognition" not in sys.modules


def test_load_default_missing_tells_how_to_export(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("OSNEURAL_MODELS", str(tmp_path))
    with pytest.raises(ModelNotFoundError, match="osneural export --kind sparse"):
        load_default("sparse")
    with pytest.raises(ModelNotFoundError, match="no manifest.json"):
        load_encoder(tmp_path)


def test_models_command_lists_defaults(tmp_path, monkeypatch, capsys) -> None:
    from osneural.cli import main

    monkeypatch.setenv("OSNEURAL_MODELS", str(tmp_path))
    assert main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    by_name = {r["name"]: r for r in rows}
    assert set(by_name) >= {"minilm-dense", "splade-tiny", "minilm-multivector"}
    assert all(not r["exported"] for r in rows)
    assert by_name["splade-tiny"]["source"].endswith("cognition/model")
