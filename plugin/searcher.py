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
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from osneural.plugin import fusion as fusion_mod
from osneural.plugin import page, rescoring, search_body, stages
from osneural.plugin.index_check import SharedCheck
from osneural.plugin.page import Ranked, refused
from osneural.plugin.page import compare as _compare  # noqa: F401 - importable from here
from osneural.plugin.query_encodings import QueryEncodings  # noqa: F401 - importable from here
from osneural.plugin.rescoring import RESCORERS
from osneural.plugin.rescoring.base import RescoreType
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
)
from osneural.plugin.search_body import SearchOptions
from osneural.plugin.spec import (
    PipelineSpec,
    SpecError,
    builtin_spec,
    builtin_spec_names,
    parse_spec,
)
from osneural.plugin.stages import FIRST_STAGES, StageContext
from osneural.plugin.stages.request import transient as _transient

from osneural.errors import SearchError


def _is_timeout(exc: BaseException) -> bool:
    """The client gave up waiting (the request's timeout): the stage timed out, not failed."""
    from opensearchpy.exceptions import ConnectionTimeout

    return isinstance(exc, (ConnectionTimeout, TimeoutError))


def _quietly(fn: Callable[..., Any], *args: Any) -> None:
    """`fn(*args)` for its side effect only; an error is met again where the result is used."""
    with contextlib.suppress(Exception):  # the stage that needs the result reports it
        fn(*args)


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


#: one first stage's outcome: (run, ms), the exception it raised, or None (it timed out)
_Outcome = tuple[list[tuple[str, float]], float] | BaseException | None


@dataclass
class _Query:
    """One query's running record, which each step of the pipeline reads and adds to: the
    parsed request, the deadline, and what the answer reports (warnings, timings, explanations)."""

    text: str
    spec: PipelineSpec
    opts: SearchOptions
    enc: QueryEncodings
    label: str | None
    t_start: float
    depth: int
    names: list[str]
    deadline: float = 0.0
    timed_out: bool = False
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    explain: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def budget(self) -> float:
        """Seconds each stage may take (the spec's `timeout_ms`)."""
        return self.spec.timeout_ms / 1e3

    def skip(self, what: str) -> None:
        """Record a stage that ran past its deadline and was skipped."""
        self.timed_out = True
        self.warnings.append(f"{what} timed out after {self.spec.timeout_ms} ms; skipped")

    def explain_step(self, doc_id: str, step: str, name: str, rank: int, score: float) -> None:
        self.explain.setdefault(doc_id, {}).setdefault(step, {})[name] = {"rank": rank, "score": score}


_NO_TOTAL = object()


def _total(opts: SearchOptions, ranked: list[Ranked], matched_resp: dict[str, Any] | None) -> Any:
    """`hits.total` as the body's `track_total_hits` asks: the exact count of the matched set
    when it was requested, else the ranked candidates (`eq` under `min_score`, where they are
    all that match, `gte` otherwise); `_NO_TOTAL` for `track_total_hits: false`."""
    tth = opts.track_total_hits
    if opts.min_score is not None and tth is not False:
        return {"value": len(ranked), "relation": "eq"}
    if tth not in (None, False) and matched_resp is not None:
        return (matched_resp.get("hits") or {}).get("total")
    if tth is not False:
        return {"value": len(ranked), "relation": "gte"}
    return _NO_TOTAL


