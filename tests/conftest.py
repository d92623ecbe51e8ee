"""Session fixtures: one real OpenSearch node for every integration test.

`OSNEURAL_OPENSEARCH_URL` names a running node or cluster to reuse; otherwise the session starts a
local node with `osneural.node` (fetched from Maven Central, cached) on a free loopback port, or uses
the Docker compose deployment when a Docker engine answers. In CI (`CI=true`) a missing engine is a
failure, never a skip.
"""

from __future__ import annotations

import importlib.util
import os
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from tls_front import tls_front  # noqa: F401 - the TLS + basic-auth front (issue #12)

COMPOSE_FILE = Path(__file__).resolve().parent.parent / "docker" / "docker-compose.yml"


@pytest.fixture(scope="session")
def docker_compose_file() -> str:
    return str(COMPOSE_FILE)


@pytest.fixture(scope="session")
def docker_setup() -> list[str]:
    return ["up -d opensearch"]  # only the engine; the osneural image is not needed by tests


def _docker_url(request: pytest.FixtureRequest) -> str:
    services = request.getfixturevalue("docker_services")
    url = f"http://127.0.0.1:{services.port_for('opensearch', 9200)}"

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(f"{url}/_cluster/health", timeout=3) as resp:
                return resp.status == 200
        except OSError:
            return False

    services.wait_until_responsive(check=healthy, timeout=240.0, pause=2.0)
    return url


def _start_engine(request: pytest.FixtureRequest) -> tuple[str, object | None]:
    url = os.environ.get("OSNEURAL_OPENSEARCH_URL")
    if url:
        return url.rstrip("/"), None
    from osneural.node.engine import docker_engine_available, start_test_engine

    if docker_engine_available() and importlib.util.find_spec("pytest_docker"):
        return _docker_url(request), None
    return start_test_engine()


@pytest.fixture(scope="session")
def opensearch_url(request: pytest.FixtureRequest) -> Iterator[str]:
    try:
        url, handle = _start_engine(request)
    except Exception as exc:  # noqa: BLE001 - any failure to get an engine is reported the same way
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"no OpenSearch engine in CI: {exc}")
        pytest.skip(f"no OpenSearch engine: {exc}")
    yield url
    if handle is not None:
        handle.stop()


@pytest.fixture(scope="session")
def opensearch_client(opensearch_url: str):
    from opensearchpy import OpenSearch

    client = OpenSearch(hosts=[opensearch_url], timeout=60)
    yield client
    client.close()


@pytest.fixture
def index_name(opensearch_client) -> Iterator[str]:
    """A fresh index name per test, deleted afterwards."""
    name = f"test-{uuid.uuid4().hex[:10]}"
    yield name
    opensearch_client.indices.delete(index=name, ignore_unavailable=True)
