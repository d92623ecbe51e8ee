"""Against a real node: the k-NN plugin is loaded and each field kind osneural relies on answers.

One index with a lucene-HNSW cosine `knn_vector`, a `rank_features` and a multi-valued `keyword`
field, 100 documents, and one query per kind whose expected hits follow from how the data was built.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.integration

N_DOCS = 100
DIM = 16


@pytest.fixture(scope="module")
def field_index(opensearch_client):
    name = "test-node-fields"
    opensearch_client.indices.delete(index=name, ignore_unavailable=True)
    opensearch_client.indices.create(index=name, body={
        "settings": {"index": {"knn": True, "number_of_shards": 1, "number_of_replicas": 0}},
        "mappings": {"properties": {
            "vec": {"type": "knn_vector", "dimension": DIM,
                    "method": {"name": "hnsw", "engine": "lucene", "space_type": "cosinesimil"}},
            "feats": {"type": "rank_features"},
            "tags": {"type": "keyword", "norms": False},
        }},
    })
    rng = np.random.default_rng(7)
    vectors = rng.normal(size=(N_DOCS, DIM)).astype(np.float32)
    from opensearchpy import helpers

    actions = [{
        "_index": name, "_id": str(i),
        "vec": vectors[i].tolist(),
        "feats": {f"t{i % 10}": 1.0 + i / 10.0, "common": 1.0},
        "tags": [f"g{i % 5}", f"h{i % 7}"],
    } for i in range(N_DOCS)]
    ok, errors = helpers.bulk(opensearch_client, actions, refresh="wait_for")
    assert ok == N_DOCS and not errors
    yield name, vectors
    opensearch_client.indices.delete(index=name, ignore_unavailable=True)


def test_knn_plugin_is_loaded(opensearch_client):
    plugins = opensearch_client.cat.plugins(format="json")
    names = {p["component"] for p in plugins}
    print("_cat/plugins:", sorted(names))
    assert "opensearch-knn" in names


def test_knn_vector_returns_nearest_by_cosine(opensearch_client, field_index):
    name, vectors = field_index
    for target in (3, 42, 99):
        query = vectors[target] + 0.01
        res = opensearch_client.search(index=name, body={
            "size": 5, "query": {"knn": {"vec": {"vector": query.tolist(), "k": 5}}}})
        ids = [h["_id"] for h in res["hits"]["hits"]]
        normed = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        expected = np.argsort(-(normed @ (query / np.linalg.norm(query))))[:5]
        assert ids[0] == str(target)
        assert set(ids) == {str(i) for i in expected}


def test_rank_features_scores_linear_in_weight(opensearch_client, field_index):
    name, _ = field_index
    res = opensearch_client.search(index=name, body={
        "size": 10, "query": {"rank_feature": {"field": "feats.t7", "linear": {}}}})
    hits = res["hits"]["hits"]
    assert {h["_id"] for h in hits} == {str(i) for i in range(7, N_DOCS, 10)}
    assert hits[0]["_id"] == "97"  # largest weight 1 + 97/10
    scores = [h["_score"] for h in hits]
    assert scores == sorted(scores, reverse=True)


def test_multi_valued_keyword_terms_match_any_value(opensearch_client, field_index):
    name, _ = field_index
    res = opensearch_client.search(index=name, body={
        "size": N_DOCS, "query": {"bool": {"should": [
            {"constant_score": {"filter": {"term": {"tags": "g1"}}}},
            {"constant_score": {"filter": {"term": {"tags": "h3"}}}},
        ]}}})
    got = {int(h["_id"]) for h in res["hits"]["hits"]}
    assert got == {i for i in range(N_DOCS) if i % 5 == 1 or i % 7 == 3}
    both = {i for i in range(N_DOCS) if i % 5 == 1 and i % 7 == 3}
    top = [int(h["_id"]) for h in res["hits"]["hits"][: len(both)]]
    assert set(top) == both  # sharing two terms outranks sharing one


def launcher_ephemeral_low() -> int:
    from osneural.node.launcher import ephemeral_port_range

    return ephemeral_port_range()[0]


def _cli(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "osneural.cli", "opensearch", *args],
                          capture_output=True, text=True, env=env, timeout=400)


@pytest.mark.slow
def test_cli_lifecycle_twice_and_after_sigkill(tmp_path):
    if os.environ.get("OSNEURAL_OPENSEARCH_URL") and not os.environ.get("CI"):
        pytest.skip("lifecycle test starts its own node; run without OSNEURAL_OPENSEARCH_URL")
    name = f"lifecycle-{os.getpid()}"
    env = dict(os.environ)
    common = ("--name", name)
    try:
        # `auto`: the launcher picks the block (below the ephemeral range) and moves it if taken
        first = _cli("start", *common, "--port", "auto", env=env)
        assert first.returncode == 0, first.stderr
        port = int(first.stdout.split("http://127.0.0.1:")[1].split()[0].rstrip(","))
        assert port < launcher_ephemeral_low()
        again = _cli("start", *common, "--port", "auto", env=env)
        assert again.returncode == 1 and "already running" in again.stderr
        assert again.stderr.count("\n") == 1  # one clear line
        assert _cli("status", *common, env=env).returncode == 0
        assert _cli("stop", *common, env=env).returncode == 0
        assert _cli("status", *common, env=env).returncode == 1

        t0 = time.monotonic()
        second = _cli("start", *common, "--port", "auto", env=env)
        assert second.returncode == 0, second.stderr
        assert "(0.0s)" in second.stderr or time.monotonic() - t0 < 120  # install came from the cache
        from osneural.node.launcher import LocalCluster

        cluster = LocalCluster.load(name)
        pid = next(iter(cluster.running_pids().values()))
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _cli("status", *common, env=env).returncode == 1
        third = _cli("start", *common, "--port", "auto", env=env)
        assert third.returncode == 0, third.stderr  # nothing left behind blocks the next start
    finally:
        _cli("stop", *common, env=env)
        from osneural.node.launcher import LocalCluster

        cluster = LocalCluster.load(name)
        if cluster:
            cluster.destroy()


def _race_cluster(auto_ports: bool, port: int | None = None):
    """A two-node cluster whose node-1 transport port a stranger binds after the launcher checked
    it and before node-1's JVM starts: the race a busy machine's outgoing connections (or another
    launcher) run against every local start."""
    import tempfile

    from osneural.node import launcher

    root = Path(tempfile.mkdtemp(prefix="osneural-test-race-", dir="/tmp"))
    root.chmod(0o755)
    start = port if port is not None else launcher.spread_port_start()
    cluster = launcher.LocalCluster(name=f"race-{os.getpid()}-{auto_ports}", nodes=2, http_port=start,
                                    heap="256m", root=root, auto_ports=auto_ports)
    return cluster


def _take_transport_port_at_first_launch(monkeypatch) -> list:
    """Patch the launcher so that, just before the JVM of node-1 is started the first time, a
    listening socket takes node-1's transport port. Returns the list the socket lands in."""
    import socket

    from osneural.node import launcher

    strangers: list[socket.socket] = []
    launch = launcher.LocalCluster._launch

    def launch_after_a_stranger(self, spec, *args, **kwargs):
        if spec.index == 1 and not strangers:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", spec.transport_port))
            sock.listen()
            strangers.append(sock)
        return launch(self, spec, *args, **kwargs)

    monkeypatch.setattr(launcher.LocalCluster, "_launch", launch_after_a_stranger)
    return strangers


