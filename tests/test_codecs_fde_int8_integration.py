"""An index built with `CodecParams(fde_dtype="int8")`: byte FDE field, integer values, and the
`multivector` pipeline (FDE first stage, MaxSim rescoring) answering on a real node."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from osneural.ingest.codec_store import delete_codecs, load_codecs
from osneural.ingest.indexer import index_corpus
from osneural.ingest.plan import CodecParams
from osneural.plugin.resources import EncoderCache, ResourceCache
from osneural.plugin.searcher import Searcher
from test_ingest_indexer import _fetch

sys.path.insert(0, str(Path(__file__).parent))
from test_ingest_fakes import FakeMulti  # noqa: E402

pytestmark = pytest.mark.integration

TOPICS = ["vaccine", "protein", "galaxy", "glacier", "neuron", "enzyme", "volcano", "quasar",
          "insulin", "plankton", "magnet", "comet"]


#: the built-in `multivector` spec's stages with a deadline a loaded CI machine meets
SPEC = {"first_stages": [{"type": "fde", "k": 12, "num_candidates": 24}],
        "rescore": [{"type": "maxsim", "window": 12}], "timeout_ms": 60_000}


class QueryingFakeMulti(FakeMulti):
    """Queries are encoded like documents (same words, same token vectors)."""

    def encode_queries(self, texts: list[str]) -> list[np.ndarray]:
        return self.encode_documents(texts)


def test_int8_fde_index_maps_bytes_and_serves_the_multivector_spec(
    opensearch_client, index_name
) -> None:
    docs = [{"_id": f"d{i}", "title": "", "text": f"{t} study of {t} samples and {TOPICS[i - 1]}"}
            for i, t in enumerate(TOPICS)]
    multi = QueryingFakeMulti(dim=32)
    params = CodecParams(fde_dtype="int8", token_pq_m=8, pool_factor=1)
    summary = index_corpus(opensearch_client, docs, index_name, representations="multivector",
                           encoders={"multivector": multi}, codec_params=params, progress=False)
    try:
        assert summary.indexed == len(docs)
        props = opensearch_client.indices.get_mapping(index=index_name)[index_name]["mappings"]
        assert props["properties"]["fde"]["data_type"].lower() == "byte"
        bundle = load_codecs(opensearch_client, index_name)
        assert bundle.fde.dtype == "int8" and bundle.fde.int8_scale > 0
        stored = _fetch(opensearch_client, index_name, ["d3"])["d3"]["_source"]["fde"]
        assert len(stored) == bundle.fde.fde_dim
        assert all(float(x).is_integer() and -128 <= x <= 127 for x in stored)
        assert max(abs(x) for x in stored) > 20  # the scale uses the byte range

        cache = ResourceCache(EncoderCache())
        cache.encoders.put("multivector", multi)
        searcher = Searcher(opensearch_client, index_name, cache=cache)
        try:
            for i in (2, 7):
                hits = searcher.search(docs[i]["text"], SPEC)["hits"]["hits"]
                assert hits[0]["_id"] == f"d{i}", [h["_id"] for h in hits]
        finally:
            searcher.close()
    finally:
        delete_codecs(opensearch_client, index_name)
