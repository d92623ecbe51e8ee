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
import functools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from osneural.plugin import cluster_encoding, prf, rescoring, search_body, stages
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
from osneural.plugin.search_body import SearchOptions, SortKey
from osneural.plugin.spec import (
    PipelineSpec,
    SpecError,
    builtin_spec,
    builtin_spec_names,
    parse_spec,
)


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


#: what the candidate request reads of its answer (`filter_path`; the matched-set request's
#: aggregations are returned whole, empty buckets included)
_ARRANGE_FILTER = "hits.hits._id,hits.hits.sort,hits.hits.fields,_shards"

#: keyword options of `Searcher.search` whose body names are not Python identifiers
_OPTION_NAMES = {"from_": "from", "source": "_source"}

#: built-in specs in the order the default tries them: best measured quality first
DEFAULT_SPEC_ORDER = ("hybrid", "hybrid-linear", "multivector", "bm25", "dense", "binary")


def default_spec(res: IndexResources) -> tuple[PipelineSpec, str]:
    """The spec a query without one runs, and its name: the index's `_meta.osneural.default_spec`
    when it names a built-in, else `hybrid`, else the first built-in (best quality first) whose
    fields and codecs the index has -- an index built with text only runs `bm25`."""
    wanted = res.meta.get("default_spec")
    order = list(DEFAULT_SPEC_ORDER)
    if isinstance(wanted, str) and wanted in builtin_spec_names():
        order.insert(0, wanted)
    for name in order:
        spec = builtin_spec(name)
        try:
            res.check_spec(spec)
        except StageError:
            continue
        if spec_needs_codecs(spec) and res.codec_data is None:
            continue
        return spec, name
    return builtin_spec("bm25"), "bm25"  # its own check then names what the index lacks


@dataclass
class _Ranked:
    """One candidate as the answer orders it."""

    doc_id: str
    score: float
    sort_values: list[Any]  # the sort keys' values, then final score and _id
    pos: int  # rank in the pipeline's order: the tie-break of every sort
    collapse_values: list[Any]


def _compare_one(a: Any, b: Any, key: SortKey) -> int:
    if a == b:
        return 0
    if a is None or b is None:  # missing values go last (or first), whatever the order
        return (1 if a is None else -1) * (-1 if key.missing_first else 1)
    try:
        less = a < b
    except TypeError:  # mixed types: compare their text, as a stable last resort
        less = str(a) < str(b)
    out = -1 if less else 1
    return -out if key.desc else out


_SCORE_KEY = SortKey("_score", True, False, None)
_ID_KEY = SortKey("_id", False, False, None)


def _compare(a: list[Any], b: list[Any], keys: tuple[SortKey, ...]) -> int:
    """Order of two sort-value lists under the body's keys (the tie-breakers excluded)."""
    for x, y, key in zip(a, b, keys, strict=False):
        out = _compare_one(x, y, key)
        if out:
            return out
    return 0


def _after(ranked: list[_Ranked], opts: SearchOptions) -> int:
    """Where a `search_after` page starts: right after the hit whose `_id` it carries (the
    candidates are the same list for the same query), else after the first position whose sort
    values order after it (the document left the candidates)."""
    after = list(opts.search_after or ())
    for i, c in enumerate(ranked):
        if c.doc_id == after[-1]:
            return i + 1
    keys = opts.sort + (_SCORE_KEY, _ID_KEY)
    for i, c in enumerate(ranked):
        if _compare(c.sort_values, after, keys) > 0:
            return i
    return len(ranked)


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _highlight(highlight: dict[str, Any], text: str) -> dict[str, Any]:
    """The body's `highlight`, with the query text as its query unless it names one."""
    out = dict(highlight)
    if "highlight_query" not in out:
        fields = out.get("fields") or {}
        names = list(fields) if isinstance(fields, dict) else [
            n for item in fields if isinstance(item, dict) for n in item]
        out["highlight_query"] = {"multi_match": {"query": text, "fields": names,
                                                  "lenient": True}}
    return out


