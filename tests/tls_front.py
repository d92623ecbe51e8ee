"""A secured test cluster: the session's OpenSearch node behind nginx with TLS and basic auth.

OpenSearch's security plugin is not on Maven Central, so the tests secure the node the way many
self-managed clusters are fronted: nginx (Debian's package, installed by scripts/setup.sh)
terminates TLS with a CA generated here (openssl CLI) and enforces basic auth for two users. The
nginx is our own process -- its own config, pid file, temp dirs and a free loopback port in a temp
dir -- never the system service. Its access log records `$remote_user` for every request, which
is how the tests see *whose* credentials reached the upstream (passthrough vs service mode).

Users: `alice` (a caller), `svc` (the osneural service's own account) and `bob`, who is
authenticated but forbidden (403, shaped like the security plugin's answer) on any path that
contains `restricted`, so a 403 from the upstream can be shown to pass through.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

USERS = {"alice": "alice-pw-Zq8#1", "svc": "svc-pw-Kx2!9", "bob": "bob-pw-Lm4%7"}

_FORBIDDEN = ('{"error":{"root_cause":[{"type":"security_exception","reason":"no permissions '
              'for [indices:data/read/search] and User [name=bob]"}],"type":"security_exception",'
              '"reason":"no permissions for [indices:data/read/search] and User [name=bob]"},'
              '"status":403}')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_test_ca(folder: Path) -> tuple[Path, Path, Path]:
    """(ca.pem, server.pem, server.key): a CA and a leaf for 127.0.0.1/localhost signed by it."""
    folder.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "3",
             "-subj", "/CN=osneural test CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=folder)
    _openssl("req", *ec, "-keyout", "server.key", "-out", "server.csr",
             "-subj", "/CN=127.0.0.1", cwd=folder)
    (folder / "leaf.ext").write_text(
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n"
        "authorityKeyIdentifier=keyid\nsubjectKeyIdentifier=hash\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "server.pem", "-days", "3", "-extfile", "leaf.ext",
             cwd=folder)
    return folder / "ca.pem", folder / "server.pem", folder / "server.key"


def _htpasswd(users: dict[str, str]) -> str:
    lines = []
    for user, password in users.items():
        out = subprocess.run(["openssl", "passwd", "-apr1", "-stdin"], input=password, text=True,
                             check=True, capture_output=True, timeout=30).stdout.strip()
        lines.append(f"{user}:{out}")
    return "\n".join(lines) + "\n"


_CONF = """\
{user_line}
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 512; }}
http {{
    log_format osn '$remote_user|$request_method|$request_uri|$status';
    access_log {dir}/access.log osn;
    client_body_temp_path {dir}/tmp/body;
    proxy_temp_path {dir}/tmp/proxy;
    fastcgi_temp_path {dir}/tmp/fastcgi;
    uwsgi_temp_path {dir}/tmp/uwsgi;
    scgi_temp_path {dir}/tmp/scgi;
    client_max_body_size 64m;
    upstream opensearch {{ server {upstream}; keepalive 16; }}
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        auth_basic "osneural test cluster";
        auth_basic_user_file {dir}/htpasswd;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_set_header Authorization "";
        location ~ restricted {{
            if ($remote_user = "bob") {{
                return 403 '{forbidden}';
            }}
            proxy_pass http://opensearch;
        }}
        location / {{
            proxy_pass http://opensearch;
        }}
    }}
}}
"""


@dataclass
class TLSFront:
    """A running nginx front; `url` is https://127.0.0.1:PORT, `ca` the CA bundle to trust."""

    url: str
    ca: Path
    folder: Path
    users: dict[str, str] = field(default_factory=lambda: dict(USERS))
    process: subprocess.Popen | None = None

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def log_mark(self) -> int:
        """Where the access log ends now (pass to `remote_users` to see later requests only)."""
        path = self.folder / "access.log"
        return path.stat().st_size if path.exists() else 0

    def requests_since(self, mark: int, at_least: int = 0,
                       timeout_s: float = 15.0) -> list[tuple[str, str, str, int]]:
        """(remote user or '-', method, uri, status) of every request logged after `mark`.

        nginx writes a request's log line after its response, so a client can read the log
        before the line is there; on a busy machine a fixed pause is a race. So this waits for
        at least `at_least` lines and for the log to stay the same size for 0.3 s (at most
        `timeout_s`, then returns what is there for the caller's assertion to name)."""
        path = self.folder / "access.log"
        deadline = time.monotonic() + timeout_s
        seen, stable_since = -1, time.monotonic()
        while True:
            with open(path, "rb") as fh:
                fh.seek(mark)
                text = fh.read().decode()
            rows = []
            for line in text.splitlines():
                user, method, uri, status = line.split("|")
                rows.append((user, method, uri, int(status)))
            now = time.monotonic()
            if len(text) != seen:
                seen, stable_since = len(text), now
            if (len(rows) >= at_least and now - stable_since >= 0.3) or now > deadline:
                return rows
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def start_tls_front(upstream_url: str, folder: Path) -> TLSFront:
    """Generate a CA, certificates and an htpasswd file in `folder`, start nginx in front of
    `upstream_url` (http://host:port), wait until it accepts TLS connections."""
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    if nginx is None:
        raise RuntimeError("nginx is not installed (scripts/setup.sh installs it)")
    ca, cert, key = make_test_ca(folder / "pki")
    (folder / "tmp").mkdir(parents=True, exist_ok=True)
    (folder / "htpasswd").write_text(_htpasswd(USERS))
    upstream = upstream_url.split("://", 1)[-1].rstrip("/")
    port = _free_port()
    conf = folder / "nginx.conf"
    conf.write_text(_CONF.format(
        user_line="user root;" if os.geteuid() == 0 else "", dir=folder, upstream=upstream,
        port=port, cert=cert, key=key, forbidden=_FORBIDDEN))
    proc = subprocess.Popen([nginx, "-p", str(folder), "-c", str(conf), "-e", str(folder / "error.log")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    front = TLSFront(url=f"https://127.0.0.1:{port}", ca=ca, folder=folder, process=proc)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            log = (folder / "error.log").read_text() if (folder / "error.log").exists() else ""
            raise RuntimeError(f"nginx exited with {proc.returncode}: {err} {log}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return front
        except OSError:
            time.sleep(0.1)
    front.stop()
    raise RuntimeError("nginx did not start listening within 20 s")


@pytest.fixture(scope="session")
def tls_front(opensearch_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TLSFront]:
    """The session node behind TLS + basic auth (see the module docstring)."""
    try:
        front = start_tls_front(opensearch_url, tmp_path_factory.mktemp("tls-front"))
    except Exception as exc:  # noqa: BLE001 - reported as a failure in CI, a skip elsewhere
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"no TLS front in CI: {exc}")
        pytest.skip(f"no TLS front: {exc}")
    yield front
    front.stop()
