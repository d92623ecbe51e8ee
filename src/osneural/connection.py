"""How every osneural command reaches a cluster: hosts, credentials, TLS, retries.

One place decides, so `ingest`, `search`, `serve`, `eval` and `demo` agree on what `--url` means
and so a real cluster (several nodes, TLS, basic auth) works the same everywhere. The client is
opensearch-py's own: its transport keeps a pool of connections per host, marks a host dead on a
connection error and retries the request on another one, so a node dying mid-query costs a retry,
not a failed query. Credentials never appear in `describe()`, logs or error messages.

Sources, first wins: command-line flags, then the environment (`OSNEURAL_OPENSEARCH_URL` -- one
URL or a comma list -- `OSNEURAL_OPENSEARCH_USER`, `OSNEURAL_OPENSEARCH_PASSWORD`,
`OSNEURAL_OPENSEARCH_CA_CERTS`, `OSNEURAL_OPENSEARCH_INSECURE`), then credentials written in a URL
(`https://user:password@host:9200`), then the local node `osneural opensearch start` runs.
"""

from __future__ import annotations

import argparse
import functools
import os
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

from osneural.errors import ClusterConfigError  # noqa: F401 - raised here, importable from here

DEFAULT_URL = "http://127.0.0.1:9200"
ENV_URL = "OSNEURAL_OPENSEARCH_URL"
ENV_USER = "OSNEURAL_OPENSEARCH_USER"
ENV_PASSWORD = "OSNEURAL_OPENSEARCH_PASSWORD"
ENV_CA = "OSNEURAL_OPENSEARCH_CA_CERTS"
ENV_INSECURE = "OSNEURAL_OPENSEARCH_INSECURE"



@dataclass(frozen=True)
class Host:
    """One node's base URL, without credentials."""

    scheme: str
    host: str
    port: int

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


def parse_host(value: str) -> tuple[Host, tuple[str, str] | None]:
    """`http(s)://[user:password@]host[:port]` (or a bare `host[:port]`) -> host and credentials."""
    raw = value.strip()
    if not raw:
        raise ClusterConfigError("empty OpenSearch URL in the host list")
    if "://" not in raw:
        raw = "http://" + raw
    try:
        parts = urlsplit(raw)
        port = parts.port
    except ValueError as exc:
        raise ClusterConfigError(f"OpenSearch URL {_redact(value)!r}: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise ClusterConfigError(
            f"OpenSearch URL {_redact(value)!r}: scheme must be http or https, not {parts.scheme!r}")
    if not parts.hostname:
        raise ClusterConfigError(f"OpenSearch URL {_redact(value)!r} names no host")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ClusterConfigError(
            f"OpenSearch URL {_redact(value)!r}: a path prefix, query or fragment is not supported")
    creds = None
    if parts.username is not None:
        creds = (unquote(parts.username), unquote(parts.password or ""))
    return Host(parts.scheme, parts.hostname, port or 9200), creds


def _redact(value: str) -> str:
    """`value` with any `user:password@` replaced, for messages."""
    scheme, sep, rest = value.partition("://")
    if not sep:
        scheme, rest = "", value
    if "@" in rest.split("/", 1)[0]:
        rest = "***@" + rest.split("@", 1)[1]
    return f"{scheme}{sep}{rest}" if sep else rest


