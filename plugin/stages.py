"""First stages as OpenSearch query bodies, and running one of them into a candidate list.

Body builders are pure functions of the stage spec and the already encoded query, so they are
unit-testable without a node and the same body is sent by every interface. The filter clause goes
where it keeps each stage's `k` meaningful: inside `knn.filter` for vector stages (Lucene's
efficient filtering returns k filtered neighbours instead of post-filtering them away) and in a
`bool.filter` (non-scoring) for the lexical ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import orjson
from osneural.plugin.spec import BinaryStage, BM25Stage, DenseStage, FDEStage, SparseStage


def _with_filter(query: dict[str, Any], filter_clause: dict[str, Any] | None) -> dict[str, Any]:
    if filter_clause is None:
        return query
    return {"bool": {"must": [query], "filter": [filter_clause]}}


def _vector(vec: Any, name: str) -> list[float]:
    arr = np.asarray(vec, dtype=np.float32)
    if arr.ndim != 1 or arr.size == 0 or not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: query vector must be a finite 1-D array, got shape {arr.shape}")
    return arr.tolist()


def bm25_query(stage: BM25Stage, text: str, filter_clause: dict[str, Any] | None = None) -> dict:
    mm = {"multi_match": {"query": text, "fields": list(stage.fields), "type": "best_fields"}}
    return _with_filter(mm, filter_clause)


def _knn_query(
    field: str, vector: Any, k: int, num_candidates: int | None, filter_clause: dict | None
) -> dict:
    knn: dict[str, Any] = {"vector": _vector(vector, field), "k": k}
    if num_candidates is not None:
        # The knn query has no num_candidates; the HNSW beam width is ef_search (k-NN >= 2.16).
        knn["method_parameters"] = {"ef_search": num_candidates}
    if filter_clause is not None:
        knn["filter"] = filter_clause
    return {"knn": {field: knn}}


def dense_query(stage: DenseStage, vector: Any, filter_clause: dict | None = None) -> dict:
    return _knn_query(stage.field, vector, stage.k, stage.num_candidates, filter_clause)


def fde_query(stage: FDEStage, vector: Any, filter_clause: dict | None = None) -> dict:
    return _knn_query(stage.field, vector, stage.k, stage.num_candidates, filter_clause)


def sparse_query(
    stage: SparseStage, weights: Mapping[str, float], filter_clause: dict | None = None
) -> dict:
    """Dot product of the query's and the document's sparse vectors as rank_feature clauses.

    `rank_feature` with the `linear` function scores `boost * doc_weight`, so a should-sum over the
    query's terms with boost = query weight is the sparse dot product (up to the ~9 significant
    bits OpenSearch keeps for a feature value). Field names go through the same sanitizer the
    ingestion used, so a token that needed escaping still meets its document feature.
    """
    from osneural.ingest.documents import sparse_feature_name

    merged: dict[str, float] = {}
    for token, weight in weights.items():
        w = float(weight)
        if not np.isfinite(w) or w <= 0:
            continue
        name = sparse_feature_name(token)
        merged[name] = merged.get(name, 0.0) + w
    top = sorted(merged.items(), key=lambda kv: (-kv[1], kv[0]))[: stage.max_terms]
    if not top:
        raise ValueError("sparse: the query has no positive-weight terms")
    should = [
        {"rank_feature": {"field": f"{stage.field}.{name}", "linear": {}, "boost": w}}
        for name, w in top
    ]
    query: dict[str, Any] = {"bool": {"should": should, "minimum_should_match": 1}}
    if filter_clause is not None:
        query["bool"]["filter"] = [filter_clause]
    return query


def binary_query(
    stage: BinaryStage, terms: list[str], filter_clause: dict | None = None,
    exact: set[str] | frozenset[str] = frozenset(),
) -> dict:
    """Per substring: `radius + 1` when it equals the query's (terms in `exact`), 1 when it is
    within `radius` flips, 0 otherwise; summed over substrings.

    A document holds one term per substring, and all expansions of one substring are distinct
    values, so each substring contributes once. Weighting exact matches above near ones makes the
    sum a finer Hamming proximity (on SciFact it lifts Recall@100 of the stage), which the
    `hamming` rescoring then makes exact.
    """
    if not terms:
        raise ValueError("binary: no query terms")
    should = [
        {"constant_score": {"filter": {"term": {stage.field: t}},
                            "boost": float(stage.radius + 1) if t in exact else 1.0}}
        for t in dict.fromkeys(terms)
    ]
    query: dict[str, Any] = {"bool": {"should": should, "minimum_should_match": 1}}
    if filter_clause is not None:
        query["bool"]["filter"] = [filter_clause]
    return query


def search_body(query: dict[str, Any], k: int) -> dict[str, Any]:
    """Ids and scores only: _source is fetched once, for the final page."""
    return {"size": k, "query": query, "_source": False, "track_total_hits": False}


#: what a first stage reads of a search response (an empty result drops `hits` altogether)
STAGE_FILTER = "hits.hits._id,hits.hits._score,_shards"


class PartialResultsError(RuntimeError):
    """Some shards did not answer (a node died mid-request): the hits are incomplete.

    OpenSearch answers 200 with `_shards.failed > 0` and whatever the other shards found, which
    would rank silently wrong; the `Searcher` retries the request once, else skips the stage."""


def complete(resp: dict[str, Any], what: str) -> dict[str, Any]:
    """`resp`, unless a shard failed; then `PartialResultsError` naming the request part."""
    shards = resp.get("_shards") or {}
    if shards.get("failed"):
        reasons = {str(((f.get("reason") or {}).get("type")) or f.get("reason"))
                   for f in shards.get("failures") or []}
        raise PartialResultsError(
            f"{what}: {shards['failed']} of {shards.get('total')} shards failed "
            f"({', '.join(sorted(reasons)) or 'no reason given'})")
    return resp


def run_query(
    client: Any, index: str, body: dict[str, Any], timeout_s: float | None = None
) -> list[tuple[str, float]]:
    """One stage's candidates, best first.

    The response is cut to ids, scores and the shard counts (`filter_path`): a stage never reads
    anything else, and parsing 100 hits' `_index` and `_score` metadata in Python costs more than
    the node's work for a small k-NN query."""
    params: dict[str, Any] = {"filter_path": STAGE_FILTER}
    if timeout_s is not None:
        params["request_timeout"] = max(timeout_s, 0.001)
    resp = complete(client.search(index=index, body=encode_body(body), **params), "search")
    return candidates(resp)


