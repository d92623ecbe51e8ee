"""index_corpus end to end against the real node, with deterministic stand-in encoders.

Checks every field of every good document against an independent recomputation from the stored
codecs, the failure report, resume, the mismatch and empty-corpus errors.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from osneural.ingest.bulk import FailureReport
from osneural.ingest.codec_store import delete_codecs, load_codecs
from osneural.ingest.documents import sparse_features, unb64
from osneural.ingest.indexer import (
    CodecParams,
    EmptyCorpus,
    IndexMismatch,
    _divisor_at_most,
    _training_rows,
    index_corpus,
)
from test_ingest_fakes import FakeDense, fake_encoders

from osneural.codecs import code_tokens, pool_tokens

pytestmark = pytest.mark.integration


def write_corpus(path: Path) -> dict[str, dict]:
    """A small corpus with every kind of bad line; returns the good documents by id."""
    good = {f"doc{i}": {"_id": f"doc{i}", "title": f"Title {i}",
                        "text": f"document number {i} about json.dumps and topic {i % 3}"}
            for i in range(12)}
    good["long"] = {"_id": "long", "title": "", "text": " ".join(["verbose"] * 200)}
    lines = [json.dumps(d) for d in list(good.values())[:5]]
    lines += [
        '{"_id": "broken", "text": ',               # 6: malformed JSON
        json.dumps({"title": "no id", "text": "x"}),  # 7
        json.dumps({"_id": "notext"}),               # 8
        json.dumps(good["doc1"] | {"text": "dup"}),  # 9: duplicate id
    ]
    lines += [json.dumps(d) for d in list(good.values())[5:]]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return good


def assert_nearest_codes(pq, x: np.ndarray, codes: np.ndarray) -> None:
    """Stored codes pick a nearest centroid in every sub-space (ties may break either way: BLAS
    rounding differs with the batch size, and tiny padded training sets give twin centroids)."""
    assert codes.shape == (len(x), pq.M)
    sub = x.reshape(len(x), pq.M, 1, pq.dsub)
    dist = ((pq.codebooks[None] - sub) ** 2).sum(-1)  # [n, M, ksub]
    got = np.take_along_axis(dist, codes[:, :, None].astype(np.intp), axis=2)[..., 0]
    np.testing.assert_allclose(got, dist.min(axis=2), atol=1e-5)


def _fetch(client, index: str, ids: list[str]) -> dict[str, dict]:
    """Hits with their doc values, and in `_source` every stored vector, including those the
    index keeps out of `_source` (read from the vector index, as `osneural recode` does)."""
    from osneural.mappings.stored_vectors import index_vector_fields, read_vector, request_parts

    vectors = index_vector_fields(client, index)
    hidden = [v for v in vectors.values() if not v.in_source]
    _, scripts = request_parts(vectors, [v.name for v in hidden])
    resp = client.search(index=index, body={
        "size": len(ids), "query": {"ids": {"values": ids}}, "_source": True,
        "docvalue_fields": ["bin_code", "dense_pq", "mv_codes", "osneural_id"],
        "script_fields": scripts,
    })
    hits = {h["_id"]: h for h in resp["hits"]["hits"]}
    for hit in hits.values():
        for v in hidden:
            value = read_vector(hit, v)
            if value is not None:
                hit["_source"][v.name] = value
    return hits


def test_ingest_check_every_field_then_resume(opensearch_client, index_name, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.jsonl"
    good = write_corpus(corpus)
    report = tmp_path / "failures.jsonl"
    encs = fake_encoders()
    params = CodecParams(pool_factor=2)
    summary = index_corpus(opensearch_client, corpus, index_name, batch_size=4, encoders=encs,
                           failure_report=report, progress=False, codec_params=params,
                           matryoshka_dims=[64])
    assert (summary.indexed, summary.skipped, summary.failed, summary.truncated) == (13, 0, 4, 1)
    assert summary.codecs_trained and summary.padded_training  # 13 docs < 256 PQ centroids
    assert summary.stage_seconds["encode_dense"] > 0 and summary.stage_seconds["bulk"] > 0

    rows = FailureReport.read(report)
    assert [(r["line"], r["id"], r["stage"]) for r in rows] == [
        (6, None, "read"), (7, None, "read"), (8, "notext", "read"), (9, "doc1", "read")]
    assert rows[0]["reason"].startswith("malformed JSON") and rows[0]["source"] == str(corpus)
    assert rows[3]["reason"] == "duplicate id in this corpus"

    meta = opensearch_client.indices.get_mapping(index=index_name)[index_name]["mappings"]["_meta"]
    osn = meta["osneural"]
    assert osn["encoders"]["dense"] == {"name": "fake-dense", "kind": "dense", "sha256": "d" * 64,
                                        "dim": 384}
    assert osn["representations"] == ["text", "dense", "sparse", "binary", "pq", "multivector"]
    assert osn["codecs"]["pq_dense"]["M"] == 48
    # the default token code: 2 bits over (up to) 224 principal directions, no centroid, no
    # scale; 64-d tokens keep all 64 rotated directions: 16 B per token
    assert CodecParams().token_code == "bin2p224" and "pq_tokens" not in osn["codecs"]
    assert osn["codecs"]["res_tokens"] == {"kind": "residual", "nbits": 2, "n_centroids": 0,
                                           "scale": False, "dim": 64, "row_bytes": 16,
                                           "projected_dims": 64}
    assert osn["fields"]["matryoshka"] == [64]

    bundle = load_codecs(opensearch_client, index_name)
    assert bundle is not None and bundle.params["mih_m"] == CodecParams().mih_m == 64
    assert bundle.binary.n_bits == 384
    ids = sorted(good)
    hits = _fetch(opensearch_client, index_name, ids)
    assert sorted(hits) == ids
    texts = [f"{good[i]['title']} {good[i]['text']}".strip() for i in ids]
    dense = encs["dense"].encode_documents(texts)
    sparse = encs["sparse"].encode_documents(texts)
    tokens = [pool_tokens(t, 2) for t in encs["multivector"].encode_documents(texts)]
    codes = bundle.binary.encode(dense)
    for k, doc_id in enumerate(ids):
        hit = hits[doc_id]
        src = hit["_source"]
        assert src["title"] == good[doc_id]["title"] and src["text"] == good[doc_id]["text"]
        assert "mv_codes" not in src  # excluded from _source, served from doc values
        np.testing.assert_allclose(src["dense"], dense[k], atol=1e-6)
        head = dense[k, :64] / np.linalg.norm(dense[k, :64])
        np.testing.assert_allclose(src["dense_64"], head, atol=1e-6)
        assert src["sparse"] == sparse_features(sparse[k])
        assert "json%2Edumps" in src["sparse"] or doc_id == "long"
        assert src["bin_tokens"] == code_tokens(codes[k : k + 1], 64, n_bits=384)[0]
        assert len(src["bin_tokens"]) == 64
        assert np.array_equal(unb64(src["bin_code"]), codes[k])
        assert np.array_equal(unb64(hit["fields"]["bin_code"][0]), codes[k])
        pq = unb64(hit["fields"]["dense_pq"][0])
        assert_nearest_codes(bundle.pq_dense, dense[k : k + 1], pq[None, :])
        mv = unb64(hit["fields"]["mv_codes"][0]).tobytes()
        assert mv == bundle.token_codec.encode(tokens[k]).tobytes()  # len(tokens[k]) rows of 16 B
        np.testing.assert_allclose(src["fde"], bundle.fde.encode_document(tokens[k]), atol=1e-6)

    # second run with resume: nothing new, the same rejections
    again = index_corpus(opensearch_client, corpus, index_name, batch_size=5, resume=True,
                         encoders=encs, failure_report=report, progress=False)
    assert (again.indexed, again.skipped, again.failed) == (0, 13, 4)
    assert not again.codecs_trained and len(FailureReport.read(report)) == 4
    assert opensearch_client.count(index=index_name)["count"] == 13

    # another dense model: refused before any write
    with pytest.raises(IndexMismatch, match="sha256 dddddddddddd"):
        index_corpus(opensearch_client, corpus, index_name, encoders=fake_encoders(dense="f" * 64),
                     failure_report=report, progress=False)
    with pytest.raises(IndexMismatch, match="representations"):
        index_corpus(opensearch_client, corpus, index_name, representations="dense",
                     encoders=encs, failure_report=report, progress=False)
    delete_codecs(opensearch_client, index_name)


def test_wrong_dimension_for_existing_index(opensearch_client, index_name, tmp_path: Path) -> None:
    docs = [{"_id": str(i), "text": f"text {i}"} for i in range(3)]
    index_corpus(opensearch_client, docs, index_name, representations="dense",
                 encoders={"dense": FakeDense(dim=32)}, progress=False,
                 failure_report=tmp_path / "r.jsonl")
    with pytest.raises(IndexMismatch, match="wrong embedding dimension.*32.*64"):
        index_corpus(opensearch_client, docs + [{"_id": "9", "text": "new"}], index_name,
                     encoders={"dense": FakeDense(dim=64, sha="d" * 64)}, resume=True,
                     progress=False, failure_report=tmp_path / "r.jsonl")
    opensearch_client.indices.refresh(index=index_name)
    assert opensearch_client.count(index=index_name)["count"] == 3
    delete_codecs(opensearch_client, index_name)


def test_empty_and_all_bad_corpus(opensearch_client, index_name, tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(EmptyCorpus, match="no valid document"):
        index_corpus(opensearch_client, empty, index_name, encoders=fake_encoders(), progress=False)
    bad = tmp_path / "bad.jsonl"
    bad.write_text("nope\n{}\n")
    with pytest.raises(EmptyCorpus, match="2 rejected") as info:
        index_corpus(opensearch_client, bad, index_name, encoders=fake_encoders(), progress=False)
    assert info.value.summary.failed == 2
    assert len(FailureReport.read(tmp_path / f"{index_name}.failures.jsonl")) == 2
    assert not opensearch_client.indices.exists(index=index_name)


def test_text_and_sparse_only_index(opensearch_client, index_name, tmp_path: Path) -> None:
    docs = [{"_id": "a", "title": "Alpha", "text": "the json.loads function"},
            {"_id": "b", "title": "Beta", "text": "regular expressions"}]
    s = index_corpus(opensearch_client, docs, index_name, representations="sparse",
                     encoders=fake_encoders(), progress=False, failure_report=tmp_path / "r.jsonl")
    assert s.indexed == 2 and s.failure_report is None
    props = opensearch_client.indices.get_mapping(index=index_name)[index_name]["mappings"]["properties"]
    assert set(props) == {"title", "text", "osneural_id", "sparse"}
    hits = opensearch_client.search(index=index_name, body={
        "query": {"rank_feature": {"field": "sparse.json%2Eloads"}}})["hits"]["hits"]
    assert [h["_id"] for h in hits] == ["a"]
    delete_codecs(opensearch_client, index_name)


def test_training_helpers() -> None:
    assert _divisor_at_most(384, 48) == 48 and _divisor_at_most(100, 48) == 25
    x = np.random.default_rng(0).standard_normal((10, 4)).astype(np.float32)
    rows, padded = _training_rows(x, 256, seed=1)
    assert padded and rows.shape == (256, 4) and rows.dtype == np.float32
    np.testing.assert_allclose(rows[:10], x, atol=0.1)
    same, padded = _training_rows(x, 5, seed=1)
    assert same is x and not padded


def test_float_tokens_store_the_pooled_tokens_as_float16(opensearch_client, index_name,
                                                         tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.jsonl"
    good = write_corpus(corpus)
    encs = fake_encoders()
    summary = index_corpus(opensearch_client, corpus, index_name, batch_size=4, encoders=encs,
                           representations="multivector,float_tokens", progress=False,
                           failure_report=tmp_path / "failures.jsonl",
                           codec_params=CodecParams(pool_factor=2))
    assert summary.indexed == len(good)
    osn = opensearch_client.indices.get_mapping(index=index_name)[index_name]["mappings"]
    assert osn["_meta"]["osneural"]["representations"] == ["text", "multivector", "float_tokens"]
    assert set(osn["_source"]["excludes"]) == {"mv_codes", "mv_f16", "fde"}  # fde: vectors_out_of_source
    ids = sorted(good)
    resp = opensearch_client.search(index=index_name, body={
        "size": len(ids), "query": {"ids": {"values": ids}}, "docvalue_fields": ["mv_f16"]})
    hits = {h["_id"]: h for h in resp["hits"]["hits"]}
    texts = [f"{good[i]['title']} {good[i]['text']}".strip() for i in ids]
    tokens = [pool_tokens(t, 2) for t in encs["multivector"].encode_documents(texts)]
    for k, doc_id in enumerate(ids):
        assert "mv_f16" not in hits[doc_id]["_source"]
        blob = unb64(hits[doc_id]["fields"]["mv_f16"][0]).tobytes()
        got = np.frombuffer(blob, dtype="<f2").reshape(-1, tokens[k].shape[1])
        np.testing.assert_array_equal(got, tokens[k].astype(np.float16))
