"""The everyday `_search` body options of a neural search, parsed once into `SearchOptions`.

One place knows each option, what it means over a pipeline, and why it is refused when it is:
`Searcher.search(text, spec, body=...)` and the HTTP service's `ext.osneural` requests both parse
the body here, so the Python API and the drop-in endpoint accept the same bodies with the same
errors. Every refusal is a `SpecError` (answered 400) that names the field.

Semantics beside native `hybrid` (docs/APPS.md has the table):

* the **matched set** is the union of the first stages' own queries under the filter (BM25: every
  document matching a query term; a kNN stage: its top `k`, the set native hybrid's `knn`
  sub-query matches too; sparse and binary: every document sharing a query term). Aggregations
  and `track_total_hits` are computed over it by one `size: 0` request sent beside the first
  stages.
* the **candidates** are the pipeline's final ranking (fused, rescored); `sort`, `collapse`,
  `min_score`, `post_filter`, `search_after` and `from`/`size` act on them, so a pipeline pages
  as deep as its first stages reach (`paging_depth`).
* every hit carries `sort` values: the sort keys' values when a sort is given, then the final
  score and `_id` as tie-breakers, so `search_after` with a hit's `sort` resumes right after it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from osneural.plugin.spec import PipelineSpec, SpecError

#: body fields a neural search reads; anything else is refused with the reason below
SUPPORTED = frozenset({
    "ext", "query", "size", "from", "_source", "aggs", "aggregations", "highlight", "sort",
    "search_after", "post_filter", "collapse", "min_score", "track_total_hits",
    "docvalue_fields", "stored_fields", "timeout", "explain", "track_scores", "version",
    "seq_no_primary_term",
})

#: why the remaining `_search` body fields are refused with `ext.osneural`
REFUSED = {
    "suggest": "suggesters do not depend on the ranking; send them as a plain _search "
               "(or an _msearch item) beside the neural one",
    "rescore": "OpenSearch's rescore would re-rank a page the pipeline already ranked; put a "
               "rescoring stage in the spec instead",
    "knn": "the pipeline's first stages run kNN; name a dense stage in the spec",
    "script_fields": "script fields are computed per shard hit, which a pipeline page is not; "
                     "use docvalue_fields or _source",
    "indices_boost": "a neural search reads one index",
    "terminate_after": "stopping shards early would change the matched set silently",
    "profile": "profiles describe OpenSearch's queries, not the pipeline; use "
               "ext.osneural.explain and ext.osneural.timings_ms",
    "pit": "point-in-time contexts are not used by pipelines; page with search_after",
    "slice": "sliced scrolls are not supported; page with search_after",
    "fields": "use docvalue_fields or _source",
    "stats": "search groups are not supported with ext.osneural",
    "search_pipeline": "search pipelines run inside OpenSearch's own search; the spec is the "
                       "pipeline here",
    "runtime_mappings": "runtime fields are scripts, refused with ext.osneural",
}

#: field types whose doc values can be sorted, collapsed and aggregated on
SORTABLE_TYPES = frozenset({
    "keyword", "constant_keyword", "long", "integer", "short", "byte", "double", "float",
    "half_float", "scaled_float", "unsigned_long", "date", "date_nanos", "boolean", "ip",
    "version", "wildcard",
})
COLLAPSIBLE_TYPES = frozenset({
    "keyword", "constant_keyword", "long", "integer", "short", "byte", "double", "float",
    "half_float", "scaled_float", "unsigned_long", "date", "date_nanos", "ip",
})
#: aggregation types whose `field` is checked against the mapping (every other one is passed
#: to OpenSearch as written; its own errors answer 400 as well)
_NOT_AGGREGATABLE = frozenset({"text", "match_only_text", "binary", "knn_vector",
                               "rank_features", "rank_feature", "object", "nested"})

_TIME = re.compile(r"^\s*(\d+)\s*(nanos|micros|ms|s|m|h|d)?\s*$")
_TIME_MS = {"nanos": 1e-6, "micros": 1e-3, "ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000,
            "d": 86_400_000, None: 1}


@dataclass(frozen=True)
class SortKey:
    """One sort key: `_score` (the final score), `_id`, or anything OpenSearch sorts by."""

    name: str
    desc: bool
    missing_first: bool
    clause: Any  # what OpenSearch receives (None for _score / _id, sorted here)


@dataclass(frozen=True)
class SearchOptions:
    """A neural search body's options, checked; None means "the spec's own value"."""

    size: int | None = None
    from_: int | None = None
    source: Any = None
    filter: dict[str, Any] | None = None
    aggs: dict[str, Any] | None = None
    highlight: dict[str, Any] | None = None
    sort: tuple[SortKey, ...] = ()
    search_after: tuple[Any, ...] | None = None
    post_filter: dict[str, Any] | None = None
    collapse: str | None = None
    min_score: float | None = None
    track_total_hits: bool | int | None = None
    docvalue_fields: list[Any] | None = None
    stored_fields: Any = None
    timeout_ms: int | None = None
    explain: bool | None = None
    version: bool = False
    seq_no_primary_term: bool = False
    raw_sort: list[Any] = field(default_factory=list)

    @property
    def sort_length(self) -> int:
        """How many values each hit's `sort` holds: the keys, then final score and `_id`."""
        return len(self.sort) + 2

    @property
    def needs_matched_set(self) -> bool:
        """Whether the `size: 0` request over the matched set is sent."""
        return self.aggs is not None or (
            self.track_total_hits is not None and self.track_total_hits is not False)

    def apply(self, spec: PipelineSpec) -> PipelineSpec:
        """The spec with the body's size, from, filter, explain and timeout in place of its own."""
        if (self.size is None and self.from_ is None and self.explain is None
                and self.timeout_ms is None and self.filter is None
                and not isinstance(self.source, (bool, list))):
            return spec  # nothing to override: no second validation per query
        data = spec.to_dict()
        for key, value in (("size", self.size), ("from", self.from_), ("explain", self.explain),
                           ("timeout_ms", self.timeout_ms)):
            if value is not None:
                data[key] = value
        if isinstance(self.source, (bool, list)):
            data["_source"] = self.source
        elif "source" not in spec.model_fields_set:
            data.pop("_source", None)  # still unset: the page leaves out representations
        if self.filter is not None:
            data["filter"] = (self.filter if "filter" not in data
                              else {"bool": {"filter": [data["filter"], self.filter]}})
        from osneural.plugin.spec import parse_spec

        return parse_spec(data)


