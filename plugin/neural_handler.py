"""The neural `_search` of `osneural serve`: a body with an `ext.osneural` block runs the
pipeline through a `Searcher` and answers like OpenSearch's `_search`.

Body of a neural search::

    {"size": 10, "_source": ["title"],            # optional, override the spec
     "query": {...},                              # optional, applied as a filter
     "aggs": ..., "highlight": ..., "sort": ..., "search_after": ..., "post_filter": ...,
     "collapse": ..., "min_score": ..., "track_total_hits": ...   # osneural.plugin.search_body
     "ext": {"osneural": {"query": "text", "spec": {...} | "hybrid", "explain": false}}}

No `spec` runs the index's default (`osneural.plugin.searcher.default_spec`). A spec named by a
string is a built-in only: over HTTP a string is never opened as a file. At most
`Limits.max_concurrent` neural searches run at once, in their own thread budget; a request that
waits longer than `Limits.queue_timeout_s` for a slot is answered 503.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import dataclasses
import functools
import json
import time
from importlib import resources
from typing import Any

from osneural.plugin import request_guard as rg
from osneural.plugin import search_body
from osneural.plugin.access_check import AccessCheck
from osneural.plugin.request_guard import Limits
from osneural.plugin.resources import ResourceCache
from osneural.plugin.responses import error_body, log_event
from osneural.plugin.searcher import Searcher
from osneural.plugin.spec import builtin_spec_names, parse_spec
from starlette.concurrency import run_in_threadpool

from osneural.errors import GuardError, SearchError, SpecError, StageError


def is_neural(body: Any) -> bool:
    return isinstance(body, dict) and isinstance(body.get("ext"), dict) and "osneural" in body["ext"]


def builtin_spec_only(name: str) -> Any:
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


def spec_from_body(body: dict[str, Any], limits: Limits | None = None) -> NeuralRequest:
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
        spec, name = builtin_spec_only(raw), raw
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


def caller_scope(who: Any) -> str:
    """The code cache partition of the caller: a digest of the credential it forwards (callers
    who send none share one), so doc values read for one credential are never scored for
    another's query (osneural.plugin.code_cache)."""
    import hashlib

    headers = getattr(who, "_headers", None) or {}
    auth = headers.get("authorization", "")
    return hashlib.sha256(auth.encode("utf-8")).hexdigest()[:32] if auth else ""


async def in_thread(limiter: Any, fn: Any, *args: Any) -> Any:
    """`fn(*args)` in a worker thread, within `limiter`'s budget (anyio's default without one)."""
    import anyio

    return await anyio.to_thread.run_sync(functools.partial(fn, *args), limiter=limiter)


class NeuralHandler:
    """Runs `ext.osneural` searches for one service: its resource cache, limits and slots."""

    def __init__(self, cache: ResourceCache, limits: Limits, passthrough_auth: bool) -> None:
        self.cache = cache
        self.limits = limits
        self.passthrough_auth = passthrough_auth
        self.access = AccessCheck()
        self.slots = asyncio.Semaphore(limits.max_concurrent)
        self.limiter: Any = None  # the neural thread budget, made at startup (in the event loop)
        # One stage pool for every request of this process, sized so that `max_concurrent`
        # searches never wait for each other's threads: a stage pool per request started and
        # stopped threads on every query, costing thread starts and, over an hour, memory.
        self.pool = cf.ThreadPoolExecutor(
            max_workers=limits.max_concurrent * (limits.max_first_stages + limits.max_rescore_stages),
            thread_name_prefix="osneural-stage")

    def start(self) -> None:
        import anyio

        self.limiter = anyio.CapacityLimiter(self.limits.max_concurrent)

    def close(self) -> None:
        """Stop the stage pool (the app is shutting down; in-flight searches have drained)."""
        self.pool.shutdown(wait=False, cancel_futures=True)

    async def search(self, index: str | None, body: dict[str, Any], who: Any, rid: str,
                     t0: float) -> tuple[int, dict[str, Any]]:
        """One `ext.osneural` search: (status, OpenSearch-shaped JSON), errors included, so a
        single request and an `_msearch` item answer alike. A TransportError passes up."""
        try:
            req = spec_from_body(body, self.limits)
            if index is None or "," in index or "*" in index:
                raise SpecError("ext.osneural searches one concrete index, not a list or pattern")
        except SpecError as exc:
            log_event("bad_request", request_id=rid, index=index, reason=str(exc))
            return 400, error_body(400, "osneural_spec_error", str(exc))
        if self.passthrough_auth:
            # The caller must be able to search the index before any encoder runs for them, and
            # before cached index descriptions (shared across callers) shape their answer
            # (osneural.plugin.access_check: passed checks are remembered a few seconds).
            scope = caller_scope(who)
            if not self.access.passed(index, scope):
                await run_in_threadpool(self.access.check, who, index, scope)
        try:
            await asyncio.wait_for(self.slots.acquire(), timeout=self.limits.queue_timeout_s)
        except TimeoutError:
            return 503, error_body(503, "osneural_overloaded",
                                   f"{self.limits.max_concurrent} neural searches are already "
                                   "running; retry")
        try:
            result = await self._run(req, index, who)
        except (SpecError, StageError) as exc:
            log_event("bad_request", request_id=rid, index=index, reason=str(exc))
            status = getattr(exc, "status", 400)
            status = status if isinstance(status, int) else 400
            return status, error_body(status, "osneural_spec_error", str(exc))
        except SearchError as exc:
            log_event("failed", request_id=rid, index=index, reason=str(exc))
            return exc.status, error_body(exc.status, "osneural_search_error", str(exc))
        finally:
            self.slots.release()
        osn = result["ext"]["osneural"]
        log_event("search", request_id=rid, index=index, status=200, spec=osn.get("spec"),
                  timings_ms={k: round(v, 2) for k, v in osn["timings_ms"].items()},
                  warnings=osn["warnings"], hits=len(result["hits"]["hits"]),
                  ms=round((time.perf_counter() - t0) * 1e3, 2))
        return 200, result

    async def _run(self, req: NeuralRequest, index: str, who: Any) -> dict[str, Any]:
        """The pipeline in a worker thread, as the caller (`who`)."""
        searcher = Searcher(who, index, cache=self.cache, executor=self.pool,
                            code_cache_scope=caller_scope(who))
        try:
            return await in_thread(self.limiter, functools.partial(
                searcher.search, req.text, req.spec, req.options, spec_name=req.spec_name))
        finally:
            searcher.close()
