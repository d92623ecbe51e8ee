"""`osneural serve --workers 2` against the real node: two processes answer on one port, and
SIGTERM lets a request in flight finish before the group exits.

The in-flight request is made slow by a loopback proxy in front of the node that holds the
request's bytes for a few seconds before forwarding them (tests/ingest_proxy.py), so SIGTERM
surely arrives while the worker waits on OpenSearch; the answer itself is the node's.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from ingest_proxy import CuttingProxy

pytestmark = pytest.mark.integration

INDEX = "test-workers-docs"
N_DOCS = 12
#: a term only the slow request carries: the proxy holds requests containing it
SLOW_MARKER = b"slowmarkerterm"
HOLD_S = 6.0


@pytest.fixture(scope="module")
def docs(opensearch_client) -> str:
    opensearch_client.indices.delete(index=INDEX, ignore_unavailable=True)
    opensearch_client.indices.create(index=INDEX, body={"settings": {"number_of_shards": 1,
                                                                     "number_of_replicas": 0}})
    for i in range(N_DOCS):
        opensearch_client.index(index=INDEX, id=str(i), body={"text": f"document {i} about workers"})
    opensearch_client.indices.refresh(index=INDEX)
    yield INDEX
    opensearch_client.indices.delete(index=INDEX, ignore_unavailable=True)


def _port() -> int:
    from osneural.node.launcher import free_port_block, spread_port_start

    return free_port_block(1, start=spread_port_start(base=12000, span=5000))


def _start(url: str, log: Path, workers: int = 2) -> tuple[subprocess.Popen, str]:
    port = _port()
    out = log.open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "osneural.cli", "serve", "--url", url, "--port", str(port),
         "--workers", str(workers), "--no-warm", "--allow-index", "test-workers-*",
         "--graceful-timeout", "60"],
        stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    out.close()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    pids: set[str] = set()
    while len(pids) < workers:  # every worker up: each answers health on a fresh connection
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, f"workers did not all answer: {pids}\n{log.read_text()}"
        try:
            r = httpx.get(f"{base}/_osneural/health", timeout=10)
            if r.status_code == 200:
                pids.add(r.headers["x-osneural-worker"])
        except httpx.TransportError:
            time.sleep(0.3)
    return proc, base


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _parent_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("PPid:"):
            return int(line.split()[1])
    raise AssertionError(f"no PPid for {pid}")


@pytest.fixture()
def group(opensearch_url: str, docs: str, tmp_path: Path) -> Iterator[tuple[subprocess.Popen, str]]:
    proc, base = _start(opensearch_url, tmp_path / "serve.log")
    try:
        yield proc, base
    finally:
        _stop(proc)


def test_two_workers_answer_on_one_port(group) -> None:
    proc, base = group
    seen: dict[str, int] = {}
    for _ in range(60):  # a fresh connection each: SO_REUSEPORT hashes each to a worker
        r = httpx.post(f"{base}/{INDEX}/_count", json={"query": {"match_all": {}}}, timeout=30)
        assert r.status_code == 200 and r.json()["count"] == N_DOCS
        pid = r.headers["x-osneural-worker"]
        seen[pid] = seen.get(pid, 0) + 1
    assert len(seen) == 2, seen
    for pid in seen:  # both are workers of this group, not strangers on the port
        assert _parent_of(int(pid)) == proc.pid
    assert all(n >= 5 for n in seen.values()), seen  # the kernel spreads connections over both
    hits = httpx.post(f"{base}/{INDEX}/_search", json={"query": {"match": {"text": "workers"}},
                                                        "size": 50}, timeout=30).json()
    assert hits["hits"]["total"]["value"] == N_DOCS


def test_sigterm_lets_the_request_in_flight_finish(opensearch_url: str, docs: str, tmp_path: Path) -> None:
    held = threading.Event()

    def hold(data: bytes) -> bool:
        if SLOW_MARKER in data:
            held.set()
            time.sleep(HOLD_S)
        return False  # forward it, late

    proxy = CuttingProxy(opensearch_url, cut=hold)
    proc, base = _start(proxy.url, tmp_path / "serve.log")
    answer: dict[str, httpx.Response] = {}

    def slow_search() -> None:
        body = {"query": {"bool": {"should": [{"match": {"text": SLOW_MARKER.decode()}},
                                              {"match_all": {}}]}}, "size": 50}
        answer["r"] = httpx.post(f"{base}/{INDEX}/_search", json=body, timeout=120)

    try:
        client = threading.Thread(target=slow_search)
        client.start()
        assert held.wait(60), (tmp_path / "serve.log").read_text()
        proc.terminate()  # SIGTERM to the supervisor while the request waits on the node
        client.join(timeout=120)
        r = answer["r"]
        assert r.status_code == 200, r.text
        assert r.json()["hits"]["total"]["value"] == N_DOCS  # the node's full answer
        assert proc.wait(timeout=90) == 0
        with pytest.raises(httpx.TransportError):  # the whole group is gone from the port
            httpx.get(f"{base}/_osneural/health", timeout=5)
        log = (tmp_path / "serve.log").read_text()
        assert "stopped 2 worker(s) on signal 15" in log, log
    finally:
        _stop(proc)
        proxy.close()


def test_worker_sockets_send_without_nagle_delay() -> None:
    """A connection accepted on a worker's SO_REUSEPORT socket has TCP_NODELAY, so a response's
    body never waits for the client's delayed ACK of its headers (40 ms per answer otherwise)."""
    import asyncio
    import socket

    from osneural.plugin.workers import reuse_port_socket

    sock = reuse_port_socket("127.0.0.1", 0)  # the kernel picks a free port: no race
    assert sock.proto == socket.IPPROTO_TCP

    async def accepted_nodelay() -> int:
        got: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            conn = writer.get_extra_info("socket")
            got.set_result(conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(on_connect, sock=sock)
        port = sock.getsockname()[1]
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            return await asyncio.wait_for(got, 60)
        finally:
            writer.close()
            server.close()
            await server.wait_closed()

    assert asyncio.run(accepted_nodelay()) != 0
