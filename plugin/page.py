"""The page of an answer: the pipeline's candidates as the body orders them, and its hits.

After fusion and rescoring the candidates are ranked by score; the `_search` body may then ask
for `min_score`, a `post_filter`, a `sort` on fields, `collapse` and `search_after`
(`osneural.plugin.search_body`). Field values come from one request over the candidates' ids;
the page's `_source`, highlights and fields from one more. Every hit carries the final score and
`_id` as its last sort values, so `search_after` resumes right after it.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from osneural.plugin.search_body import SearchOptions, SortKey
from osneural.plugin.spec import PipelineSpec
from osneural.plugin.stages.request import complete, encode_body, transient

from osneural.errors import SpecError

#: what the candidate request reads of its answer (`filter_path`; the matched-set request's
#: aggregations are returned whole, empty buckets included)
ARRANGE_FILTER = "hits.hits._id,hits.hits.sort,hits.hits.fields,_shards"


def refused(exc: BaseException, what: str) -> BaseException:
    """An OpenSearch 400 for a body option (a bad aggregation, sort or highlight) as the
    caller's 400 naming the option; anything else unchanged."""
    status = getattr(exc, "status_code", None)
    if status == 400:
        info = getattr(exc, "info", None)
        reason = None
        if isinstance(info, dict):
            err = info.get("error") or {}
            root = (err.get("root_cause") or [{}])[0] if isinstance(err, dict) else {}
            reason = (err.get("caused_by") or {}).get("reason") if isinstance(err, dict) else None
            reason = reason or root.get("reason") or (err.get("reason") if isinstance(err, dict) else err)
        return SpecError(f"{what}: OpenSearch refused it: {reason or exc}")
    return exc


@dataclass
class Ranked:
    """One candidate as the answer orders it."""

    doc_id: str
    score: float
    sort_values: list[Any]  # the sort keys' values, then final score and _id
    pos: int  # rank in the pipeline's order: the tie-break of every sort
    collapse_values: list[Any]


def compare_one(a: Any, b: Any, key: SortKey) -> int:
    if a == b:
        return 0
    if a is None or b is None:  # missing values go last (or first), whatever the order
        return (1 if a is None else -1) * (-1 if key.missing_first else 1)
    try:
        less = a < b
    except TypeError:  # mixed types: compare their text, as a stable last resort
        less = str(a) < str(b)
    out = -1 if less else 1
    return -out if key.desc else out


_SCORE_KEY = SortKey("_score", True, False, None)
_ID_KEY = SortKey("_id", False, False, None)


def compare(a: list[Any], b: list[Any], keys: tuple[SortKey, ...]) -> int:
    """Order of two sort-value lists under the body's keys (the tie-breakers excluded)."""
    for x, y, key in zip(a, b, keys, strict=False):
        out = compare_one(x, y, key)
        if out:
            return out
    return 0


def after(ranked: list[Ranked], opts: SearchOptions) -> int:
    """Where a `search_after` page starts: right after the hit whose `_id` it carries (the
    candidates are the same list for the same query), else after the first position whose sort
    values order after it (the document left the candidates)."""
    after = list(opts.search_after or ())
    for i, c in enumerate(ranked):
        if c.doc_id == after[-1]:
            return i + 1
    keys = opts.sort + (_SCORE_KEY, _ID_KEY)
    for i, c in enumerate(ranked):
        if compare(c.sort_values, after, keys) > 0:
            return i
    return len(ranked)


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _highlight(highlight: dict[str, Any], text: str) -> dict[str, Any]:
    """The body's `highlight`, with the query text as its query unless it names one."""
    out = dict(highlight)
    if "highlight_query" not in out:
        fields = out.get("fields") or {}
        names = list(fields) if isinstance(fields, dict) else [
            n for item in fields if isinstance(item, dict) for n in item]
        out["highlight_query"] = {"multi_match": {"query": text, "fields": names,
                                                  "lenient": True}}
    return out


def page_of(ranked: list[Ranked], spec: PipelineSpec, opts: SearchOptions) -> list[Ranked]:
    """The page asked for: `from` / `size`, or the hits after `search_after`."""
    if opts.search_after is not None:
        start = after(ranked, opts)
        return ranked[start : start + spec.size]
    return ranked[spec.from_ : spec.from_ + spec.size]


