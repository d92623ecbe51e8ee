"""Document building: wire format of every field, checked against plain numpy."""

from __future__ import annotations

import base64
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from osneural.ingest.corpus import CorpusDocument
from osneural.ingest.documents import (
    EncodedBatch,
    b64,
    build_documents,
    feature_decimals,
    matryoshka,
    sparse_feature_name,
    sparse_features,
    sparse_token_from_feature,
    unb64,
)


@given(st.text(min_size=1, max_size=20))
def test_sparse_feature_name_is_dot_free_and_invertible(token: str) -> None:
    name = sparse_feature_name(token)
    assert name and "." not in name
    assert sparse_token_from_feature(name) == token


@given(st.text(min_size=1, max_size=6), st.text(min_size=1, max_size=6))
def test_sparse_feature_name_is_injective(a: str, b: str) -> None:
    if a != b:
        assert sparse_feature_name(a) != sparse_feature_name(b)


def test_sparse_feature_examples_and_errors() -> None:
    assert sparse_feature_name("##ing") == "##ing"
    assert sparse_feature_name(".") == "%2E"
    assert sparse_feature_name("%2E") == "%252E"
    with pytest.raises(ValueError):
        sparse_feature_name("")
    assert sparse_features({"a": 1.5, "b": 0.0, "c": -1.0, "d.e": 2}) == {"a": 1.5, "d%2Ee": 2.0}
    with pytest.raises(ValueError, match="doc-9"):
        sparse_features({"a": math.nan}, doc_id="doc-9")


@pytest.mark.parametrize("shape", [(0, 3), (1, 1), (5, 48), (3, 7)])
def test_b64_roundtrip(shape: tuple[int, int]) -> None:
    codes = np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8)
    text = b64(codes)
    assert base64.b64decode(text) == codes.tobytes()
    assert np.array_equal(unb64(text, shape[1]), codes)
    with pytest.raises(TypeError):
        b64(codes.astype(np.int32))


def test_matryoshka_matches_numpy_and_survives_zero_prefix() -> None:
    x = np.random.default_rng(1).standard_normal((6, 10)).astype(np.float32)
    x[2, :4] = 0.0
    got = matryoshka(x, 4)
    ref = x[:, :4] / np.maximum(np.linalg.norm(x[:, :4], axis=1, keepdims=True), 1e-12)
    np.testing.assert_allclose(got, ref, rtol=1e-6)
    assert np.all(np.isfinite(got))


def test_build_documents_every_field() -> None:
    rng = np.random.default_rng(2)
    docs = [CorpusDocument("d1", "T1", "x1", {"k": 1}), CorpusDocument("d2", "", "x2")]
    dense = rng.standard_normal((2, 8)).astype(np.float32)
    mv = [rng.integers(0, 256, (3, 4), dtype=np.uint8), rng.integers(0, 256, (1, 4), dtype=np.uint8)]
    enc = EncodedBatch(
        dense=dense, matryoshka={4: matryoshka(dense, 4)},
        sparse=[{"a": 1.0}, {"b.c": 0.5, "z": 0.0}],
        bin_code=rng.integers(0, 256, (2, 1), dtype=np.uint8), bin_tokens=[["00:a"], ["00:b"]],
        dense_pq=rng.integers(0, 256, (2, 2), dtype=np.uint8), mv_codes=mv,
        mv_f16=[rng.standard_normal((3, 8)).astype(np.float16), np.zeros((0, 8), np.float16)],
        fde=rng.standard_normal((2, 5)).astype(np.float32),
    )
    actions = build_documents(docs, enc, index="ix")
    a, b = actions
    assert a["_id"] == "d1" and a["_index"] == "ix" and a["_op_type"] == "index"
    src = a["_source"]
    # the app's fields sit at the top level, beside osneural's
    assert src["title"] == "T1" and src["k"] == 1 and "metadata" not in src
    assert set(b["_source"]) >= {"title", "text"} and "k" not in b["_source"]
    np.testing.assert_allclose(src["dense"], dense[0], atol=1e-7)
    np.testing.assert_allclose(src["dense_4"], enc.matryoshka[4][0], atol=1e-7)
    assert b["_source"]["sparse"] == {"b%2Ec": 0.5}
    assert np.array_equal(unb64(src["bin_code"]), enc.bin_code[0])
    assert np.array_equal(unb64(src["dense_pq"]), enc.dense_pq[0])
    assert np.array_equal(unb64(b["_source"]["mv_codes"], 4), mv[1])
    assert len(unb64(src["mv_codes"])) // 4 == 3
    f16 = np.frombuffer(unb64(src["mv_f16"]).tobytes(), dtype="<f2").reshape(-1, 8)
    assert np.array_equal(f16, enc.mv_f16[0])  # bit-exact, little-endian
    assert b["_source"]["mv_f16"] == ""  # a document without tokens stores no bytes
    np.testing.assert_allclose(b["_source"]["fde"], enc.fde[1], atol=1e-7)


