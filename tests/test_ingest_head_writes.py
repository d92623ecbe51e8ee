"""The head sample's writes: batch i+1 is built while batch i is in flight, results are merged in
corpus order, and a batch that finds the cluster unreachable stops the run with nothing after it
sent (`osneural.ingest.indexer._write_head`)."""

from __future__ import annotations

import threading

import pytest
from osneural.ingest.indexer import _write_head
from osneural.ingest.plan import BatchResult, DocFailure, IngestError
from osneural.ingest.prepare import IngestRun


class FakeStep:
    """Builds one action per document; `send` counts them, or fails batch `down` for good."""

    def __init__(self, down: int | None = None) -> None:
        self.down = down
        self.built: list[int] = []
        self.sent: list[int] = []
        self.threads: set[str] = set()

    def build(self, docs, raw, result: BatchResult):
        self.built.append(raw)
        if raw == 1:  # one document the builder refuses, reported by the build step
            result.failures.append(DocFailure(docs[0], "c.jsonl", 1, "build", "bad"))
            docs = docs[1:]
        return docs, [{"_id": d} for d in docs]

    def send(self, docs, actions, result: BatchResult) -> None:
        self.threads.add(threading.current_thread().name)
        self.sent.append(docs[0] if docs else None)
        if self.down is not None and len(self.sent) - 1 == self.down:
            result.unavailable = "cluster unreachable"
            return
        result.indexed += len(actions)


def _head(n: int) -> list[tuple[list[str], int]]:
    return [([f"d{i}a", f"d{i}b"], i) for i in range(n)]


def test_head_batches_are_all_written_in_order_off_the_calling_thread(tmp_path) -> None:
    run = IngestRun.open([], "ix", tmp_path / "r.jsonl", progress=False)
    step = FakeStep()
    _write_head(step, _head(4), run)
    run.close()
    assert step.built == [0, 1, 2, 3]
    assert step.sent == ["d0a", "d1b", "d2a", "d3a"]  # batch 1 lost its refused document
    assert run.summary.indexed == 7 and run.summary.failed == 1
    assert step.threads and threading.current_thread().name not in step.threads


def test_an_unreachable_cluster_stops_the_head_at_that_batch(tmp_path) -> None:
    run = IngestRun.open([], "ix", tmp_path / "r.jsonl", progress=False)
    step = FakeStep(down=1)
    with pytest.raises(IngestError, match="unreachable") as err:
        _write_head(step, _head(5), run)
    run.close()
    assert step.sent == ["d0a", "d1b"]  # nothing after the failed batch was sent
    assert err.value.summary.indexed == 2 and err.value.summary.aborted == "cluster unreachable"
