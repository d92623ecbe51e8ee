"""`osneural tune`: fit a hybrid spec's fusion to a user's own judged queries, cross-validated.

What is fitted: the fusion (RRF or linear), its normalization (min-max / z-score) or RRF rank
constant, one weight per first stage (0 drops the stage), each first stage's depth `k`, and the
share of a MaxSim rescoring blended into the fused ranking (0 drops MaxSim). The search is
coordinate ascent over small grids, started from the base spec, so every step is a real spec.

Why it is cheap enough: every first stage is run once per query, through the same `Searcher` a
user's query takes, at the deepest depth on the grid, and MaxSim scores are fetched once per
(query, document) as the fused windows ask for them. A candidate spec is then scored by re-fusing
the cached runs in Python with `osneural.plugin.fusion` and `osneural.plugin.rescoring` (the code
the Searcher runs), never by a re-implementation. One approximation: a shallower `k` is scored as
the top-k of the deeper run, which is exact for BM25 and sparse and, for HNSW, the top of a wider
beam (at least as good as the narrower one's).

Why it cannot overstate itself: the held-out figure comes from `cross_validate` only, which fits on
k-1 folds and scores the remaining one; a `Fitted` result carries the query ids it was fitted on,
and `held_out_scores` refuses any of them (`HeldOutLeakError`). The spec written at the end is
fitted on every query, and its score on them is printed as in-sample, never as held-out.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from osneural.eval.beir import EvalCollection, EvalDataError
from osneural.eval.metrics import ndcg_at_k
from osneural.eval.runner import Progress, RetryPolicy, search_with_retries
from osneural.plugin import fusion as fusion_mod
from osneural.plugin import rescoring
from osneural.plugin.spec import PipelineSpec, SpecError, load_spec, parse_spec

from osneural.connection import ClusterConfig, ClusterConfigError, add_cluster_arguments
from osneural.errors import EvalError, OsneuralError

Run = list[tuple[str, float]]
RUN_DEPTH = 100  # ranked ids kept per query: what `osneural eval` scores


class TuneError(EvalError):
    """Bad tuning input (too few queries for the folds, a base spec with nothing to tune)."""


class HeldOutLeakError(OsneuralError, RuntimeError):
    """A held-out score was asked for queries the configuration was fitted on."""


# ---------------------------------------------------------------- the searched space


@dataclass(frozen=True)
class Config:
    """One point of the search: everything that varies between candidate specs."""

    fusion: str  # "rrf" | "linear"
    normalization: str  # linear only
    rank_constant: int  # rrf only
    weights: tuple[float, ...]  # one per base first stage; 0 = stage dropped
    depths: tuple[int, ...]  # k per base first stage
    maxsim_weight: float  # share of MaxSim in the blend; 0 = no MaxSim


@dataclass(frozen=True)
class SearchSpace:
    """The grids coordinate ascent walks; a single-value grid pins that coordinate."""

    fusions: tuple[str, ...] = ("rrf", "linear")
    normalizations: tuple[str, ...] = ("minmax", "zscore")
    rank_constants: tuple[int, ...] = (10, 20, 40, 60, 100)
    weights: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0)
    depths: tuple[int, ...] = (50, 100, 200)
    maxsim_weights: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)
    maxsim_window: int = 100
    rounds: int = 3

    @property
    def max_depth(self) -> int:
        return max(self.depths)


def base_config(spec: PipelineSpec, space: SearchSpace) -> Config:
    """The base spec as a point of the space (weights and depths as the spec has them)."""
    fus = spec.fusion
    weights = tuple(float(w) for w in (fus.weights or [1.0] * len(spec.first_stages)))
    maxsim = [r for r in spec.rescore if r.type == "maxsim"]
    blend = 0.0
    if maxsim:
        r = maxsim[0]
        blend = 1.0 if r.combine == "replace" else float(r.weight)
    return Config(
        fusion=fus.type,
        normalization=getattr(fus, "normalization", space.normalizations[0]),
        rank_constant=int(getattr(fus, "rank_constant", 60)),
        weights=weights,
        depths=tuple(min(int(s.k), space.max_depth) for s in spec.first_stages),
        maxsim_weight=blend,
    )


def config_spec(base: PipelineSpec, config: Config, window: int = 100) -> PipelineSpec:
    """The spec `config` stands for: the base's stages (minus weight-0 ones) with the fitted
    depths and fusion, and MaxSim blended at the fitted share (or no rescoring)."""
    stages, weights = [], []
    for stage, w, k in zip(base.first_stages, config.weights, config.depths, strict=True):
        if w <= 0:
            continue
        data = stage.model_dump(exclude_none=True)
        data["k"] = int(k)
        if data.get("num_candidates") is not None:
            data["num_candidates"] = max(int(data["num_candidates"]), int(k))
        stages.append(data)
        weights.append(float(w))
    if not stages:
        raise TuneError("a configuration with every first-stage weight at 0 has no first stage")
    if config.fusion == "rrf":
        fus: dict[str, Any] = {"type": "rrf", "rank_constant": config.rank_constant}
    else:
        fus = {"type": "linear", "normalization": config.normalization}
    if len(set(weights)) > 1:
        fus["weights"] = weights
    data = {"first_stages": stages, "fusion": fus, "size": base.size,
            "timeout_ms": base.timeout_ms}
    if base.filter is not None:
        data["filter"] = base.filter
    tokens = next((r.tokens for r in base.rescore if r.type == "maxsim"), "pq")
    if config.maxsim_weight > 0:
        data["rescore"] = [{"type": "maxsim", "window": window, "combine": "linear",
                            "weight": config.maxsim_weight, "tokens": tokens}]
    return parse_spec(data)


# ---------------------------------------------------------------- cached runs


@dataclass
class RunCache:
    """Per query: each base first stage's run at the deepest grid depth, and MaxSim scores by id.

    `maxsim_scores(qid, ids)` fetches only the ids not seen before for that query, through
    `Searcher.rescore_ids`, so each (query, document) pair is scored once however many candidate
    specs put it in their window.
    """

    queries: dict[str, str]
    stage_runs: dict[str, list[Run]]
    maxsim_stage: Any = None
    score_ids: Callable[[str, Any, list[str]], np.ndarray] | None = None
    maxsim: dict[str, dict[str, float]] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    fetched: int = 0
    # the last fused list per query: a sweep over the MaxSim share re-fuses nothing
    last_fused: dict[str, tuple[Any, list[tuple[str, float]]]] = field(default_factory=dict)

    def maxsim_scores(self, qid: str, ids: Sequence[str]) -> np.ndarray:
        known = self.maxsim.setdefault(qid, {})
        missing = [d for d in ids if d not in known]
        if missing:
            if self.score_ids is None or self.maxsim_stage is None:
                raise TuneError("MaxSim scores were not cached and cannot be fetched")
            scores = np.asarray(self.score_ids(self.queries[qid], self.maxsim_stage, missing))
            known.update(zip(missing, (float(s) for s in scores), strict=True))
            self.fetched += len(missing)
        return np.array([known[d] for d in ids], dtype=np.float64)


def build_cache(
    searcher: Any,
    collection: EvalCollection,
    base: PipelineSpec,
    space: SearchSpace,
    *,
    maxsim: bool,
    retry: RetryPolicy | None = None,
    progress: bool = False,
    timeout_ms: int = 60_000,
) -> RunCache:
    """Run each base first stage once per query (at the deepest grid depth) with the Searcher.

    A query whose stage still fails after retries is left out of the tuning and named in
    `failed`, so the caller can report it (never a silent drop).
    """
    retry = retry or RetryPolicy()
    stage_specs = []
    for stage in base.first_stages:
        data = stage.model_dump(exclude_none=True)
        data["k"] = space.max_depth
        if data.get("num_candidates") is not None:
            data["num_candidates"] = max(int(data["num_candidates"]), space.max_depth)
        stage_specs.append(parse_spec({
            "first_stages": [data], "size": space.max_depth, "_source": False,
            "timeout_ms": timeout_ms, **({"filter": base.filter} if base.filter else {})}))
    maxsim_stage = None
    if maxsim:
        tokens = next((r.tokens for r in base.rescore if r.type == "maxsim"), "pq")
        maxsim_stage = parse_spec({"rescore": [{"type": "maxsim", "window": space.maxsim_window,
                                                "tokens": tokens}]}).rescore[0]
    cache = RunCache(queries=dict(collection.queries), stage_runs={}, maxsim_stage=maxsim_stage,
                     score_ids=getattr(searcher, "rescore_ids", None))
    bar = Progress(len(collection.queries), "tune: first stages", enabled=progress)
    try:
        for qid, text in collection.queries.items():
            runs: list[Run] = []
            try:
                for spec in stage_specs:
                    response, _ = search_with_retries(searcher.search, text, spec, retry)
                    runs.append([(h["_id"], float(h["_score"])) for h in response["hits"]["hits"]])
            except Exception as exc:  # noqa: BLE001 - reported by the caller, never scored
                cache.failed[qid] = f"{type(exc).__name__}: {exc}"
                bar.update(failed=True)
                continue
            cache.stage_runs[qid] = runs
            bar.update()
    finally:
        bar.close()
    return cache


# ---------------------------------------------------------------- scoring one configuration


def simulate(cache: RunCache, qid: str, config: Config, window: int = 100) -> list[str]:
    """The ranked ids (top RUN_DEPTH) the spec of `config` returns for `qid`, from the cache:
    the Searcher's own fusion and blend, over the cached runs truncated to each depth."""
    key = (config.fusion, config.rank_constant if config.fusion == "rrf" else config.normalization,
           config.weights, config.depths)
    last = cache.last_fused.get(qid)
    if last is not None and last[0] == key:
        fused = last[1]
    else:
        runs = cache.stage_runs[qid]
        chosen = [i for i, w in enumerate(config.weights) if w > 0]
        lists = [runs[i][: config.depths[i]] for i in chosen]
        weights = [config.weights[i] for i in chosen]
        fused = fusion_mod.fuse(
            lists, config.fusion, weights=None if len(set(weights)) <= 1 else weights,
            rank_constant=config.rank_constant, normalization=config.normalization)
        cache.last_fused[qid] = (key, fused)
    if config.maxsim_weight > 0 and fused:
        head = fused[:window]
        scores = cache.maxsim_scores(qid, [d for d, _ in head])
        combined = rescoring.combine_scores([s for _, s in head], scores, "linear",
                                            config.maxsim_weight)
        fused = rescoring.reorder(fused, window, combined)
    return [d for d, _ in fused[:RUN_DEPTH]]