@pytest.mark.slow
def test_chosen_block_whose_transport_port_is_taken_before_the_bind_still_comes_up(monkeypatch):
    from osneural.node.launcher import http_json

    strangers = _take_transport_port_at_first_launch(monkeypatch)
    cluster = _race_cluster(auto_ports=True)
    first = cluster.http_port
    messages: list[str] = []
    try:
        url = cluster.start(log=messages.append)
        assert strangers and strangers[0].getsockname()[1] == first + 101  # still held by the stranger
        assert cluster.http_port != first and url == f"http://127.0.0.1:{cluster.http_port}"
        assert cluster.http_port < launcher_ephemeral_low()
        health = http_json(f"{url}/_cluster/health")
        assert health["number_of_nodes"] == 2 and health["status"] in ("green", "yellow")
        assert any(f"moving cluster {cluster.name!r} from HTTP port {first} to {cluster.http_port}" in m
                   and "exited" in m for m in messages), messages
        log = (cluster.root / "node-1" / "logs" / "console.log").read_text(errors="replace")
        assert "BindTransportException" in log  # the first attempt really failed to bind
    finally:
        cluster.destroy()
        for sock in strangers:
            sock.close()


@pytest.mark.slow
def test_named_port_taken_before_the_bind_is_a_clear_error(monkeypatch):
    from osneural.node.errors import NodeError
    from osneural.node.launcher import free_port_block, spread_port_start

    strangers = _take_transport_port_at_first_launch(monkeypatch)
    port = free_port_block(2, start=spread_port_start())
    cluster = _race_cluster(auto_ports=False, port=port)
    try:
        with pytest.raises(NodeError, match=r"node-1 exited .*Bind"):
            cluster.start(log=lambda m: None)
        assert cluster.http_port == port  # a port the user named is never changed
        assert cluster.running_pids() == {}  # node-0 was stopped with it
    finally:
        cluster.destroy()
        for sock in strangers:
            sock.close()
