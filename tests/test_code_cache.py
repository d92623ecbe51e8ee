"""The per-process doc-value cache (osneural.plugin.code_cache) against a real node: it answers
exactly what a plain fetch answers, reads only versions for what it holds, and never serves bytes
of a document re-indexed or deleted since, nor of another build of the index."""

from __future__ import annotations

import base64

import numpy as np
import pytest
from osneural.plugin.code_cache import CodeCache, cache_budget_from_env
from osneural.plugin.rescoring.scores import fetch_codes

FIELD = "mv_codes"
BUILD = ("uuid-a", "gen-1")


class RecordingClient:
    """A real client whose search and msearch bodies are recorded (what went over the wire)."""

    def __init__(self, client) -> None:
        self.client = client
        self.calls: list[tuple[str, object]] = []

    def search(self, **kw):
        self.calls.append(("search", kw["body"]))
        return self.client.search(**kw)

    def msearch(self, **kw):
        self.calls.append(("msearch", kw["body"]))
        return self.client.msearch(**kw)


def _blob(rng: np.random.Generator, n: int) -> bytes:
    return rng.integers(0, 256, size=n, dtype=np.uint8).tobytes()


@pytest.fixture
def coded_index(opensearch_client, index_name):
    rng = np.random.default_rng(7)
    opensearch_client.indices.create(index=index_name, body={
        "settings": {"number_of_shards": 2, "number_of_replicas": 0},
        "mappings": {"properties": {FIELD: {"type": "binary", "doc_values": True}}}})
    blobs = {f"d{i}": _blob(rng, 16 * (1 + i % 5)) for i in range(24)}
    blobs["empty-field"] = None
    for doc_id, blob in blobs.items():
        src = {} if blob is None else {FIELD: base64.b64encode(blob).decode()}
        opensearch_client.index(index=index_name, id=doc_id, body=src)
    opensearch_client.indices.refresh(index=index_name)
    return index_name, {k: v for k, v in blobs.items() if v is not None}


def test_cached_fetch_equals_plain_fetch_and_reads_only_versions_when_warm(opensearch_client, coded_index):
    index, blobs = coded_index
    ids = sorted(blobs) + ["empty-field", "no-such-doc"]
    plain = fetch_codes(opensearch_client, index, ids, FIELD)
    cache = CodeCache(max_bytes=1 << 20)
    rec = RecordingClient(opensearch_client)
    cold = cache.fetch(rec, index, BUILD, ids, FIELD)
    assert cold == plain == blobs
    assert (cache.hits, cache.misses, len(cache)) == (0, len(ids), len(blobs))
    rec.calls.clear()
    warm = cache.fetch(rec, index, BUILD, ids, FIELD)
    assert warm == plain
    assert cache.hits == len(blobs)
    # one round trip: the cached documents' versions (no doc values), the rest's bytes
    (kind, lines), = rec.calls
    assert kind == "msearch"
    versions = lines[1]
    assert "docvalue_fields" not in versions and versions["seq_no_primary_term"] is True
    ids_clause, exists = versions["query"]["bool"]["filter"]
    assert sorted(ids_clause["ids"]["values"]) == sorted(blobs)
    assert exists == {"exists": {"field": FIELD}}  # a field hidden from the caller matches nothing
    assert lines[3]["query"]["ids"]["values"] == ["empty-field", "no-such-doc"]


def test_reindexed_and_deleted_documents_are_never_served_from_the_cache(opensearch_client, coded_index):
    index, blobs = coded_index
    ids = sorted(blobs)
    cache = CodeCache(max_bytes=1 << 20)
    cache.fetch(opensearch_client, index, BUILD, ids, FIELD)
    new = b"\x01\x02\x03" * 16
    opensearch_client.index(index=index, id="d3", body={FIELD: base64.b64encode(new).decode()},
                            refresh=True)
    opensearch_client.delete(index=index, id="d5", refresh=True)
    got = cache.fetch(opensearch_client, index, BUILD, ids, FIELD)
    assert got["d3"] == new
    assert "d5" not in got
    assert got == fetch_codes(opensearch_client, index, ids, FIELD)
    # the re-read bytes are cached under the new version
    again = cache.fetch(opensearch_client, index, BUILD, ["d3"], FIELD)
    assert again == {"d3": new}


