"""Bit token codes end to end: ingestion codes `mv_codes` with the chosen token code, the index
describes it, and the `maxsim` rescoring stage scores it through the `Searcher` exactly as numpy
MaxSim over the decoded stored codes; an index built with PQ token codes keeps answering.

The first tests use deterministic stand-in encoders (wiring, not model quality); the last goes
through `osneural ingest --token-code` with the real default encoders, as a user would.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from osneural.ingest.codec_store import delete_codecs, load_codecs
from osneural.ingest.documents import unb64
from osneural.ingest.indexer import CodecParams, index_corpus
from osneural.plugin import Searcher
from osneural.plugin.resources import EncoderCache, ResourceCache
from test_ingest_fakes import FakeMulti, fake_encoders

from osneural.cli import main as cli_main
from osneural.codecs import ProductQuantizer, ResidualCodec, pool_tokens

pytestmark = pytest.mark.integration

WORDS = ["heart", "cancer", "cell", "gene", "protein", "virus", "brain", "lung", "blood", "drug",
         "trial", "mouse", "insulin", "tumor", "immune", "vaccine", "diet", "sleep", "bone", "liver",
         "kidney", "skin", "muscle", "fat", "stress", "sugar", "salt", "iron", "zinc", "light"]
QUERY = "protein gene study"
SPEC = {"first_stages": [{"type": "bm25", "k": 100}],
        "rescore": [{"type": "maxsim", "window": 100}], "size": 100}


class QueryMulti(FakeMulti):
    """The stand-in token encoder, with the query side the `Searcher` calls."""

    def encode_queries(self, texts: list[str]) -> list[np.ndarray]:
        return self.encode_documents(texts)


def _corpus(path: Path, n: int = 40) -> dict[str, str]:
    """`n` documents that all contain "study" (so the bm25 stage returns every one of them)."""
    rng = np.random.default_rng(3)
    texts = {f"d{i}": "study " + " ".join(rng.choice(WORDS, size=int(rng.integers(8, 16))))
             for i in range(n)}
    path.write_text("".join(json.dumps({"_id": i, "title": "", "text": t}) + "\n"
                            for i, t in texts.items()), encoding="utf-8")
    return texts


def _stored_codes(client, index: str, ids: list[str]) -> dict[str, bytes]:
    resp = client.search(index=index, body={"size": len(ids), "query": {"ids": {"values": ids}},
                                            "_source": False, "docvalue_fields": ["mv_codes"]})
    return {h["_id"]: unb64(h["fields"]["mv_codes"][0]).tobytes() for h in resp["hits"]["hits"]}


def _numpy_maxsim(query: np.ndarray, tokens: np.ndarray) -> float:
    return float((query.astype(np.float64) @ tokens.astype(np.float64).T).max(axis=1).sum())


def _search_and_check(client, index: str, cache: ResourceCache, query_tokens: np.ndarray,
                      decoded: dict[str, np.ndarray]) -> None:
    """The maxsim stage's scores are numpy MaxSim over the decoded stored tokens, every hit."""
    searcher = Searcher(client, index, cache=cache)
    try:
        hits = searcher.search(QUERY, SPEC)["hits"]["hits"]
    finally:
        searcher.close()
    assert sorted(h["_id"] for h in hits) == sorted(decoded)  # bm25 on "study": every document
    for h in hits:
        assert h["_score"] == pytest.approx(_numpy_maxsim(query_tokens, decoded[h["_id"]]),
                                            rel=1e-4, abs=1e-4)
    scores = [h["_score"] for h in hits]
    assert scores == sorted(scores, reverse=True)
    assert len(set(np.round(scores, 4))) > len(scores) // 2  # scores tell documents apart


def _fake_cache(encs: dict) -> ResourceCache:
    enc = EncoderCache()
    for kind, e in encs.items():
        enc.put(kind, e)
    return ResourceCache(enc)


@pytest.mark.parametrize(("code", "nbits", "centroids", "scale", "dims"),
                         [("bin1", 1, False, False, None), ("res2", 2, True, False, None),
                          ("res1s", 1, True, True, None), ("bin2p24", 2, False, False, 24)])
