"""`Searcher`: run a pipeline spec against one index and answer like OpenSearch's `_search`.

First stages run concurrently in threads (each is mostly a wait on OpenSearch or on an ONNX call
that releases the GIL). Every stage, first or rescoring, has a deadline; one that misses it or
fails is skipped and named in `ext.osneural.warnings`, so a slow stage degrades the ranking
instead of failing the query. Only when every first stage fails does the query fail.

What is not query time stays out of the budget: the encoders and codec bundle the spec needs are
loaded before the deadline starts (a cold process would otherwise fail its first queries on
model-load time). And no answer uses stale codecs: every answer is checked against the index's
fingerprint (uuid + codec generation, see `osneural.plugin.resources`) read by a request sent
after the query began -- the calling thread's own read while the first stages run, or, under
concurrency, a read another query sent meanwhile (`osneural.plugin.index_check`); when it
differs from the cached one -- the index was rebuilt under this process -- the description is
reloaded and the query runs again from the start.
"""

from __future__ import annotations

import concurrent.futures as cf
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from osneural.plugin import cluster_encoding, prf, rescoring, stages
from osneural.plugin import fusion as fusion_mod
from osneural.plugin.index_check import SharedCheck
from osneural.plugin.resources import (
    IndexFingerprint,
    IndexResources,
    ResourceCache,
    StageError,
    StaleCodecsError,
    current_fingerprint,
    default_cache,
    spec_encoder_kinds,
    spec_needs_codecs,
    stage_field,
)
from osneural.plugin.spec import PipelineSpec, SpecError, parse_spec


class SearchError(RuntimeError):
    """Every first stage failed; `status` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 502) -> None:
        super().__init__(message)
        self.status = status


class QueryEncodings:
    """The query's representations, each computed at most once and shared between stages."""

    def __init__(self, text: str, res: IndexResources, cache: ResourceCache) -> None:
        self.text = text
        self.res = res
        self.cache = cache
        self.timings_ms: dict[str, float] = {}
        self._values: dict[str, Any] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def _memo(self, key: str, compute: Callable[[], Any]) -> Any:
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            if key not in self._values:
                t0 = time.perf_counter()
                self._values[key] = compute()
                self.timings_ms[f"encode.{key}"] = (time.perf_counter() - t0) * 1e3
            return self._values[key]

    def _shared_pass(self, stage: str) -> tuple[np.ndarray, np.ndarray | None] | None:
        """Token rows and the dense query vector from one pass of the multivector graph, when
        this query needs tokens (its encoder is loaded: the spec has a token stage) and the
        index's dense vectors are that graph's pooled output; None otherwise. Saves one of the
        two model passes of a dense + MaxSim pipeline, with the same vectors (to ~1e-7)."""
        if "multivector" not in self.cache.encoders.loaded():
            return None
        if not (self.res.expected_encoder("dense") and self.res.expected_encoder("multivector")):
            return None

        def compute() -> tuple[np.ndarray, np.ndarray | None] | None:
            mv = self.cache.encoders.checked("multivector", self.res, stage)
            dense = self.cache.encoders.checked("dense", self.res, stage)
            if not hasattr(mv, "encode_queries_and_pooled") or not mv.shares_query_pass(dense):
                return None
            tokens, pooled = mv.encode_queries_and_pooled([self.text], dense)
            return np.asarray(tokens[0], dtype=np.float32), pooled[0]

        return self._memo("shared", compute)

    def dense(self, stage: str = "dense") -> np.ndarray:
        def compute() -> np.ndarray:
            shared = self._shared_pass(stage)
            if shared is not None and shared[1] is not None:
                return np.asarray(shared[1], dtype=np.float32)
            enc = self.cache.encoders.checked("dense", self.res, stage)
            return np.asarray(enc.encode_queries([self.text]), dtype=np.float32)[0]

        return self._memo("dense", compute)

    def sparse(self, mode: str, stage: str = "sparse") -> dict[str, float]:
        def compute() -> dict[str, float]:
            enc = self.cache.encoders.checked("sparse", self.res, stage)
            if mode == "inference_free":
                idf = (self.res.codecs.params or {}).get("idf")
                if idf is None:
                    raise StageError(f"{stage}: the index stores no IDF table for inference-free "
                                     "queries; re-ingest it with the sparse representation")
                return dict(enc.encode_queries([self.text], idf=idf)[0])
            return dict(enc.encode_queries([self.text])[0])

        return self._memo(f"sparse.{mode}", compute)

    def tokens(self, stage: str = "multivector") -> np.ndarray:
        def compute() -> np.ndarray:
            shared = self._shared_pass(stage)
            if shared is not None:
                return shared[0]
            enc = self.cache.encoders.checked("multivector", self.res, stage)
            return np.asarray(enc.encode_queries([self.text])[0], dtype=np.float32)

        return self._memo("tokens", compute)

    def set_tokens(self, tokens: np.ndarray) -> None:
        """Replace the query tokens later stages score with (PRF expansion tokens appended)."""
        self.tokens()
        with self._guard:
            self._values["tokens"] = tokens

    def binary_code(self, stage: str = "binary") -> np.ndarray:
        def compute() -> np.ndarray:
            bq = self.res.codec("binary", stage)
            return np.asarray(bq.encode(self.dense(stage)[None, :]), dtype=np.uint8)[0]

        return self._memo("binary", compute)

    def fde(self, stage: str = "fde") -> np.ndarray:
        def compute() -> np.ndarray:
            return np.asarray(self.res.codec("fde", stage).encode_query(self.tokens(stage)))

        return self._memo("fde", compute)