def _refused(exc: BaseException, what: str) -> BaseException:
    """An OpenSearch 400 for a body option (a bad aggregation, sort or highlight) as the
    caller's 400 naming the option; anything else unchanged."""
    status = getattr(exc, "status_code", None)
    if status == 400:
        info = getattr(exc, "info", None)
        reason = None
        if isinstance(info, dict):
            err = info.get("error") or {}
            root = (err.get("root_cause") or [{}])[0] if isinstance(err, dict) else {}
            reason = (err.get("caused_by") or {}).get("reason") if isinstance(err, dict) else None
            reason = reason or root.get("reason") or (err.get("reason") if isinstance(err, dict) else err)
        return SpecError(f"{what}: OpenSearch refused it: {reason or exc}")
    return exc


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
        body = stages.search_body(self._stage_query(stage, name, enc, spec), stage.k)
        return stages.run_query(self.client, self.index, body, timeout_s)

    def _stage_query(
        self, stage: Any, name: str, enc: QueryEncodings, spec: PipelineSpec
    ) -> dict[str, Any]:
        """The OpenSearch query of one first stage, the spec's filter inside it."""
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
            from osneural.codecs import mih

            code = enc.binary_code(where)
            terms = mih.query_tokens(code, m, stage.radius, n_bits=bq.n_bits)
            exact = set(mih.query_tokens(code, m, 0, n_bits=bq.n_bits))
            query = stages.binary_query(stage, terms, flt, exact)
        elif stage.type == "fde":
            query = stages.fde_query(stage, enc.fde(where), flt)
        else:  # pragma: no cover - the spec's discriminated union forbids it
            raise SpecError(f"unknown first stage {stage.type!r}")
        return query

    def _matched_set(
        self, enc: QueryEncodings, spec: PipelineSpec, names: list[str], opts: SearchOptions,
        timeout_s: float,
    ) -> dict[str, Any]:
        """Aggregations and the exact total over the matched set: the union of the first
        stages' own queries (each under the filter) as one `size: 0` request, sent beside the
        stages. The encodings it needs are the stages' own (computed once, shared)."""
        should = []
        for s, n in zip(spec.first_stages, names, strict=True):
            try:
                should.append(self._stage_query(s, n, enc, spec))
            except (SpecError, StageError):
                raise
            except Exception:  # noqa: BLE001 - that stage fails in the ranking too (a warning)
                continue
        if not should:
            raise SearchError("no first stage's query could be built for aggregations", 502)
        tth = opts.track_total_hits
        body: dict[str, Any] = {
            "size": 0, "query": {"bool": {"should": should, "minimum_should_match": 1}},
            "track_total_hits": False if tth is None else tth}
        if opts.aggs is not None:
            body["aggs"] = opts.aggs
        if opts.post_filter is not None:
            body["post_filter"] = opts.post_filter
        try:
            return stages.complete(self.client.search(
                index=self.index, body=stages.encode_body(body),
                request_timeout=max(timeout_s, 0.001)), "aggregations")
        except Exception as exc:
            raise _refused(exc, "aggs / track_total_hits") from exc

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
            codec = res.codecs.token_codec
            if codec is None:
                raise StageError(f"{where}: index {self.index!r} has no token codec")
            return rescoring.maxsim_scores(q, raw, ids, codec, field)
        raise SpecError(f"unknown rescoring stage {stage.type!r}")  # pragma: no cover

    # ------------------------------------------------------------ the pipeline

    def search(
        self,
        text: str,
        spec: PipelineSpec | dict | str | None = None,
        body: dict[str, Any] | None = None,
        *,
        spec_name: str | None = None,
        **options: Any,
    ) -> dict[str, Any]:
        """Run `spec` (None: the index's default, see `default_spec`) for `text`.

        `body` takes the `_search` body options an app sends (`aggs`, `highlight`, `sort`,
        `search_after`, `post_filter`, `collapse`, `min_score`, `track_total_hits`, `from`,
        `size`, `_source`, ... as parsed by `osneural.plugin.search_body`); keyword `options`
        are the same by name (`from_` and `source` for `from` and `_source`). `spec_name` labels
        the answer's `ext.osneural.spec` when `spec` is an already-parsed built-in."""
        t_start = time.perf_counter()
        merged = dict(body or {})
        merged.update({_OPTION_NAMES.get(k, k): v for k, v in options.items()})
        opts = search_body.parse_options(merged)
        name = spec_name or (spec if isinstance(spec, str) and not spec.lstrip().startswith("{")
                             else None if spec is None else "inline")
        parsed = None if spec is None else parse_spec(spec)
        if not isinstance(text, str) or not text.strip():
            raise SpecError("query text is empty")
        res = self.cache.index(self.client, self.index)
        for _attempt in range(2):
            try:
                chosen, label = (parsed, name) if parsed is not None else default_spec(res)
                return self._search_once(text, opts.apply(chosen), res, t_start, opts, label)
            except _IndexChanged as changed:
                res = self.cache.index(self.client, self.index, expect=changed.fingerprint)
        raise StaleCodecsError(
            f"index {self.index!r} was rebuilt again while this query ran; retry the query")

    def _search_once(
        self, text: str, spec: PipelineSpec, res: IndexResources, t_start: float,
        opts: SearchOptions | None = None, spec_label: str | None = None,
    ) -> dict[str, Any]:
        opts = opts or SearchOptions()
        t_load = time.perf_counter()
        try:
            res.check_spec(spec)
            search_body.check_fields(opts, res.fields, self.index)
            self._prepare(res, spec)
        except StageError:
            seen = self._verified(res, self._fingerprint(res))
            if seen != res.fingerprint:
                raise _IndexChanged(seen) from None
            raise
        depth = search_body.paging_depth(spec)
        if spec.from_ > 0 and spec.from_ >= depth:
            raise SpecError(f"from: {spec.from_} is past this pipeline's paging depth of {depth} "
                            "(the sum of its first stages' k, the most candidates it can rank); "
                            "raise the stages' k in the spec to page deeper")
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
            matched: cf.Future | None = None
            if opts.needs_matched_set:
                matched = self._pool.submit(self._timed, self._matched_set, enc, spec, names,
                                            opts, budget)
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

        # the matched-set request ran beside the stages; by now it is usually back
        matched_resp: dict[str, Any] | None = None
        if matched is not None:
            try:
                matched_resp, ms = matched.result(timeout=max(0.0, deadline - time.perf_counter()))
                timings["aggregations"] = ms
            except cf.TimeoutError:
                matched.cancel()
                timed_out = True
                warnings.append(f"aggregations / total hits timed out after {spec.timeout_ms} ms; "
                                "left out of the answer")

        t0 = time.perf_counter()
        ranked = self._arrange(candidates, spec, opts, budget)
        timings["arrange"] = (time.perf_counter() - t0) * 1e3
        if opts.search_after is not None:
            start = _after(ranked, opts)
            page = ranked[start : start + spec.size]
        else:
            page = ranked[spec.from_ : spec.from_ + spec.size]
        t0 = time.perf_counter()
        fetched = self._fetch_page(text, [c.doc_id for c in page], spec, opts, budget)
        timings["fetch"] = (time.perf_counter() - t0) * 1e3
        timings.update(enc.timings_ms)

        source = spec.source if opts.source is None else opts.source
        hits = []
        for c in page:
            got = fetched.get(c.doc_id, {})
            hit: dict[str, Any] = {"_index": self.index, "_id": c.doc_id, "_score": c.score}
            for key in ("_version", "_seq_no", "_primary_term"):
                if key in got:
                    hit[key] = got[key]
            if "_source" in got:
                hit["_source"] = got["_source"]
            elif source is not False and opts.stored_fields is None:
                hit["_source"] = {}
            fields = dict(got.get("fields") or {})
            if opts.collapse is not None:
                fields[opts.collapse] = c.collapse_values
            if fields:
                hit["fields"] = fields
            if "highlight" in got:
                hit["highlight"] = got["highlight"]
            if spec.explain:
                hit["_explanation"] = explain.get(c.doc_id, {})
            hit["sort"] = c.sort_values
            hits.append(hit)
        took = (time.perf_counter() - t_start) * 1e3
        timings["total"] = took
        out_hits: dict[str, Any] = {}
        tth = opts.track_total_hits
        if opts.min_score is not None and tth is not False:
            out_hits["total"] = {"value": len(ranked), "relation": "eq"}
        elif tth not in (None, False) and matched_resp is not None:
            out_hits["total"] = (matched_resp.get("hits") or {}).get("total")
        elif tth is not False:
            out_hits["total"] = {"value": len(ranked), "relation": "gte"}
        out_hits["max_score"] = max((h["_score"] for h in hits), default=None)
        out_hits["hits"] = hits
        result: dict[str, Any] = {"took": int(round(took)), "timed_out": timed_out, "hits": out_hits}
        if opts.aggs is not None and matched_resp is not None:
            result["aggregations"] = matched_resp.get("aggregations", {})
        result["ext"] = {"osneural": {"spec": spec_label or "inline", "paging_depth": depth,
                                      "warnings": warnings, "timings_ms": timings}}
        return result

    def _arrange(
        self, candidates: list[tuple[str, float]], spec: PipelineSpec, opts: SearchOptions,
        timeout_s: float,
    ) -> list[_Ranked]:
        """The candidates as the answer orders them: `min_score` and `post_filter` applied,
        sorted by the body's `sort` (ties keep the pipeline's order), one per `collapse` value.

        Field values come from one request over the candidates' ids, which OpenSearch sorts by
        the body's field keys: its sort values (missing values, `mode`, dates) are OpenSearch's
        own, and are then compared here with the final score and `_id` keys the pipeline adds."""
        cands = [(d, s) for d, s in candidates
                 if opts.min_score is None or s >= opts.min_score]
        field_keys = [k for k in opts.sort if k.clause is not None]
        values: dict[str, list[Any]] = {}
        collapsed: dict[str, list[Any]] = {}
        if cands and (opts.post_filter is not None or field_keys or opts.collapse is not None):
            ids = [d for d, _ in cands]
            flt: list[dict[str, Any]] = [{"ids": {"values": ids}}]
            if opts.post_filter is not None:
                flt.append(opts.post_filter)
            body: dict[str, Any] = {"size": len(ids), "query": {"bool": {"filter": flt}},
                                    "_source": False, "track_total_hits": False}
            if field_keys:
                body["sort"] = [k.clause for k in field_keys]
            if opts.collapse is not None:
                body["docvalue_fields"] = [opts.collapse]
            try:
                resp = stages.complete(self.client.search(
                    index=self.index, body=stages.encode_body(body), filter_path=_ARRANGE_FILTER,
                    request_timeout=max(timeout_s, 1.0)), "sort / post_filter / collapse")
            except Exception as exc:
                raise _refused(exc, "sort / post_filter / collapse") from exc
            for hit in (resp.get("hits") or {}).get("hits", []):
                values[hit["_id"]] = list(hit.get("sort") or [])
                if opts.collapse is not None:
                    collapsed[hit["_id"]] = (hit.get("fields") or {}).get(opts.collapse) or [None]
            cands = [(d, s) for d, s in cands if d in values]
        ranked = []
        for pos, (doc_id, score) in enumerate(cands):
            got = iter(values.get(doc_id, []))
            keys = [score if k.name == "_score" else doc_id if k.name == "_id" else next(got, None)
                    for k in opts.sort]
            ranked.append(_Ranked(doc_id, score, keys + [score, doc_id], pos,
                                  collapsed.get(doc_id, [None])))
        if opts.sort:
            ranked.sort(key=functools.cmp_to_key(
                lambda a, b: _compare(a.sort_values, b.sort_values, opts.sort) or a.pos - b.pos))
        if opts.collapse is not None:
            seen: set[Any] = set()
            kept = []
            for c in ranked:
                key = _hashable(c.collapse_values[0] if c.collapse_values else None)
                if key not in seen:
                    seen.add(key)
                    kept.append(c)
            ranked = kept
        return ranked

    def _fetch_page(
        self, text: str, ids: list[str], spec: PipelineSpec, opts: SearchOptions, timeout_s: float
    ) -> dict[str, dict[str, Any]]:
        """`_source`, highlights, docvalue / stored fields and versions of the page's hits, in
        one request (the highlight query is the query text unless the body names one)."""
        source = spec.source if opts.source is None else opts.source
        # `_none_` drops `_id` from OpenSearch's hits too; here it means "no _source, no stored
        # fields", and the page's ids are known anyway
        no_stored = opts.stored_fields in ("_none_", ["_none_"])
        stored = None if no_stored else opts.stored_fields
        source = False if no_stored else source
        wants_more = (opts.highlight is not None or opts.docvalue_fields
                      or stored is not None or opts.version or opts.seq_no_primary_term)
        if not ids or (source is False and not wants_more):
            return {}
        body: dict[str, Any] = {
            "size": len(ids),
            "query": {"ids": {"values": ids}},
            "_source": source,
            "track_total_hits": False,
        }
        if opts.highlight is not None:
            body["highlight"] = _highlight(opts.highlight, text)
        if opts.docvalue_fields:
            body["docvalue_fields"] = opts.docvalue_fields
        if stored is not None:
            body["stored_fields"] = stored
        if opts.version:
            body["version"] = True
        if opts.seq_no_primary_term:
            body["seq_no_primary_term"] = True

        def fetch() -> dict[str, Any]:
            return stages.complete(self.client.search(
                index=self.index, body=body, request_timeout=max(timeout_s, 1.0)), "_source fetch")

        try:
            try:
                resp = fetch()
            except Exception as exc:
                if not _transient(exc):
                    raise
                resp = fetch()
        except Exception as exc:
            raise _refused(exc, "_source / highlight / docvalue_fields / stored_fields") from exc
        return {hit["_id"]: hit for hit in resp["hits"]["hits"]}

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
