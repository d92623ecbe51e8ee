"""`osneural eval` when the cluster misbehaves: a real node behind a faulty network path.

OpenSearch is real; what fails is the connection to it. A small HTTP relay forwards every request
to the test node, except that it drops the connection (no response, as a node dying mid-request
does) for requests naming a marker word: always for "poison", for the first few tries of "flaky".
The eval must retry the flaky query to an answer, count the poisoned one as failed (exit 1, the
failed column, the JSON), and score everything else as if nothing had happened. A second run gives
the client a dead host beside the live one: the connection layer routes around it, nothing fails.
"""

from __future__ import annotations

import http.client
import json
import socket
import socketserver
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from osneural.cli import main

pytestmark = pytest.mark.integration

DOCS = [
    ("d1", "Aspirin", "aspirin reduces the risk of heart attack"),
    ("d2", "Vitamin D", "vitamin d deficiency is linked to bone fractures"),
    ("d3", "Coffee", "coffee consumption and sleep quality in adults poison"),
    ("d4", "Exercise", "regular exercise improves mood and flaky sleep"),
]
QUERIES = {"q1": "aspirin heart", "q2": "vitamin bone", "q3": "coffee poison", "q4": "flaky exercise"}
QRELS = {"q1": "d1", "q2": "d2", "q3": "d3", "q4": "d4"}


class FaultyRelay(socketserver.ThreadingTCPServer):
    """Forwards HTTP/1.1 requests to `upstream`; drops the connection for marked requests."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, upstream: str, failures: dict[bytes, int]) -> None:
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname, parts.port)
        self.failures = dict(failures)  # marker -> how many more requests to drop (-1: all)
        self.dropped: dict[bytes, int] = dict.fromkeys(failures, 0)
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _RelayHandler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def should_drop(self, body: bytes) -> bool:
        with self.lock:
            for marker, left in self.failures.items():
                if marker in body and left != 0:
                    self.failures[marker] = left - 1 if left > 0 else -1
                    self.dropped[marker] += 1
                    return True
        return False


class _RelayHandler(socketserver.StreamRequestHandler):
    server: FaultyRelay

    def handle(self) -> None:
        while True:
            request_line = self.rfile.readline()
            if not request_line.strip():
                return
            method, path, _version = request_line.decode("latin-1").split(" ", 2)
            headers: dict[str, str] = {}
            while (line := self.rfile.readline()) not in (b"\r\n", b"\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                headers[name.strip()] = value.strip()
            length = int(next((v for k, v in headers.items() if k.lower() == "content-length"), 0))
            body = self.rfile.read(length) if length else b""
            if self.server.should_drop(body):
                self.connection.shutdown(socket.SHUT_RDWR)  # no answer at all, like a dead node
                return
            upstream = http.client.HTTPConnection(*self.server.upstream, timeout=60)
            try:
                keep = {k: v for k, v in headers.items()
                        if k.lower() not in ("host", "connection", "content-length")}
                upstream.request(method, path, body=body or None, headers=keep)
                resp = upstream.getresponse()
                payload = resp.read()
            finally:
                upstream.close()
            out = [f"HTTP/1.1 {resp.status} {resp.reason}\r\n"]
            out += [f"{k}: {v}\r\n" for k, v in resp.getheaders()
                    if k.lower() not in ("transfer-encoding", "content-length", "connection")]
            out.append(f"content-length: {len(payload)}\r\n\r\n")
            self.wfile.write("".join(out).encode("latin-1") + payload)
            self.wfile.flush()


@pytest.fixture(scope="module")
def beir_index(opensearch_client, tmp_path_factory) -> Iterator[tuple[str, Path]]:
    from osneural.ingest.indexer import index_corpus

    root = tmp_path_factory.mktemp("faulty") / "toy"
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": i, "title": t, "text": x}) + "\n" for i, t, x in DOCS))
    (root / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in QUERIES.items()))
    (root / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t1\n" for q, d in QRELS.items()))
    index = "test-eval-faulty"
    opensearch_client.indices.delete(index=index, ignore_unavailable=True)
    summary = index_corpus(opensearch_client, root, index, representations=["text"],
                           progress=False, failure_report=root / "failures.jsonl")
    assert summary.indexed == len(DOCS)
    yield index, root
    opensearch_client.indices.delete(index=index, ignore_unavailable=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_transient_failures_are_retried_and_lasting_ones_counted(
    opensearch_url: str, beir_index: tuple[str, Path], tmp_path: Path, capsys
) -> None:
    index, root = beir_index
    # The client tries each request 3 times (one host: max_retries 2) and the Searcher retries a
    # stage once after a connection error, so one eval try sends a stage 6 times. "flaky" loses
    # its first 7 requests: the eval's first try fails outright and its second gets through.
    relay = FaultyRelay(opensearch_url, {b"poison": -1, b"flaky": 7})
    thread = threading.Thread(target=relay.serve_forever, daemon=True)
    thread.start()
    out = tmp_path / "r.json"
    try:
        code = main(["eval", str(root), "--index", index, "--url", relay.url, "--spec", "bm25",
                     "--warmup", "0", "--out", str(out), "--no-corpus-check"])
    finally:
        relay.shutdown()
        relay.server_close()
    captured = capsys.readouterr()
    assert code == 1, captured.err
    (run,) = json.loads(out.read_text())["runs"]
    assert (run["queries"], run["evaluated"], run["failed"]) == (4, 3, 1)
    assert run["errors"][0]["query_id"] == "q3" and "ConnectionError" in run["errors"][0]["error"]
    assert run["retried"] >= 1  # q4's second try answered
    # 3 tries by the eval (first + --retries 2), each 2 stage tries by the Searcher, each tried
    # 3 times by the client
    assert relay.dropped[b"poison"] == 18 and relay.dropped[b"flaky"] == 7
    # every query that answered found its document at rank 1
    assert run["metrics"]["mrr@10"] == pytest.approx(1.0)
    row = next(line for line in captured.out.splitlines() if line.startswith("bm25"))
    assert row.split()[-2] == "1/4"
    assert "bm25: 1 of 4 queries failed" in captured.out
    # stderr is not a terminal here: progress comes as plain lines, the last one at the end
    assert "eval bm25: 4/4 queries, 1 failed" in captured.err


def test_a_dead_host_beside_a_live_one_loses_nothing(
    opensearch_url: str, beir_index: tuple[str, Path], tmp_path: Path, capsys
) -> None:
    index, root = beir_index
    dead = f"http://127.0.0.1:{_free_port()}"
    out = tmp_path / "r.json"
    code = main(["eval", str(root), "--index", index, "--url", f"{dead},{opensearch_url}",
                 "--spec", "bm25", "--out", str(out), "--no-progress", "--no-corpus-check"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    (run,) = json.loads(out.read_text())["runs"]
    assert run["failed"] == 0 and run["evaluated"] == 4
    assert run["metrics"]["mrr@10"] == pytest.approx(1.0)
    assert "eval bm25:" not in captured.err  # --no-progress
