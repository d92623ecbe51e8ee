"""`osneural serve`: an OpenSearch-compatible HTTP front for existing applications.

An app switches by changing its base URL: a `_search` body with an `ext.osneural` block runs the
neural pipeline, anything else (plain `_search` bodies, `_count`, `_mapping`, `_doc/{id}`) is
forwarded to OpenSearch and answered with OpenSearch's own status and JSON body, so errors such as
a missing index (404) reach the app unchanged.

Security model (docs/SECURITY.md has the full statement):

* Every request is checked by `osneural.plugin.request_guard` before anything leaves the process:
  index expression (allow-list, then `_resolve/index` of what it names), URL parameters, body
  (strict JSON, depth, hostile clauses, caps). What is forwarded is what was checked: the upstream
  path is rebuilt from the checked, re-encoded name and the body re-serialized from the checked
  JSON; the caller's raw path and bytes never go upstream.
* `--auth passthrough` (the default) forwards the caller's `Authorization` header -- and nothing
  else of theirs -- on every upstream request, the neural pipeline's own searches included, so
  OpenSearch's security plugin decides index-, document- and field-level access as if the caller
  had asked it directly; a 401/403 from it passes through. The upstream client of this mode holds
  *no* credentials at all, so a code path that forgot the caller's header fails closed (401)
  instead of borrowing the service's identity. The service's own credentials, if given, are only
  used for `/_osneural/health`. Passthrough is the default because it can never grant a caller
  more than the cluster already would.
* `--auth service` uses the service's own credentials for everything and never forwards a
  caller's; for clusters without security, or when the service is the only client.
* Transport: opensearch-py's multi-host transport (pooled connections, retries on connection
  errors and 502/503/504 to the next node). Errors are JSON, shaped like OpenSearch's own.

Body of a neural search::

    {"size": 10, "_source": ["title"],            # optional, override the spec
     "query": {...},                              # optional, applied as a filter
     "aggs": ..., "highlight": ..., "sort": ..., "search_after": ..., "post_filter": ...,
     "collapse": ..., "min_score": ..., "track_total_hits": ...   # osneural.plugin.search_body
     "ext": {"osneural": {"query": "text", "spec": {...} | "hybrid", "explain": false}}}

No `spec` runs the index's default (`osneural.plugin.searcher.default_spec`). `_msearch` items
are each checked and answered like a single `_search`; `GET /` passes through.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import logging
import time
import uuid
from collections.abc import Sequence
from importlib import resources
from typing import Any
from urllib.parse import quote

from osneural.plugin import request_guard as rg
from osneural.plugin import search_body
from osneural.plugin.request_guard import GuardError, Limits, Policy
from osneural.plugin.resources import ResourceCache, StageError
from osneural.plugin.searcher import Searcher, SearchError
from osneural.plugin.spec import SpecError, builtin_spec, builtin_spec_names, parse_spec
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from osneural.connection import ClusterConfig

log = logging.getLogger("osneural.plugin.server")

DEFAULT_MAX_BODY = 1 << 20
AUTH_MODES = ("passthrough", "service")
DEFAULT_AUTH = "passthrough"


class BodyTooLarge(Exception):
    pass


def error_body(status: int, kind: str, reason: str) -> dict[str, Any]:
    """OpenSearch's error shape, so clients' error handling keeps working."""
    return {"error": {"root_cause": [{"type": kind, "reason": reason}], "type": kind,
                      "reason": reason}, "status": status}


def _error(status: int, kind: str, reason: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(status, kind, reason), status, headers=headers)


def _log(event: str, **fields: Any) -> None:
    log.info(json.dumps({"event": event, **fields}, default=str, sort_keys=True))


def index_allowed(index: str, patterns: list[str] | None) -> bool:
    """Whether the path expression `index` passes the allow-list's name rules (no resolution):
    with patterns, one plain name matching a pattern; lists and wildcards are refused."""
    try:
        rg.check_index_expression(index, Policy(tuple(patterns) if patterns else None))
    except GuardError:
        return False
    return True


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _builtin_spec(name: str) -> Any:
    """A built-in spec by name only: over HTTP a string is never opened as a file."""
    try:
        rg.builtin_spec_name(name, builtin_spec_names)
    except GuardError as exc:
        raise SpecError(exc.reason) from None
    resource = resources.files("osneural.plugin") / "specs" / f"{name}.json"
    return parse_spec(json.loads(resource.read_text(encoding="utf-8")))


@dataclasses.dataclass(frozen=True)
class NeuralRequest:
    """A checked `ext.osneural` request: the query text, the spec (None: the index's default,
    chosen by the searcher), its name for the answer, and the body's search options."""

    text: str
    spec: Any
    spec_name: str | None
    options: dict[str, Any]