def _transient(exc: BaseException) -> bool:
    """Errors of a node dying or rejoining, worth one retry."""
    from opensearchpy.exceptions import ConnectionError as ClientConnectionError
    from opensearchpy.exceptions import TransportError

    if isinstance(exc, (stages.PartialResultsError, ClientConnectionError)):
        return True
    status = getattr(exc, "status_code", None)
    return isinstance(exc, TransportError) and isinstance(status, int) and status >= 500


def _is_timeout(exc: BaseException) -> bool:
    """The client gave up waiting (the request's timeout): the stage timed out, not failed."""
    from opensearchpy.exceptions import ConnectionTimeout

    return isinstance(exc, (ConnectionTimeout, TimeoutError))


class _IndexChanged(Exception):
    """The index was rebuilt since its description was cached: reload and run again."""

    def __init__(self, fingerprint: IndexFingerprint) -> None:
        super().__init__(f"index changed to {fingerprint}")
        self.fingerprint = fingerprint


def _stage_names(kinds: list[str]) -> list[str]:
    """'bm25', 'dense', ... made unique ('dense', 'dense#2') for explanations and timings."""
    seen: dict[str, int] = {}
    names = []
    for kind in kinds:
        seen[kind] = seen.get(kind, 0) + 1
        names.append(kind if seen[kind] == 1 else f"{kind}#{seen[kind]}")
    return names


