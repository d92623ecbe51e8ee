"""Sending a stage's request to OpenSearch and reading its answer into a candidate list.

Shared by every first stage (and by the rescoring and paging requests, which use `complete` and
`encode_body`): what differs between stages is only their query body, built in their own module.
"""

from __future__ import annotations

from typing import Any

import orjson

from osneural.errors import PartialResultsError

__all__ = ["STAGE_FILTER", "PartialResultsError", "candidates", "complete", "encode_body",
           "run_query", "search_body", "send", "transient", "with_filter"]


def transient(exc: BaseException) -> bool:
    """Errors of a node dying or rejoining, worth one retry."""
    from opensearchpy.exceptions import ConnectionError as ClientConnectionError
    from opensearchpy.exceptions import TransportError

    if isinstance(exc, (PartialResultsError, ClientConnectionError)):
        return True
    status = getattr(exc, "status_code", None)
    return isinstance(exc, TransportError) and isinstance(status, int) and status >= 500


def with_filter(query: dict[str, Any], filter_clause: dict[str, Any] | None) -> dict[str, Any]:
    """`query` under the spec's filter as a non-scoring `bool.filter` (lexical stages)."""
    if filter_clause is None:
        return query
    return {"bool": {"must": [query], "filter": [filter_clause]}}


def search_body(query: dict[str, Any], k: int) -> dict[str, Any]:
    """Ids and scores only: _source is fetched once, for the final page."""
    return {"size": k, "query": query, "_source": False, "track_total_hits": False}


#: what a first stage reads of a search response (an empty result drops `hits` altogether)
STAGE_FILTER = "hits.hits._id,hits.hits._score,_shards"


def complete(resp: dict[str, Any], what: str) -> dict[str, Any]:
    """`resp`, unless a shard failed; then `PartialResultsError` naming the request part."""
    shards = resp.get("_shards") or {}
    if shards.get("failed"):
        reasons = {str(((f.get("reason") or {}).get("type")) or f.get("reason"))
                   for f in shards.get("failures") or []}
        raise PartialResultsError(what, shards["failed"], shards.get("total"), sorted(reasons))
    return resp


def send(
    client: Any, index: str, body: dict[str, Any], timeout_s: float | None = None
) -> dict[str, Any]:
    """One stage's search response, cut to ids, scores and the shard counts (`filter_path`).

    A stage never reads anything else, and parsing 100 hits' `_index` and `_score` metadata in
    Python costs more than the node's work for a small k-NN query."""
    params: dict[str, Any] = {"filter_path": STAGE_FILTER}
    if timeout_s is not None:
        params["request_timeout"] = max(timeout_s, 0.001)
    return complete(client.search(index=index, body=encode_body(body), **params), "search")


def run_query(
    client: Any, index: str, body: dict[str, Any], timeout_s: float | None = None
) -> list[tuple[str, float]]:
    """One stage's candidates, best first (`send`, then `candidates`)."""
    return candidates(send(client, index, body, timeout_s))


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