def _int(body: dict[str, Any], key: str, low: int, high: int) -> int | None:
    if key not in body:
        return None
    value = body[key]
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise SpecError(f"{key}: must be an integer between {low} and {high}, not {value!r}")
    return value


def _clause(body: dict[str, Any], key: str) -> dict[str, Any] | None:
    if key not in body:
        return None
    value = body[key]
    if not isinstance(value, dict) or len(value) != 1:
        raise SpecError(f"{key}: must be one query clause object, e.g. {{\"term\": {{...}}}}")
    return value


def parse_timeout(value: Any, where: str = "timeout") -> int:
    """`"500ms"`, `"2s"`, `1500` -> milliseconds (at least 1)."""
    if isinstance(value, bool):
        raise SpecError(f"{where}: must be a time value such as \"500ms\" or \"2s\"")
    match = _TIME.match(str(value)) if isinstance(value, (int, str)) else None
    if not match:
        raise SpecError(f"{where}: must be a time value such as \"500ms\" or \"2s\", not {value!r}")
    ms = int(int(match.group(1)) * _TIME_MS[match.group(2)])
    if not 1 <= ms <= 600_000:
        raise SpecError(f"{where}: must be between 1ms and 10m")
    return ms


def _sort_keys(raw: Any) -> tuple[list[Any], tuple[SortKey, ...]]:
    items = raw if isinstance(raw, list) else [raw]
    keys: list[SortKey] = []
    for i, item in enumerate(items):
        where = f"sort[{i}]"
        if isinstance(item, str):
            name, opts = item, {}
        elif isinstance(item, dict) and len(item) == 1:
            name, opts = next(iter(item.items()))
            if isinstance(opts, str):
                opts = {"order": opts}
            if not isinstance(opts, dict):
                raise SpecError(f"{where}.{name}: must be \"asc\", \"desc\" or an object")
        else:
            raise SpecError(f"{where}: must be a field name or {{field: options}}")
        order = opts.get("order", "desc" if name == "_score" else "asc")
        if order not in ("asc", "desc"):
            raise SpecError(f"{where}.{name}.order: must be asc or desc, not {order!r}")
        if name == "_doc":
            raise SpecError(f"{where}: _doc order is the index's storage order, which a "
                            "pipeline's candidates do not have; sort by a field, _score or _id")
        missing = opts.get("missing", "_last")
        clause = None if name in ("_score", "_id") else {name: {**opts, "order": order}}
        keys.append(SortKey(name, order == "desc", missing == "_first", clause))
    return items, tuple(keys)