class Searcher:
    """`Searcher(client, index).search(text, spec) -> dict` shaped like an OpenSearch response."""

    def __init__(
        self,
        client: Any,
        index: str,
        cache: ResourceCache | None = None,
        max_workers: int = 32,
        executor: cf.ThreadPoolExecutor | None = None,
        code_cache: bool = True,
        code_cache_scope: str = "",
    ) -> None:
        # One Searcher is shared by every thread of an application: each concurrent query runs
        # its first listed stage itself and puts the others (its rescoring stages, the index
        # check it leads) on this pool, so 8 callers of a 3-stage hybrid need 16 workers or
        # their stages queue behind each other while the CPU waits on OpenSearch (seen in
        # bench/peer.py at 8 clients with an 8-worker pool: 27 ms of a 67 ms p50 spent queued).
        # Threads start lazily, so an idle large pool costs nothing. A server that makes one
        # Searcher per request (each with the caller's own client) passes one long-lived
        # `executor` instead: a pool per request would start and stop threads on every query,
        # and each new thread that allocates can take a fresh malloc arena, whose freed pages a
        # long-running worker keeps (seen as RSS growth over an hour of `serve`).
        self.client = client
        self.index = index
        self.cache = cache or default_cache()
        # Rescoring reads doc values through the cache's `CodeCache` (osneural.plugin.code_cache)
        # unless told not to, in the partition `code_cache_scope` (one per caller's credential
        # on a server that forwards them).
        self.code_cache = code_cache
        self.code_cache_scope = code_cache_scope
        self._owns_pool = executor is None
        self._pool = executor or cf.ThreadPoolExecutor(max_workers=max_workers,
                                                       thread_name_prefix="osneural")
        # the per-query index check, shared by concurrent queries (osneural.plugin.index_check)
        self._check: SharedCheck[IndexFingerprint] = SharedCheck(
            lambda: current_fingerprint(self.client, self.index))

    def close(self) -> None:
        """Stop this searcher's own pool; a pool passed in as `executor` belongs to the caller."""
        if self._owns_pool:
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

    def stage_context(self, enc: QueryEncodings, where: str, flt: dict[str, Any] | None = None) -> StageContext:
        """What a stage of this searcher's query builds its requests from (`where` names it)."""
        return StageContext(self.client, self.index, enc, flt, where,
                            self.cache.codes if self.code_cache else None, self.code_cache_scope)

    def _first_stage(
        self, stage: Any, name: str, enc: QueryEncodings, spec: PipelineSpec, timeout_s: float
    ) -> list[tuple[str, float]]:
        """One first stage's candidates, through its registered type."""
        ctx = self.stage_context(enc, f"first_stages ({name})", spec.filter)
        return FIRST_STAGES.of(stage).run(stage, ctx, timeout_s)

    def _stage_query(
        self, stage: Any, name: str, enc: QueryEncodings, spec: PipelineSpec
    ) -> dict[str, Any]:
        """The OpenSearch query of one first stage, the spec's filter inside it."""
        ctx = self.stage_context(enc, f"first_stages ({name})", spec.filter)
        return FIRST_STAGES.of(stage).query(stage, ctx)

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
                ctx = self.stage_context(enc, f"first_stages ({n})", spec.filter)
                should.append(FIRST_STAGES.of(s).matched_query(s, ctx))
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
            raise refused(exc, "aggs / track_total_hits") from exc

    # ------------------------------------------------------------ rescoring

    def _rescore(
        self,
        stage: Any,
        name: str,
        enc: QueryEncodings,
        ids: list[str],
        timeout_s: float,
    ) -> np.ndarray:
        """One rescoring stage's scores for the window `ids`, through its registered type."""
        return RESCORERS.of(stage).score(stage, self.stage_context(enc, f"rescore ({name})"), ids,
                                         timeout_s)

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
            f"index {self.index!r} was rebuilt again while this query ran; retry the query",
            index=self.index)

    def _search_once(
        self, text: str, spec: PipelineSpec, res: IndexResources, t_start: float,
        opts: SearchOptions | None = None, spec_label: str | None = None,
    ) -> dict[str, Any]:
        """One run of the pipeline against the description `res`; `_IndexChanged` when the
        index turned out to be rebuilt meanwhile (the caller reloads and runs it again)."""
        q = self._begin(text, spec, res, t_start, opts or SearchOptions(), spec_label)
        runs, matched = self._run_first_stages(q, res)
        candidates = self._fuse(q, runs)
        candidates = self._rescore_all(q, candidates)
        matched_resp = self._matched_answer(q, matched)
        ranked, shown = self._page(q, candidates)
        return self._answer(q, ranked, shown, matched_resp, res)

    def _begin(
        self, text: str, spec: PipelineSpec, res: IndexResources, t_start: float,
        opts: SearchOptions, spec_label: str | None,
    ) -> _Query:
        """Check the spec and body against the index and load what they need (outside the
        deadline). A stage the index cannot serve is re-checked against the index as it is now:
        a rebuild may have added the field."""
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
        q = _Query(text=text, spec=spec, opts=opts, enc=QueryEncodings(text, res, self.cache),
                   label=spec_label, t_start=t_start, depth=depth,
                   names=_stage_names([s.type for s in spec.first_stages]))
        q.timings["load"] = (time.perf_counter() - t_load) * 1e3
        return q

    def _run_first_stages(
        self, q: _Query, res: IndexResources
    ) -> tuple[dict[int, list[tuple[str, float]]], cf.Future | None]:
        """Every first stage's candidates by position, within the deadline, with the index
        check read beside them; and the matched-set request, still running, when the body
        needs one. `_IndexChanged` when the check shows another build of the index."""
        # before any stage is sent: only reads sent after this may verify the answer
        ticket = None if res.fingerprint.generation is None else self._check.begin()
        t0 = time.perf_counter()
        q.deadline = t0 + q.budget
        outcomes: dict[int, _Outcome] = {}
        pending: set[cf.Future] = set()
        try:
            # The first stage runs in this thread and the others on the pool: a hand-off per
            # stage costs GIL switches that, on a saturated query node, are a fifth of the
            # Python time of a one-stage query. The check read this query leads goes to the
            # pool, so it still overlaps the stages.
            futures = {
                self._pool.submit(self._timed, self._first_stage, s, n, q.enc, q.spec, q.budget): i
                for i, (s, n) in enumerate(zip(q.spec.first_stages, q.names, strict=True)) if i > 0
            }
            self._prepare_rescoring(q)
            matched: cf.Future | None = None
            if q.opts.needs_matched_set:
                matched = self._pool.submit(self._timed, self._matched_set, q.enc, q.spec, q.names,
                                            q.opts, q.budget)
            seen_future: cf.Future | None = None
            if ticket is None:  # an older build's own read (it depends on the cached codec version)
                seen_future = self._pool.submit(self._fingerprint, res)
            elif ticket.lead:
                self._pool.submit(self._check.lead, ticket)
            outcomes[0] = self._inline_stage(q.spec.first_stages[0], q.names[0], q.enc, q.spec,
                                             q.deadline)
            done, pending = cf.wait(futures, timeout=max(0.0, q.deadline - time.perf_counter()))
            t_check = time.perf_counter()
            seen = seen_future.result() if seen_future is not None else self._check.settle(ticket)
            q.timings["check"] = (time.perf_counter() - t_check) * 1e3
        finally:
            if ticket is not None:
                self._check.release(ticket)
        seen = self._verified(res, seen)
        for fut in pending:
            fut.cancel()
        if seen != res.fingerprint:
            raise _IndexChanged(seen)
        for fut, i in futures.items():
            if fut in pending:
                outcomes[i] = None
            else:
                exc = fut.exception()
                outcomes[i] = exc if exc is not None else fut.result()
        runs = self._answered(q, outcomes)
        q.timings["first_stages"] = (time.perf_counter() - t0) * 1e3
        return runs, matched

    def _prepare_rescoring(self, q: _Query) -> None:
        """Start the windowed rescoring stages' query encodings on the pool now: the token pass
        of a MaxSim stage then runs while the first stages wait on OpenSearch, not after them."""
        for j, stage in enumerate(q.spec.rescore):
            kind = RESCORERS.of(stage)
            if not kind.reranks and type(kind).prepare is not RescoreType.prepare:
                ctx = self.stage_context(q.enc, f"rescore[{j}] ({stage.type})")
                self._pool.submit(_quietly, kind.prepare, stage, ctx)

    def _answered(self, q: _Query, outcomes: dict[int, _Outcome]) -> dict[int, list[tuple[str, float]]]:
        """The runs of the first stages that answered; the others become warnings. A spec or
        stage error fails the query; so does every stage failing (the first error, or a 504
        when some timed out)."""
        runs: dict[int, list[tuple[str, float]]] = {}
        errors: list[BaseException] = []
        for i in sorted(outcomes):
            n, out = q.names[i], outcomes[i]
            if out is None:
                q.skip(f"first_stages[{i}] ({n})")
            elif isinstance(out, BaseException):
                if isinstance(out, (SpecError, StageError)):
                    raise out
                errors.append(out)
                q.warnings.append(f"first_stages[{i}] ({n}) failed: {type(out).__name__}: {out}; skipped")
            else:
                runs[i] = out[0]
                q.timings[f"first_stage.{n}"] = out[1]
        if not runs:
            if errors and not q.timed_out:
                raise errors[0]
            raise SearchError("every first stage failed or timed out: " + "; ".join(q.warnings), 504)
        return runs

    def _fuse(self, q: _Query, runs: dict[int, list[tuple[str, float]]]) -> list[tuple[str, float]]:
        """One ranking from the stages that answered, with their weights."""
        t0 = time.perf_counter()
        order = sorted(runs)
        weights = q.spec.fusion.weights
        fused = fusion_mod.fuse(
            [runs[i] for i in order],
            q.spec.fusion.type,
            weights=None if weights is None else [weights[i] for i in order],
            rank_constant=getattr(q.spec.fusion, "rank_constant", 60),
            normalization=getattr(q.spec.fusion, "normalization", "minmax"),
        )
        q.timings["fusion"] = (time.perf_counter() - t0) * 1e3
        if q.spec.explain:
            for i in order:
                for rank, (doc_id, score) in enumerate(runs[i], start=1):
                    q.explain_step(doc_id, "first_stages", q.names[i], rank, score)
            for rank, (doc_id, score) in enumerate(fused, start=1):
                q.explain.setdefault(doc_id, {})["fusion"] = {
                    "type": q.spec.fusion.type, "rank": rank, "score": score}
        return fused

    def _rescore_all(self, q: _Query, candidates: list[tuple[str, float]]) -> list[tuple[str, float]]:
        """The rescoring stages in order, each over the current top window (or, for a stage
        type that `reranks`, over the whole ranking)."""
        rnames = _stage_names([r.type for r in q.spec.rescore])
        for j, (stage, n) in enumerate(zip(q.spec.rescore, rnames, strict=True)):
            kind = RESCORERS.of(stage)
            if kind.reranks:  # feedback may add documents: see osneural.plugin.prf
                candidates = kind.rerank(self, stage, f"rescore[{j}] ({n})", q.enc, candidates,
                                         q.spec, q.budget, q.warnings, q.timings)
            else:
                candidates = self._rescore_window(q, j, stage, n, candidates)
        return candidates

    def _rescore_window(
        self, q: _Query, j: int, stage: Any, n: str, candidates: list[tuple[str, float]]
    ) -> list[tuple[str, float]]:
        """One windowed rescoring stage under the deadline; a stage that times out or fails is
        skipped with a warning (the ranking so far stands)."""
        window = candidates[: stage.window]
        ids = [doc_id for doc_id, _ in window]
        fut = self._pool.submit(self._timed, self._rescore, stage, n, q.enc, ids, q.budget)
        try:
            scores, ms = fut.result(timeout=q.budget)
        except cf.TimeoutError:
            fut.cancel()
            q.skip(f"rescore[{j}] ({n})")
            return candidates
        except (SpecError, StageError):
            raise
        except Exception as exc:  # noqa: BLE001 - a failing rescorer degrades, never fails
            q.warnings.append(f"rescore[{j}] ({n}) failed: {type(exc).__name__}: {exc}; skipped")
            return candidates
        scores = rescoring.combine_scores(
            [s for _, s in window], scores, stage.combine, stage.weight, stage.rank_constant)
        candidates = rescoring.reorder(candidates, stage.window, scores)
        q.timings[f"rescore.{n}"] = ms
        if q.spec.explain:
            for rank, (doc_id, score) in enumerate(candidates[: stage.window], start=1):
                q.explain_step(doc_id, "rescore", n, rank, score)
        return candidates

    def _matched_answer(self, q: _Query, matched: cf.Future | None) -> dict[str, Any] | None:
        """The matched-set response (aggregations, exact total): it ran beside the stages and
        by now is usually back; one past the deadline is left out with a warning."""
        if matched is None:
            return None
        try:
            resp, ms = matched.result(timeout=max(0.0, q.deadline - time.perf_counter()))
        except cf.TimeoutError:
            matched.cancel()
            q.timed_out = True
            q.warnings.append(f"aggregations / total hits timed out after {q.spec.timeout_ms} ms; "
                              "left out of the answer")
            return None
        q.timings["aggregations"] = ms
        return resp

    def _page(
        self, q: _Query, candidates: list[tuple[str, float]]
    ) -> tuple[list[Ranked], list[Ranked]]:
        """Every candidate as the answer orders them, and the page asked for (`from` / `size`,
        or the hits after `search_after`)."""
        t0 = time.perf_counter()
        ranked = page.arrange(self.client, self.index, candidates, q.opts, q.budget)
        q.timings["arrange"] = (time.perf_counter() - t0) * 1e3
        return ranked, page.page_of(ranked, q.spec, q.opts)

    def _answer(
        self, q: _Query, ranked: list[Ranked], shown: list[Ranked],
        matched_resp: dict[str, Any] | None, res: IndexResources,
    ) -> dict[str, Any]:
        """The OpenSearch-shaped response: the page's hits with what the body asked to fetch,
        totals, aggregations and `ext.osneural` (spec, warnings, timings)."""
        t0 = time.perf_counter()
        fetched = page.fetch(self.client, self.index, q.text, [c.doc_id for c in shown],
                             q.spec, q.opts, q.budget, hidden=res.representation_fields)
        q.timings["fetch"] = (time.perf_counter() - t0) * 1e3
        q.timings.update(q.enc.timings_ms)
        hits = [self._hit(q, c, fetched.get(c.doc_id, {})) for c in shown]
        took = (time.perf_counter() - q.t_start) * 1e3
        q.timings["total"] = took
        out_hits: dict[str, Any] = {}
        total = _total(q.opts, ranked, matched_resp)
        if total is not _NO_TOTAL:
            out_hits["total"] = total
        out_hits["max_score"] = max((h["_score"] for h in hits), default=None)
        out_hits["hits"] = hits
        result: dict[str, Any] = {"took": int(round(took)), "timed_out": q.timed_out,
                                  "hits": out_hits}
        if q.opts.aggs is not None and matched_resp is not None:
            result["aggregations"] = matched_resp.get("aggregations", {})
        result["ext"] = {"osneural": {"spec": q.label or "inline", "paging_depth": q.depth,
                                      "warnings": q.warnings, "timings_ms": q.timings}}
        return result

    def _hit(self, q: _Query, c: Ranked, got: dict[str, Any]) -> dict[str, Any]:
        """One hit of the page, shaped like OpenSearch's, from what the fetch returned."""
        source = q.spec.source if q.opts.source is None else q.opts.source
        hit: dict[str, Any] = {"_index": self.index, "_id": c.doc_id, "_score": c.score}
        for key in ("_version", "_seq_no", "_primary_term"):
            if key in got:
                hit[key] = got[key]
        if "_source" in got:
            hit["_source"] = got["_source"]
        elif source is not False and q.opts.stored_fields is None:
            hit["_source"] = {}
        fields = dict(got.get("fields") or {})
        if q.opts.collapse is not None:
            fields[q.opts.collapse] = c.collapse_values
        if fields:
            hit["fields"] = fields
        if "highlight" in got:
            hit["highlight"] = got["highlight"]
        if q.spec.explain:
            hit["_explanation"] = q.explain.get(c.doc_id, {})
        hit["sort"] = c.sort_values
        return hit

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
