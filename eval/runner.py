"""Running a BEIR collection's test queries through pipeline specs and scoring them.

Each query goes through the same `Searcher.search` a user's query takes, so the figures measure the
product, not a re-implementation of it. Latency is the wall time of that call as the caller sees it
(encoding, every OpenSearch round trip, fusion, rescoring).

A query that fails for a reason that may pass (a node restarting, a connection reset, a 5xx) is
retried a few times with backoff; one that still fails, or fails for a reason that cannot pass
(a spec the index cannot serve), is recorded as a failure, left out of the means, and counted per
spec: averaging it in as a zero would make a broken pipeline look like a bad one, dropping it
quietly would make it look fine, and letting it end the run would throw away every other query.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from osneural.eval.beir import EvalCollection
from osneural.eval.metrics import (
    RUN_DEPTH,
    compute_metrics,
    latency_stats,
    ranked_run,
    summarize_errors,
)
from osneural.eval.report import SpecResult
from osneural.plugin.spec import PipelineSpec, SpecError, parse_spec

SearchFn = Callable[[str, PipelineSpec], dict[str, Any]]
ERRORS_KEPT = 5


def for_evaluation(spec: PipelineSpec, timeout_ms: int | None = None) -> PipelineSpec:
    """The spec as evaluation runs it: deep enough for Recall@100, first page, no payloads.

    Only paging and payload fields change; the ranking itself (stages, windows, fusion) is the
    user's. `_source` and explanations are switched off because fetching them would be timed.
    """
    data = spec.to_dict()
    data["size"] = max(RUN_DEPTH, spec.size)
    data["from"] = 0
    data["_source"] = False
    data["explain"] = False
    if timeout_ms is not None:
        data["timeout_ms"] = timeout_ms
    return parse_spec(data)


def _hit_ids(response: Any) -> list[str]:
    """The ranked ids of an OpenSearch-shaped response; a malformed one is a failure, not a zero."""
    try:
        hits = response["hits"]["hits"]
        return [str(h["_id"]) for h in hits]
    except (KeyError, TypeError) as exc:
        raise ValueError(f"malformed search response (no hits.hits[]._id): {exc!r}") from None


def _warnings(response: dict[str, Any]) -> list[str]:
    ext = response.get("ext") if isinstance(response, dict) else None
    found = list(((ext or {}).get("osneural") or {}).get("warnings") or [])
    if response.get("timed_out") and not found:
        found.append("timed_out")
    return [str(w) for w in found]



@dataclass(frozen=True)
class RetryPolicy:
    """How often, and after how long, a query that failed transiently is sent again.

    The client underneath already retries a request on every other host; this covers what is left
    when the whole cluster is briefly unreachable (a single node restarting takes seconds).
    """

    attempts: int = 3
    backoff_s: float = 0.5
    factor: float = 2.0

    def delays(self) -> Iterator[float]:
        delay = self.backoff_s
        for _ in range(max(0, self.attempts - 1)):
            yield delay
            delay *= self.factor


NO_RETRY = RetryPolicy(attempts=1)


def is_transient(exc: BaseException) -> bool:
    """True for failures another try may not see: connection errors, timeouts, 429 and 5xx.

    Bad specs, missing fields and 4xx answers fail the same way every time, so they are not
    retried (retrying them would only slow the report of a broken pipeline).
    """
    from opensearchpy.exceptions import ConnectionError as OSConnectionError
    from opensearchpy.exceptions import TransportError

    if isinstance(exc, SpecError | ValueError) and not isinstance(exc, OSConnectionError):
        return False
    if isinstance(exc, OSConnectionError):  # includes ConnectionTimeout
        return True
    if isinstance(exc, TransportError):
        status = exc.status_code
        return not isinstance(status, int) or status == 429 or status >= 500
    status = getattr(exc, "status", None)  # SearchError: every first stage failed (502/504)
    if isinstance(status, int):
        return status >= 500
    return isinstance(exc, ConnectionError | TimeoutError)


def _stage_failed(response: Any) -> bool:
    """A response in which some stage failed (not timed out): a degraded ranking worth a retry."""
    return any(" failed: " in w for w in _warnings(response)) if isinstance(response, dict) else False


def search_with_retries(
    search: SearchFn, text: str, spec: PipelineSpec, policy: RetryPolicy,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[dict[str, Any], int]:
    """`search(text, spec)` with transient failures retried; returns the response and retries used.

    A response with a failed stage is retried too (a stage that lost its connection returns a
    ranking without that stage); if every try degrades, the last degraded response is kept and
    its warnings are counted by the caller. A failure that persists is raised.
    """
    retries = 0
    delays = policy.delays()
    while True:
        try:
            response = search(text, spec)
        except Exception as exc:
            delay = next(delays, None) if is_transient(exc) else None
            if delay is None:
                raise
        else:
            if not _stage_failed(response):
                return response, retries
            delay = next(delays, None)
            if delay is None:
                return response, retries
        retries += 1
        sleep(delay)


class Progress:
    """Per-spec progress on stderr: a tqdm bar on a terminal, a plain line every `every_s` seconds
    otherwise (a log file must still show that a long run is alive), nothing when disabled."""

    def __init__(self, total: int, name: str, enabled: bool = True, stream: TextIO | None = None,
                 every_s: float = 30.0) -> None:
        self.stream = stream or sys.stderr
        self.total, self.name, self.every_s = total, name, every_s
        self.done = self.failed = 0
        self._bar = None
        self._t0 = self._last = time.monotonic()
        self.enabled = enabled
        if enabled and _isatty(self.stream):
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=name, unit="q", file=self.stream, leave=False,
                             dynamic_ncols=True)

    def update(self, failed: bool = False) -> None:
        self.done += 1
        self.failed += int(failed)
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(1)
            if failed:
                self._bar.set_postfix(failed=self.failed)
            return
        now = time.monotonic()
        if now - self._last >= self.every_s:
            self._last = now
            self._line()

    def _line(self) -> None:
        print(f"eval {self.name}: {self.done}/{self.total} queries, {self.failed} failed, "
              f"{time.monotonic() - self._t0:.0f} s", file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self.enabled:
            self._line()


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def evaluate_spec(
    search: SearchFn,
    collection: EvalCollection,
    spec: PipelineSpec,
    name: str,
    *,
    drop_identical_ids: bool = True,
    warmup: int = 1,
    timeout_ms: int | None = None,
    source: str = "",
    progress: bool = False,
    retry: RetryPolicy = NO_RETRY,
    progress_stream: TextIO | None = None,
) -> SpecResult:
    """Run every query of `collection` through `search` with `spec` and score the rankings.

    `retry` decides how transient failures are retried (the command line retries, library callers
    choose); `progress` shows a per-spec bar (or periodic lines when stderr is not a terminal).
    """
    run_spec = for_evaluation(spec, timeout_ms)
    items = list(collection.queries.items())
    # Warm-up queries load encoders and codecs into the process; their time is not a query's.
    for _qid, text in items[: max(0, warmup)]:
        with contextlib.suppress(Exception):  # the timed pass below records any failure
            search(text, run_spec)

    runs: dict[str, dict[str, float]] = {}
    latencies: list[float] = []
    errors: list[tuple[str, str]] = []
    warned: list[dict[str, Any]] = []
    with_warnings = 0
    dropped = 0
    retried = 0
    bar = Progress(len(items), name, enabled=progress, stream=progress_stream)
    try:
        for qid, text in items:
            t0 = time.perf_counter()
            try:
                response, used = search_with_retries(search, text, run_spec, retry)
                retried += used
                ids = _hit_ids(response)
            except Exception as exc:  # noqa: BLE001 - any failure is reported, never scored
                errors.append((qid, f"{type(exc).__name__}: {exc}"))
                bar.update(failed=True)
                continue
            latencies.append((time.perf_counter() - t0) * 1e3)
            run, n_dropped = ranked_run(ids, qid if drop_identical_ids else None)
            dropped += n_dropped
            runs[qid] = run
            found = _warnings(response)
            if found:
                with_warnings += 1
                if len(warned) < ERRORS_KEPT:
                    warned.append({"query_id": qid, "warnings": found})
            bar.update()
    finally:
        bar.close()

    if runs:
        means, per_query = compute_metrics(collection.qrels, runs)
        metrics: dict[str, float | None] = dict(means)
    else:
        per_query = {}
        metrics = {"ndcg@10": None, "recall@100": None, "mrr@10": None}
    return SpecResult(
        name=name,
        pipeline=spec.to_dict(),
        metrics=metrics,
        latency_ms=latency_stats(latencies),
        queries=len(items),
        evaluated=len(runs),
        failed=len(errors),
        with_warnings=with_warnings,
        identical_ids_dropped=dropped,
        retried=retried,
        errors=summarize_errors(errors, ERRORS_KEPT),
        warnings=warned,
        source=source,
        per_query=per_query,
    )


def spec_label(name_or_path: str, taken: set[str]) -> str:
    """A short unique name for a spec argument: the built-in name or the file's stem."""
    base = Path(name_or_path).stem if name_or_path.endswith(".json") else name_or_path
    label, n = base, 1
    while label in taken:
        n += 1
        label = f"{base}#{n}"
    taken.add(label)
    return label


def evaluate_specs(
    search: SearchFn,
    collection: EvalCollection,
    specs: Sequence[tuple[str, PipelineSpec, str]],
    **kwargs: Any,
) -> list[SpecResult]:
    """`evaluate_spec` for each `(name, spec, source)`, in order."""
    return [
        evaluate_spec(search, collection, spec, name, source=source, **kwargs)
        for name, spec, source in specs
    ]
