"""Sending a stage's request to OpenSearch and reading its answer into a candidate list.

Shared by every first stage (and by the rescoring and paging requests, which use `complete` and
`encode_body`): what differs between stages is only their query body, built in their own module.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import orjson
from osneural.mappings import ID_FIELD

from osneural.errors import PartialResultsError

__all__ = ["ID_FIELD", "STAGE_FILTER", "MissingIdError", "PartialResultsError", "candidates",
           "complete", "encode_body", "hit_id", "ids_from", "run_query", "search_body", "send",
           "transient", "with_filter", "with_ids"]


class MissingIdError(LookupError):
    """A hit has no value in the id field (a document written before the index had it, or under
    an auto-generated id), or one that is not the id asked for: the request is repeated
    reading `_id`."""


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
#: the same, ids read from the id field's doc values (`with_ids`)
STAGE_FILTER_IDS = "hits.hits.fields,hits.hits._score,_shards"


def with_ids(body: dict[str, Any], id_field: str | None) -> dict[str, Any]:
    """`body` reading its hits' ids from `id_field`'s doc values, with no stored field (no
    `_id`, no `_source`) loaded per hit; `body` itself when `id_field` is None.

    Reading 100 hits' `_id` makes OpenSearch decompress the stored fields block of each hit (the
    whole `_source` around it): 4.2 ms of the node's time for a 100-hit k-NN request on SciFact
    documents, 1.1 ms with the ids from `ID_FIELD`'s doc values and stored fields off (checked
    on OpenSearch 3.6). `_id` itself has no doc values, and its field data would hold every id
    of the index in the node's heap."""
    if id_field is None:
        return body
    out = {k: v for k, v in body.items() if k != "_source"}
    out["stored_fields"] = "_none_"
    out["docvalue_fields"] = [id_field, *(f for f in body.get("docvalue_fields", ())
                                          if f != id_field)]
    return out


T = TypeVar("T")


def ids_from(read: Callable[[str | None], T], id_field: str | None) -> T:
    """`read(id_field)`: a request whose hits' ids come from `id_field`'s doc values; should a
    hit lack one (`MissingIdError`), `read(None)` again, reading `_id`, so that no document
    is dropped or misnamed."""
    if id_field is not None:
        try:
            return read(id_field)
        except MissingIdError:
            pass
    return read(None)


def hit_id(hit: dict[str, Any], id_field: str | None) -> str:
    """A hit's document id: `_id`, or the id field's doc value (`MissingIdError` without one)."""
    if id_field is None:
        return hit["_id"]
    values = (hit.get("fields") or {}).get(id_field)
    if not values:
        raise MissingIdError(f"a hit has no {id_field!r} value")
    return values[0]


def complete(resp: dict[str, Any], what: str) -> dict[str, Any]:
    """`resp`, unless a shard failed; then `PartialResultsError` naming the request part."""
    shards = resp.get("_shards") or {}
    if shards.get("failed"):
        reasons = {str(((f.get("reason") or {}).get("type")) or f.get("reason"))
                   for f in shards.get("failures") or []}
        raise PartialResultsError(what, shards["failed"], shards.get("total"), sorted(reasons))
    return resp


def send(
    client: Any, index: str, body: dict[str, Any], timeout_s: float | None = None,
    id_field: str | None = None,
) -> dict[str, Any]:
    """One stage's search response, cut to ids, scores and the shard counts (`filter_path`),
    the ids read from `id_field` when given (`with_ids`).

    A stage never reads anything else, and parsing 100 hits' `_index` and `_score` metadata in
    Python costs more than the node's work for a small k-NN query."""
    params: dict[str, Any] = {"filter_path": STAGE_FILTER if id_field is None else STAGE_FILTER_IDS}
    if timeout_s is not None:
        params["request_timeout"] = max(timeout_s, 0.001)
    return complete(client.search(index=index, body=encode_body(with_ids(body, id_field)),
                                  **params), "search")


def run_query(
    client: Any, index: str, body: dict[str, Any], timeout_s: float | None = None,
    id_field: str | None = None,
) -> list[tuple[str, float]]:
    """One stage's candidates, best first (`send`, then `candidates`).

    With `id_field`, the ids come from its doc values (`ids_from`)."""
    return ids_from(lambda field: candidates(send(client, index, body, timeout_s, field), field),
                    id_field)


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


def candidates(resp: dict[str, Any], id_field: str | None = None) -> list[tuple[str, float]]:
    """(id, score) best first, equal scores ordered by id.

    OpenSearch breaks a score tie by shard and Lucene doc id, and the doc id of one document
    differs between a primary and its replica: two processes (or one query before and after a node
    loss) that read different copies would rank identical documents in a different order, and the
    rank-based fusion after this would turn that into different scores. Ordering ties by `_id`
    makes the answer independent of the copy that served it."""
    hits = [(hit_id(hit, id_field), float(hit["_score"] or 0.0))
            for hit in (resp.get("hits") or {}).get("hits", [])]
    hits.sort(key=lambda h: (-h[1], h[0]))
    return hits
