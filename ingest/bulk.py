"""Bulk writing with retries, per-item outcomes and a failure report.

opensearch-py's `streaming_bulk` does the chunking and serialization but retries only 429 item
rejections; a 502/503 from a proxy, a red shard or a dropped connection fails the whole chunk.
`BulkWriter` wraps it: every item that failed with a retryable status (429, 5xx, no HTTP status
at all = connection error) is resent after an exponential backoff; what still fails is returned
item by item with its reason. If a whole batch still cannot reach the cluster after all retries,
`ClusterUnavailable` stops the run (continuing would only fail every later batch the same way),
after its documents are written to the failure report, so a rerun with `resume` picks up there.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from opensearchpy.helpers import streaming_bulk

from osneural.errors import IngestError


class ClusterUnavailable(IngestError):
    """The cluster refused or could not be reached for a whole batch, after every retry;
    `result` holds the batch's `BulkResult` (its failures)."""

    def __init__(self, message: str, result: BulkResult | None = None) -> None:
        super().__init__(message)
        self.result = result


@dataclass
class ItemFailure:
    doc_id: str
    status: int | str
    reason: str


@dataclass
class BulkResult:
    indexed: int = 0
    failures: list[ItemFailure] = field(default_factory=list)
    retries: int = 0


def is_retryable(status: Any) -> bool:
    """Worth another try: 429, 5xx, or no HTTP answer at all (connection error, timeout)."""
    if not isinstance(status, int):
        return True  # "N/A": connection error or timeout, no HTTP answer at all
    return status == 429 or status >= 500


def _reason(info: dict[str, Any]) -> str:
    err = info.get("error")
    if isinstance(err, dict):
        text = f"{err.get('type', 'error')}: {err.get('reason', '')}"
        cause = err.get("caused_by")
        if isinstance(cause, dict) and cause.get("reason"):
            text += f" (caused by {cause.get('type', '')}: {cause['reason']})"
        return text
    return str(err) if err is not None else f"status {info.get('status')}"


class BulkWriter:
    """Writes batches of bulk actions to one index, retrying transient failures with backoff."""

    def __init__(
        self,
        client: Any,
        index: str,
        *,
        max_retries: int = 5,
        initial_backoff: float = 1.0,
        max_backoff: float = 60.0,
        chunk_size: int = 500,
        max_chunk_bytes: int = 20 * 1024 * 1024,
        request_timeout: float = 120.0,
        shard_timeout: str | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.client = client
        self.index = index
        self.max_retries = max_retries
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self.chunk_size = chunk_size
        self.max_chunk_bytes = max_chunk_bytes
        self.request_timeout = request_timeout
        # How long the cluster waits for an unavailable primary before answering 503 per item
        # (OpenSearch's bulk `timeout`, 1m by default): a red index fails fast with a short one.
        self.shard_timeout = shard_timeout
        self._sleep = sleep

    def backoff(self, attempt: int) -> float:
        """Seconds to wait before retry number `attempt` (1-based)."""
        return min(self.max_backoff, self.initial_backoff * 2 ** (attempt - 1))

    def _send(self, actions: Sequence[dict[str, Any]]) -> list[tuple[bool, str, dict[str, Any]]]:
        out: list[tuple[bool, str, dict[str, Any]]] = []
        extra = {"timeout": self.shard_timeout} if self.shard_timeout else {}
        for ok, item in streaming_bulk(
            self.client,
            actions,
            index=self.index,
            chunk_size=self.chunk_size,
            max_chunk_bytes=self.max_chunk_bytes,
            raise_on_error=False,
            raise_on_exception=False,
            max_retries=0,
            request_timeout=self.request_timeout,
            **extra,
        ):
            _op, info = next(iter(item.items()))
            out.append((ok, str(info.get("_id")), info))
        return out

    def write(self, actions: Sequence[dict[str, Any]]) -> BulkResult:
        """Index `actions` (each with a unique `_id`); returns the count written and failures.

        Raises `ClusterUnavailable` (with `.result` holding the failures) when every item of the
        batch still failed with a retryable status after `max_retries`.
        """
        result = BulkResult()
        by_id = {a["_id"]: a for a in actions}
        pending = list(actions)
        last: dict[str, ItemFailure] = {}
        for attempt in range(self.max_retries + 1):
            if attempt:
                result.retries += 1
                self._sleep(self.backoff(attempt))
            retry: list[dict[str, Any]] = []
            for ok, doc_id, info in self._send(pending):
                if ok:
                    result.indexed += 1
                    last.pop(doc_id, None)
                    continue
                status = info.get("status", "N/A")
                failure = ItemFailure(doc_id, status, _reason(info))
                if is_retryable(status) and attempt < self.max_retries and doc_id in by_id:
                    retry.append(by_id[doc_id])
                    last[doc_id] = failure
                else:
                    last.pop(doc_id, None)
                    result.failures.append(failure)
            if not retry:
                break
            pending = retry
        if actions and result.indexed == 0 and result.failures and all(
            is_retryable(f.status) for f in result.failures
        ):
            err = ClusterUnavailable(
                f"index {self.index!r}: a batch of {len(actions)} documents failed after "
                f"{self.max_retries} retries ({result.failures[0].reason}); documents written "
                "so far are kept, rerun with resume to continue", result)
            raise err
        return result


class FailureReport:
    """Append-only JSONL of rejected documents: where they came from, their id, and why.

    A report describes one run, so an old file at the path is removed first; the new one is opened
    lazily, so a clean run leaves no file behind. Every record is flushed at once, so the report
    is complete even if the run is killed.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.count = 0
        self._fh: TextIO | None = None
        self.path.unlink(missing_ok=True)

    def add(
        self, *, doc_id: str | None, reason: str, stage: str, source: str = "", line: int = 0
    ) -> None:
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # backslashreplace: a lone surrogate in an id or reason (from a `\ud800` JSON escape)
            # is written as its escape instead of killing the report (and the run) mid-line.
            self._fh = open(self.path, "w", encoding="utf-8",  # noqa: SIM115 - closed in close()
                            errors="backslashreplace")
        record = {"source": source, "line": line, "id": doc_id, "stage": stage, "reason": reason}
        self._fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._fh.flush()
        self.count += 1

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self) -> FailureReport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def read(path: str | Path) -> list[dict[str, Any]]:
        """All records of a report file (empty if it does not exist)."""
        p = Path(path)
        if not p.exists():
            return []
        with open(p, encoding="utf-8") as fh:
            return [json.loads(line) for line in fh if line.strip()]
