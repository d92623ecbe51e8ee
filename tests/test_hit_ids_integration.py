"""Hits' ids read from `osneural_id` doc values against a real node.

Two indices hold the same documents; one has the id pipeline as its final pipeline (as `osneural
ingest` makes them), the other not. Every first stage and every doc-values rescoring stage must
answer alike on both, the first through doc-value requests (no stored field read per hit); and a
document the id field cannot vouch for (an auto-generated id, a copy carrying another document's
`osneural_id` in its `_source`) is still found under its own id.
"""

from __future__ import annotations

import uuid

import pytest
from osneural.mappings import ID_FIELD, ID_PIPELINE, ID_PIPELINE_BODY
from osneural.plugin import Searcher
from osneural.plugin.resources import EncoderCache, ResourceCache, describe_index
from test_plugin_integration import DenseEnc, MultiEnc, SparseEnc, build_plugin_index

from osneural.codecs.bundle import CODECS_INDEX

pytestmark = pytest.mark.integration

SPEC = {"first_stages": [{"type": "bm25", "k": 30}, {"type": "dense", "k": 30},
                         {"type": "sparse", "k": 30}, {"type": "binary", "k": 30},
                         {"type": "fde", "k": 30}],
        "rescore": [{"type": "hamming", "window": 40}, {"type": "pq", "window": 30},
                    {"type": "maxsim", "window": 20, "combine": "linear", "weight": 0.3},
                    {"type": "dense", "window": 10}],
        "size": 10}
QUERIES = ("vaccine immune virus", "insulin diet", "tumor gene protein", "sleep brain")


def _cache() -> ResourceCache:
    enc = EncoderCache()
    for kind, e in (("dense", DenseEnc()), ("sparse", SparseEnc()), ("multivector", MultiEnc())):
        enc.put(kind, e)
    return ResourceCache(enc)


class _Recorder:
    """The node's client, with every search body recorded."""

    def __init__(self, client) -> None:
        self._client = client
        self.bodies: list = []

    def search(self, *args, **kwargs):
        self.bodies.append(kwargs.get("body"))
        return self._client.search(*args, **kwargs)

    def msearch(self, *args, **kwargs):
        self.bodies.extend(kwargs.get("body") or [])
        return self._client.msearch(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._client, name)


@pytest.fixture(scope="module")
def twins(opensearch_client):
    client = opensearch_client
    client.ingest.put_pipeline(id=ID_PIPELINE, body=ID_PIPELINE_BODY)
    tag = uuid.uuid4().hex[:8]
    with_ids = build_plugin_index(client, f"test-ids-{tag}", {"final_pipeline": ID_PIPELINE})
    plain = build_plugin_index(client, f"test-noids-{tag}")
    yield with_ids, plain
    for built in (with_ids, plain):
        client.indices.delete(index=built["name"], ignore_unavailable=True)
        client.delete(index=CODECS_INDEX, id=built["name"], ignore=404)


def _answer(searcher: Searcher, q: str) -> list[tuple[str, float]]:
    return [(h["_id"], h["_score"]) for h in searcher.search(q, SPEC)["hits"]["hits"]]


def test_doc_value_ids_answer_as_stored_ids(opensearch_client, twins) -> None:
    with_ids, plain = twins
    assert describe_index(opensearch_client, with_ids["name"]).id_field == ID_FIELD
    assert describe_index(opensearch_client, plain["name"]).id_field is None
    fast_client, slow_client = _Recorder(opensearch_client), _Recorder(opensearch_client)
    for code_cache in (True, False):
        fast = Searcher(fast_client, with_ids["name"], cache=_cache(), code_cache=code_cache)
        slow = Searcher(slow_client, plain["name"], cache=_cache(), code_cache=code_cache)
        try:
            for q in QUERIES + QUERIES[:1]:  # the repeat reads the code cache when it is on
                got, want = _answer(fast, q), _answer(slow, q)
                assert [d for d, _ in got] == [d for d, _ in want]
                assert [s for _, s in got] == pytest.approx([s for _, s in want], rel=1e-6)
        finally:
            fast.close()
            slow.close()

    def id_reads(bodies) -> tuple[int, int]:
        dicts = [b for b in bodies if isinstance(b, dict) and "query" in b]
        by_doc_values = sum(b.get("stored_fields") == "_none_" and ID_FIELD in
                            b.get("docvalue_fields", ()) for b in dicts)
        return by_doc_values, len(dicts)

    # every first stage, code fetch and exact dense scoring (5 + 3 + 1 per query, the cache's
    # version reads included) reads ids from doc values; the final page reads `_source` and `_id`
    by_doc_values, searches = id_reads(fast_client.bodies)
    assert by_doc_values >= 9 * len(QUERIES)
    assert id_reads(slow_client.bodies)[0] == 0 and searches > by_doc_values


def test_documents_the_id_field_cannot_vouch_for_keep_their_own_ids(
        opensearch_client, twins) -> None:
    with_ids, _ = twins
    name = with_ids["name"]
    client = opensearch_client
    src = client.get(index=name, id="doc3")["_source"]
    assert src[ID_FIELD] == "doc3"
    # token codes live in doc values only (kept out of `_source`): an app copying a document
    # copies them from there
    codes = client.search(index=name, body={"query": {"ids": {"values": ["doc3"]}},
                                            "docvalue_fields": ["mv_codes"]})
    src["mv_codes"] = codes["hits"]["hits"][0]["fields"]["mv_codes"][0]
    # an auto-generated id: the pipeline cannot know it, so the document has no id field
    auto = client.index(index=name, body={**src, "text": src["text"] + " zebra"})["_id"]
    # an app's copy of doc3 under a new id, its `_source` (stale osneural_id included) copied
    client.index(index=name, id="copy-of-doc3", body={**src, "text": src["text"] + " okapi"})
    client.indices.refresh(index=name)
    fields = client.search(index=name, body={
        "query": {"ids": {"values": [auto, "copy-of-doc3"]}}, "docvalue_fields": [ID_FIELD]})
    got = {h["_id"]: (h.get("fields") or {}).get(ID_FIELD) for h in fields["hits"]["hits"]}
    assert got == {auto: None, "copy-of-doc3": ["copy-of-doc3"]}

    searcher = Searcher(client, name, cache=_cache())
    try:
        bm25 = {"first_stages": [{"type": "bm25", "k": 10}], "size": 5}
        assert searcher.search("zebra", bm25)["hits"]["hits"][0]["_id"] == auto
        assert searcher.search("okapi", bm25)["hits"]["hits"][0]["_id"] == "copy-of-doc3"
        # the copies' codes are read under their own ids: each has doc3's MaxSim score
        maxsim = {"first_stages": [{"type": "bm25", "k": 50, "fields": ["text"]}],
                  "rescore": [{"type": "maxsim", "window": 50, "combine": "replace"}],
                  "size": 50}
        hits = {h["_id"]: h["_score"] for h in
                searcher.search(src["text"], maxsim)["hits"]["hits"]}
        assert {"doc3", auto, "copy-of-doc3"} <= set(hits)
        assert hits[auto] == pytest.approx(hits["doc3"], rel=1e-6)
        assert hits["copy-of-doc3"] == pytest.approx(hits["doc3"], rel=1e-6)
    finally:
        searcher.close()
        client.delete(index=name, id=auto, refresh=True)
        client.delete(index=name, id="copy-of-doc3", refresh=True)
