"""Pickle-free serialization, the codec bundle, and its companion document in OpenSearch."""

from __future__ import annotations

import base64
import io
import json
import pickle
import warnings

import numpy as np
import pytest

from osneural.codecs import (
    BinaryQuantizer,
    CodecBundle,
    MuveraFDE,
    ProductQuantizer,
    array_to_b64,
    b64_to_array,
    load_bundle,
    store_bundle,
)


@pytest.mark.parametrize(
    "array",
    [
        np.arange(12, dtype=np.float32).reshape(3, 4),
        np.zeros((2, 256, 3), dtype=np.float16),
        np.array([1, 255], dtype=np.uint8),
        np.empty((0, 5), dtype=np.int64),
        np.asfortranarray(np.random.default_rng(0).standard_normal((4, 3))),
    ],
)
def test_arrays_round_trip_with_dtype_and_shape(array: np.ndarray) -> None:
    text = json.loads(json.dumps(array_to_b64(array)))
    back = b64_to_array(text)
    assert back.dtype == array.dtype and back.shape == array.shape
    assert np.array_equal(back, array)


def test_pickled_payloads_and_garbage_are_refused() -> None:
    with pytest.raises(ValueError, match="pickle"):
        array_to_b64(np.array([{"a": 1}], dtype=object))
    buffer = io.BytesIO()
    np.save(buffer, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="pickle-free"):
        b64_to_array(base64.b64encode(buffer.getvalue()).decode())
    with pytest.raises(ValueError, match="pickle-free"):
        b64_to_array(base64.b64encode(pickle.dumps([1, 2])).decode())
    with pytest.raises(ValueError, match="base64"):
        b64_to_array("not base64 !!")


def _bundle() -> tuple[CodecBundle, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    dense = rng.standard_normal((600, 16)).astype(np.float32)
    tokens = rng.standard_normal((300, 8)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        bundle = CodecBundle(
            binary=BinaryQuantizer(itq=True).fit(dense),
            pq_dense=ProductQuantizer(4, niter=5).fit(dense),
            pq_tokens=ProductQuantizer(2, nbits=4, niter=5).fit(tokens),
            fde=MuveraFDE(8, k_sim=2, reps=2, d_proj=4),
            params={"mih_m": 4, "mih_radius": 1, "pool_factor": 2},
        )
    return bundle, dense, tokens


def _assert_same(a: CodecBundle, b: CodecBundle, dense: np.ndarray, tokens: np.ndarray) -> None:
    assert np.array_equal(a.binary.encode(dense), b.binary.encode(dense))
    assert np.array_equal(a.pq_dense.encode(dense), b.pq_dense.encode(dense))
    assert np.array_equal(
        a.pq_tokens.decode(a.pq_tokens.encode(tokens)),
        b.pq_tokens.decode(b.pq_tokens.encode(tokens)),
    )
    assert np.array_equal(a.fde.encode_document(tokens[:9]), b.fde.encode_document(tokens[:9]))
    assert a.params == b.params


def test_bundle_round_trips_through_json_and_validates_slots() -> None:
    bundle, dense, tokens = _bundle()
    data = json.loads(json.dumps(bundle.to_dict()))
    assert set(data["codecs"]) == {"binary", "pq_dense", "pq_tokens", "fde"}
    _assert_same(bundle, CodecBundle.from_dict(data), dense, tokens)
    partial = CodecBundle.from_dict(CodecBundle(binary=bundle.binary).to_dict())
    assert partial.pq_dense is None and partial.fde is None
    data["codecs"]["fde"] = data["codecs"]["binary"]
    with pytest.raises(ValueError, match="slot 'fde' holds kind 'binary'"):
        CodecBundle.from_dict(data)
    with pytest.raises(ValueError, match="version"):
        CodecBundle.from_dict({"kind": "bundle", "version": 99, "codecs": {}})


@pytest.mark.integration
def test_bundle_is_stored_in_and_loaded_from_opensearch(opensearch_client, index_name) -> None:
    bundle, dense, tokens = _bundle()
    codecs_index = f"{index_name}-codecs"
    try:
        store_bundle(opensearch_client, index_name, bundle, codecs_index=codecs_index)
        _assert_same(
            bundle, load_bundle(opensearch_client, index_name, codecs_index), dense, tokens
        )
        # The payloads are kept in _source but not indexed: only the declared fields are mapped.
        mapping = opensearch_client.indices.get_mapping(index=codecs_index)[codecs_index]
        assert set(mapping["mappings"]["properties"]) == {"target_index", "kind", "version",
                                                          "generation"}
        # Storing again replaces the companion document.
        bundle.params["pool_factor"] = 3
        store_bundle(opensearch_client, index_name, bundle, codecs_index=codecs_index)
        assert load_bundle(opensearch_client, index_name, codecs_index).params["pool_factor"] == 3
        with pytest.raises(LookupError, match="no codecs stored for index 'missing'"):
            load_bundle(opensearch_client, "missing", codecs_index)
    finally:
        opensearch_client.indices.delete(index=codecs_index, ignore_unavailable=True)


def test_index_meta_leaves_the_idf_table_in_the_store() -> None:
    """`_meta` is read with every mapping (each query's index check): the inference-free IDF
    table, one entry per vocabulary term, must stay in the codec document."""
    from osneural.ingest.codec_training import codec_meta

    df = {str(i): i % 7 + 1 for i in range(30000)}
    bundle = CodecBundle(params={"mih_m": 64, "idf": {"documents": 5000, "df": df}})
    meta = codec_meta(bundle)
    assert meta["params"] == {"mih_m": 64, "idf_terms": 30000}
    assert len(json.dumps(meta)) < 200
    assert bundle.params["idf"]["df"] is df  # the store's copy is untouched
    back = CodecBundle.from_dict(bundle.to_dict())
    assert back.params["idf"]["df"] == df