def arrange(
    client: Any, index: str, candidates: list[tuple[str, float]], opts: SearchOptions,
    timeout_s: float,
) -> list[Ranked]:
    """The candidates as the answer orders them: `min_score` and `post_filter` applied,
    sorted by the body's `sort` (ties keep the pipeline's order), one per `collapse` value.

    Field values come from one request over the candidates' ids, which OpenSearch sorts by
    the body's field keys: its sort values (missing values, `mode`, dates) are OpenSearch's
    own, and are then compared here with the final score and `_id` keys the pipeline adds."""
    cands = [(d, s) for d, s in candidates
             if opts.min_score is None or s >= opts.min_score]
    field_keys = [k for k in opts.sort if k.clause is not None]
    values: dict[str, list[Any]] = {}
    collapsed: dict[str, list[Any]] = {}
    if cands and (opts.post_filter is not None or field_keys or opts.collapse is not None):
        ids = [d for d, _ in cands]
        flt: list[dict[str, Any]] = [{"ids": {"values": ids}}]
        if opts.post_filter is not None:
            flt.append(opts.post_filter)
        body: dict[str, Any] = {"size": len(ids), "query": {"bool": {"filter": flt}},
                                "_source": False, "track_total_hits": False}
        if field_keys:
            body["sort"] = [k.clause for k in field_keys]
        if opts.collapse is not None:
            body["docvalue_fields"] = [opts.collapse]
        try:
            resp = complete(client.search(
                index=index, body=encode_body(body), filter_path=ARRANGE_FILTER,
                request_timeout=max(timeout_s, 1.0)), "sort / post_filter / collapse")
        except Exception as exc:
            raise refused(exc, "sort / post_filter / collapse") from exc
        for hit in (resp.get("hits") or {}).get("hits", []):
            values[hit["_id"]] = list(hit.get("sort") or [])
            if opts.collapse is not None:
                collapsed[hit["_id"]] = (hit.get("fields") or {}).get(opts.collapse) or [None]
        cands = [(d, s) for d, s in cands if d in values]
    ranked = []
    for pos, (doc_id, score) in enumerate(cands):
        got = iter(values.get(doc_id, []))
        keys = [score if k.name == "_score" else doc_id if k.name == "_id" else next(got, None)
                for k in opts.sort]
        ranked.append(Ranked(doc_id, score, keys + [score, doc_id], pos,
                              collapsed.get(doc_id, [None])))
    if opts.sort:
        ranked.sort(key=functools.cmp_to_key(
            lambda a, b: compare(a.sort_values, b.sort_values, opts.sort) or a.pos - b.pos))
    if opts.collapse is not None:
        seen: set[Any] = set()
        kept = []
        for c in ranked:
            key = _hashable(c.collapse_values[0] if c.collapse_values else None)
            if key not in seen:
                seen.add(key)
                kept.append(c)
        ranked = kept
    return ranked


def fetch(
    client: Any, index: str, text: str, ids: list[str], spec: PipelineSpec, opts: SearchOptions,
    timeout_s: float, *, hidden: Sequence[str] = (),
) -> dict[str, dict[str, Any]]:
    """`_source`, highlights, docvalue / stored fields and versions of the page's hits, in
    one request (the highlight query is the query text unless the body names one).

    `hidden` (osneural's representation fields) is left out of `_source` when neither the body
    nor the spec names `_source`: an app's page wants its documents, not their 384 floats, 2 KB
    of FDE, 256 SPLADE weights and codes (about 20 KB per hit in the default layout, rebuilt by
    the node from doc values and vectors for every hit). Any `_source` the request gives, `true`
    included, is OpenSearch's."""
    source = spec.source if opts.source is None else opts.source
    if opts.source is None and "source" not in spec.model_fields_set and source is True and hidden:
        source = {"excludes": list(hidden)}
    # `_none_` drops `_id` from OpenSearch's hits too; here it means "no _source, no stored
    # fields", and the page's ids are known anyway
    no_stored = opts.stored_fields in ("_none_", ["_none_"])
    stored = None if no_stored else opts.stored_fields
    source = False if no_stored else source
    wants_more = (opts.highlight is not None or opts.docvalue_fields
                  or stored is not None or opts.version or opts.seq_no_primary_term)
    if not ids or (source is False and not wants_more):
        return {}
    body: dict[str, Any] = {
        "size": len(ids),
        "query": {"ids": {"values": ids}},
        "_source": source,
        "track_total_hits": False,
    }
    if opts.highlight is not None:
        body["highlight"] = _highlight(opts.highlight, text)
    if opts.docvalue_fields:
        body["docvalue_fields"] = opts.docvalue_fields
    if stored is not None:
        body["stored_fields"] = stored
    if opts.version:
        body["version"] = True
    if opts.seq_no_primary_term:
        body["seq_no_primary_term"] = True

    def once() -> dict[str, Any]:
        return complete(client.search(
            index=index, body=body, request_timeout=max(timeout_s, 1.0)), "_source fetch")

    try:
        try:
            resp = once()
        except Exception as exc:
            if not transient(exc):
                raise
            resp = once()
    except Exception as exc:
        raise refused(exc, "_source / highlight / docvalue_fields / stored_fields") from exc
    return {hit["_id"]: hit for hit in resp["hits"]["hits"]}