class Searcher:
    """`Searcher(client, index).search(text, spec) -> dict` shaped like an OpenSearch response."""

    def __init__(
        self,
        client: Any,
        index: str,
        cache: ResourceCache | None = None,
        max_workers: int = 32,
    ) -> None:
        # One Searcher is shared by every thread of an application: each concurrent query runs
        # its first listed stage itself and puts the others (its rescoring stages, the index
        # check it leads) on this pool, so 8 callers of a 3-stage hybrid need 16 workers or
        # their stages queue behind each other while the CPU waits on OpenSearch (seen in
        # bench/peer.py at 8 clients with an 8-worker pool: 27 ms of a 67 ms p50 spent queued).
        # Threads start lazily, so an idle large pool costs nothing.
        self.client = client
        self.index = index
        self.cache = cache or default_cache()
        self._pool = cf.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="osneural")
        # the per-query index check, shared by concurrent queries (osneural.plugin.index_check)
        self._check: SharedCheck[IndexFingerprint] = SharedCheck(
            lambda: current_fingerprint(self.client, self.index))

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def rescore_ids(self, text: str, stage: Any, ids: list[str], timeout_s: float = 60.0) -> np.ndarray:
        """One rescoring stage's raw scores for `ids` (NaN where a document has no value): what
        the stage computes over a window, for callers that cache scores and re-fuse offline
        (`osneural tune`)."""
        enc = QueryEncodings(text, self.cache.index(self.client, self.index), self.cache)
        return self._rescore(stage, stage.type, enc, list(ids), timeout_s)

    def warm(self, kinds: list[str] | None = None) -> list[str]:
        """Load this index's description, codecs and encoders (plus `kinds`) now; returns the
        encoder kinds loaded. For a server's startup, so no first query pays for loading."""
        return self.cache.warm(kinds, client=self.client, indices=[self.index])

    def _prepare(self, res: IndexResources, spec: PipelineSpec) -> None:
        """Load what the spec needs before its deadline starts (loading is not query time)."""
        self.cache.encoders.warm(spec_encoder_kinds(spec))
        if spec_needs_codecs(spec) and res.codec_data is not None:
            res.codecs  # noqa: B018 - decodes the bundle once per process

    def _fingerprint(self, res: IndexResources) -> IndexFingerprint | BaseException:
        """The index's fingerprint now, or the error that prevented reading it."""
        try:
            return current_fingerprint(self.client, self.index,
                                       legacy=res.fingerprint.generation is None)
        except Exception as exc:  # noqa: BLE001 - judged by the caller once the stages are back
            return exc

    def _verified(self, res: IndexResources, seen: IndexFingerprint | BaseException) -> IndexFingerprint:
        """`seen`, re-read once if reading it failed; an index that cannot be verified gets no
        answer (it may have been rebuilt), so a second failure propagates."""
        if isinstance(seen, BaseException):
            seen = self._fingerprint(res)
            if isinstance(seen, BaseException):
                raise seen
        return seen

    # ------------------------------------------------------------ first stages

    def _first_stage(
        self, stage: Any, name: str, enc: QueryEncodings, spec: PipelineSpec, timeout_s: float
    ) -> list[tuple[str, float]]:
        flt = spec.filter
        where = f"first_stages ({name})"
        if stage.type == "bm25":
            query = stages.bm25_query(stage, enc.text, flt)
        elif stage.type == "dense":
            query = stages.dense_query(stage, cluster_encoding.dense(self.client, enc, stage, where), flt)
        elif stage.type == "sparse":
            query = stages.sparse_query(stage, cluster_encoding.sparse(self.client, enc, stage, where), flt)
        elif stage.type == "binary":
            bq = enc.res.codec("binary", where)
            m = int(enc.res.codecs.params.get("mih_m") or 0)
            if m <= 0:
                raise StageError(f"{where}: the index's codecs do not record the MIH substring count")
            from osneural.ingest.codecs import mih

            code = enc.binary_code(where)
            terms = mih.query_tokens(code, m, stage.radius, n_bits=bq.n_bits)
            exact = set(mih.query_tokens(code, m, 0, n_bits=bq.n_bits))
            query = stages.binary_query(stage, terms, flt, exact)
        elif stage.type == "fde":
            query = stages.fde_query(stage, enc.fde(where), flt)
        else:  # pragma: no cover - the spec's discriminated union forbids it
            raise SpecError(f"unknown first stage {stage.type!r}")
        body = stages.search_body(query, stage.k)
        return stages.run_query(self.client, self.index, body, timeout_s)

    # ------------------------------------------------------------ rescoring

    def _rescore(
        self,
        stage: Any,
        name: str,
        enc: QueryEncodings,
        ids: list[str],
        timeout_s: float,
    ) -> np.ndarray:
        where = f"rescore ({name})"
        res = enc.res
        if stage.type == "hamming":
            bq = res.codec("binary", where)
            code = enc.binary_code(where)
            raw = rescoring.fetch_codes(self.client, self.index, ids, "bin_code", timeout_s)
            return rescoring.hamming_scores(code, raw, ids, bq.n_bits, "bin_code")
        if stage.type == "pq":
            pq = res.codec("pq_dense", where)
            lut = pq.lookup_table(enc.dense(where), metric="ip")
            raw = rescoring.fetch_codes(self.client, self.index, ids, "dense_pq", timeout_s)
            return rescoring.pq_scores(lut, raw, ids, "dense_pq")
        if stage.type == "dense":
            return rescoring.dense_exact_scores(
                self.client, self.index, ids, enc.dense(where), "dense",
                res.space_type("dense"), timeout_s,
            )
        if stage.type == "maxsim":
            q = enc.tokens(where)
            field = stage_field("rescore", stage)
            raw = rescoring.fetch_codes(self.client, self.index, ids, field, timeout_s)
            if stage.tokens == "float16":
                return rescoring.maxsim_float16_scores(q, raw, ids, field)
            pq = res.codec("pq_tokens", where)
            return rescoring.maxsim_scores(q, raw, ids, pq.codebooks, field)
        raise SpecError(f"unknown rescoring stage {stage.type!r}")  # pragma: no cover

    # ------------------------------------------------------------ the pipeline

    def search(self, text: str, spec: PipelineSpec | dict | str | None = None) -> dict[str, Any]:
        t_start = time.perf_counter()
        spec = parse_spec(spec)
        if not isinstance(text, str) or not text.strip():
            raise SpecError("query text is empty")
        res = self.cache.index(self.client, self.index)
        for _attempt in range(2):
            try:
                return self._search_once(text, spec, res, t_start)
            except _IndexChanged as changed:
                res = self.cache.index(self.client, self.index, expect=changed.fingerprint)
        raise StaleCodecsError(
            f"index {self.index!r} was rebuilt again while this query ran; retry the query")

    def _search_once(
        self, text: str, spec: PipelineSpec, res: IndexResources, t_start: float
    ) -> dict[str, Any]:
        t_load = time.perf_counter()
        try:
            res.check_spec(spec)
            self._prepare(res, spec)
        except StageError:
            seen = self._verified(res, self._fingerprint(res))
            if seen != res.fingerprint:
                raise _IndexChanged(seen) from None
            raise
        enc = QueryEncodings(text, res, self.cache)
        warnings: list[str] = []
        timings: dict[str, float] = {"load": (time.perf_counter() - t_load) * 1e3}
        timed_out = False
        budget = spec.timeout_ms / 1e3

        names = _stage_names([s.type for s in spec.first_stages])
        # before any stage is sent: only reads sent after this may verify the answer
        ticket = None if res.fingerprint.generation is None else self._check.begin()
        t0 = time.perf_counter()
        deadline = t0 + budget
        # outcome per first stage: (run, ms), or the exception it raised, or None (timed out)
        outcomes: dict[int, tuple[list[tuple[str, float]], float] | BaseException | None] = {}
        pending: set[cf.Future] = set()
        try:
            # The first stage runs in this thread and the others on the pool: a hand-off per
            # stage costs GIL switches that, on a saturated query node, are a fifth of the
            # Python time of a one-stage query. The check read this query leads goes to the
            # pool, so it still overlaps the stages.
            futures = {
                self._pool.submit(self._timed, self._first_stage, s, n, enc, spec, budget): (i, n)
                for i, (s, n) in enumerate(zip(spec.first_stages, names, strict=True)) if i > 0
            }
            seen_future: cf.Future | None = None
            if ticket is None:  # an older build's own read (it depends on the cached codec version)
                seen_future = self._pool.submit(self._fingerprint, res)
            elif ticket.lead:
                self._pool.submit(self._check.lead, ticket)
            outcomes[0] = self._inline_stage(spec.first_stages[0], names[0], enc, spec, deadline)
            done, pending = cf.wait(futures, timeout=max(0.0, deadline - time.perf_counter()))
            t_check = time.perf_counter()
            if seen_future is not None:
                seen: IndexFingerprint | BaseException = seen_future.result()
            else:
                seen = self._check.settle(ticket)
            timings["check"] = (time.perf_counter() - t_check) * 1e3
        finally:
            if ticket is not None:
                self._check.release(ticket)
        seen = self._verified(res, seen)
        if seen != res.fingerprint:
            for fut in pending:
                fut.cancel()
            raise _IndexChanged(seen)
        for fut in pending:
            fut.cancel()
            outcomes[futures[fut][0]] = None
        for fut in done:
            exc = fut.exception()
            outcomes[futures[fut][0]] = exc if exc is not None else fut.result()
        runs: dict[int, list[tuple[str, float]]] = {}
        errors: list[BaseException] = []
        for i in sorted(outcomes):
            n, out = names[i], outcomes[i]
            if out is None:
                timed_out = True
                warnings.append(f"first_stages[{i}] ({n}) timed out after {spec.timeout_ms} ms; skipped")
            elif isinstance(out, BaseException):
                if isinstance(out, (SpecError, StageError)):
                    raise out
                errors.append(out)
                warnings.append(f"first_stages[{i}] ({n}) failed: {type(out).__name__}: {out}; skipped")
            else:
                runs[i] = out[0]
                timings[f"first_stage.{n}"] = out[1]
        timings["first_stages"] = (time.perf_counter() - t0) * 1e3
        if not runs:
            if errors and not timed_out:
                raise errors[0]
            raise SearchError("every first stage failed or timed out: " + "; ".join(warnings), 504)

        # fusion over the stages that answered, with their weights
        t0 = time.perf_counter()
        order = sorted(runs)
        weights = spec.fusion.weights
        fused = fusion_mod.fuse(
            [runs[i] for i in order],
            spec.fusion.type,
            weights=None if weights is None else [weights[i] for i in order],
            rank_constant=getattr(spec.fusion, "rank_constant", 60),
            normalization=getattr(spec.fusion, "normalization", "minmax"),
        )
        timings["fusion"] = (time.perf_counter() - t0) * 1e3

        explain: dict[str, dict[str, Any]] = {}
        if spec.explain:
            for i in order:
                for rank, (doc_id, score) in enumerate(runs[i], start=1):
                    explain.setdefault(doc_id, {}).setdefault("first_stages", {})[names[i]] = {
                        "rank": rank, "score": score}
            for rank, (doc_id, score) in enumerate(fused, start=1):
                explain.setdefault(doc_id, {})["fusion"] = {
                    "type": spec.fusion.type, "rank": rank, "score": score}

        # rescoring, in order, each over the current top window
        candidates = fused
        rnames = _stage_names([r.type for r in spec.rescore])
        for j, (stage, n) in enumerate(zip(spec.rescore, rnames, strict=True)):
            if stage.type == "prf":  # feedback may add documents: see osneural.plugin.prf
                candidates = prf.run_stage(self, stage, f"rescore[{j}] ({n})", enc, candidates,
                                           spec, budget, warnings, timings)
                continue
            ids = [doc_id for doc_id, _ in candidates[: stage.window]]
            fut = self._pool.submit(self._timed, self._rescore, stage, n, enc, ids, budget)
            try:
                scores, ms = fut.result(timeout=budget)
            except cf.TimeoutError:
                fut.cancel()
                timed_out = True
                warnings.append(f"rescore[{j}] ({n}) timed out after {spec.timeout_ms} ms; skipped")
                continue
            except (SpecError, StageError):
                raise
            except Exception as exc:  # noqa: BLE001 - a failing rescorer degrades, never fails
                warnings.append(f"rescore[{j}] ({n}) failed: {type(exc).__name__}: {exc}; skipped")
                continue
            scores = rescoring.combine_scores(
                [s for _, s in candidates[: stage.window]], scores, stage.combine, stage.weight,
                stage.rank_constant)
            candidates = rescoring.reorder(candidates, stage.window, scores)
            timings[f"rescore.{n}"] = ms
            if spec.explain:
                for rank, (doc_id, score) in enumerate(candidates[: stage.window], start=1):
                    explain.setdefault(doc_id, {}).setdefault("rescore", {})[n] = {
                        "rank": rank, "score": score}

        page = candidates[spec.from_ : spec.from_ + spec.size]
        t0 = time.perf_counter()
        sources = self._sources([d for d, _ in page], spec.source, budget)
        timings["fetch"] = (time.perf_counter() - t0) * 1e3
        timings.update(enc.timings_ms)

        hits = []
        for doc_id, score in page:
            hit: dict[str, Any] = {"_index": self.index, "_id": doc_id, "_score": score}
            if spec.source is not False:
                hit["_source"] = sources.get(doc_id, {})
            if spec.explain:
                hit["_explanation"] = explain.get(doc_id, {})
            hits.append(hit)
        took = (time.perf_counter() - t_start) * 1e3
        timings["total"] = took
        return {
            "took": int(round(took)),
            "timed_out": timed_out,
            "hits": {
                "total": {"value": len(candidates), "relation": "gte"},
                "max_score": max((h["_score"] for h in hits), default=None),
                "hits": hits,
            },
            "ext": {"osneural": {"warnings": warnings, "timings_ms": timings}},
        }

    def _inline_stage(
        self, stage: Any, name: str, enc: QueryEncodings, spec: PipelineSpec, deadline: float
    ) -> tuple[list[tuple[str, float]], float] | BaseException | None:
        """One first stage in the calling thread, under the same rules as a pooled one: its
        (run, ms), the error it raised, or None when it ran past the deadline. Its request
        carries the time left as its timeout, and the one retry after a transient error gets
        only what is left then."""
        t0 = time.perf_counter()
        try:
            try:
                run = self._first_stage(stage, name, enc, spec, deadline - t0)
            except Exception as exc:
                left = deadline - time.perf_counter()
                if not _transient(exc) or left <= 0:
                    raise
                run = self._first_stage(stage, name, enc, spec, left)
        except Exception as exc:  # noqa: BLE001 - judged with the other stages' outcomes
            return None if _is_timeout(exc) else exc
        return run, (time.perf_counter() - t0) * 1e3

    @staticmethod
    def _timed(fn: Callable[..., Any], *args: Any) -> tuple[Any, float]:
        """`fn(*args)` and its milliseconds; retried once after an error a dying or rejoining
        node causes (shards that did not answer, a 5xx, a connection the client could not
        place), since by then the cluster has usually routed around it."""
        t0 = time.perf_counter()
        try:
            out = fn(*args)
        except Exception as exc:
            if not _transient(exc):
                raise
            out = fn(*args)
        return out, (time.perf_counter() - t0) * 1e3

    def _sources(
        self, ids: list[str], source: bool | list[str], timeout_s: float
    ) -> dict[str, Any]:
        if not ids or source is False:
            return {}
        body = {
            "size": len(ids),
            "query": {"ids": {"values": ids}},
            "_source": source,
            "track_total_hits": False,
        }
        def fetch() -> dict[str, Any]:
            return stages.complete(self.client.search(
                index=self.index, body=body, request_timeout=max(timeout_s, 1.0)), "_source fetch")

        try:
            resp = fetch()
        except Exception as exc:
            if not _transient(exc):
                raise
            resp = fetch()
        return {hit["_id"]: hit.get("_source", {}) for hit in resp["hits"]["hits"]}
