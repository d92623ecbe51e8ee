"""`osneural serve`: an OpenSearch-compatible HTTP front for existing applications.

An app switches by changing its base URL: a `_search` body with an `ext.osneural` block runs the
neural pipeline, anything else (plain `_search` bodies, `_count`, `_mapping`, `_doc/{id}`) is
forwarded to OpenSearch byte for byte and answered with OpenSearch's own status and body, so errors
such as a missing index (404) reach the app unchanged. The index allow-list is checked before any
request leaves this process.

Body of a neural search::

    {"size": 10, "_source": ["title"],            # optional, override the spec
     "query": {...},                              # optional, applied as a filter
     "ext": {"osneural": {"query": "text", "spec": {...} | "hybrid", "explain": false}}}
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import logging
import time
import uuid
from typing import Any

import httpx
from osneural.plugin.resources import ResourceCache, StageError
from osneural.plugin.searcher import Searcher, SearchError
from osneural.plugin.spec import SpecError, load_spec, parse_spec
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from osneural.connection import ClusterConfig

log = logging.getLogger("osneural.plugin.server")

DEFAULT_MAX_BODY = 1 << 20


class BodyTooLarge(Exception):
    pass


def _error(status: int, kind: str, reason: str) -> JSONResponse:
    return JSONResponse({"error": {"type": kind, "reason": reason}, "status": status}, status)


def _log(event: str, **fields: Any) -> None:
    log.info(json.dumps({"event": event, **fields}, default=str, sort_keys=True))


def index_allowed(index: str, patterns: list[str] | None) -> bool:
    """Every comma-separated name must match a pattern; a wildcard is only as wide as a pattern."""
    if not patterns:
        return True
    names = [n.strip() for n in index.split(",")]
    return all(n and any(fnmatch.fnmatchcase(n, p) for p in patterns) for n in names)


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


def _spec_from_body(body: dict[str, Any]) -> tuple[str, Any]:
    block = body["ext"]["osneural"]
    if not isinstance(block, dict):
        raise SpecError("ext.osneural must be an object")
    unknown = set(block) - {"query", "spec", "explain"}
    if unknown:
        raise SpecError(f"ext.osneural: unknown field(s) {sorted(unknown)}")
    text = block.get("query")
    if not isinstance(text, str) or not text.strip():
        raise SpecError("ext.osneural.query: query text is empty")
    raw = block.get("spec")
    spec = load_spec(raw) if isinstance(raw, str) else parse_spec(raw)
    data = spec.to_dict()
    for key in ("size", "from", "_source"):
        if key in body:
            data[key] = body[key]
    if "explain" in block:
        data["explain"] = block["explain"]
    extra = set(body) - {"ext", "size", "from", "_source", "query"}
    if extra:
        raise SpecError(f"search body fields {sorted(extra)} are not supported with ext.osneural")
    if "query" in body:
        flt = body["query"]
        data["filter"] = flt if "filter" not in data else {"bool": {"filter": [data["filter"], flt]}}
    return text, parse_spec(data)


def create_app(
    cluster: ClusterConfig | str | None = None,
    allow_index: list[str] | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY,
    client: Any = None,
    cache: ResourceCache | None = None,
    warm: list[str] | None = None,
) -> Starlette:
    """The ASGI app. `warm` names encoder kinds to load at startup (so the first query is fast)."""
    from opensearchpy import TransportError

    if not isinstance(cluster, ClusterConfig):
        cluster = ClusterConfig.from_values(cluster, timeout=30)
    upstream = cluster.urls[0]
    os_client = client or cluster.client()
    cache = cache or ResourceCache()
    searchers: dict[str, Searcher] = {}
    state: dict[str, Any] = {}

    def searcher(index: str) -> Searcher:
        if index not in searchers:
            searchers[index] = Searcher(os_client, index, cache=cache)
        return searchers[index]

    async def startup() -> None:
        state["http"] = httpx.AsyncClient(base_url=upstream, timeout=60)
        for kind in warm or []:
            await run_in_threadpool(cache.encoders.get, kind)

    async def shutdown() -> None:
        await state["http"].aclose()
        for s in searchers.values():
            s.close()

    async def passthrough(request: Request, body: bytes) -> Response:
        headers = {}
        if "content-type" in request.headers:
            headers["content-type"] = request.headers["content-type"]
        resp = await state["http"].request(
            request.method, request.url.path, params=request.url.query or None,
            content=body or None, headers=headers,
        )
        return Response(
            resp.content, resp.status_code,
            media_type=resp.headers.get("content-type", "application/json"),
        )

    def guard(request: Request) -> Response | None:
        index = request.path_params["index"]
        if not index_allowed(index, allow_index):
            _log("denied", index=index, path=request.url.path)
            return _error(403, "osneural_index_not_allowed",
                          f"index [{index}] is not in this service's allow-list")
        return None

    async def search(request: Request) -> Response:
        denied = guard(request)
        if denied is not None:
            return denied
        index = request.path_params["index"]
        rid = uuid.uuid4().hex[:12]
        t0 = time.perf_counter()
        try:
            raw = await _read_body(request, max_body_bytes)
        except BodyTooLarge:
            _log("rejected", request_id=rid, index=index, reason="body too large")
            return _error(413, "osneural_request_too_large",
                          f"request body exceeds {max_body_bytes} bytes")
        try:
            body = json.loads(raw) if raw.strip() else {}
        except json.JSONDecodeError:
            return await passthrough(request, raw)  # let OpenSearch word its own parse error
        if not (isinstance(body, dict) and isinstance(body.get("ext"), dict)
                and "osneural" in body["ext"]):
            resp = await passthrough(request, raw)
            _log("passthrough", request_id=rid, index=index, path=request.url.path,
                 status=resp.status_code, ms=round((time.perf_counter() - t0) * 1e3, 2))
            return resp
        try:
            text, spec = _spec_from_body(body)
            if "," in index or "*" in index:
                raise SpecError("ext.osneural searches one concrete index, not a list or pattern")
            result = await run_in_threadpool(searcher(index).search, text, spec)
        except (SpecError, StageError) as exc:
            _log("bad_request", request_id=rid, index=index, reason=str(exc))
            return _error(400, "osneural_spec_error", str(exc))
        except SearchError as exc:
            _log("failed", request_id=rid, index=index, reason=str(exc))
            return _error(exc.status, "osneural_search_error", str(exc))
        except TransportError as exc:
            status = exc.status_code if isinstance(exc.status_code, int) else 502
            info = exc.info if isinstance(exc.info, dict) else {"error": str(exc.error)}
            _log("upstream_error", request_id=rid, index=index, status=status)
            return JSONResponse(info, status)
        _log("search", request_id=rid, index=index, status=200,
             timings_ms={k: round(v, 2) for k, v in result["ext"]["osneural"]["timings_ms"].items()},
             warnings=result["ext"]["osneural"]["warnings"], hits=len(result["hits"]["hits"]))
        return JSONResponse(result)

    async def readonly(request: Request) -> Response:
        denied = guard(request)
        if denied is not None:
            return denied
        try:
            raw = await _read_body(request, max_body_bytes)
        except BodyTooLarge:
            return _error(413, "osneural_request_too_large",
                          f"request body exceeds {max_body_bytes} bytes")
        t0 = time.perf_counter()
        resp = await passthrough(request, raw)
        _log("passthrough", index=request.path_params["index"], path=request.url.path,
             status=resp.status_code, ms=round((time.perf_counter() - t0) * 1e3, 2))
        return resp

    async def health(request: Request) -> Response:
        try:
            r = await state["http"].get("/_cluster/health")
            cluster = r.json().get("status") if r.status_code == 200 else None
        except httpx.HTTPError:
            cluster = None
        ok = cluster in ("green", "yellow")
        return JSONResponse(
            {"status": "ok" if ok else "degraded", "opensearch": cluster,
             "encoders_loaded": sorted(cache.encoders._encoders)},
            200 if ok else 503,
        )

    routes = [
        Route("/_osneural/health", health, methods=["GET"]),
        Route("/{index}/_search", search, methods=["GET", "POST"]),
        Route("/{index}/_count", readonly, methods=["GET", "POST"]),
        Route("/{index}/_mapping", readonly, methods=["GET"]),
        Route("/{index}/_doc/{doc_id}", readonly, methods=["GET", "HEAD"]),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette):
        await startup()
        try:
            yield
        finally:
            await shutdown()

    return Starlette(routes=routes, lifespan=lifespan)