def query_ndcg(ranked: Sequence[str], qid: str, judged: Mapping[str, int], drop_self: bool) -> float:
    """nDCG@10 as `osneural eval` scores it: the query's own id dropped (BEIR), repeats once."""
    seen: dict[str, None] = {}
    for d in ranked:
        if not (drop_self and d == qid):
            seen.setdefault(d, None)
    return ndcg_at_k(list(seen), judged, 10)


@dataclass
class Scorer:
    """Per-query nDCG@10 of a configuration on given queries, memoised per configuration."""

    cache: RunCache
    qrels: Mapping[str, Mapping[str, int]]
    window: int = 100
    drop_identical_ids: bool = True
    _memo: dict[tuple[Config, str], float] = field(default_factory=dict)

    def per_query(self, config: Config, qids: Iterable[str]) -> dict[str, float]:
        out = {}
        for qid in qids:
            key = (config, qid)
            if key not in self._memo:
                ranked = simulate(self.cache, qid, config, self.window)
                self._memo[key] = query_ndcg(ranked, qid, self.qrels[qid], self.drop_identical_ids)
            out[qid] = self._memo[key]
        return out

    def mean(self, config: Config, qids: Sequence[str]) -> float:
        scores = self.per_query(config, qids)
        return float(np.mean(list(scores.values()))) if scores else 0.0


