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

Layout: this module assembles the app and its routes (`Service`); the request guard is
`osneural.plugin.http_guard`, the neural `_search` handler `osneural.plugin.neural_handler`
(its body format is described there), pass-through forwarding and the caller's identity
`osneural.plugin.passthrough`, `_msearch` splitting `osneural.plugin.msearch`. `_msearch` items
are each checked and answered like a single `_search`; `GET /` passes through.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Sequence
from typing import Any

from osneural.plugin import msearch as msearch_body
from osneural.plugin import request_guard as rg
from osneural.plugin.http_guard import (  # noqa: F401 - importable from here as before
    DEFAULT_MAX_BODY,
    BodyTooLarge,
    RequestGuard,
    index_allowed,
)
from osneural.plugin.neural_handler import (  # noqa: F401 - importable from here as before
    NeuralHandler,
    NeuralRequest,
    in_thread,
    is_neural,
)
from osneural.plugin.neural_handler import spec_from_body as _spec_from_body  # noqa: F401
from osneural.plugin.passthrough import (  # noqa: F401 - importable from here as before
    AUTH_MODES,
    DEFAULT_AUTH,
    CallerClient,
    Upstream,
    upstream_error,
    upstream_path,
)
from osneural.plugin.request_guard import Limits, Policy
from osneural.plugin.resources import ResourceCache
from osneural.plugin.responses import (  # noqa: F401 - error_body importable from here
    error_body,
    error_response,
    json_response,
    log,
    log_event,
)
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from osneural.connection import ClusterConfig
from osneural.errors import GuardError


def _upstream_rest(route: str, request: Request) -> tuple[str, ...]:
    """The upstream path after the index for a single-request route."""
    if route == "doc":
        return ("_doc", request.path_params.get("doc_id", ""))
    return {"search": ("_search",), "count": ("_count",), "mapping": ("_mapping",),
            "root": ()}[route]