def test_in_place_documents_are_partial_updates_of_osneural_fields_only() -> None:
    docs = [CorpusDocument("d1", "T1", "x1", {"price": 3, "category": "a"})]
    (action,) = build_documents(docs, EncodedBatch(sparse=[{"a": 1.0}]), in_place=True)
    assert action["_op_type"] == "update" and action["_id"] == "d1" and "_source" not in action
    assert action["doc"] == {"osneural_id": "d1", "title": "T1", "text": "x1",
                          "sparse": {"a": 1.0}}


def test_build_documents_rejects_row_count_mismatch() -> None:
    docs = [CorpusDocument("d1", "", "x")]
    with pytest.raises(ValueError, match="dense: 2 rows"):
        build_documents(docs, EncodedBatch(dense=np.zeros((2, 3), np.float32)))


def test_sparse_drops_subnormal_weights_the_node_would_refuse() -> None:
    assert sparse_features({"a": 1e-40, "b": 2e-38}) == {"b": 2e-38}


def _feature_bits(values) -> np.ndarray:
    """What Lucene's FeatureField indexes for each value: float32 bits >> 15."""
    return np.asarray(values, dtype=np.float32).view(np.uint32) >> 15


def test_sparse_weights_are_written_short_and_index_as_the_same_value() -> None:
    rng = np.random.default_rng(7)
    w32 = np.concatenate([
        rng.gamma(1.0, 0.5, 2000),  # SPLADE-like weights
        np.exp(rng.uniform(-87, 88, 2000)),  # every float32 magnitude
    ]).astype(np.float32)
    bits = w32.view(np.uint32)
    # adversarial: the first and last float32 of a FeatureField step, and their neighbours
    edges = np.concatenate([(bits[:500] & ~np.uint32(0x7FFF)) + d for d in (0, 1, 0x7FFE, 0x7FFF)])
    w32 = np.concatenate([w32, edges.astype(np.uint32).view(np.float32),
                          np.float32([np.finfo(np.float32).tiny, np.finfo(np.float32).max, 1.0])])
    got = feature_decimals(w32.tolist())
    assert np.array_equal(_feature_bits(got), _feature_bits(w32))
    digits = [len(repr(v).split("e")[0].replace(".", "").replace("-", "").strip("0")) for v in got]
    assert max(digits) <= 9 and np.mean(digits) < 4.5  # was 16-17 digits per weight
    assert feature_decimals([1.5, 2.0, 0.25]) == [1.5, 2.0, 0.25]  # short already: unchanged
    assert feature_decimals([0.44123983383178711]) == [0.441]
    assert feature_decimals([]) == []
    src = sparse_features({f"t{i}": float(v) for i, v in enumerate(w32[:256])})
    assert np.array_equal(_feature_bits(list(src.values())), _feature_bits(w32[:256]))


def test_unb64_accepts_docvalue_base64_without_padding() -> None:
    codes = np.arange(4, dtype=np.uint8)
    assert np.array_equal(unb64(b64(codes).rstrip("=")), codes)