# ---------------------------------------------------------------- fitting and cross-validation


@dataclass(frozen=True)
class Fitted:
    """A configuration and the queries it was fitted on (which can never be its held-out set)."""

    config: Config
    trained_on: frozenset[str]
    train_ndcg: float
    steps: int


def _coordinates(config: Config, space: SearchSpace) -> list[list[Config]]:
    """For each coordinate, the configurations that differ from `config` there only."""
    coords = [[replace(config, fusion=f) for f in space.fusions]]
    if config.fusion == "rrf":
        coords.append([replace(config, rank_constant=r) for r in space.rank_constants])
    else:
        coords.append([replace(config, normalization=n) for n in space.normalizations])
    for i in range(len(config.weights)):
        row = []
        for w in space.weights:
            weights = tuple(w if j == i else x for j, x in enumerate(config.weights))
            if any(x > 0 for x in weights):
                row.append(replace(config, weights=weights))
        coords.append(row)
    for i in range(len(config.depths)):
        coords.append([replace(config, depths=tuple(d if j == i else x
                                                    for j, x in enumerate(config.depths)))
                       for d in space.depths])
    coords.append([replace(config, maxsim_weight=m) for m in space.maxsim_weights])
    return coords


def fit(scorer: Scorer, qids: Sequence[str], start: Config, space: SearchSpace) -> Fitted:
    """Coordinate ascent on mean nDCG@10 over `qids`; a change must strictly improve the mean,
    so ties keep the earlier (base-like) value."""
    qids = sorted(qids)
    if not qids:
        raise TuneError("no queries to fit on")
    current, best, steps = start, scorer.mean(start, qids), 0
    n_coords = len(_coordinates(current, space))
    for _ in range(space.rounds):
        improved = False
        for i in range(n_coords):
            # regenerated from the current point: after a switch to linear fusion, the next
            # coordinate is its normalization, not the RRF constant it no longer has
            for cand in _coordinates(current, space)[i]:
                if cand == current:
                    continue
                score = scorer.mean(cand, qids)
                steps += 1
                if score > best + 1e-12:
                    current, best, improved = cand, score, True
        if not improved:
            break
    return Fitted(current, frozenset(qids), best, steps)


