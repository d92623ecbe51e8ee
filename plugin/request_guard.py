"""What `osneural serve` checks before any byte of a caller's request leaves the process.

The service sits in front of a cluster that trusts it, so everything a caller controls is hostile
until checked here: the index expression in the path, the URL parameters and the JSON body. The
rules, and why each exists:

* **Bodies** are decoded as strict UTF-8, scanned for nesting depth *before* `json.loads` (a body
  of 100,000 `[` would otherwise hit Python's recursion limit inside the parser), parsed with
  NaN/Infinity/overflowing numbers and duplicate keys refused (OpenSearch refuses duplicates too;
  two parsers that disagree on which duplicate wins would let a body pass our checks and mean
  something else upstream), and lone surrogates refused. The service forwards the body *it
  checked*, re-serialized, never the caller's raw bytes.
* **Index expressions**: with an allow-list, a path names exactly one plain index or alias: no
  list (`,`), wildcard (`*`, `?`), remote cluster (`:`), date math (`<`), exclusion (`-`), `_all`,
  `%` (a percent-escape decoded twice -- once here, once by OpenSearch -- smuggled `,*` past the
  old check) or other characters OpenSearch forbids in names. The name must match a pattern, and
  what it *resolves to* (an alias's indices, a data stream's backing indices, via
  `_resolve/index`) must match too; the upstream path is then built from the checked name,
  percent-encoded again, never copied from the caller's path.
* **Clauses that read other indices** (terms lookup, `more_like_this` `like` documents,
  `geo_shape` `indexed_shape`, `percolate` with `index`) are checked against the allow-list like
  a path; **scripts** (script queries, `script_score`, `script_fields`, `runtime_mappings`,
  scripted aggregations, `_script` sorts, inline search pipelines) and **`profile`** are refused
  unless the operator opted in; `wrapper` queries are always refused, as their base64 body would
  hide any clause from this walker. Each refusal is a 403 naming the clause by its JSON path.
* **URL parameters** are an allow-list per route: `source` (a query in the URL, bypassing the
  body checks) and `scroll` (search contexts no route here could ever clear) are refused,
  `search_pipeline` needs `--allow-scripts`, `error_trace` (Java stack traces) `--allow-profile`.
* **Work per request** is capped (first stages, rescoring stages, query text length), so one
  request cannot turn into thousands of OpenSearch searches.

Everything raises `GuardError(status, type, reason)`; the server answers it in OpenSearch's error
shape.
"""

from __future__ import annotations

import fnmatch
import json
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from osneural.errors import GuardError


@dataclass(frozen=True)
class Limits:
    """Per-request bounds. Defaults fit every built-in spec with room to spare."""

    max_first_stages: int = 8
    max_rescore_stages: int = 8
    max_query_chars: int = 4096
    max_json_depth: int = 64
    # Neural searches running at once. They share one stage pool of
    # max_concurrent * (max_first_stages + max_rescore_stages) threads, so no request waits for
    # threads another request took and the server never holds more.
    max_concurrent: int = 8
    # How long a request may wait for a free slot before it is answered 503.
    queue_timeout_s: float = 10.0
    # `_msearch`: items per request, and pipeline stages (first + rescoring) over all its
    # neural items -- eight default `hybrid` searches' worth.
    max_msearch_items: int = 16
    max_msearch_stages: int = 32


@dataclass(frozen=True)
class Policy:
    """What callers may reach and run: the operator's choices from `osneural serve`'s flags."""

    allow_index: tuple[str, ...] | None = None
    allow_scripts: bool = False
    allow_profile: bool = False

    def name_allowed(self, name: str) -> bool:
        if not self.allow_index:
            return True
        return any(fnmatch.fnmatchcase(name, p) for p in self.allow_index)


# ------------------------------------------------------------------ bodies


class _BadJSON(ValueError):
    pass


_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)


