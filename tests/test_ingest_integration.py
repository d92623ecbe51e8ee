"""Ingestion end to end: real default encoders, real node, a small corpus with malformed
lines and one over-long document; every field of every good document is checked, the failure
report too, and a second `osneural ingest --resume` indexes nothing new."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from osneural.ingest.bulk import FailureReport
from osneural.ingest.codec_store import delete_codecs, load_codecs
from osneural.ingest.documents import sparse_features, unb64
from osneural.ingest.indexer import index_corpus
from osneural.ingest.plan import CodecParams
from osneural.ingest.sample import sample_corpus
from osneural.mappings import ID_FIELD, ID_PIPELINE
from osneural.plugin.resources import describe_index
from test_ingest_indexer import _fetch, assert_nearest_codes

from osneural.cli import main as cli_main
from osneural.codecs import code_tokens, pool_tokens
from osneural.encoders import ensure_default_models, load_default

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def encoders() -> dict:
    ensure_default_models()  # exports once (needs torch); a no-op when already exported
    # fp32 by name: the stored vectors are compared with these encoders' own output, and with
    # the default int8 dense encoder an index built with tokens stores the fp32 token pass's
    # pooled vector instead (runtime.MultiVectorEncoder.shares_dense_pass)
    return {k: load_default(k, precision="fp32") for k in ("dense", "sparse", "multivector")}


def test_real_encoders_every_field_failures_and_resume(
    encoders: dict, opensearch_client, opensearch_url: str, index_name: str, tmp_path: Path
) -> None:
    docs = {d["_id"]: d for d in sample_corpus(limit=18)}
    long_words = " ".join(f"word{i}" for i in range(3000))
    docs["overlong"] = {"_id": "overlong", "title": "Long", "text": long_words}
    lines = [json.dumps(d) for d in docs.values()]
    lines.insert(3, "{this is not json")
    lines.insert(7, json.dumps({"title": "no id", "text": "x"}))
    dup = list(docs)[2]
    lines.insert(11, json.dumps({"_id": dup, "text": "duplicate of an earlier id"}))
    lines.insert(12, json.dumps({"_id": "no-text"}))  # nothing but an id
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    report = tmp_path / "failures.jsonl"

    summary = index_corpus(opensearch_client, corpus, index_name, batch_size=8,
                           encoders=encoders, failure_report=report, progress=False)
    def overflows(doc: dict) -> bool:
        text = f"{doc.get('title', '')} {doc['text']}".strip()
        return any(len(e.tokenizer.encode(e.document_prefix + text).ids) > e.max_length
                   for e in encoders.values())

    too_long = {i for i, d in docs.items() if overflows(d)}
    assert "overlong" in too_long
    assert (summary.indexed, summary.failed, summary.truncated) == (len(docs), 4, len(too_long))
    rows = FailureReport.read(report)
    assert [(r["line"], r["id"]) for r in rows] == [(4, None), (8, None), (12, dup), (13, "no-text")]
    assert [r["reason"].split(":")[0] for r in rows] == [
        "malformed JSON", "missing id field '_id'", "duplicate id in this corpus",
        "empty document"]

    meta = opensearch_client.indices.get_mapping(index=index_name)[index_name]["mappings"]["_meta"]
    for kind, enc in encoders.items():
        assert meta["osneural"]["encoders"][kind]["sha256"] == enc.manifest["sha256"]
    assert meta["osneural"]["encoders"]["dense"]["dim"] == 384

    bundle = load_codecs(opensearch_client, index_name)
    assert "idf" in bundle.params  # for inference-free sparse queries
    ids = sorted(docs)
    texts = [f"{docs[i].get('title', '')} {docs[i]['text']}".strip() for i in ids]
    dense = encoders["dense"].encode_documents(texts)
    sparse = encoders["sparse"].encode_documents(texts)
    pool = CodecParams().pool_factor  # the default pooling (4)
    assert pool == 4
    tokens = [pool_tokens(t, pool) for t in encoders["multivector"].encode_documents(texts)]
    codes = bundle.binary.encode(dense)
    hits = _fetch(opensearch_client, index_name, ids)
    assert sorted(hits) == ids
    for k, doc_id in enumerate(ids):
        src, fields = hits[doc_id]["_source"], hits[doc_id]["fields"]
        assert src["text"] == docs[doc_id]["text"]
        assert src["title"] == docs[doc_id].get("title", "")
        if doc_id != "overlong":
            assert src["metadata"] == docs[doc_id]["metadata"]
        # batch composition changes onnxruntime rounding slightly: compare with a tolerance
        np.testing.assert_allclose(src["dense"], dense[k], atol=2e-4)
        want_sparse = sparse_features(sparse[k])
        assert set(src["sparse"]) == set(want_sparse) or len(set(src["sparse"]) ^ set(want_sparse)) <= 2
        for key in set(src["sparse"]) & set(want_sparse):
            assert abs(src["sparse"][key] - want_sparse[key]) < 1e-3
        assert all("." not in key for key in src["sparse"])
        stored = unb64(src["bin_code"])
        assert np.unpackbits(stored ^ codes[k]).sum() <= 2  # bits at the sign boundary may flip
        assert np.array_equal(unb64(fields["bin_code"][0]), stored)
        assert src["bin_tokens"] == code_tokens(stored[None, :], 64, n_bits=384)[0]
        assert_nearest_codes(bundle.pq_dense, np.asarray([src["dense"]], np.float32),
                             unb64(fields["dense_pq"][0])[None, :])
        # the default token code: 2 bits over 224 principal directions, 56 B per 384-d token
        assert bundle.token_codec.describe()["row_bytes"] == 56 and bundle.pq_tokens is None
        assert bundle.token_codec.describe()["projected_dims"] == 224
        mv = bundle.token_codec.parse(unb64(fields["mv_codes"][0]).tobytes(), doc_id)
        assert abs(len(mv) - len(tokens[k])) <= 1 and len(mv) > 0
        assert "mv_codes" not in src
        assert len(src["fde"]) == bundle.fde.fde_dim and np.isfinite(src["fde"]).all()
    # `_source` carries each weight with the few digits rank_features keeps (8 bits of
    # mantissa), and the node scores each weight as exactly that truncation
    first = hits[ids[0]]["_source"]["sparse"]
    for key, value in sorted(first.items())[:6]:
        assert len(repr(value)) <= 12, value
        resp = opensearch_client.search(index=index_name, body={"query": {"bool": {
            "filter": [{"ids": {"values": [ids[0]]}}],
            "must": [{"rank_feature": {"field": f"sparse.{key}", "linear": {}}}]}}})
        indexed = ((np.float32(value).view(np.uint32) >> 15) << 15).view(np.float32)
        assert np.float32(resp["hits"]["hits"][0]["_score"]) == indexed, (key, value)
    np.testing.assert_allclose(  # the FDE is the codec applied to the stored token set
        hits[ids[0]]["_source"]["fde"], bundle.fde.encode_document(tokens[0]), atol=5e-3)
    # every id is in the id field's doc values, which the index's final pipeline keeps right,
    # so the query side reads hits' ids from there
    assert all(hits[i]["fields"]["osneural_id"] == [i] for i in ids)
    settings = opensearch_client.indices.get_settings(index=index_name)[index_name]["settings"]
    assert settings["index"]["final_pipeline"] == ID_PIPELINE
    assert describe_index(opensearch_client, index_name).id_field == ID_FIELD

    # second run through the CLI with --resume: nothing new, same rejections
    out = tmp_path / "second.jsonl"
    rc = cli_main(["ingest", str(corpus), "--index", index_name, "--url", opensearch_url,
                   "--resume", "--no-progress", "--failures", str(out)])
    assert rc == 1  # some lines were rejected
    assert len(FailureReport.read(out)) == 4
    opensearch_client.indices.refresh(index=index_name)
    assert opensearch_client.count(index=index_name)["count"] == len(docs)
    delete_codecs(opensearch_client, index_name)


def test_dense_and_sparse_sample_is_not_encoded_before_the_index_exists(
    encoders: dict, opensearch_client, index_name: str, tmp_path: Path
) -> None:
    """Dense and sparse train nothing on encodings: their training sample is read (the IDF table
    is fitted on its texts) and then encoded in the pipelined loop like every other batch, so the
    loop sees every document; a run with multi-vector encodes its sample first."""
    from osneural.codecs.bundle import CODECS_INDEX

    docs = sample_corpus(limit=18)
    lines = [json.dumps(d) for d in docs]
    lines.insert(5, "{not json")
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    plain = {k: encoders[k] for k in ("dense", "sparse")}
    summary = index_corpus(opensearch_client, corpus, index_name, representations="dense,sparse",
                           batch_size=4, encoders=plain, codec_params=CodecParams(train_docs=10),
                           progress=False)
    assert (summary.indexed, summary.failed, summary.loop_docs) == (18, 1, 18)
    assert opensearch_client.count(index=index_name)["count"] == 18
    # the sample: whole batches of 4 read until 10 documents were in, i.e. the first 12
    texts = [f"{d.get('title', '')} {d['text']}".strip() for d in docs[:12]]
    want = encoders["sparse"].fit_idf(texts, use=False).to_dict()
    assert load_codecs(opensearch_client, index_name).params["idf"] == want
    hits = _fetch(opensearch_client, index_name, [d["_id"] for d in docs])
    dense = encoders["dense"].encode_documents([f"{d.get('title', '')} {d['text']}".strip()
                                                for d in docs])
    for k, d in enumerate(docs):
        np.testing.assert_allclose(hits[d["_id"]]["_source"]["dense"], dense[k], atol=2e-4)

    other = f"{index_name}-mv"
    try:
        mv = index_corpus(opensearch_client, corpus, other, representations="dense,multivector",
                          batch_size=4, encoders={k: encoders[k] for k in ("dense", "multivector")},
                          codec_params=CodecParams(train_docs=10), progress=False)
        assert (mv.indexed, mv.loop_docs) == (18, 6)  # 12 encoded for training, written first
    finally:
        opensearch_client.indices.delete(index=other, ignore_unavailable=True)
        delete_codecs(opensearch_client, other)
        opensearch_client.indices.refresh(index=CODECS_INDEX, ignore_unavailable=True)