def test_another_build_or_caller_shares_nothing(opensearch_client, coded_index):
    index, blobs = coded_index
    cache = CodeCache(max_bytes=1 << 20)
    cache.fetch(opensearch_client, index, BUILD, sorted(blobs), FIELD)
    rec = RecordingClient(opensearch_client)
    cache.fetch(rec, index, ("uuid-b", "gen-1"), ["d1", "d2"], FIELD)
    (kind, body), = rec.calls
    assert kind == "search" and body["docvalue_fields"] == [FIELD]  # a full read, nothing reused
    for build, scope in ((("uuid-a", "gen-2"), ""), (BUILD, "another-caller")):
        rec.calls.clear()
        cache.fetch(rec, index, build, ["d1"], FIELD, scope=scope)
        assert rec.calls[0][0] == "search"  # another codec generation or caller: a full read


def test_the_byte_budget_evicts_least_recently_used(opensearch_client, coded_index):
    index, blobs = coded_index
    ids = sorted(blobs)
    budget = 600
    cache = CodeCache(max_bytes=budget)
    got = cache.fetch(opensearch_client, index, BUILD, ids, FIELD)
    assert got == blobs  # answers stay whole when the cache cannot hold them
    assert 0 < cache.nbytes <= budget and len(cache) < len(ids)
    off = CodeCache(max_bytes=0)
    assert not off.enabled


def test_least_recently_used_goes_first():
    cache = CodeCache(max_bytes=3 * (100 + 64))
    keys = [(*BUILD, "", FIELD, f"d{i}") for i in range(4)]
    for k in keys[:3]:
        cache.put(k, (1, 1), bytes(100))
    assert cache.get(keys[0]) is not None  # d0 is now the most recently used
    cache.put(keys[3], (1, 1), bytes(100))
    assert cache.get(keys[1]) is None
    assert all(cache.get(k) is not None for k in (keys[0], keys[2], keys[3]))
    assert cache.nbytes == 3 * (100 + 64)
    cache.put(keys[0], (2, 1), bytes(10))  # a newer version replaces the entry and its bytes
    assert cache.get(keys[0]) == ((2, 1), bytes(10)) and cache.nbytes == 2 * 164 + 74
    huge = (*BUILD, "", FIELD, "huge")
    cache.put(huge, (1, 1), bytes(10_000))  # larger than the budget: skipped
    assert cache.get(huge) is None and len(cache) == 3


def test_budget_from_the_environment(monkeypatch):
    monkeypatch.setenv("OSNEURAL_CODE_CACHE_MB", "1.5")
    assert cache_budget_from_env() == int(1.5 * (1 << 20))
    monkeypatch.setenv("OSNEURAL_CODE_CACHE_MB", "0")
    assert cache_budget_from_env() == 0
    monkeypatch.delenv("OSNEURAL_CODE_CACHE_MB")
    assert cache_budget_from_env() == 128 << 20
    for bad in ("lots", "-1", "nan"):
        monkeypatch.setenv("OSNEURAL_CODE_CACHE_MB", bad)
        with pytest.raises(ValueError, match="OSNEURAL_CODE_CACHE_MB"):
            cache_budget_from_env()


def test_callers_get_partitions_by_credential():
    from osneural.plugin.neural_handler import caller_scope
    from osneural.plugin.passthrough import CallerClient

    a = caller_scope(CallerClient(object(), {"authorization": "Basic YTph"}))
    b = caller_scope(CallerClient(object(), {"authorization": "Basic Yjpi"}))
    assert a != b and len(a) == 32 and "YTph" not in a
    assert caller_scope(CallerClient(object(), {})) == caller_scope(object()) == ""