class Service:
    """One `osneural serve` app's state and request handlers: each request is checked by the
    `guard`, then answered by the `neural` handler (an `ext.osneural` body) or forwarded
    `upstream`."""

    def __init__(self, upstream: Upstream, guard: RequestGuard, neural: NeuralHandler,
                 cache: ResourceCache, warm: Sequence[str] = ()) -> None:
        self.upstream = upstream
        self.guard = guard
        self.neural = neural
        self.cache = cache
        self.warm = list(warm)
        self.passthrough_limiter: Any = None

    # ---------------------------------------------------------------- lifecycle

    async def startup(self) -> None:
        import anyio

        # Separate thread budgets: a flood of slow pass-through requests cannot take the threads
        # neural searches run in (anyio's shared default pool), nor the other way round.
        self.passthrough_limiter = anyio.CapacityLimiter(32)
        self.neural.start()
        policy = self.guard.policy
        log_event("start", cluster=self.upstream.cluster.describe(), auth=self.upstream.auth,
                  allow_index=policy.allow_index, allow_scripts=policy.allow_scripts,
                  allow_profile=policy.allow_profile)
        for kind in self.warm:
            t0 = time.perf_counter()
            enc = await run_in_threadpool(self.cache.encoders.get, kind)
            await run_in_threadpool(enc.encode_queries, ["warm up the encoder"])
            log_event("warm", kind=kind, ms=round((time.perf_counter() - t0) * 1e3, 1))

    async def shutdown(self) -> None:
        self.neural.close()
        self.upstream.close()

    @contextlib.asynccontextmanager
    async def lifespan(self, _app: Starlette):
        await self.startup()
        try:
            yield
        finally:
            await self.shutdown()

    # ---------------------------------------------------------------- single requests

    async def handle(self, request: Request, route: str) -> Response:
        """A single request: checked, then neural or forwarded; errors shaped like OpenSearch's."""
        from opensearchpy import TransportError

        rid = uuid.uuid4().hex[:12]
        t0 = time.perf_counter()
        try:
            index, params, body = await self.guard.request(request, route)
            who = self.upstream.caller(request)
            await self.guard.check_body(who, index, body)
            if route == "search" and is_neural(body):
                self.guard.neural_params(params)
                self.guard.check_content_type(request)
                status, data = await self.neural.search(index, body, who, rid, t0)
                retry = {"retry-after": "1"} if status == 503 else None
                return json_response(data, status, "pretty" in params and status == 200, retry)
            rest = _upstream_rest(route, request)
            data = await in_thread(
                self.passthrough_limiter, self.upstream.forward, who, request.method,
                upstream_path(index, *rest), params,
                rg.dump_json(body) if body is not None else None)
        except GuardError as exc:
            log_event("refused", request_id=rid, path=request.url.path, status=exc.status,
                      type=exc.kind, reason=exc.reason)
            return error_response(exc.status, exc.kind, exc.reason)
        except TransportError as exc:
            resp = upstream_error(exc, rid)
            log_event("upstream_error", request_id=rid, path=request.url.path,
                      status=resp.status_code)
            return resp
        log_event("passthrough", request_id=rid, path=request.url.path,
                  ms=round((time.perf_counter() - t0) * 1e3, 2))
        if request.method == "HEAD":
            return Response(status_code=200 if data else 404)
        if isinstance(data, (dict, list)):
            return json_response(data, pretty="pretty" in params)
        return Response(data if data is not None else b"", media_type="application/json")

    async def search(self, request: Request) -> Response:
        return await self.handle(request, "search")

    async def count(self, request: Request) -> Response:
        return await self.handle(request, "count")

    async def mapping(self, request: Request) -> Response:
        return await self.handle(request, "mapping")

    async def doc(self, request: Request) -> Response:
        return await self.handle(request, "doc")

    async def root(self, request: Request) -> Response:
        return await self.handle(request, "root")

    # ---------------------------------------------------------------- _msearch

    async def msearch(self, request: Request) -> Response:
        """NDJSON `_msearch`: each item pass-through or `ext.osneural`, checked like a single
        request; at most `max_msearch_items` items and `max_msearch_stages` pipeline stages in
        all, run a few at a time (neural items also wait for the shared neural slots)."""
        rid = uuid.uuid4().hex[:12]
        t0 = time.perf_counter()
        limits = self.guard.limits
        try:
            default = self.guard.path_index(request, "msearch")
            params = rg.check_params(request.query_params.multi_items(), "msearch",
                                     self.guard.policy)
            raw = await self.guard.read_body(request)
            ct = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
            if ct != "application/x-ndjson":
                self.guard.check_content_type(request)
            items = msearch_body.split_msearch(raw, limits.max_json_depth, limits.max_msearch_items)
            msearch_body.check_work(items, limits.max_msearch_stages)
        except GuardError as exc:
            log_event("refused", request_id=rid, path=request.url.path, status=exc.status,
                      type=exc.kind, reason=exc.reason)
            return error_response(exc.status, exc.kind, exc.reason)
        who = self.upstream.caller(request)
        gate = asyncio.Semaphore(4)

        async def one(header: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
            async with gate:
                return await self.msearch_item(header, body, default, who, rid)

        responses = await asyncio.gather(*(one(h, b) for h, b in items))
        took = int(round((time.perf_counter() - t0) * 1e3))
        log_event("msearch", request_id=rid, items=len(items), ms=took,
                  statuses=[r.get("status") for r in responses])
        return json_response({"took": took, "responses": list(responses)},
                             pretty="pretty" in params)

    async def msearch_item(self, header: dict[str, Any], body: dict[str, Any],
                           default: str | None, who: Any, rid: str) -> dict[str, Any]:
        """One `_msearch` item through the same checks as a single `_search`; its answer or
        its error, in OpenSearch's per-item shape (`status` on each)."""
        from opensearchpy import TransportError

        t0 = time.perf_counter()
        try:
            index, params = self.guard.msearch_item(header, default)
            await self.guard.check_body(who, index, body)
            if is_neural(body):
                self.guard.neural_params(params)
                status, data = await self.neural.search(index, body, who, rid, t0)
                return {**data, "status": status}
            data = await in_thread(self.passthrough_limiter, self.upstream.forward, who, "POST",
                                   upstream_path(index, "_search"), params, rg.dump_json(body))
            if isinstance(data, dict):
                return {**data, "status": 200}
            return error_body(502, "osneural_upstream_error", "OpenSearch answered no JSON")
        except GuardError as exc:
            return error_body(exc.status, exc.kind, exc.reason)
        except TransportError as exc:
            resp = upstream_error(exc, rid)
            data = json.loads(resp.body)
            data.setdefault("status", resp.status_code)
            return data

    # ---------------------------------------------------------------- the service's own

    async def health(self, request: Request) -> Response:
        from opensearchpy import TransportError

        try:
            r = await run_in_threadpool(self.upstream.health.cluster.health, request_timeout=5)
            status = r.get("status")
        except TransportError as exc:
            status = "auth_required" if exc.status_code in (401, 403) else None
        ok = status in ("green", "yellow", "auth_required")
        return JSONResponse(
            {"status": "ok" if ok else "degraded", "opensearch": status, "auth": self.upstream.auth,
             "encoders_loaded": self.cache.encoders.loaded()},
            200 if ok else 503,
        )

    @staticmethod
    async def no_route(request: Request) -> Response:
        return error_response(
            400, "osneural_no_handler",
            f"no handler for [{request.method}] {rg._show(request.url.path, 200)}: "
            "osneural serves /, _search, _msearch, {index}/_search, _msearch, _count, "
            "_mapping and _doc/{id}")

    @staticmethod
    async def http_error(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 500)
        return error_response(status, "osneural_http_error",
                              str(getattr(exc, "detail", "")) or "error")

    @staticmethod
    async def internal_error(request: Request, exc: Exception) -> Response:
        rid = uuid.uuid4().hex[:12]
        log.error("internal error (request %s)", rid, exc_info=exc)
        return error_response(500, "osneural_internal_error",
                              f"internal error (request {rid}); see the service log")

    def routes(self) -> list[Route]:
        methods_all = ["GET", "POST", "PUT", "DELETE", "HEAD", "PATCH", "OPTIONS"]
        return [
            Route("/_osneural/health", self.health, methods=["GET"]),
            Route("/", self.root, methods=["GET", "HEAD"]),
            Route("/_search", self.search, methods=["GET", "POST"]),
            Route("/_msearch", self.msearch, methods=["GET", "POST"]),
            Route("/{index}/_search", self.search, methods=["GET", "POST"]),
            Route("/{index}/_msearch", self.msearch, methods=["GET", "POST"]),
            Route("/{index}/_count", self.count, methods=["GET", "POST"]),
            Route("/{index}/_mapping", self.mapping, methods=["GET"]),
            Route("/{index}/_doc/{doc_id}", self.doc, methods=["GET", "HEAD"]),
            Route("/{path:path}", self.no_route, methods=methods_all),
        ]


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
    if auth not in AUTH_MODES:
        raise ValueError(f"auth must be one of {AUTH_MODES}, not {auth!r}")
    if not isinstance(cluster, ClusterConfig):
        cluster = ClusterConfig.from_values(cluster, timeout=30)
    policy = Policy(tuple(allow_index) if allow_index else None, allow_scripts, allow_profile)
    limits = limits or Limits()
    cache = cache or ResourceCache()
    upstream = Upstream(cluster, auth, client)
    service = Service(upstream, RequestGuard(policy, limits, max_body_bytes),
                      NeuralHandler(cache, limits, upstream.passthrough), cache, warm or ())
    return Starlette(routes=service.routes(), lifespan=service.lifespan,
                     exception_handlers={HTTPException: service.http_error,
                                         Exception: service.internal_error})