def _agg_fields(aggs: Any, where: str) -> list[tuple[str, str]]:
    """(json path, field) of every aggregation that names a `field`, sub-aggregations included."""
    out: list[tuple[str, str]] = []
    stack = [(aggs, where)]
    while stack:
        node, path = stack.pop()
        if not isinstance(node, dict):
            raise SpecError(f"{path}: must be an object of named aggregations")
        for name, agg in node.items():
            sub = f"{path}.{name}"
            if not isinstance(agg, dict):
                raise SpecError(f"{sub}: must be an aggregation object")
            for kind, params in agg.items():
                if kind in ("aggs", "aggregations"):
                    stack.append((params, f"{sub}.{kind}"))
                elif kind != "meta" and isinstance(params, dict) and isinstance(params.get("field"), str):
                    out.append((f"{sub}.{kind}.field", params["field"]))
    return out


def parse_options(body: dict[str, Any] | None) -> SearchOptions:
    """`body` (a `_search` body, `ext` ignored) as checked options; `SpecError` names the field."""
    body = dict(body or {})
    for key in body:
        if key not in SUPPORTED:
            reason = REFUSED.get(key) or "it is not a _search body field osneural knows"
            raise SpecError(f"search body field [{key}] is not supported with ext.osneural: {reason}")
    if "aggs" in body and "aggregations" in body:
        raise SpecError("aggs and aggregations: give one of them, not both")
    aggs = body.get("aggs", body.get("aggregations"))
    if aggs is not None:
        _agg_fields(aggs, "aggs" if "aggs" in body else "aggregations")
    source = body.get("_source")
    if source is not None and not isinstance(source, (bool, str, list, dict)):
        raise SpecError("_source: must be true, false, a field pattern, a list or "
                        "{includes, excludes}")
    if isinstance(source, dict) and set(source) - {"includes", "excludes", "include", "exclude"}:
        raise SpecError(f"_source: unknown key(s) {sorted(set(source) - {'includes', 'excludes'})}")
    highlight = body.get("highlight")
    if highlight is not None and (not isinstance(highlight, dict) or not highlight.get("fields")):
        raise SpecError("highlight: must be an object with \"fields\"")
    raw_sort, sort = ([], ()) if body.get("sort") in (None, []) else _sort_keys(body["sort"])
    search_after = body.get("search_after")
    if search_after is not None:
        if not isinstance(search_after, list):
            raise SpecError("search_after: must be the `sort` array of the previous page's last hit")
        if len(search_after) != len(sort) + 2:
            raise SpecError(f"search_after: {len(search_after)} values, but hits of this request "
                            f"carry {len(sort) + 2} sort values (the sort keys, then the final "
                            "score and _id); pass a hit's `sort` array unchanged")
        if not isinstance(search_after[-1], str) or not isinstance(search_after[-2], (int, float)):
            raise SpecError("search_after: its last two values must be a hit's final score (a "
                            "number) and _id (a string)")
        if body.get("from", 0) not in (0, -1):
            raise SpecError("from: must be 0 with search_after (the page starts after the hit)")
    collapse = body.get("collapse")
    collapse_field = None
    if collapse is not None:
        if not isinstance(collapse, dict) or not isinstance(collapse.get("field"), str):
            raise SpecError("collapse.field: must name a keyword or numeric field")
        extra = set(collapse) - {"field", "max_concurrent_group_searches"}
        if extra:
            raise SpecError(f"collapse: {sorted(extra)} not supported with ext.osneural (only "
                            "the best hit per value is returned)")
        collapse_field = collapse["field"]
    min_score = body.get("min_score")
    if min_score is not None and (isinstance(min_score, bool)
                                  or not isinstance(min_score, (int, float))):
        raise SpecError("min_score: must be a number (compared with the final score)")
    tth = body.get("track_total_hits")
    if tth is not None and not isinstance(tth, (bool, int)):
        raise SpecError("track_total_hits: must be true, false or an integer")
    if isinstance(tth, int) and not isinstance(tth, bool) and tth < 0 and tth != -1:
        raise SpecError("track_total_hits: must be >= 0")
    dvf = body.get("docvalue_fields")
    if dvf is not None and not isinstance(dvf, list):
        raise SpecError("docvalue_fields: must be a list of fields")
    explain = body.get("explain")
    if explain is not None and not isinstance(explain, bool):
        raise SpecError("explain: must be true or false")
    return SearchOptions(
        size=_int(body, "size", 0, 10_000),
        from_=None if search_after is not None else _int(body, "from", 0, 10_000),
        source=source,
        filter=_clause(body, "query"),
        aggs=aggs,
        highlight=highlight,
        sort=sort,
        raw_sort=raw_sort,
        search_after=None if search_after is None else tuple(search_after),
        post_filter=_clause(body, "post_filter"),
        collapse=collapse_field,
        min_score=None if min_score is None else float(min_score),
        track_total_hits=tth,
        docvalue_fields=dvf,
        stored_fields=body.get("stored_fields"),
        timeout_ms=None if "timeout" not in body else parse_timeout(body["timeout"]),
        explain=explain,
        version=bool(body.get("version")),
        seq_no_primary_term=bool(body.get("seq_no_primary_term")),
    )


