"""The query side's staleness check against the session's real node: index fingerprints, a codec
document from another build refused, the legacy fallback (uuid + codec document version), and a
cached Searcher noticing an index deleted and recreated under the same name.

The multi-node module rebuilds a real index under `serve`; these are the cheap edges of the same
contract (no encoders needed: bm25 and the description only).
"""

from __future__ import annotations

import uuid

import pytest
from osneural.plugin import Searcher
from osneural.plugin.resources import (
    EncoderCache,
    ResourceCache,
    StaleCodecsError,
    current_fingerprint,
    describe_index,
    spec_encoder_kinds,
    spec_needs_codecs,
)
from osneural.plugin.spec import load_spec, parse_spec

from osneural.codecs import CodecBundle
from osneural.codecs.bundle import CODECS_INDEX, store_bundle

pytestmark = pytest.mark.integration

BM25 = {"first_stages": [{"type": "bm25", "k": 10}], "fusion": {"type": "rrf"}, "size": 5}


def _create(client, name: str, generation: str | None, docs: list[tuple[str, str]]) -> None:
    meta = {"schema_version": 1}
    if generation is not None:
        meta["codec_generation"] = generation
    client.indices.create(index=name, body={
        "settings": {"index": {"number_of_shards": 1, "number_of_replicas": 0}},
        "mappings": {"_meta": {"osneural": meta},
                     "properties": {"title": {"type": "text"}, "text": {"type": "text"}}},
    })
    for doc_id, text in docs:
        client.index(index=name, id=doc_id, body={"title": "", "text": text})
    client.indices.refresh(index=name)


def _store(client, name: str, generation: str | None, mih_m: int = 8) -> None:
    store_bundle(client, name, CodecBundle(params={"mih_m": mih_m}), generation=generation)


@pytest.fixture
def name(opensearch_client):
    n = f"test-gen-{uuid.uuid4().hex[:8]}"
    yield n
    opensearch_client.indices.delete(index=n, ignore_unavailable=True)
    opensearch_client.delete(index=CODECS_INDEX, id=n, ignore=404)


def test_matching_generation_is_accepted_and_fingerprinted(opensearch_client, name) -> None:
    _store(opensearch_client, name, "g1")
    _create(opensearch_client, name, "g1", [("a", "alpha")])
    res = describe_index(opensearch_client, name)
    uuid_ = opensearch_client.indices.get_settings(index=name)[name]["settings"]["index"]["uuid"]
    assert (res.fingerprint.uuid, res.fingerprint.generation) == (uuid_, "g1")
    assert res.fingerprint.codec_version is None  # the generation makes the version redundant
    assert res.codecs.params == {"mih_m": 8}
    assert current_fingerprint(opensearch_client, name) == res.fingerprint


def test_codec_document_of_another_build_is_refused(opensearch_client, name) -> None:
    _store(opensearch_client, name, "old-build")
    _create(opensearch_client, name, "new-build", [("a", "alpha")])
    with pytest.raises(StaleCodecsError, match="'new-build'.*'old-build'"):
        describe_index(opensearch_client, name)
    _store(opensearch_client, name, None)  # a writer that records no generation at all
    with pytest.raises(StaleCodecsError, match="generation None"):
        describe_index(opensearch_client, name)


def test_legacy_index_falls_back_to_uuid_and_codec_version(opensearch_client, name) -> None:
    _store(opensearch_client, name, None)
    _create(opensearch_client, name, None, [("a", "alpha")])
    cache = ResourceCache(EncoderCache())
    res = cache.index(opensearch_client, name)
    assert res.fingerprint.generation is None and res.fingerprint.codec_version is not None
    assert cache.is_current(opensearch_client, res)
    _store(opensearch_client, name, None, mih_m=4)  # codecs replaced in place (a recode)
    assert not cache.is_current(opensearch_client, res)
    seen = current_fingerprint(opensearch_client, name, legacy=True)
    fresh = cache.index(opensearch_client, name, expect=seen)
    assert fresh.fingerprint == seen and fresh.codecs.params == {"mih_m": 4}
    assert cache.index(opensearch_client, name, expect=seen) is fresh  # reloaded once, not per call


def test_cached_searcher_notices_a_recreated_index(opensearch_client, name) -> None:
    cache = ResourceCache(EncoderCache())
    s = Searcher(opensearch_client, name, cache=cache)
    try:
        _store(opensearch_client, name, "g1")
        _create(opensearch_client, name, "g1", [("old", "alpha beta")])
        assert [h["_id"] for h in s.search("alpha", BM25)["hits"]["hits"]] == ["old"]
        first = cache.index(opensearch_client, name)
        opensearch_client.indices.delete(index=name)
        _store(opensearch_client, name, "g2")
        _create(opensearch_client, name, "g2", [("new", "alpha gamma")])
        result = s.search("alpha", BM25)
        assert [h["_id"] for h in result["hits"]["hits"]] == ["new"]
        assert "check" in result["ext"]["osneural"]["timings_ms"]
        now = cache.index(opensearch_client, name)
        assert now is not first and now.fingerprint.generation == "g2"
        assert now.fingerprint.uuid != first.fingerprint.uuid
        # a rebuild whose codec document is still the old build's is refused, never used
        opensearch_client.indices.delete(index=name)
        _create(opensearch_client, name, "g3", [("newer", "alpha delta")])
        with pytest.raises(StaleCodecsError):
            s.search("alpha", BM25)
    finally:
        s.close()


def test_what_each_builtin_spec_loads_before_its_deadline() -> None:
    assert spec_encoder_kinds(load_spec("bm25")) == []
    assert not spec_needs_codecs(load_spec("bm25"))
    assert spec_encoder_kinds(load_spec("multivector")) == ["multivector"]
    assert spec_needs_codecs(load_spec("multivector"))
    assert spec_encoder_kinds(load_spec("binary")) == ["dense"]
    assert spec_needs_codecs(load_spec("binary"))
    assert spec_encoder_kinds(load_spec("hybrid")) == ["dense", "multivector", "sparse"]
    assert spec_needs_codecs(load_spec("hybrid"))  # MaxSim over PQ-coded tokens
    float16 = load_spec("hybrid").to_dict()
    float16["rescore"][0]["tokens"] = "float16"
    assert not spec_needs_codecs(parse_spec(float16))
