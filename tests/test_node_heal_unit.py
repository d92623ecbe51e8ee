"""The launcher's healing logic without a JVM: which layout `start` uses for a recorded cluster,
refusing a layout change under live nodes, and `status` naming every node's state (the real
kill-and-heal cycle runs in tests/test_cluster_multinode.py)."""

from __future__ import annotations

import argparse
import json
import os

import pytest

from osneural.node.commands import _cluster_to_start, configure_opensearch, run_opensearch
from osneural.node.errors import NodeError
from osneural.node.launcher import LocalCluster


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    configure_opensearch(parser)
    return parser.parse_args(list(argv))


@pytest.fixture
def recorded(monkeypatch, tmp_path) -> LocalCluster:
    monkeypatch.setenv("OSNEURAL_CACHE", str(tmp_path))
    cluster = LocalCluster(name="three", nodes=3, http_port=29400, heap="300m")
    cluster.root.mkdir(parents=True)
    cluster._save()
    return cluster


def test_start_uses_the_recorded_layout_unless_told_otherwise(recorded) -> None:
    again = _cluster_to_start(_args("start", "--name", "three"))
    assert (again.nodes, again.http_port, again.heap) == (3, 29400, "300m")
    assert [s.http_port for s in again.specs] == [29400, 29401, 29402]
    assert [s.transport_port for s in again.specs] == [29500, 29501, 29502]
    assert _cluster_to_start(_args("start", "--name", "three", "--nodes", "2")).nodes == 2
    fresh = _cluster_to_start(_args("start", "--name", "never-started"))
    assert (fresh.nodes, fresh.http_port) == (1, 9200)


def test_layout_change_under_live_nodes_names_the_recorded_ports(recorded) -> None:
    smaller = LocalCluster(name="three", nodes=2, http_port=29400, root=recorded.root)
    with pytest.raises(NodeError, match=r"runs 3 node\(s\) on HTTP ports 29400\.\.29402"):
        smaller._check_layout({"node-0": 1234})
    recorded._check_layout({"node-0": 1234})  # the same layout is fine: start heals it


def test_every_node_missing_is_listed_and_status_fails(recorded, capsys) -> None:
    (recorded.specs[1].folder).mkdir(parents=True)
    recorded.specs[1].pid_file.write_text(str(2**22 + os.getpid()))  # no such process
    rows = recorded.node_states()
    assert [(r["name"], r["url"], r["state"]) for r in rows] == [
        ("node-0", "http://127.0.0.1:29400", "missing"),
        ("node-1", "http://127.0.0.1:29401", "missing"),
        ("node-2", "http://127.0.0.1:29402", "missing"),
    ]
    assert not recorded.specs[1].pid_file.exists()  # a stale pid file is discarded
    assert run_opensearch(_args("status", "--name", "three")) == 1
    out = capsys.readouterr()
    assert "no node answers (0/3 running)" in out.out
    assert out.out.count("missing") == 3 and "brings the missing ones back" in out.err
    assert run_opensearch(_args("status", "--name", "three", "--json")) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is False and [r["state"] for r in data["nodes"]] == ["missing"] * 3