def held_out_scores(scorer: Scorer, fitted: Fitted, qids: Sequence[str]) -> dict[str, float]:
    """Per-query nDCG@10 of a fitted configuration on queries it was NOT fitted on."""
    leaked = fitted.trained_on.intersection(qids)
    if leaked:
        raise HeldOutLeakError(
            f"{len(leaked)} of the {len(qids)} queries were used to fit this configuration "
            f"(e.g. {sorted(leaked)[0]!r}); their score is not a held-out score")
    return scorer.per_query(fitted.config, qids)


def make_folds(qids: Sequence[str], k: int, seed: int = 0) -> list[list[str]]:
    """A seeded shuffle of the query ids cut into k folds of near-equal size."""
    if k < 2:
        raise TuneError(f"--folds must be at least 2, got {k}")
    order = sorted(qids)
    if len(order) < k:
        raise TuneError(f"{len(order)} queries cannot make {k} folds (need one query per fold)")
    random.Random(seed).shuffle(order)
    return [sorted(order[i::k]) for i in range(k)]


@dataclass
class FoldResult:
    fold: int
    train_queries: int
    test_queries: int
    config: Config
    train_ndcg: float
    held_out_ndcg: float
    base_ndcg: float


@dataclass
class CVResult:
    """Held-out nDCG@10 (each query scored by a configuration fitted without it) and the base's."""

    folds: list[FoldResult]
    held_out: dict[str, float]
    base: dict[str, float]

    @property
    def held_out_mean(self) -> float:
        return float(np.mean(list(self.held_out.values())))

    @property
    def base_mean(self) -> float:
        return float(np.mean(list(self.base.values())))


def cross_validate(
    scorer: Scorer, qids: Sequence[str], start: Config, space: SearchSpace, folds: int = 5,
    seed: int = 0, log: Callable[[str], None] | None = None,
) -> CVResult:
    """Fit on k-1 folds, score the held-out fold; every query is scored exactly once, by a
    configuration whose fit never saw it."""
    parts = make_folds(qids, folds, seed)
    held: dict[str, float] = {}
    base: dict[str, float] = {}
    results = []
    for i, test in enumerate(parts):
        train = [q for j, part in enumerate(parts) if j != i for q in part]
        fitted = fit(scorer, train, start, space)
        scores = held_out_scores(scorer, fitted, test)
        base_scores = scorer.per_query(start, test)
        held.update(scores)
        base.update(base_scores)
        results.append(FoldResult(
            i + 1, len(train), len(test), fitted.config, fitted.train_ndcg,
            float(np.mean(list(scores.values()))), float(np.mean(list(base_scores.values())))))
        if log:
            log(f"fold {i + 1}/{len(parts)}: fitted on {len(train)} queries "
                f"({fitted.steps} candidates), held-out nDCG@10 {results[-1].held_out_ndcg:.4f}, "
                f"base {results[-1].base_ndcg:.4f}")
    return CVResult(results, held, base)


class PooledScorer:
    """Several collections' scorers as one: ids are `collection/qid`, and the mean is the mean
    over collections of each one's mean nDCG@10, so a fit over several weighs each collection
    the same whatever its query count (a 300-query set would otherwise outvote a 30-query one)."""

    def __init__(self, scorers: Mapping[str, Scorer]) -> None:
        self.scorers = dict(scorers)

    def ids(self, collections: Iterable[str] | None = None) -> list[str]:
        names = self.scorers if collections is None else collections
        return [f"{c}/{q}" for c in names for q in sorted(self.scorers[c].cache.stage_runs)]

    @staticmethod
    def _groups(qids: Iterable[str]) -> dict[str, list[str]]:
        groups: dict[str, list[str]] = {}
        for item in qids:
            name, _, qid = item.partition("/")
            groups.setdefault(name, []).append(qid)
        return groups

    def per_query(self, config: Config, qids: Iterable[str]) -> dict[str, float]:
        out = {}
        for name, ids in self._groups(qids).items():
            out.update({f"{name}/{q}": v for q, v in self.scorers[name].per_query(config, ids).items()})
        return out

    def mean(self, config: Config, qids: Sequence[str]) -> float:
        groups = self._groups(qids)
        if not groups:
            return 0.0
        return sum(self.scorers[n].mean(config, ids) for n, ids in groups.items()) / len(groups)