def test_bit_token_code_ingest_meta_rows_and_maxsim(opensearch_client, index_name, tmp_path,
                                                    code, nbits, centroids, scale, dims) -> None:
    client = opensearch_client
    texts = _corpus(tmp_path / "corpus.jsonl")
    encs = fake_encoders()
    encs["multivector"] = QueryMulti()
    params = CodecParams(token_code=code, pool_factor=2, token_centroids=16)
    summary = index_corpus(client, tmp_path / "corpus.jsonl", index_name, batch_size=8,
                           encoders=encs, representations="multivector", progress=False,
                           failure_report=tmp_path / "failures.jsonl", codec_params=params)
    assert (summary.indexed, summary.failed) == (len(texts), 0)

    meta = client.indices.get_mapping(index=index_name)[index_name]["mappings"]["_meta"]
    desc = meta["osneural"]["codecs"]["res_tokens"]
    assert "pq_tokens" not in meta["osneural"]["codecs"]
    dim = encs["multivector"].dim
    code_bytes = min(dims or dim, dim) * nbits // 8
    row_bytes = code_bytes + 2 * centroids + 2 * scale
    assert desc == {"kind": "residual", "nbits": nbits, "n_centroids": 16 if centroids else 0,
                    "scale": scale, "dim": dim, "row_bytes": row_bytes,
                    **({"projected_dims": min(dims, dim)} if dims else {})}
    bundle = load_codecs(client, index_name)
    codec = bundle.token_codec
    assert isinstance(codec, ResidualCodec) and bundle.pq_tokens is None
    assert codec.row_bytes == row_bytes

    ids = sorted(texts)
    stored = _stored_codes(client, index_name, ids)
    assert sorted(stored) == ids
    pooled = dict(zip(ids, (pool_tokens(t, 2) for t in
                            encs["multivector"].encode_documents([texts[i] for i in ids])),
                      strict=True))
    decoded = {}
    for doc_id in ids:
        blob = stored[doc_id]
        assert len(blob) == len(pooled[doc_id]) * row_bytes  # whole rows of the codec's width
        rows = codec.parse(blob, doc_id)
        # the stored rows are the codec applied to the document's pooled tokens
        assert rows.tobytes() == codec.encode(pooled[doc_id]).tobytes()
        decoded[doc_id] = codec.decode(rows)
        assert decoded[doc_id].shape == pooled[doc_id].shape
    if centroids:  # residual bits are in use: the decoded tokens are not the centroids alone
        some = next(iter(decoded))
        rows = codec.parse(stored[some])
        assert not np.allclose(decoded[some], codec.centroids[rows["cid"].astype(int)])
    query_tokens = encs["multivector"].encode_queries([QUERY])[0]
    _search_and_check(client, index_name, _fake_cache(encs), query_tokens, decoded)
    delete_codecs(client, index_name)


def test_pq_index_keeps_its_code_and_answers(opensearch_client, index_name, tmp_path) -> None:
    """An index built with PQ token codes (the code of earlier versions; the bundle names it)
    keeps PQ when documents are added under the bit-code default, and answers the same spec."""
    client = opensearch_client
    texts = _corpus(tmp_path / "corpus.jsonl")
    encs = fake_encoders()
    encs["multivector"] = QueryMulti()
    first = dict(list(texts.items())[:30])
    summary = index_corpus(client, [{"_id": i, "title": "", "text": t} for i, t in first.items()],
                           index_name, batch_size=8, encoders=encs, progress=False,
                           representations="multivector",
                           failure_report=tmp_path / "failures.jsonl",
                           codec_params=CodecParams(token_code="pq", pool_factor=2))
    assert summary.indexed == len(first)
    assert CodecParams().token_code != "pq"
    again = index_corpus(client, tmp_path / "corpus.jsonl", index_name, batch_size=8,
                         encoders=encs, progress=False, resume=True,
                         failure_report=tmp_path / "failures.jsonl")  # default CodecParams
    assert (again.indexed, again.skipped) == (len(texts) - len(first), len(first))
    assert not again.codecs_trained
    meta = client.indices.get_mapping(index=index_name)[index_name]["mappings"]["_meta"]
    assert meta["osneural"]["codecs"]["pq_tokens"]["kind"] == "pq"
    assert "res_tokens" not in meta["osneural"]["codecs"]
    bundle = load_codecs(client, index_name)
    pq = bundle.token_codec
    assert isinstance(pq, ProductQuantizer) and bundle.res_tokens is None
    ids = sorted(texts)
    stored = _stored_codes(client, index_name, ids)
    decoded = {}
    for doc_id in ids:
        assert len(stored[doc_id]) % pq.M == 0
        decoded[doc_id] = pq.decode(np.frombuffer(stored[doc_id], np.uint8).reshape(-1, pq.M))
    query_tokens = encs["multivector"].encode_queries([QUERY])[0]
    _search_and_check(client, index_name, _fake_cache(encs), query_tokens, decoded)
    delete_codecs(client, index_name)


@pytest.mark.slow
def test_cli_token_code_with_real_encoders(opensearch_client, opensearch_url, index_name,
                                           tmp_path) -> None:
    """`osneural ingest --token-code bin1` with the default encoders, then the default query
    encoders score the stored bits through the `Searcher`."""
    from osneural.encoders import ensure_default_models

    ensure_default_models()
    texts = _corpus(tmp_path / "corpus.jsonl", n=24)
    rc = cli_main(["ingest", str(tmp_path / "corpus.jsonl"), "--index", index_name,
                   "--url", opensearch_url, "--representations", "multivector",
                   "--token-code", "bin1", "--no-progress",
                   "--failures", str(tmp_path / "failures.jsonl")])
    assert rc == 0
    client = opensearch_client
    meta = client.indices.get_mapping(index=index_name)[index_name]["mappings"]["_meta"]
    assert meta["osneural"]["codecs"]["res_tokens"] == {
        "kind": "residual", "nbits": 1, "n_centroids": 0, "scale": False, "dim": 384,
        "row_bytes": 48}
    codec = load_codecs(client, index_name).token_codec
    ids = sorted(texts)
    stored = _stored_codes(client, index_name, ids)
    decoded = {}
    for doc_id in ids:
        assert stored[doc_id] and len(stored[doc_id]) % 48 == 0
        decoded[doc_id] = codec.decode(codec.parse(stored[doc_id], doc_id))
    cache = ResourceCache()
    query_tokens = np.asarray(cache.encoders.get("multivector").encode_queries([QUERY])[0],
                              np.float32)
    _search_and_check(client, index_name, cache, query_tokens, decoded)
    delete_codecs(client, index_name)
