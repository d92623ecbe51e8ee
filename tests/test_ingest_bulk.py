"""Bulk layer against a real node: per-item errors, retries through a red index, unreachable node."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from opensearchpy import OpenSearch
from osneural.ingest.bulk import BulkWriter, ClusterUnavailable, FailureReport


def _actions(n: int, bad: set[int] = frozenset()) -> list[dict]:
    return [
        {"_id": f"d{i}", "_source": {"n": "oops" if i in bad else i}} for i in range(n)
    ]


def test_backoff_grows_and_is_capped() -> None:
    w = BulkWriter(None, "x", initial_backoff=0.5, max_backoff=3)
    assert [w.backoff(a) for a in (1, 2, 3, 4, 5)] == [0.5, 1.0, 2.0, 3, 3]


def test_failure_report_lazy_fresh_and_complete(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "r.jsonl"
    path.parent.mkdir()
    path.write_text("stale\n")
    report = FailureReport(path)
    assert not path.exists()  # an old report is not mixed with this run's
    report.add(doc_id="a", reason="bad", stage="read", source="c.jsonl", line=3)
    assert FailureReport.read(path) == [
        {"source": "c.jsonl", "line": 3, "id": "a", "stage": "read", "reason": "bad"}
    ]
    report.close()
    assert FailureReport.read(tmp_path / "none.jsonl") == []


@pytest.mark.integration
def test_item_errors_are_reported_not_retried(opensearch_client, index_name) -> None:
    opensearch_client.indices.create(
        index=index_name, body={"mappings": {"properties": {"n": {"type": "integer"}}}}
    )
    sleeps: list[float] = []
    writer = BulkWriter(opensearch_client, index_name, sleep=sleeps.append, chunk_size=3)
    result = writer.write(_actions(7, bad={2, 5}))
    assert result.indexed == 5 and sleeps == []
    assert sorted(f.doc_id for f in result.failures) == ["d2", "d5"]
    assert all(f.status == 400 and "mapper_parsing_exception" in f.reason for f in result.failures)
    opensearch_client.indices.refresh(index=index_name)
    assert opensearch_client.count(index=index_name)["count"] == 5


@pytest.mark.integration
def test_red_index_is_retried_until_it_recovers(opensearch_client, index_name) -> None:
    # A primary that may not be allocated anywhere: the index is red, writes answer 503.
    opensearch_client.indices.create(index=index_name, body={"settings": {
        "index.number_of_replicas": 0,
        "index.routing.allocation.require._name": "no-such-node",
    }}, wait_for_active_shards=0)

    def heal(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 2:  # recover after the second failed attempt
            opensearch_client.indices.put_settings(
                index=index_name, body={"index.routing.allocation.require._name": None}
            )
            opensearch_client.cluster.health(index=index_name, wait_for_status="green", timeout="30s",
                                              request_timeout=60)

    sleeps: list[float] = []
    writer = BulkWriter(opensearch_client, index_name, max_retries=4, initial_backoff=0.1,
                        shard_timeout="200ms", sleep=heal)
    result = writer.write(_actions(4))
    assert result.indexed == 4 and result.failures == [], result
    # two failed attempts before healing; the node may need one more to see the new routing
    assert result.retries in (2, 3), (result, sleeps)
    assert sleeps == [0.1, 0.2, 0.4][: result.retries]


@pytest.mark.integration
def test_red_index_that_never_recovers_raises_with_every_item(opensearch_client, index_name) -> None:
    opensearch_client.indices.create(index=index_name, body={"settings": {
        "index.number_of_replicas": 0,
        "index.routing.allocation.require._name": "no-such-node",
    }}, wait_for_active_shards=0)
    writer = BulkWriter(opensearch_client, index_name, max_retries=2, initial_backoff=0.01,
                        shard_timeout="100ms")
    with pytest.raises(ClusterUnavailable, match="rerun with resume") as info:
        writer.write(_actions(3))
    failures = info.value.result.failures
    assert sorted(f.doc_id for f in failures) == ["d0", "d1", "d2"]
    assert all(f.status == 503 for f in failures)


def test_unreachable_node_raises_after_retries() -> None:
    client = OpenSearch(hosts=["http://127.0.0.1:9"], timeout=2, max_retries=0)
    writer = BulkWriter(client, "x", max_retries=2, initial_backoff=0.01)
    start = time.perf_counter()
    with pytest.raises(ClusterUnavailable) as info:
        writer.write(_actions(2))
    assert time.perf_counter() - start < 10
    assert {f.doc_id for f in info.value.result.failures} == {"d0", "d1"}
    assert all(f.status == "N/A" for f in info.value.result.failures)