def _spec_from_body(body: dict[str, Any], limits: Limits | None = None) -> NeuralRequest:
    """The neural request a `_search` body asks for; `SpecError` (400) naming the bad field."""
    block = body["ext"]["osneural"]
    if not isinstance(block, dict):
        raise SpecError("ext.osneural must be an object")
    unknown = set(block) - {"query", "spec", "explain"}
    if unknown:
        raise SpecError(f"ext.osneural: unknown field(s) {sorted(unknown)}")
    try:
        rg.check_neural_bounds(block, limits or Limits())
    except GuardError as exc:
        raise SpecError(exc.reason) from None
    text = block.get("query")
    if not isinstance(text, str) or not text.strip():
        raise SpecError("ext.osneural.query: query text is empty")
    raw = block.get("spec")
    name: str | None = None
    if isinstance(raw, str):
        spec, name = _builtin_spec(raw), raw
    elif raw is None:
        spec = None
    elif isinstance(raw, dict):
        spec, name = parse_spec(raw), "inline"
    else:
        raise SpecError("ext.osneural.spec: must be a built-in spec name or an inline object, "
                        f"not {type(raw).__name__}")
    options = {k: v for k, v in body.items() if k != "ext"}
    if set(body["ext"]) - {"osneural"}:
        raise SpecError(f"ext: only ext.osneural is read with a neural search, not "
                        f"{sorted(set(body['ext']) - {'osneural'})}")
    if "explain" in block:
        options["explain"] = block["explain"]
    search_body.parse_options(options)  # refuse a bad option before any work is done
    return NeuralRequest(text, spec, name, options)


def _is_neural(body: Any) -> bool:
    return isinstance(body, dict) and isinstance(body.get("ext"), dict) and "osneural" in body["ext"]


def _split_msearch(raw: bytes, max_depth: int, max_items: int) -> list[tuple[dict, dict]]:
    """NDJSON `_msearch` lines as (header, body) pairs; a 400 naming the line otherwise."""
    lines = [line for line in raw.split(b"\n") if line.strip()]
    if not lines:
        raise GuardError(400, "osneural_parse_error", "_msearch: the request body is empty")
    if len(lines) % 2:
        raise GuardError(400, "osneural_parse_error",
                         f"_msearch: {len(lines)} lines; each item is a header line and a body "
                         "line (the last item has no body)")
    if len(lines) // 2 > max_items:
        raise GuardError(400, "osneural_request_too_large",
                         f"_msearch: {len(lines) // 2} items, more than this service's limit of "
                         f"{max_items}")
    items = []
    for i in range(0, len(lines), 2):
        pair = []
        for j, what in ((i, "header"), (i + 1, "body")):
            try:
                value = rg.parse_json_body(lines[j], max_depth)
            except GuardError as exc:
                raise GuardError(exc.status, exc.kind,
                                 f"_msearch line {j + 1} (item {i // 2} {what}): {exc.reason}") from None
            if not isinstance(value, dict):
                raise GuardError(400, "osneural_parse_error",
                                 f"_msearch line {j + 1} (item {i // 2} {what}): must be a JSON object")
            pair.append(value)
        items.append((pair[0], pair[1]))
    return items