def encode_body(body: dict[str, Any]) -> bytes | dict[str, Any]:
    """The request body as JSON bytes, which opensearch-py sends as they are.

    Its own serializer (the standard `json` module) takes 177 us for a 384-float knn body, with
    the GIL held, where orjson takes 8 us: at 8 concurrent queries in one process that is time
    every other query waits for. A body orjson refuses (a non-string key, an integer past 64
    bits) goes as the dict, and so does one holding `null`: orjson writes NaN and Infinity as
    `null`, which in a range filter means "unbounded" and would widen it silently, where the
    standard serializer sends NaN and OpenSearch refuses the request."""
    try:
        out = orjson.dumps(body)
    except TypeError:
        return body
    return body if b"null" in out else out


def candidates(resp: dict[str, Any]) -> list[tuple[str, float]]:
    """(id, score) best first, equal scores ordered by id.

    OpenSearch breaks a score tie by shard and Lucene doc id, and the doc id of one document
    differs between a primary and its replica: two processes (or one query before and after a node
    loss) that read different copies would rank identical documents in a different order, and the
    rank-based fusion after this would turn that into different scores. Ordering ties by `_id`
    makes the answer independent of the copy that served it."""
    hits = [(hit["_id"], float(hit["_score"] or 0.0))
            for hit in (resp.get("hits") or {}).get("hits", [])]
    hits.sort(key=lambda h: (-h[1], h[0]))
    return hits