@dataclass
class CollectionSplit:
    """One leave-one-collection-out split: fitted on the other collections, scored on this one."""

    held_out: str
    train_collections: list[str]
    config: Config
    train_ndcg: float
    held_out_ndcg: float
    base_ndcg: float


def leave_one_collection_out(
    pooled: PooledScorer, start: Config, space: SearchSpace,
    log: Callable[[str], None] | None = None,
) -> list[CollectionSplit]:
    """For each collection: fit on all the others together, score the fit on it. Across
    collections this is the question a default answers (will it hold on a collection it was
    not chosen on?), which query folds within one collection cannot answer."""
    names = list(pooled.scorers)
    if len(names) < 2:
        raise TuneError("leave-one-collection-out needs at least two collections")
    out = []
    for held in names:
        train = [n for n in names if n != held]
        fitted = fit(pooled, pooled.ids(train), start, space)
        test = pooled.ids([held])
        scores = held_out_scores(pooled, fitted, test)  # refuses any id the fit saw
        base = pooled.per_query(start, test)
        split = CollectionSplit(held, train, fitted.config, fitted.train_ndcg,
                                float(np.mean(list(scores.values()))),
                                float(np.mean(list(base.values()))))
        out.append(split)
        if log:
            log(f"held out {held}: fitted on {', '.join(train)} ({fitted.steps} candidates), "
                f"nDCG@10 there {split.held_out_ndcg:.4f}, base {split.base_ndcg:.4f}")
    return out


@dataclass
class CollectionsReport:
    """`osneural tune` over several collections: leave-one-collection-out, then the fit on all."""

    splits: list[CollectionSplit]
    final: Fitted
    final_per_collection: dict[str, float]
    base_per_collection: dict[str, float]
    spec: dict[str, Any]
    base_spec: dict[str, Any]
    queries: dict[str, int]
    failed: dict[str, str]
    maxsim_scored: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": "osneural-tune-collections/1",
            "queries": self.queries,
            "failed_queries": len(self.failed),
            "failed_examples": dict(list(self.failed.items())[:5]),
            "splits": [asdict(s) for s in self.splits],
            "held_out_mean_ndcg@10": float(np.mean([s.held_out_ndcg for s in self.splits])),
            "base_mean_ndcg@10": float(np.mean([s.base_ndcg for s in self.splits])),
            "final": {"config": asdict(self.final.config),
                      "in_sample_ndcg@10": self.final.train_ndcg,
                      "in_sample_per_collection": self.final_per_collection,
                      "note": "fitted on every collection: in-sample, not a held-out figure"},
            "base_per_collection": self.base_per_collection,
            "spec": self.spec,
            "base_spec": self.base_spec,
            "maxsim_documents_scored": self.maxsim_scored,
        }


def tune_collections(
    scorers: Mapping[str, Scorer], base: PipelineSpec, space: SearchSpace,
    log: Callable[[str], None] | None = None,
) -> CollectionsReport:
    """Leave-one-collection-out, then one fit on every collection for the spec to write."""
    if not all(s.cache.maxsim_stage for s in scorers.values()):
        space = replace(space, maxsim_weights=(0.0,))
    pooled = PooledScorer(scorers)
    start = pin_start(base_config(base, space), space)
    splits = leave_one_collection_out(pooled, start, space, log)
    final = fit(pooled, pooled.ids(), start, space)
    spec = config_spec(base, final.config, space.maxsim_window).to_dict()
    return CollectionsReport(
        splits, final,
        {n: s.mean(final.config, sorted(s.cache.stage_runs)) for n, s in scorers.items()},
        {n: s.mean(start, sorted(s.cache.stage_runs)) for n, s in scorers.items()},
        spec, base.to_dict(), {n: len(s.cache.stage_runs) for n, s in scorers.items()},
        {f"{n}/{q}": e for n, s in scorers.items() for q, e in s.cache.failed.items()},
        sum(s.cache.fetched for s in scorers.values()))


