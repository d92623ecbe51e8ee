"""The request guard of `osneural serve`: every HTTP request is checked here, with the pure
checks of `osneural.plugin.request_guard`, before anything leaves the process.

It reads the body within its size limit, checks the path's index expression (allow-list, then
what `_resolve/index` says it names), the URL parameters, the content type and the JSON body
(depth, hostile clauses, the indices that lookups reach). Every refusal is a `GuardError`
carrying the HTTP status and an OpenSearch-style error type.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from osneural.plugin import request_guard as rg
from osneural.plugin.request_guard import Limits, Policy
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from osneural.errors import GuardError

DEFAULT_MAX_BODY = 1 << 20


class BodyTooLarge(Exception):
    """The body passed the size limit (internal: turned into a 413 `GuardError`)."""


async def read_limited(request: Request, limit: int) -> bytes:
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


def index_allowed(index: str, patterns: list[str] | None) -> bool:
    """Whether the path expression `index` passes the allow-list's name rules (no resolution):
    with patterns, one plain name matching a pattern; lists and wildcards are refused."""
    try:
        rg.check_index_expression(index, Policy(tuple(patterns) if patterns else None))
    except GuardError:
        return False
    return True


class RequestGuard:
    """The checks of one service (its policy, limits and body size cap)."""

    def __init__(self, policy: Policy, limits: Limits, max_body_bytes: int = DEFAULT_MAX_BODY) -> None:
        self.policy = policy
        self.limits = limits
        self.max_body_bytes = max_body_bytes

    async def read_body(self, request: Request) -> bytes:
        try:
            return await read_limited(request, self.max_body_bytes)
        except BodyTooLarge:
            raise GuardError(413, "osneural_request_too_large",
                             f"request body exceeds {self.max_body_bytes} bytes") from None

    @staticmethod
    def check_content_type(request: Request) -> None:
        if not rg.is_json_content_type(request.headers.get("content-type")):
            raise GuardError(415, "osneural_media_type_not_supported",
                             f"Content-Type [{rg._show(request.headers.get('content-type') or '', 80)}] "
                             "is not supported; send application/json")

    def path_index(self, request: Request, route: str) -> str | None:
        """The checked index of the path; None for index-less `/_search` (no allow-list only)."""
        raw = request.path_params.get("index")
        if raw is None:
            if self.policy.allow_index and route not in ("root", "msearch"):
                raise GuardError(403, "osneural_index_not_allowed",
                                 "with an allow-list the path must name one index")
            return None
        return rg.check_index_expression(raw, self.policy)

    async def request(self, request: Request, route: str) -> tuple[str | None, dict[str, str], Any]:
        """Checked (index, params, body or None) of a single request; its indices are checked
        with `check_body` once the caller's client is known."""
        index = self.path_index(request, route)
        params = rg.check_params(request.query_params.multi_items(), route, self.policy)
        raw = await self.read_body(request)
        body = None
        if raw.strip():
            if route in ("mapping", "doc", "root"):
                raise GuardError(400, "osneural_illegal_argument", "this endpoint takes no body")
            self.check_content_type(request)
            body = rg.parse_json_body(raw, self.limits.max_json_depth)
            if route == "search" and not isinstance(body, dict):
                raise GuardError(400, "osneural_parse_error", "request body must be a JSON object")
        return index, params, body

    async def check_body(self, who: Any, index: str | None, body: Any) -> None:
        """The body's clauses, and -- with an allow-list -- every index the path and the body's
        lookups resolve to, as the caller (`who`) sees them."""
        refs = rg.walk_clauses(body, self.policy) if body is not None else []
        if index is not None or refs:
            await self.check_indices(who, index, refs)

    async def check_indices(self, who: Any, index: str | None, refs: list[rg.IndexReference]) -> None:
        """With an allow-list: what the path and each lookup resolve to must be allowed too."""
        if not self.policy.allow_index:
            return
        from opensearchpy import NotFoundError

        targets = ([(index, "")] if index is not None else []) + [(r.index, r.path) for r in refs]
        for expr, where in targets:
            try:
                resolved = await run_in_threadpool(functools.partial(who.indices.resolve_index, name=expr))
            except NotFoundError:
                continue  # nothing of that name: the request itself will answer 404
            rg.check_resolved(expr, resolved, self.policy, where)

    @staticmethod
    def neural_params(params: dict[str, str]) -> None:
        extra = params.keys() - rg.ROUTE_PARAMS["neural"]
        if extra:
            raise GuardError(400, "osneural_illegal_argument",
                             f"request parameters {sorted(extra)} are not supported with ext.osneural")

    def msearch_item(self, header: dict[str, Any], default: str | None) -> tuple[str | None, dict[str, str]]:
        """Checked (index, params) of one `_msearch` item's header line."""
        index = header.get("index", default)
        if isinstance(index, list) and all(isinstance(x, str) for x in index):
            index = ",".join(index)
        if index is not None and not isinstance(index, str):
            raise GuardError(400, "osneural_illegal_argument", "index: must be a string")
        if index is None and self.policy.allow_index:
            raise GuardError(403, "osneural_index_not_allowed",
                             "with an allow-list each item must name one index")
        if index is not None:
            index = rg.check_index_expression(index, self.policy)
        params = rg.check_params([(k, v if isinstance(v, str) else json.dumps(v))
                                  for k, v in header.items() if k != "index"], "search", self.policy)
        return index, params
