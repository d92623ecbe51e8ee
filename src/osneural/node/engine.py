"""Pick the engine the test session runs against: Docker compose when an engine answers, else a
throw-away local node on free loopback ports. Both are real OpenSearch; nothing is mocked."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from osneural.node.launcher import LocalCluster, free_port_block


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
    """Start a fresh local cluster with its own data folder; the handle deletes it at the end."""
    root = Path(tempfile.mkdtemp(prefix="osneural-test-cluster-", dir="/tmp"))
    root.chmod(0o755)
    port = free_port_block(nodes)
    cluster = LocalCluster(name=f"test-{port}", nodes=nodes, http_port=port, root=root)
    url = cluster.start()
    return url, _LocalHandle(cluster)