def format_collections_report(report: CollectionsReport) -> str:
    lines = ["held out      base nDCG@10  tuned nDCG@10 (held-out)   delta  fitted on the others"]
    for s in report.splits:
        c = s.config
        what = (f"{c.fusion}" + (f" k={c.rank_constant}" if c.fusion == "rrf" else
                                 f" {c.normalization}")
                + f" w={list(c.weights)} depth={list(c.depths)} maxsim={c.maxsim_weight}")
        lines.append(f"{s.held_out:<12}  {s.base_ndcg:>12.4f}  {s.held_out_ndcg:>24.4f}  "
                     f"{s.held_out_ndcg - s.base_ndcg:>+6.4f}  {what}")
    held = float(np.mean([s.held_out_ndcg for s in report.splits]))
    base = float(np.mean([s.base_ndcg for s in report.splits]))
    lines.append(f"{'mean':<12}  {base:>12.4f}  {held:>24.4f}  {held - base:>+6.4f}  "
                 "(each collection weighing the same)")
    lines.append(f"final spec fitted on all {len(report.queries)} collections: in-sample nDCG@10 "
                 + ", ".join(f"{n} {v:.4f}" for n, v in report.final_per_collection.items())
                 + " (not held-out figures)")
    if report.failed:
        qid, err = next(iter(report.failed.items()))
        lines.append(f"{len(report.failed)} queries failed after retries and were left out; "
                     f"first: {qid}: {err}")
    return "\n".join(lines)


@dataclass
class TuneReport:
    """Everything `osneural tune` prints and writes."""

    cv: CVResult
    final: Fitted
    spec: dict[str, Any]
    base_spec: dict[str, Any]
    queries: int
    failed: dict[str, str]
    maxsim_scored: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": "osneural-tune/1",
            "queries": self.queries,
            "failed_queries": len(self.failed),
            "failed_examples": dict(list(self.failed.items())[:5]),
            "folds": [asdict(f) for f in self.cv.folds],
            "held_out_ndcg@10": self.cv.held_out_mean,
            "base_ndcg@10": self.cv.base_mean,
            "final": {"config": asdict(self.final.config),
                      "in_sample_ndcg@10": self.final.train_ndcg,
                      "note": "fitted on every query: in-sample, not a held-out figure"},
            "spec": self.spec,
            "base_spec": self.base_spec,
            "maxsim_documents_scored": self.maxsim_scored,
        }


def tune(
    scorer: Scorer, base: PipelineSpec, space: SearchSpace, folds: int = 5, seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> TuneReport:
    """Cross-validate, then fit on every query for the spec to write."""
    qids = sorted(scorer.cache.stage_runs)
    if not scorer.cache.maxsim_stage:
        space = replace(space, maxsim_weights=(0.0,))
    start = pin_start(base_config(base, space), space)
    cv = cross_validate(scorer, qids, start, space, folds, seed, log)
    final = fit(scorer, qids, start, space)
    spec = config_spec(base, final.config, space.maxsim_window).to_dict()
    return TuneReport(cv, final, spec, base.to_dict(), len(qids), dict(scorer.cache.failed),
                      scorer.cache.fetched)


def format_report(report: TuneReport) -> str:
    lines = ["fold  train  test  base nDCG@10  tuned nDCG@10 (held-out)   delta  fitted"]
    for f in report.cv.folds:
        c = f.config
        what = (f"{c.fusion}" + (f" k={c.rank_constant}" if c.fusion == "rrf" else
                                 f" {c.normalization}")
                + f" w={list(c.weights)} depth={list(c.depths)} maxsim={c.maxsim_weight}")
        lines.append(f"{f.fold:>4}  {f.train_queries:>5}  {f.test_queries:>4}  "
                     f"{f.base_ndcg:>12.4f}  {f.held_out_ndcg:>24.4f}  "
                     f"{f.held_out_ndcg - f.base_ndcg:>+6.4f}  {what}")
    cv = report.cv
    lines.append(f"all   {'':>5}  {len(cv.held_out):>4}  {cv.base_mean:>12.4f}  "
                 f"{cv.held_out_mean:>24.4f}  {cv.held_out_mean - cv.base_mean:>+6.4f}")
    lines.append(f"final spec fitted on all {report.queries} queries: in-sample nDCG@10 "
                 f"{report.final.train_ndcg:.4f} (not a held-out figure)")
    if report.failed:
        qid, err = next(iter(report.failed.items()))
        lines.append(f"{len(report.failed)} queries failed after retries and were left out; "
                     f"first: {qid}: {err}")
    return "\n".join(lines)


# ---------------------------------------------------------------- command line


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(x) for x in text.split(",") if x.strip())


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x.strip())