def check_fields(opts: SearchOptions, fields: dict[str, dict[str, Any]], index: str) -> None:
    """Sort, collapse and aggregation fields exist in `index` and can do what they are asked;
    OpenSearch would otherwise answer an unknown field with silently empty buckets."""

    def kind(name: str, where: str) -> str:
        spec = fields.get(name)
        if spec is None and "." in name:  # a multi-field such as title.keyword
            parent, _, sub = name.rpartition(".")
            spec = ((fields.get(parent) or {}).get("fields") or {}).get(sub)
        if spec is None:
            raise SpecError(f"{where}: index [{index}] has no field [{name}]")
        return spec.get("type", "object")

    for i, key in enumerate(opts.sort):
        if key.clause is None or key.name.startswith("_"):
            continue  # _score / _id sorted here; _geo_distance and the like by OpenSearch
        opts_of = key.clause[key.name]
        if "unmapped_type" in opts_of and key.name not in fields:
            continue
        t = kind(key.name, f"sort[{i}]")
        if t not in SORTABLE_TYPES:
            raise SpecError(f"sort[{i}]: field [{key.name}] is of type {t}, which cannot be "
                            "sorted on; sort by a keyword, numeric, date or boolean field")
    if opts.collapse is not None:
        t = kind(opts.collapse, "collapse.field")
        if t not in COLLAPSIBLE_TYPES:
            raise SpecError(f"collapse.field: field [{opts.collapse}] is of type {t}; collapse "
                            "needs a keyword or numeric field")
    if opts.aggs is not None:
        for where, name in _agg_fields(opts.aggs, "aggs"):
            if "*" in name:
                continue
            t = kind(name, where)
            if t in _NOT_AGGREGATABLE:
                raise SpecError(f"{where}: field [{name}] is of type {t}, which cannot be "
                                "aggregated; use a keyword or numeric field")


def paging_depth(spec: PipelineSpec) -> int:
    """How deep a pipeline can page: its candidates are at most the union of its first stages'
    top k, plus what rescoring stages that bring in documents may add (a dense `prf` stage's k)."""
    from osneural.plugin.rescoring import RESCORERS

    depth = sum(s.k for s in spec.first_stages)
    depth += sum(RESCORERS.of(r).added_candidates(r) for r in spec.rescore)
    return depth
