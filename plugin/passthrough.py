"""The upstream side of `osneural serve`: which client a request acts with, and forwarding what
the service does not answer itself (plain `_search`, `_count`, `_mapping`, `_doc`) to OpenSearch.

In `passthrough` auth the upstream client holds no credentials: each request acts through a
`CallerClient` that adds the caller's own `Authorization` header, so OpenSearch's security plugin
decides access as if the caller had asked it directly, and a code path that forgot the header
fails closed (401). In `service` auth the service's own client is used for everything.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any
from urllib.parse import quote

from osneural.plugin.responses import error_response, log
from starlette.requests import Request
from starlette.responses import JSONResponse

from osneural.connection import ClusterConfig

AUTH_MODES = ("passthrough", "service")
DEFAULT_AUTH = "passthrough"


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


def client_has_credentials(client: Any) -> bool:
    pool = getattr(getattr(client, "transport", None), "connection_pool", None)
    conns = getattr(pool, "connections", None) or []
    return any("authorization" in {k.lower() for k in getattr(c, "headers", {}) or {}}
               for c in conns)


class Upstream:
    """The OpenSearch clients of one service: `upstream` for requests, `health` for
    `/_osneural/health` (the service's own credentials, when it has any)."""

    def __init__(self, cluster: ClusterConfig, auth: str, client: Any = None) -> None:
        if auth not in AUTH_MODES:
            raise ValueError(f"auth must be one of {AUTH_MODES}, not {auth!r}")
        self.cluster = cluster
        self.auth = auth
        self.passthrough = auth == "passthrough"
        self._own_client = client is None
        if self.passthrough:
            anonymous = dataclasses.replace(cluster, user=None, password=None)
            self.upstream = client or anonymous.client(pool_maxsize=64)
            if client_has_credentials(self.upstream):
                raise ValueError("--auth passthrough needs an upstream client without credentials "
                                 "(callers' own are forwarded)")
            self.health = cluster.client(pool_maxsize=2) if cluster.user else self.upstream
        else:
            self.upstream = client or cluster.client(pool_maxsize=64)
            self.health = self.upstream
        self.timeout = float(cluster.timeout)

    def caller(self, request: Request) -> Any:
        """The client to act with for this request (see the module docstring)."""
        if not self.passthrough:
            return self.upstream
        value = request.headers.get("authorization")
        return CallerClient(self.upstream, {"authorization": value} if value else {})

    def forward(self, who: Any, method: str, path: str, params: dict[str, str],
                body: bytes | None) -> Any:
        """One pass-through request over the multi-host transport, as `who`."""
        headers = dict(who._headers) if isinstance(who, CallerClient) else {}
        return self.upstream.transport.perform_request(
            method, path, params=params or None, body=body, headers=headers or None,
            timeout=self.timeout)

    def close(self) -> None:
        if self._own_client:
            self.upstream.close()
        if self.health is not self.upstream:
            self.health.close()


def upstream_path(index: str | None, *rest: str) -> str:
    """The upstream path, rebuilt from the checked index name (never the caller's raw path)."""
    head = [quote(index, safe=",*")] if index is not None else []
    return "/" + "/".join(head + [quote(p, safe="_") for p in rest])


def upstream_error(exc: Exception, rid: str) -> JSONResponse:
    """An opensearch-py error as the HTTP answer: OpenSearch's own JSON when it sent one."""
    from opensearchpy import ConnectionError as OSConnectionError
    from opensearchpy import ConnectionTimeout, TransportError

    if isinstance(exc, ConnectionTimeout):
        return error_response(504, "osneural_upstream_timeout", "OpenSearch did not answer in time")
    if isinstance(exc, OSConnectionError):
        return error_response(502, "osneural_upstream_unreachable",
                              "no OpenSearch node could be reached (every host was tried)")
    if not isinstance(exc, TransportError) or not isinstance(exc.status_code, int):
        log.exception("upstream failure", exc_info=exc)
        return error_response(502, "osneural_upstream_error",
                              f"OpenSearch request failed (request {rid})")
    status = exc.status_code
    headers = {"www-authenticate": 'Basic realm="OpenSearch"'} if status == 401 else None
    info = exc.info
    if isinstance(info, dict):
        return JSONResponse(info, status, headers=headers)
    kind = "security_exception" if status in (401, 403) else "osneural_upstream_error"
    reason = {401: "authentication required: the cluster refused the caller's credentials",
              403: "the cluster refused the caller access"}.get(status, f"OpenSearch answered {status}")
    return error_response(status, kind, reason, headers)