def configure_tune(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "beir_dir", metavar="COLLECTION", nargs="+",
        help="BEIR-layout folder (queries.jsonl, qrels/) or a collection name found under "
             "OSNEURAL_DATA_PATH (default: the shared data/beir and data/classic folders); "
             "several collections are fitted together, each weighing the same, and judged "
             "leave-one-collection-out")
    parser.add_argument(
        "--index", required=True, action="append",
        help="index holding the collection's corpus: one per collection, in order, or one "
             "name with {name} standing for each collection's folder name")
    parser.add_argument("--qrels", metavar="FILE", help="judgments (BEIR tsv or TREC) instead of qrels/SPLIT.tsv (one collection only)")
    parser.add_argument("--split", default="test", help="qrels split (default test)")
    parser.add_argument("--folds", type=int, default=5,
                        help="cross-validation folds for one collection (default 5); several "
                             "collections are judged leave-one-collection-out instead")
    parser.add_argument("--seed", type=int, default=0, help="fold shuffle seed (default 0)")
    parser.add_argument("--base", default="hybrid", metavar="SPEC",
                        help="spec whose first stages are tuned and which the result is compared with")
    parser.add_argument("--out", metavar="FILE", help="write the winning spec JSON here (for --spec)")
    parser.add_argument("--report", metavar="FILE", help="write the full tuning report JSON here")
    parser.add_argument("--max-queries", type=int, metavar="N", help="only the first N judged queries")
    parser.add_argument("--fusion", choices=["rrf", "linear", "any"], default="any")
    parser.add_argument("--normalization", choices=["minmax", "zscore", "any"], default="any")
    parser.add_argument("--maxsim", choices=["on", "off", "any"], default="any",
                        help="MaxSim blend: searched ('any'), forced on, or never (no token fetches)")
    parser.add_argument("--weights", type=_floats, metavar="W,W,...", help="weight grid per stage")
    parser.add_argument("--depths", type=_ints, metavar="K,K,...", help="depth grid per stage (default 50,100,200)")
    parser.add_argument("--rounds", type=int, default=3, help="coordinate-ascent rounds (default 3)")
    parser.add_argument("--keep-identical-ids", action="store_true",
                        help="keep hits whose id equals the query id (BEIR drops them)")
    parser.add_argument("--no-progress", action="store_true")
    add_cluster_arguments(parser)


def space_from_args(args: argparse.Namespace) -> SearchSpace:
    space = SearchSpace(rounds=args.rounds)
    if args.fusion != "any":
        space = replace(space, fusions=(args.fusion,))
    if args.normalization != "any":
        space = replace(space, normalizations=(args.normalization,))
    if args.maxsim == "off":
        space = replace(space, maxsim_weights=(0.0,))
    elif args.maxsim == "on":
        space = replace(space, maxsim_weights=tuple(w for w in space.maxsim_weights if w > 0))
    if args.weights:
        space = replace(space, weights=args.weights)
    if args.depths:
        space = replace(space, depths=args.depths)
    return space


def pin_start(start: Config, space: SearchSpace) -> Config:
    """Move the start onto the grid where a coordinate is pinned (e.g. --fusion linear)."""
    if start.fusion not in space.fusions:
        start = replace(start, fusion=space.fusions[0])
    if start.normalization not in space.normalizations:
        start = replace(start, normalization=space.normalizations[0])
    if start.maxsim_weight not in space.maxsim_weights:
        start = replace(start, maxsim_weight=min(space.maxsim_weights,
                                                 key=lambda w: abs(w - start.maxsim_weight)))
    return start


def collection_indexes(folders: Sequence[Path], indexes: Sequence[str]) -> list[str]:
    """The index of each collection: `--index` once per collection, or once with `{name}`
    (each folder's name, lower-cased as index names must be)."""
    if len(indexes) == 1 and "{name}" in indexes[0]:
        return [indexes[0].replace("{name}", f.name.lower()) for f in folders]
    if len(indexes) != len(folders):
        raise TuneError(f"{len(folders)} collections need {len(folders)} --index values (in "
                        f"order) or one with {{name}}; got {len(indexes)}")
    return list(indexes)