def _stage_count(body: dict[str, Any]) -> int:
    """Pipeline stages an `_msearch` item asks for (0 for a pass-through item), for the cap on
    one request's total work; a built-in spec counts its own stages, no spec the default's."""
    if not _is_neural(body):
        return 0
    block = body["ext"]["osneural"]
    spec = block.get("spec") if isinstance(block, dict) else None
    if isinstance(spec, dict):
        stages = spec.get("first_stages"), spec.get("rescore")
        return sum(len(x) for x in stages if isinstance(x, list)) or 1
    name = spec if isinstance(spec, str) and spec in builtin_spec_names() else "hybrid"
    parsed = builtin_spec(name)
    return len(parsed.first_stages) + len(parsed.rescore)


class CallerClient:
    """The shared upstream client, with the caller's `Authorization` on every API call.

    Why a header-injecting view rather than one client per credential: it shares one connection
    pool (and the multi-host retry state) across all callers, holds no credential longer than the
    request that brought it, and needs no eviction policy. It works for any opensearch-py API
    method (all accept `headers=`), so the Searcher and the resource cache need not know about
    identities. Namespaces (`.indices`, ...) are wrapped too; `transport` is the shared one, so
    the per-process resource cache keys stay per cluster."""

    def __init__(self, target: Any, headers: dict[str, str]) -> None:
        self._target = target
        self._headers = headers

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if name in ("transport", "close") or name.startswith("_"):
            return attr if name != "close" else (lambda: None)
        if callable(attr):
            @functools.wraps(attr)
            def call(*args: Any, **kwargs: Any) -> Any:
                headers = dict(self._headers)
                headers.update({k.lower(): v for k, v in (kwargs.pop("headers", None) or {}).items()})
                return attr(*args, headers=headers, **kwargs)

            return call
        if hasattr(attr, "transport") and hasattr(attr, "client"):  # a NamespacedClient
            return CallerClient(attr, self._headers)
        return attr


def _client_has_credentials(client: Any) -> bool:
    pool = getattr(getattr(client, "transport", None), "connection_pool", None)
    conns = getattr(pool, "connections", None) or []
    return any("authorization" in {k.lower() for k in getattr(c, "headers", {}) or {}}
               for c in conns)


def _upstream_error(exc: Exception, rid: str) -> JSONResponse:
    """An opensearch-py error as the HTTP answer: OpenSearch's own JSON when it sent one."""
    from opensearchpy import ConnectionError as OSConnectionError
    from opensearchpy import ConnectionTimeout, TransportError

    if isinstance(exc, ConnectionTimeout):
        return _error(504, "osneural_upstream_timeout", "OpenSearch did not answer in time")
    if isinstance(exc, OSConnectionError):
        return _error(502, "osneural_upstream_unreachable",
                      "no OpenSearch node could be reached (every host was tried)")
    if not isinstance(exc, TransportError) or not isinstance(exc.status_code, int):
        log.exception("upstream failure", exc_info=exc)
        return _error(502, "osneural_upstream_error", f"OpenSearch request failed (request {rid})")
    status = exc.status_code
    headers = {"www-authenticate": 'Basic realm="OpenSearch"'} if status == 401 else None
    info = exc.info
    if isinstance(info, dict):
        return JSONResponse(info, status, headers=headers)
    kind = "security_exception" if status in (401, 403) else "osneural_upstream_error"
    reason = {401: "authentication required: the cluster refused the caller's credentials",
              403: "the cluster refused the caller access"}.get(status, f"OpenSearch answered {status}")
    return _error(status, kind, reason, headers)


async def _in_thread(limiter: Any, fn: Any, *args: Any) -> Any:
    """`fn(*args)` in a worker thread, within `limiter`'s budget (anyio's default without one)."""
    import anyio

    return await anyio.to_thread.run_sync(functools.partial(fn, *args), limiter=limiter)