def split_urls(values: str | list[str] | tuple[str, ...] | None) -> list[str]:
    """Repeatable values, each possibly a comma list, flattened."""
    if values is None:
        return []
    if isinstance(values, str):
        values = [values]
    return [part.strip() for v in values for part in v.split(",") if part.strip()]


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class ClusterConfig:
    """Everything needed to open a client to one cluster."""

    hosts: tuple[Host, ...]
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_certs: str | None = None
    insecure: bool = False
    sniff: bool = False
    timeout: float = 60.0

    @classmethod
    def from_values(
        cls,
        urls: str | list[str] | tuple[str, ...] | None = None,
        user: str | None = None,
        password: str | None = None,
        ca_certs: str | None = None,
        insecure: bool | None = None,
        sniff: bool = False,
        timeout: float = 60.0,
        env: dict[str, str] | None = None,
    ) -> ClusterConfig:
        """Flags first, then the environment, then credentials in the URLs, then the local node."""
        env = os.environ if env is None else env
        values = split_urls(urls)
        if urls is not None and not values:
            raise ClusterConfigError("--url names no host")
        values = values or split_urls(env.get(ENV_URL)) or [DEFAULT_URL]
        hosts: list[Host] = []
        url_creds: set[tuple[str, str]] = set()
        for value in values:
            host, creds = parse_host(value)
            if host not in hosts:
                hosts.append(host)
            if creds is not None:
                url_creds.add(creds)
        if len(url_creds) > 1:
            raise ClusterConfigError("the OpenSearch URLs carry different credentials; give one "
                                     "--user/--password for the cluster instead")
        user = user if user is not None else env.get(ENV_USER) or None
        password = password if password is not None else env.get(ENV_PASSWORD)
        if user is None and url_creds:
            user, url_password = next(iter(url_creds))
            password = password if password is not None else url_password
        if password is not None and user is None:
            raise ClusterConfigError(f"a password was given without a user (--user or {ENV_USER})")
        ca_certs = ca_certs or env.get(ENV_CA) or None
        if ca_certs and not os.path.isfile(ca_certs):
            raise ClusterConfigError(f"CA bundle {ca_certs!r} is not a readable file")
        insecure = _truthy(env.get(ENV_INSECURE)) if insecure is None else insecure
        return cls(tuple(hosts), user, password if user else None, ca_certs, bool(insecure),
                   sniff, timeout)

    @classmethod
    def from_args(cls, args: argparse.Namespace, timeout: float = 60.0) -> ClusterConfig:
        """From the flags `add_cluster_arguments` defined (and the environment behind them)."""
        return cls.from_values(
            getattr(args, "url", None), getattr(args, "user", None),
            getattr(args, "password", None), getattr(args, "ca_certs", None),
            True if getattr(args, "insecure", False) else None,
            getattr(args, "sniff", False), timeout,
        )

    @property
    def http_auth(self) -> tuple[str, str] | None:
        return (self.user, self.password or "") if self.user is not None else None

    @property
    def urls(self) -> list[str]:
        """Base URLs without credentials."""
        return [h.url for h in self.hosts]

    def describe(self) -> str:
        """The hosts for messages and result files: never the password."""
        who = f" as {self.user!r}" if self.user else ""
        return ",".join(self.urls) + who

    def client_kwargs(self, pool_maxsize: int = 32) -> dict[str, Any]:
        """Keyword arguments for `opensearchpy.OpenSearch` (also used by the async client)."""
        use_ssl = any(h.scheme == "https" for h in self.hosts)
        kwargs: dict[str, Any] = {
            "hosts": [{"host": h.host, "port": h.port, "use_ssl": h.scheme == "https",
                       "scheme": h.scheme} for h in self.hosts],
            "timeout": self.timeout,
            # Each retry goes to the next live host; one per host plus one covers a node dying.
            "max_retries": len(self.hosts) + 1,
            "retry_on_status": (502, 503, 504),
            "pool_maxsize": pool_maxsize,
            "serializer": fast_json_serializer(),
        }
        if self.http_auth is not None:
            kwargs["http_auth"] = self.http_auth
        if use_ssl:
            kwargs["use_ssl"] = True
            kwargs["verify_certs"] = not self.insecure
            kwargs["ssl_show_warn"] = not self.insecure
            if self.ca_certs:
                kwargs["ca_certs"] = self.ca_certs
            if self.insecure:
                kwargs["ssl_assert_hostname"] = False
        if self.sniff:
            kwargs.update(sniff_on_start=True, sniff_on_connection_fail=True, sniffer_timeout=60)
        return kwargs

    def client(self, pool_maxsize: int = 32, **overrides: Any) -> Any:
        """An `opensearchpy.OpenSearch` over every host, with retries to the others."""
        from opensearchpy import OpenSearch

        kwargs = self.client_kwargs(pool_maxsize)
        kwargs.update(overrides)
        return OpenSearch(**kwargs)


@functools.cache
def fast_json_serializer() -> Any:
    """opensearch-py's JSON serializer, reading responses with orjson.

    The standard `json` module takes about 1 ms (with the GIL held) to parse a 60 KB answer of
    10 hits with their `_source`, orjson a tenth of that; `serve` parses every pass-through
    answer and every page of hits. What orjson would read differently goes to the standard
    module: a body orjson refuses (`NaN`), and one with a run of 20 digits or more, which may be
    an integer past 64 bits (orjson reads those as floats, losing digits, where `_source` must
    come back as it was written). Request bodies keep the standard writer (osneural's own are
    written with orjson beforehand, where that is exact:
    `osneural.plugin.stages.request.encode_body`). One instance serves every client: it keeps no
    state."""
    import orjson
    from opensearchpy.serializer import JSONSerializer

    # every digit to "9", every other byte to " ": a run of 20 digits is then one `find` (a
    # regular expression took 15 times longer than orjson's whole parse)
    digits = bytes(0x39 if 0x30 <= b <= 0x39 else 0x20 for b in range(256))
    twenty = b"9" * 20

    class FastJSONSerializer(JSONSerializer):
        def loads(self, s: str) -> Any:
            raw = s.encode("utf-8", "surrogatepass") if isinstance(s, str) else s
            if raw.translate(digits).find(twenty) < 0:
                try:
                    return orjson.loads(raw)
                except orjson.JSONDecodeError:
                    pass
            return super().loads(s)

    return FastJSONSerializer()


def add_cluster_arguments(parser: argparse.ArgumentParser) -> None:
    """`--url` (repeatable, or a comma list), `--user`, `--password`, `--ca-certs`, `--insecure`,
    `--sniff`: the same flags on every command that talks to a cluster."""
    g = parser.add_argument_group("cluster")
    g.add_argument("--url", action="append", default=None, metavar="URL",
                   help=f"OpenSearch node URL; repeat it or give a comma list for several nodes "
                        f"(default ${ENV_URL}, else {DEFAULT_URL})")
    g.add_argument("--user", default=None, help=f"basic-auth user (default ${ENV_USER})")
    g.add_argument("--password", default=None,
                   help=f"basic-auth password (prefer ${ENV_PASSWORD}: flags show in `ps`)")
    g.add_argument("--ca-certs", default=None, metavar="PEM",
                   help=f"CA bundle that signed the cluster's certificate (default ${ENV_CA})")
    g.add_argument("--insecure", action="store_true",
                   help="do not verify the cluster's TLS certificate (self-signed test clusters)")
    g.add_argument("--sniff", action="store_true",
                   help="discover the cluster's other nodes from the ones given")