def run_tune(args: argparse.Namespace) -> int:
    """Exit 0 on success, 1 when some queries failed (left out, reported), 2 on bad input."""
    from osneural.eval.beir import load_beir, resolve_collection

    try:
        base = load_spec(args.base)
        space = space_from_args(args)
        if args.max_queries is not None and args.max_queries < 1:
            raise EvalDataError("--max-queries must be at least 1")
        cluster = ClusterConfig.from_args(args)
        folders = [resolve_collection(d) for d in args.beir_dir]
        if len({f.name for f in folders}) != len(folders):
            raise TuneError("two collections share a folder name: "
                            + ", ".join(str(f) for f in folders))
        indexes = collection_indexes(folders, args.index)
        if len(folders) > 1 and args.qrels:
            raise TuneError("--qrels names one judgments file: give one collection")
        collections = [load_beir(f, args.split, qrels_path=args.qrels, check_corpus=False,
                                 limit=args.max_queries) for f in folders]
        if len(collections) == 1:  # fail before any query is sent
            make_folds(list(collections[0].queries), args.folds)
    except (SpecError, EvalDataError, ClusterConfigError, TuneError, ValueError) as exc:
        print(f"osneural tune: {exc}", file=sys.stderr)
        return 2
    if len(collections) > 1:
        return _run_tune_collections(args, base, space, cluster, collections, indexes)
    collection, index = collections[0], indexes[0]

    from osneural.plugin.searcher import Searcher

    client = cluster.client()
    try:
        if not client.indices.exists(index=index):
            print(f"osneural tune: index {index!r} not found at {cluster.describe()}",
                  file=sys.stderr)
            return 2
        searcher = Searcher(client, index)
        try:
            has_tokens = any(r.type == "maxsim" for r in base.rescore) or args.maxsim == "on"
            use_maxsim = has_tokens and args.maxsim != "off"
            cache = build_cache(searcher, collection, base, space, maxsim=use_maxsim,
                                progress=not args.no_progress)
            if len(cache.stage_runs) < args.folds:
                print(f"osneural tune: only {len(cache.stage_runs)} queries answered; "
                      f"{len(cache.failed)} failed, first: {next(iter(cache.failed.values()), '')}",
                      file=sys.stderr)
                return 1
            scorer = Scorer(cache, collection.qrels, space.maxsim_window,
                            not args.keep_identical_ids)
            report = tune(scorer, base, space, args.folds, args.seed,
                          log=None if args.no_progress else
                          (lambda m: print(m, file=sys.stderr, flush=True)))
        finally:
            searcher.close()
    finally:
        client.close()
    print(format_report(report))
    if args.out:
        Path(args.out).write_text(json.dumps(report.spec, indent=2) + "\n", encoding="utf-8")
    if args.report:
        Path(args.report).write_text(json.dumps(report.to_dict(), indent=2) + "\n",
                                     encoding="utf-8")
    return 1 if report.failed else 0


def _run_tune_collections(args: argparse.Namespace, base: PipelineSpec, space: SearchSpace,
                          cluster: Any, collections: list[EvalCollection],
                          indexes: list[str]) -> int:
    """Several collections: one cache per collection (its own index), one fit over them all."""
    from osneural.plugin.searcher import Searcher

    client = cluster.client()
    searchers: list[Any] = []
    try:
        missing = [i for i in indexes if not client.indices.exists(index=i)]
        if missing:
            print(f"osneural tune: index {missing[0]!r} not found at {cluster.describe()}",
                  file=sys.stderr)
            return 2
        has_tokens = any(r.type == "maxsim" for r in base.rescore) or args.maxsim == "on"
        use_maxsim = has_tokens and args.maxsim != "off"
        scorers: dict[str, Scorer] = {}
        for collection, index in zip(collections, indexes, strict=True):
            searcher = Searcher(client, index)
            searchers.append(searcher)
            cache = build_cache(searcher, collection, base, space, maxsim=use_maxsim,
                                progress=not args.no_progress)
            if not cache.stage_runs:
                print(f"osneural tune: {collection.name}: no query answered; first failure: "
                      f"{next(iter(cache.failed.values()), '')}", file=sys.stderr)
                return 1
            scorers[collection.name] = Scorer(cache, collection.qrels, space.maxsim_window,
                                              not args.keep_identical_ids)
        report = tune_collections(scorers, base, space,
                                  log=None if args.no_progress else
                                  (lambda m: print(m, file=sys.stderr, flush=True)))
    finally:
        for s in searchers:
            s.close()
        client.close()
    print(format_collections_report(report))
    if args.out:
        Path(args.out).write_text(json.dumps(report.spec, indent=2) + "\n", encoding="utf-8")
    if args.report:
        Path(args.report).write_text(json.dumps(report.to_dict(), indent=2) + "\n",
                                     encoding="utf-8")
    return 1 if report.failed else 0