def create_app(
    cluster: ClusterConfig | str | list[str] | None = None,
    allow_index: Sequence[str] | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY,
    client: Any = None,
    cache: ResourceCache | None = None,
    warm: Sequence[str] | None = None,
    *,
    auth: str = DEFAULT_AUTH,
    allow_scripts: bool = False,
    allow_profile: bool = False,
    limits: Limits | None = None,
) -> Starlette:
    """The ASGI app.

    `cluster` is a `ClusterConfig` or URL(s). `client` replaces the upstream client built from
    it (in passthrough mode it must carry no credentials). `warm` names encoder kinds loaded --
    and run once -- at startup, before the first request is accepted."""
    from opensearchpy import TransportError

    if auth not in AUTH_MODES:
        raise ValueError(f"auth must be one of {AUTH_MODES}, not {auth!r}")
    if not isinstance(cluster, ClusterConfig):
        cluster = ClusterConfig.from_values(cluster, timeout=30)
    policy = Policy(tuple(allow_index) if allow_index else None, allow_scripts, allow_profile)
    limits = limits or Limits()
    passthrough_auth = auth == "passthrough"
    if passthrough_auth:
        anonymous = dataclasses.replace(cluster, user=None, password=None)
        upstream = client or anonymous.client(pool_maxsize=64)
        if _client_has_credentials(upstream):
            raise ValueError("--auth passthrough needs an upstream client without credentials "
                             "(callers' own are forwarded)")
        health_client = cluster.client(pool_maxsize=2) if cluster.user else upstream
    else:
        upstream = client or cluster.client(pool_maxsize=64)
        health_client = upstream
    cache = cache or ResourceCache()
    slots = asyncio.Semaphore(limits.max_concurrent)
    limiters: dict[str, Any] = {}
    timeout = float(cluster.timeout)

    def caller(request: Request) -> Any:
        """The client to act with for this request (see the module docstring)."""
        if not passthrough_auth:
            return upstream
        value = request.headers.get("authorization")
        return CallerClient(upstream, {"authorization": value} if value else {})

    def forward(who: Any, method: str, path: str, params: dict[str, str], body: bytes | None) -> Any:
        """One pass-through request over the multi-host transport, as `who`."""
        headers = dict(who._headers) if isinstance(who, CallerClient) else {}
        return upstream.transport.perform_request(method, path, params=params or None, body=body,
                                                  headers=headers or None, timeout=timeout)

    async def startup() -> None:
        import anyio

        # Separate thread budgets: a flood of slow pass-through requests cannot take the threads
        # neural searches run in (anyio's shared default pool), nor the other way round.
        limiters["passthrough"] = anyio.CapacityLimiter(32)
        limiters["neural"] = anyio.CapacityLimiter(limits.max_concurrent)
        _log("start", cluster=cluster.describe(), auth=auth, allow_index=policy.allow_index,
             allow_scripts=allow_scripts, allow_profile=allow_profile)
        for kind in warm or []:
            t0 = time.perf_counter()
            enc = await run_in_threadpool(cache.encoders.get, kind)
            await run_in_threadpool(enc.encode_queries, ["warm up the encoder"])
            _log("warm", kind=kind, ms=round((time.perf_counter() - t0) * 1e3, 1))

    async def shutdown() -> None:
        if client is None:
            upstream.close()
        if health_client is not upstream:
            health_client.close()

    async def read_body(request: Request) -> bytes:
        try:
            return await _read_body(request, max_body_bytes)
        except BodyTooLarge:
            raise GuardError(413, "osneural_request_too_large",
                             f"request body exceeds {max_body_bytes} bytes") from None

    def check_content_type(request: Request) -> None:
        if not rg.is_json_content_type(request.headers.get("content-type")):
            raise GuardError(415, "osneural_media_type_not_supported",
                             f"Content-Type [{rg._show(request.headers.get('content-type') or '', 80)}] "
                             "is not supported; send application/json")

    def path_index(request: Request, route: str) -> str | None:
        """The checked index of the path; None for index-less `/_search` (no allow-list only)."""
        raw = request.path_params.get("index")
        if raw is None:
            if policy.allow_index and route not in ("root", "msearch"):
                raise GuardError(403, "osneural_index_not_allowed",
                                 "with an allow-list the path must name one index")
            return None
        return rg.check_index_expression(raw, policy)

    async def prepare(request: Request, route: str) -> tuple[str | None, dict[str, str], Any, Any]:
        """Checked (index, params, body or None, caller client); raises GuardError."""
        index = path_index(request, route)
        params = rg.check_params(request.query_params.multi_items(), route, policy)
        raw = await read_body(request)
        body = None
        if raw.strip():
            if route in ("mapping", "doc", "root"):
                raise GuardError(400, "osneural_illegal_argument", "this endpoint takes no body")
            check_content_type(request)
            body = rg.parse_json_body(raw, limits.max_json_depth)
            if route == "search" and not isinstance(body, dict):
                raise GuardError(400, "osneural_parse_error", "request body must be a JSON object")
        who = caller(request)
        await check_body(who, index, body)
        return index, params, body, who

    async def check_body(who: Any, index: str | None, body: Any) -> None:
        refs = rg.walk_clauses(body, policy) if body is not None else []
        if index is not None or refs:
            await check_indices(who, index, refs)

    async def check_indices(who: Any, index: str | None, refs: list[rg.IndexReference]) -> None:
        """With an allow-list: what the path and each lookup resolve to must be allowed too."""
        if not policy.allow_index:
            return
        from opensearchpy import NotFoundError

        targets = ([(index, "")] if index is not None else []) + [(r.index, r.path) for r in refs]
        for expr, where in targets:
            try:
                resolved = await run_in_threadpool(functools.partial(who.indices.resolve_index, name=expr))
            except NotFoundError:
                continue  # nothing of that name: the request itself will answer 404
            rg.check_resolved(expr, resolved, policy, where)

    def upstream_path(index: str | None, *rest: str) -> str:
        head = [quote(index, safe=",*")] if index is not None else []
        return "/" + "/".join(head + [quote(p, safe="_") for p in rest])

    async def neural(index: str | None, body: dict[str, Any], who: Any, rid: str,
                     t0: float) -> tuple[int, dict[str, Any]]:
        """One `ext.osneural` search: (status, OpenSearch-shaped JSON), errors included, so a
        single request and an `_msearch` item answer alike. A TransportError passes up."""
        try:
            req = _spec_from_body(body, limits)
            if index is None or "," in index or "*" in index:
                raise SpecError("ext.osneural searches one concrete index, not a list or pattern")
        except SpecError as exc:
            _log("bad_request", request_id=rid, index=index, reason=str(exc))
            return 400, error_body(400, "osneural_spec_error", str(exc))
        if passthrough_auth:
            # The caller must be able to search the index before any encoder runs for them, and
            # before cached index descriptions (shared across callers) shape their answer.
            await run_in_threadpool(functools.partial(
                who.search, index=index, body={"size": 0, "query": {"match_none": {}},
                                               "track_total_hits": False}))
        try:
            await asyncio.wait_for(slots.acquire(), timeout=limits.queue_timeout_s)
        except TimeoutError:
            return 503, error_body(503, "osneural_overloaded",
                                   f"{limits.max_concurrent} neural searches are already running; retry")
        searcher = Searcher(who, index, cache=cache, max_workers=limits.max_first_stages)
        try:
            result = await _in_thread(limiters.get("neural"), functools.partial(
                searcher.search, req.text, req.spec, req.options, spec_name=req.spec_name))
        except (SpecError, StageError) as exc:
            _log("bad_request", request_id=rid, index=index, reason=str(exc))
            status = getattr(exc, "status", 400)
            status = status if isinstance(status, int) else 400
            return status, error_body(status, "osneural_spec_error", str(exc))
        except SearchError as exc:
            _log("failed", request_id=rid, index=index, reason=str(exc))
            return exc.status, error_body(exc.status, "osneural_search_error", str(exc))
        finally:
            searcher.close()
            slots.release()
        osn = result["ext"]["osneural"]
        _log("search", request_id=rid, index=index, status=200, spec=osn.get("spec"),
             timings_ms={k: round(v, 2) for k, v in osn["timings_ms"].items()},
             warnings=osn["warnings"], hits=len(result["hits"]["hits"]),
             ms=round((time.perf_counter() - t0) * 1e3, 2))
        return 200, result

    def neural_params(params: dict[str, str]) -> None:
        extra = params.keys() - rg.ROUTE_PARAMS["neural"]
        if extra:
            raise GuardError(400, "osneural_illegal_argument",
                             f"request parameters {sorted(extra)} are not supported with ext.osneural")

    def json_response(data: Any, status: int = 200, pretty: bool = False,
                      headers: dict[str, str] | None = None) -> Response:
        return Response(json.dumps(data, indent=2 if pretty else None, ensure_ascii=False),
                        status_code=status, media_type="application/json", headers=headers)

    async def handle(request: Request, route: str) -> Response:
        rid = uuid.uuid4().hex[:12]
        t0 = time.perf_counter()
        try:
            index, params, body, who = await prepare(request, route)
            if route == "search" and _is_neural(body):
                neural_params(params)
                check_content_type(request)
                status, data = await neural(index, body, who, rid, t0)
                retry = {"retry-after": "1"} if status == 503 else None
                return json_response(data, status, "pretty" in params and status == 200, retry)
            rest = {"search": ("_search",), "count": ("_count",), "mapping": ("_mapping",),
                    "doc": ("_doc", request.path_params.get("doc_id", "")), "root": ()}[route]
            path = upstream_path(index, *rest)
            data = await _in_thread(
                limiters.get("passthrough"), forward, who, request.method, path, params,
                rg.dump_json(body) if body is not None else None)
        except GuardError as exc:
            _log("refused", request_id=rid, path=request.url.path, status=exc.status,
                 type=exc.kind, reason=exc.reason)
            return _error(exc.status, exc.kind, exc.reason)
        except TransportError as exc:
            resp = _upstream_error(exc, rid)
            _log("upstream_error", request_id=rid, path=request.url.path, status=resp.status_code)
            return resp
        _log("passthrough", request_id=rid, path=request.url.path,
             ms=round((time.perf_counter() - t0) * 1e3, 2))
        if request.method == "HEAD":
            return Response(status_code=200 if data else 404)
        if isinstance(data, (dict, list)):
            return json_response(data, pretty="pretty" in params)
        return Response(data if data is not None else b"", media_type="application/json")

    async def msearch_item(header: dict[str, Any], body: dict[str, Any], default: str | None,
                           who: Any, rid: str) -> dict[str, Any]:
        """One `_msearch` item through the same checks as a single `_search`; its answer or
        its error, in OpenSearch's per-item shape (`status` on each)."""
        t0 = time.perf_counter()
        try:
            index = header.get("index", default)
            if isinstance(index, list) and all(isinstance(x, str) for x in index):
                index = ",".join(index)
            if index is not None and not isinstance(index, str):
                raise GuardError(400, "osneural_illegal_argument", "index: must be a string")
            if index is None and policy.allow_index:
                raise GuardError(403, "osneural_index_not_allowed",
                                 "with an allow-list each item must name one index")
            if index is not None:
                index = rg.check_index_expression(index, policy)
            params = rg.check_params([(k, v if isinstance(v, str) else json.dumps(v))
                                      for k, v in header.items() if k != "index"], "search", policy)
            await check_body(who, index, body)
            if _is_neural(body):
                neural_params(params)
                status, data = await neural(index, body, who, rid, t0)
                return {**data, "status": status}
            data = await _in_thread(limiters.get("passthrough"), forward, who, "POST",
                                    upstream_path(index, "_search"), params, rg.dump_json(body))
            if isinstance(data, dict):
                return {**data, "status": 200}
            return error_body(502, "osneural_upstream_error", "OpenSearch answered no JSON")
        except GuardError as exc:
            return error_body(exc.status, exc.kind, exc.reason)
        except TransportError as exc:
            resp = _upstream_error(exc, rid)
            data = json.loads(resp.body)
            data.setdefault("status", resp.status_code)
            return data

    async def msearch(request: Request) -> Response:
        """NDJSON `_msearch`: each item pass-through or `ext.osneural`, checked like a single
        request; at most `max_msearch_items` items and `max_msearch_stages` pipeline stages in
        all, run a few at a time (neural items also wait for the shared neural slots)."""
        rid = uuid.uuid4().hex[:12]
        t0 = time.perf_counter()
        try:
            default = path_index(request, "msearch")
            params = rg.check_params(request.query_params.multi_items(), "msearch", policy)
            raw = await read_body(request)
            ct = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
            if ct != "application/x-ndjson":
                check_content_type(request)
            items = _split_msearch(raw, limits.max_json_depth, limits.max_msearch_items)
            work = sum(_stage_count(body) for _header, body in items)
            if work > limits.max_msearch_stages:
                raise GuardError(400, "osneural_request_too_large",
                                 f"_msearch: its neural items ask for {work} pipeline stages in all, "
                                 f"more than this service's limit of {limits.max_msearch_stages}")
        except GuardError as exc:
            _log("refused", request_id=rid, path=request.url.path, status=exc.status,
                 type=exc.kind, reason=exc.reason)
            return _error(exc.status, exc.kind, exc.reason)
        who = caller(request)
        gate = asyncio.Semaphore(4)

        async def one(header: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
            async with gate:
                return await msearch_item(header, body, default, who, rid)

        responses = await asyncio.gather(*(one(h, b) for h, b in items))
        took = int(round((time.perf_counter() - t0) * 1e3))
        _log("msearch", request_id=rid, items=len(items), ms=took,
             statuses=[r.get("status") for r in responses])
        return json_response({"took": took, "responses": list(responses)},
                             pretty="pretty" in params)

    async def search(request: Request) -> Response:
        return await handle(request, "search")

    async def count(request: Request) -> Response:
        return await handle(request, "count")

    async def mapping(request: Request) -> Response:
        return await handle(request, "mapping")

    async def doc(request: Request) -> Response:
        return await handle(request, "doc")

    async def root(request: Request) -> Response:
        return await handle(request, "root")

    async def health(request: Request) -> Response:
        try:
            r = await run_in_threadpool(health_client.cluster.health, request_timeout=5)
            status = r.get("status")
        except TransportError as exc:
            status = "auth_required" if exc.status_code in (401, 403) else None
        ok = status in ("green", "yellow", "auth_required")
        return JSONResponse(
            {"status": "ok" if ok else "degraded", "opensearch": status, "auth": auth,
             "encoders_loaded": sorted(cache.encoders._encoders)},
            200 if ok else 503,
        )

    async def no_route(request: Request) -> Response:
        return _error(400, "osneural_no_handler",
                      f"no handler for [{request.method}] {rg._show(request.url.path, 200)}: "
                      "osneural serves /, _search, _msearch, {index}/_search, _msearch, _count, "
                      "_mapping and _doc/{id}")

    async def http_error(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 500)
        return _error(status, "osneural_http_error", str(getattr(exc, "detail", "")) or "error")

    async def internal_error(request: Request, exc: Exception) -> Response:
        rid = uuid.uuid4().hex[:12]
        log.error("internal error (request %s)", rid, exc_info=exc)
        return _error(500, "osneural_internal_error", f"internal error (request {rid}); see the "
                      "service log")

    methods_all = ["GET", "POST", "PUT", "DELETE", "HEAD", "PATCH", "OPTIONS"]
    routes = [
        Route("/_osneural/health", health, methods=["GET"]),
        Route("/", root, methods=["GET", "HEAD"]),
        Route("/_search", search, methods=["GET", "POST"]),
        Route("/_msearch", msearch, methods=["GET", "POST"]),
        Route("/{index}/_search", search, methods=["GET", "POST"]),
        Route("/{index}/_msearch", msearch, methods=["GET", "POST"]),
        Route("/{index}/_count", count, methods=["GET", "POST"]),
        Route("/{index}/_mapping", mapping, methods=["GET"]),
        Route("/{index}/_doc/{doc_id}", doc, methods=["GET", "HEAD"]),
        Route("/{path:path}", no_route, methods=methods_all),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette):
        await startup()
        try:
            yield
        finally:
            await shutdown()

    return Starlette(routes=routes, lifespan=lifespan,
                     exception_handlers={HTTPException: http_error, Exception: internal_error})