def check_depth(raw: bytes, max_depth: int) -> None:
    """Refuse nesting deeper than `max_depth` without recursing (numpy over bracket bytes).

    Strings are blanked first so brackets inside them do not count."""
    if max_depth <= 0 or (b"[" not in raw and b"{" not in raw):
        return
    stripped = _STRING.sub(b'""', raw)
    buf = np.frombuffer(stripped, dtype=np.uint8)
    step = ((buf == ord("{")) | (buf == ord("["))).astype(np.int32)
    step -= ((buf == ord("}")) | (buf == ord("]"))).astype(np.int32)
    depth = np.cumsum(step)
    if depth.size and int(depth.max()) > max_depth:
        raise GuardError(400, "osneural_parse_error",
                         f"request body: JSON nesting deeper than {max_depth} levels "
                         f"(the service's limit)")


def _reject_constant(name: str) -> Any:
    raise _BadJSON(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _BadJSON(f"number {text[:40]} overflows a 64-bit float")
    return value


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _BadJSON(f"duplicate field [{key[:80]}]")
        out[key] = value
    return out


def parse_json_body(raw: bytes, max_depth: int) -> Any:
    """Strict UTF-8, depth-checked, strict-number JSON; a 400 naming the problem otherwise."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise GuardError(400, "osneural_parse_error",
                         f"request body is not valid UTF-8 (byte offset {exc.start})") from None
    check_depth(raw, max_depth)
    try:
        body = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float,
                          object_pairs_hook=_no_duplicates)
    except _BadJSON as exc:
        raise GuardError(400, "osneural_parse_error", f"request body: {exc}") from None
    except RecursionError:  # pragma: no cover - check_depth runs first
        raise GuardError(400, "osneural_parse_error", "request body: JSON nested too deep") from None
    except ValueError as exc:  # JSONDecodeError, or an integer beyond Python's digit limit
        raise GuardError(400, "osneural_parse_error", f"request body is not valid JSON: {exc}") from None
    where = _first_lone_surrogate(body, "")
    if where is not None:
        raise GuardError(400, "osneural_parse_error",
                         f"request body: [{where or 'body'}] holds a lone UTF-16 surrogate "
                         "(an unpaired \\ud800-\\udfff escape), which is not text")
    return body


def _first_lone_surrogate(node: Any, path: str) -> str | None:
    stack: list[tuple[Any, str]] = [(node, path)]
    while stack:
        value, where = stack.pop()
        if isinstance(value, str):
            if not value.isascii():
                try:
                    value.encode("utf-8")
                except UnicodeEncodeError:
                    return where
        elif isinstance(value, dict):
            for key, child in value.items():
                sub = f"{where}.{key}" if where else key
                if not key.isascii():
                    try:
                        key.encode("utf-8")
                    except UnicodeEncodeError:
                        return where or "body"
                stack.append((child, sub))
        elif isinstance(value, list):
            stack.extend((child, f"{where}[{i}]") for i, child in enumerate(value))
    return None


def dump_json(body: Any) -> bytes:
    """The checked body as the upstream receives it."""
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


JSON_TYPES = ("application/json", "application/x-ndjson")


def is_json_content_type(value: str | None) -> bool:
    """`application/json` (any parameters, e.g. charset) or a `+json` suffix type."""
    if not value:
        return False
    mime = value.split(";", 1)[0].strip().lower()
    return mime == "application/json" or (mime.startswith("application/") and mime.endswith("+json"))


# ------------------------------------------------------------------ index expressions

# OpenSearch forbids these in index names; the first group also makes an expression match more
# than one name (list, wildcard, remote cluster, date math) or is a percent-escape.
_EXPRESSION_CHARS = set(",*?:<>%")
_FORBIDDEN_NAME_CHARS = set('\\/"| #') | {chr(c) for c in range(0x20)} | {"\x7f"}


def check_index_expression(expr: str, policy: Policy) -> str:
    """The path's index expression, checked; a 403 when the allow-list refuses it.

    Without an allow-list every expression is the caller's (and OpenSearch's) business, but the
    name still may not carry characters no index name has (they would be re-encoded anyway)."""
    if not expr:
        raise GuardError(400, "osneural_invalid_index", "the path names no index")
    if any(c in _FORBIDDEN_NAME_CHARS for c in expr):
        raise GuardError(400, "osneural_invalid_index",
                         f"index [{_show(expr)}] contains a character OpenSearch does not allow "
                         "in index names")
    if not policy.allow_index:
        return expr
    bad = sorted({c for c in expr if c in _EXPRESSION_CHARS})
    if bad or expr in ("_all", ".", "..") or expr.startswith(("-", "+", "_")):
        what = f"characters {bad}" if bad else "a reserved form"
        raise GuardError(403, "osneural_index_not_allowed",
                         f"index [{_show(expr)}]: with an allow-list the path must name one index "
                         f"or alias, not an expression ({what}: lists, wildcards, remote clusters, "
                         "date math, exclusions, _all and percent-escapes are refused)")
    if not policy.name_allowed(expr):
        raise GuardError(403, "osneural_index_not_allowed",
                         f"index [{_show(expr)}] is not in this service's allow-list")
    return expr


def _show(text: str, limit: int = 120) -> str:
    """`text` safe to echo in an error: printable, bounded."""
    out = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text[:limit])
    return out + ("..." if len(text) > limit else "")


def resolved_names(response: dict[str, Any]) -> Iterator[str]:
    """Every concrete name an `_resolve/index` answer says an expression reaches."""
    for item in response.get("indices", []) or []:
        yield item.get("name", "")
    for item in response.get("aliases", []) or []:
        yield item.get("name", "")
        yield from item.get("indices", []) or []
    for item in response.get("data_streams", []) or []:
        yield item.get("name", "")
        yield from item.get("backing_indices", []) or []


def check_resolved(expr: str, response: dict[str, Any], policy: Policy, where: str = "") -> None:
    """403 when `expr` resolves to any index or alias outside the allow-list."""
    if not policy.allow_index:
        return
    outside = sorted({n for n in resolved_names(response) if n and not policy.name_allowed(n)})
    if outside:
        place = f"{where}: " if where else ""
        raise GuardError(403, "osneural_index_not_allowed",
                         f"{place}[{_show(expr)}] resolves to {len(outside)} index/alias name(s) "
                         "outside this service's allow-list")


# ------------------------------------------------------------------ URL parameters

_COMMON_PARAMS = {"pretty", "human", "filter_path"}  # no `format`: answers are JSON here
_SEARCH_PARAMS = _COMMON_PARAMS | {
    "q", "df", "analyzer", "analyze_wildcard", "default_operator", "lenient", "from", "size",
    "sort", "_source", "_source_includes", "_source_excludes", "stored_fields",
    "docvalue_fields", "track_total_hits", "track_scores", "timeout", "terminate_after",
    "routing", "preference", "request_cache", "allow_partial_search_results",
    "ignore_unavailable", "allow_no_indices", "expand_wildcards", "ignore_throttled",
    "explain", "version", "seq_no_primary_term", "batched_reduce_size",
    "max_concurrent_shard_requests", "pre_filter_shard_size", "rest_total_hits_as_int",
    "typed_keys", "search_type", "cancel_after_time_interval", "phase_took",
    "include_named_queries_score", "suggest_field", "suggest_mode", "suggest_size",
    "suggest_text",
}
_COUNT_PARAMS = _COMMON_PARAMS | {
    "q", "df", "analyzer", "analyze_wildcard", "default_operator", "lenient", "routing",
    "preference", "min_score", "terminate_after", "ignore_unavailable", "allow_no_indices",
    "expand_wildcards", "ignore_throttled",
}
_MAPPING_PARAMS = _COMMON_PARAMS | {
    "ignore_unavailable", "allow_no_indices", "expand_wildcards", "local",
    "cluster_manager_timeout", "master_timeout",
}
_DOC_PARAMS = _COMMON_PARAMS | {
    "_source", "_source_includes", "_source_excludes", "stored_fields", "routing",
    "preference", "realtime", "refresh", "version", "version_type",
}
ROUTE_PARAMS = {"search": _SEARCH_PARAMS, "count": _COUNT_PARAMS, "mapping": _MAPPING_PARAMS,
                "doc": _DOC_PARAMS, "neural": {"pretty"}, "root": _COMMON_PARAMS,
                "msearch": {"pretty", "max_concurrent_searches"}}


def check_params(params: list[tuple[str, str]], route: str, policy: Policy) -> dict[str, str]:
    """The URL parameters to forward, after the route's allow-list and the operator's policy."""
    out: dict[str, str] = {}
    allowed = ROUTE_PARAMS[route]
    for key, value in params:
        if key in out:
            raise GuardError(400, "osneural_illegal_argument",
                             f"request parameter [{_show(key)}] is given more than once")
        if key == "error_trace":
            if not policy.allow_profile:
                raise GuardError(403, "osneural_parameter_not_allowed",
                                 "request parameter [error_trace] is refused (stack traces); "
                                 "the operator can allow it with --allow-profile")
        elif key == "search_pipeline" and route == "search":
            if not policy.allow_scripts:
                raise GuardError(403, "osneural_parameter_not_allowed",
                                 "request parameter [search_pipeline] is refused (pipelines run "
                                 "processors, scripts included); the operator can allow it with "
                                 "--allow-scripts")
        elif key == "source":
            raise GuardError(403, "osneural_parameter_not_allowed",
                             "request parameter [source] is refused: send the query as the "
                             "request body, where it is checked")
        elif key == "scroll":
            raise GuardError(400, "osneural_parameter_not_allowed",
                             "request parameter [scroll] is not supported through osneural "
                             "(its search contexts could never be cleared here); use search_after")
        elif key not in allowed:
            raise GuardError(400, "osneural_illegal_argument",
                             f"request parameter [{_show(key)}] is not supported on this route")
        out[key] = value
    return out


# ------------------------------------------------------------------ clauses

# Clauses whose immediate children are field names, not clause names (so a field called
# `script` is not a script), and containers whose children are caller-chosen names.
_FIELD_KEYED = {
    "term", "terms", "match", "match_phrase", "match_phrase_prefix", "match_bool_prefix",
    "prefix", "wildcard", "regexp", "fuzzy", "range", "span_term", "geo_shape", "geo_distance",
    "geo_bounding_box", "geo_polygon", "xy_shape", "knn", "intervals", "common",
    "aggs", "aggregations", "suggest", "filters", "indices_boost",
}
_SCRIPT_KEYS = {
    "script", "_script", "script_fields", "runtime_mappings", "script_score",
    "minimum_should_match_script", "init_script", "map_script", "combine_script",
    "reduce_script", "scripted_metric", "bucket_script", "bucket_selector",
    "collate",  # a phrase suggester's collate query is a mustache template, run as a query
}
_LOOKUP_DOC_LISTS = {"like", "unlike", "docs"}


@dataclass(frozen=True)
class IndexReference:
    """An index a clause makes OpenSearch read besides the searched one."""

    path: str
    index: str
    clause: str


def walk_clauses(body: Any, policy: Policy, path: str = "") -> list[IndexReference]:
    """Refuse scripts, `profile` and `wrapper`; return every other-index reference, each
    checked against the allow-list's name rules (the server resolves them too).

    Iterative (no recursion), and depth-bounded by `parse_json_body` already. Script keywords
    are refused even where OpenSearch would read the key as a field or aggregation name (a
    `terms` aggregation takes `script` where a `terms` query takes field names): a field that
    is literally called `script` has to be reached through an alias."""
    refs: list[IndexReference] = []
    # (node, its JSON path, are the dict keys caller-chosen names rather than clause names?)
    stack: list[tuple[Any, str, bool]] = [(body, path, False)]
    while stack:
        node, where, names = stack.pop()
        if isinstance(node, list):
            stack.extend((child, f"{where}[{i}]", names) for i, child in enumerate(node))
            continue
        if not isinstance(node, dict):
            continue
        for key, value in node.items():
            sub = f"{where}.{key}" if where else key
            if key in _SCRIPT_KEYS:
                _refuse_script(sub, policy)
            if names:
                # a field, aggregation or suggestion name; its value is a clause body
                stack.append((value, sub, False))
                continue
            top = where == path
            if key == "wrapper":
                raise GuardError(403, "osneural_clause_not_allowed",
                                 f"[{sub}]: wrapper queries are refused (their base64 body hides "
                                 "its clauses from the service's checks); send the query itself")
            if key == "profile" and top and value not in (False, None, "false"):
                if not policy.allow_profile:
                    raise GuardError(403, "osneural_clause_not_allowed",
                                     f"[{sub}]: profile is refused (it echoes query internals, "
                                     "including text read from other indices); the operator can "
                                     "allow it with --allow-profile")
            elif key == "search_pipeline" and top and isinstance(value, dict):
                if not policy.allow_scripts:
                    raise GuardError(403, "osneural_clause_not_allowed",
                                     f"[{sub}]: inline search pipelines are refused (their "
                                     "processors run scripts); the operator can allow them with "
                                     "--allow-scripts")
            elif key == "terms" and isinstance(value, dict):
                for field_name, spec in value.items():
                    if isinstance(spec, dict) and "index" in spec and ("id" in spec or "path" in spec):
                        refs.append(_reference(f"{sub}.{field_name}", spec["index"],
                                               "terms lookup", policy))
            elif key in _LOOKUP_DOC_LISTS:
                items = value if isinstance(value, list) else [value]
                for i, item in enumerate(items):
                    if isinstance(item, dict) and "_index" in item:
                        refs.append(_reference(f"{sub}[{i}]._index", item["_index"],
                                               "more_like_this document", policy))
            elif key == "indexed_shape" and isinstance(value, dict):
                refs.append(_reference(f"{sub}.index", value.get("index", "shapes"),
                                       "geo_shape indexed_shape", policy))
            elif key == "percolate" and isinstance(value, dict) and "index" in value:
                refs.append(_reference(f"{sub}.index", value["index"], "percolate document",
                                       policy))
            if isinstance(value, dict):
                child_names = key in _FIELD_KEYED or key in ("sort", "fields")
            elif isinstance(value, list):
                child_names = key in ("sort", "indices_boost")  # lists of {name: ...}
            else:
                child_names = False
            stack.append((value, sub, child_names))
    return refs


def _refuse_script(where: str, policy: Policy) -> None:
    if not policy.allow_scripts:
        raise GuardError(403, "osneural_clause_not_allowed",
                         f"[{where}]: scripts are refused by this service; the operator can "
                         "allow them with --allow-scripts")


def _reference(where: str, index: Any, clause: str, policy: Policy) -> IndexReference:
    if not isinstance(index, str) or not index:
        raise GuardError(400, "osneural_illegal_argument",
                         f"[{where}]: the {clause}'s index must be a non-empty string")
    if policy.allow_index:
        try:
            check_index_expression(index, policy)
        except GuardError as exc:
            raise GuardError(403, "osneural_clause_not_allowed",
                             f"[{where}]: {clause} reads index [{_show(index)}], which this "
                             f"service does not allow ({exc.reason})") from None
    return IndexReference(where, index, clause)


# ------------------------------------------------------------------ neural request bounds


def check_neural_bounds(block: dict[str, Any], limits: Limits, where: str = "ext.osneural") -> None:
    """Caps on the work one `ext.osneural` request may ask for, checked before spec parsing."""
    text = block.get("query")
    if isinstance(text, str) and len(text) > limits.max_query_chars:
        raise GuardError(400, "osneural_request_too_large",
                         f"{where}.query: {len(text)} characters, more than this service's limit "
                         f"of {limits.max_query_chars}")
    spec = block.get("spec")
    if isinstance(spec, dict):
        for key, cap in (("first_stages", limits.max_first_stages),
                         ("rescore", limits.max_rescore_stages)):
            value = spec.get(key)
            if isinstance(value, list) and len(value) > cap:
                raise GuardError(400, "osneural_request_too_large",
                                 f"{where}.spec.{key}: {len(value)} stages, more than this "
                                 f"service's limit of {cap}")


def builtin_spec_name(value: str, names: Callable[[], list[str]]) -> str:
    """Over HTTP a spec string is a built-in name, never a path: checked against the list."""
    known = names()
    if value not in known:
        raise GuardError(400, "osneural_spec_error",
                         f"ext.osneural.spec: unknown built-in spec [{_show(value, 60)}]; over "
                         f"HTTP a spec is one of {', '.join(known)} or an inline object")
    return value
