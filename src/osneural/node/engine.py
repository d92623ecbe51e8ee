"""Pick the engine the test session runs against: Docker compose when an engine answers, else a
throw-away local node on free loopback ports. Both are real OpenSearch; nothing is mocked."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from osneural.node.launcher import LocalCluster, spread_port_start


def docker_engine_available() -> bool:
    if not shutil.which("docker"):
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


class _LocalHandle:
    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster

    def stop(self) -> None:
        self.cluster.destroy()


def start_test_engine(nodes: int = 1) -> tuple[str, _LocalHandle]:
    """Start a fresh local cluster with its own data folder; the handle deletes it at the end.

    The launcher chooses the ports below the kernel's ephemeral range and moves to another block
    when one is taken before the JVM binds it, so a busy machine does not fail the session."""
    root = Path(tempfile.mkdtemp(prefix="osneural-test-cluster-", dir="/tmp"))
    root.chmod(0o755)
    cluster = LocalCluster(name=f"test-{os.getpid()}", nodes=nodes, http_port=spread_port_start(),
                           root=root, auto_ports=True)
    url = cluster.start()
    return url, _LocalHandle(cluster)
