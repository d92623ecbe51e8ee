"""The `prf` stage against a real node, checked against numpy on the same stored representations.

Uses the query-plugin test index (every representation, stand-in deterministic encoders for the
query side only; OpenSearch is real).
"""

from __future__ import annotations

import numpy as np
import pytest
from osneural.plugin import Searcher, fusion
from osneural.plugin.prf import expansion_tokens, rocchio
from test_plugin_integration import DenseEnc, MultiEnc, cache, plugin_index  # noqa: F401

pytestmark = pytest.mark.integration

TEXT = "heart cancer drug"
BM25 = {"type": "bm25", "k": 20, "fields": ["title", "text"]}
PAGE = {"size": 60, "_source": False, "timeout_ms": 30_000}


@pytest.fixture
def searcher(opensearch_client, plugin_index, cache):  # noqa: F811
    s = Searcher(opensearch_client, plugin_index["name"], cache=cache)
    yield s
    s.close()


def _run(resp) -> list[tuple[str, float]]:
    return [(h["_id"], h["_score"]) for h in resp["hits"]["hits"]]


def test_dense_rocchio_then_knn_fused_with_the_first_ranking(searcher, plugin_index) -> None:  # noqa: F811
    first = _run(searcher.search(TEXT, {"first_stages": [BM25], **PAGE}))
    assert len(first) >= 5
    prf = {"type": "prf", "fb_docs": 3, "alpha": 1.0, "beta": 0.7, "k": 30,
           "fusion": "linear", "weight": 0.4}
    resp = searcher.search(TEXT, {"first_stages": [BM25], "rescore": [prf], **PAGE})
    assert resp["ext"]["osneural"]["warnings"] == []
    got = _run(resp)

    ids = list(plugin_index["docs"])
    dense = plugin_index["dense"]
    fb = dense[[ids.index(d) for d, _ in first[:3]]]
    q = rocchio(DenseEnc().encode_queries([TEXT])[0], fb, 1.0, 0.7)
    cos = dense @ q
    order = np.argsort(-cos, kind="stable")[:30]
    second = [(ids[i], float((1 + cos[i]) / 2)) for i in order]  # lucene cosinesimil score
    want = fusion.linear([first, second], "minmax", [0.6, 0.4])
    assert [d for d, _ in got] == [d for d, _ in want][: len(got)]
    np.testing.assert_allclose([s for _, s in got], [s for _, s in want][: len(got)], atol=1e-5)
    # feedback brought in documents BM25 never returned
    assert {d for d, _ in got} - {d for d, _ in first}


def test_multivector_expansion_tokens_reach_maxsim(searcher, plugin_index) -> None:  # noqa: F811
    first = _run(searcher.search(TEXT, {"first_stages": [BM25], **PAGE}))
    prf = {"type": "prf", "mode": "multivector", "fb_docs": 3, "window": 20, "clusters": 4,
           "expansion": 3, "beta": 0.5}
    spec = {"first_stages": [BM25], "rescore": [prf, {"type": "maxsim", "window": 20}], **PAGE}
    resp = searcher.search(TEXT, spec)
    assert resp["ext"]["osneural"]["warnings"] == []

    ids = list(plugin_index["docs"])
    pq = plugin_index["bundle"].pq_tokens
    decoded = {d: pq.decode(pq.encode(plugin_index["tokens"][ids.index(d)])) for d, _ in first}
    window = [d for d, _ in first[:20]]
    extra, weights = expansion_tokens([decoded[d] for d in window[:3]],
                                      [decoded[d] for d in window[3:]], 4, 3, 0.5)
    assert len(extra) > 0
    query = np.concatenate([MultiEnc().encode_queries([TEXT])[0], extra])
    want = {d: float(np.max(query @ decoded[d].T, axis=1).sum()) for d in window}
    got = {h["_id"]: h["_score"] for h in resp["hits"]["hits"][: len(window)]}
    assert set(got) == set(window)
    for d in window:
        assert got[d] == pytest.approx(want[d], rel=1e-4, abs=1e-4)
    # without feedback the same MaxSim scores differ: the expansion was used
    plain = searcher.search(TEXT, {"first_stages": [BM25],
                                   "rescore": [{"type": "maxsim", "window": 20}], **PAGE})
    plain_scores = {h["_id"]: h["_score"] for h in plain["hits"]["hits"]}
    assert any(abs(plain_scores[d] - got[d]) > 1e-3 for d in window)


def test_multivector_prf_without_maxsim_is_a_spec_error(searcher) -> None:
    from osneural.plugin.spec import SpecError

    with pytest.raises(SpecError, match="none follows it"):
        searcher.search(TEXT, {"first_stages": [BM25],
                               "rescore": [{"type": "prf", "mode": "multivector"}]})
