"""`osneural tune`'s fitting and cross-validation on synthetic cached runs (no node needed: the
cache is plain data, exactly what `build_cache` fills from a real Searcher)."""

from __future__ import annotations

import numpy as np
import pytest
from osneural.eval.metrics import compute_metrics, ndcg_at_k, ranked_run
from osneural.eval.tune import (
    Config,
    HeldOutLeakError,
    RunCache,
    Scorer,
    SearchSpace,
    TuneError,
    base_config,
    config_spec,
    cross_validate,
    fit,
    held_out_scores,
    make_folds,
    simulate,
    tune,
)
from osneural.plugin import fusion
from osneural.plugin.spec import load_spec, parse_spec

N_QUERIES = 30
DOCS = [f"d{i}" for i in range(60)]


def _synthetic(seed: int = 0) -> tuple[RunCache, dict[str, dict[str, int]]]:
    """Stage 0 ranks the relevant document high, stage 1 is noise, stage 2 is weakly useful;
    MaxSim scores know the relevant document a little."""
    rng = np.random.default_rng(seed)
    qrels, runs, queries = {}, {}, {}
    for q in range(N_QUERIES):
        qid = f"q{q}"
        rel = str(rng.choice(DOCS))
        qrels[qid] = {rel: 1 + q % 2}
        queries[qid] = f"text {q}"

        def run(quality: float, rel: str = rel) -> list[tuple[str, float]]:
            scores = rng.standard_normal(len(DOCS))
            scores[DOCS.index(rel)] += quality
            order = np.argsort(-scores)[:40]
            return [(DOCS[i], float(scores[i]) * 3 + 10) for i in order]

        runs[qid] = [run(2.5), run(0.0), run(0.8)]
    maxsim_truth = {qid: next(iter(qrels[qid])) for qid in qrels}
    calls: list[tuple[str, int]] = []

    def score_ids(text: str, stage, ids: list[str]) -> np.ndarray:
        qid = f"q{text.split()[1]}"
        calls.append((qid, len(ids)))
        g = np.random.default_rng(abs(hash((qid, tuple(ids)))) % 2**32)
        return np.array([1.5 if d == maxsim_truth[qid] else 0.0 for d in ids]) + g.random(len(ids))

    cache = RunCache(queries=queries, stage_runs=runs, maxsim_stage=object(), score_ids=score_ids)
    cache.calls = calls  # type: ignore[attr-defined]
    return cache, qrels


SPACE = SearchSpace(depths=(20, 40), rounds=2)
START = Config("rrf", "minmax", 60, (1.0, 1.0, 1.0), (40, 40, 40), 0.0)


def test_ndcg_at_k_matches_ranx_with_beir_conventions() -> None:
    rng = np.random.default_rng(3)
    qrels, runs, mine = {}, {}, {}
    for q in range(25):
        qid = f"q{q}"
        judged = {str(d): int(rng.integers(0, 3)) for d in rng.choice(50, size=6, replace=False)}
        judged[str(rng.integers(50))] = 2
        ranked = [str(d) for d in rng.permutation(50)[:30]]
        qrels[qid] = judged
        runs[qid], _ = ranked_run(ranked)
        mine[qid] = ndcg_at_k(ranked, judged, 10)
    _, per_query = compute_metrics(qrels, runs, ["ndcg@10"])
    for qid in qrels:
        assert mine[qid] == pytest.approx(per_query[qid]["ndcg@10"], abs=1e-9)


def test_simulate_is_the_fusion_module_over_truncated_runs() -> None:
    cache, _ = _synthetic()
    config = Config("linear", "zscore", 60, (1.0, 0.0, 0.5), (20, 40, 30), 0.0)
    runs = cache.stage_runs["q3"]
    expected = fusion.linear([runs[0][:20], runs[2][:30]], "zscore", [1.0, 0.5])
    assert simulate(cache, "q3", config) == [d for d, _ in expected][:100]


def test_maxsim_scores_are_fetched_once_per_query_and_document() -> None:
    cache, qrels = _synthetic()
    scorer = Scorer(cache, qrels, window=10)
    config = Config("rrf", "minmax", 60, (1.0, 1.0, 1.0), (40, 40, 40), 0.3)
    scorer.mean(config, ["q1", "q2"])
    first = cache.fetched
    assert first == 20  # a window of 10 per query
    scorer.mean(Config("rrf", "minmax", 10, (1.0, 1.0, 1.0), (40, 40, 40), 0.3), ["q1", "q2"])
    assert cache.fetched - first < 20  # overlapping windows reuse what was fetched


def test_fit_improves_on_the_base_and_finds_the_useful_stage() -> None:
    cache, qrels = _synthetic()
    scorer = Scorer(cache, qrels)
    qids = sorted(qrels)
    fitted = fit(scorer, qids, START, SPACE)
    assert fitted.train_ndcg > scorer.mean(START, qids)
    w = fitted.config.weights
    assert w[0] > 0 and w[0] >= w[1]  # the informative stage is never weighed below noise
    assert fitted.trained_on == frozenset(qids)


def test_held_out_score_refuses_fitted_queries() -> None:
    cache, qrels = _synthetic()
    scorer = Scorer(cache, qrels)
    train, test = sorted(qrels)[:20], sorted(qrels)[20:]
    fitted = fit(scorer, train, START, SPACE)
    assert set(held_out_scores(scorer, fitted, test)) == set(test)
    with pytest.raises(HeldOutLeakError, match="used to fit"):
        held_out_scores(scorer, fitted, [*test, train[0]])


def test_cross_validation_scores_each_query_once_with_a_fit_that_never_saw_it() -> None:
    cache, qrels = _synthetic()
    scorer = Scorer(cache, qrels)
    qids = sorted(qrels)
    cv = cross_validate(scorer, qids, START, SPACE, folds=5, seed=1)
    assert sorted(cv.held_out) == qids and sorted(cv.base) == qids
    folds = make_folds(qids, 5, seed=1)
    assert sorted(q for f in folds for q in f) == qids
    for part, result in zip(folds, cv.folds, strict=True):
        train = [q for q in qids if q not in part]
        refit = fit(scorer, train, START, SPACE)
        assert refit.config == result.config and not refit.trained_on & set(part)
        for q in part:
            assert cv.held_out[q] == scorer.per_query(refit.config, [q])[q]
    # the in-sample fit on every query scores at least its own held-out mean (it saw them)
    assert fit(scorer, qids, START, SPACE).train_ndcg >= cv.held_out_mean - 1e-12


def test_folds_need_enough_queries() -> None:
    with pytest.raises(TuneError, match="cannot make 5 folds"):
        make_folds(["a", "b", "c"], 5)
    with pytest.raises(TuneError, match="at least 2"):
        make_folds(["a", "b"], 1)


def test_tune_report_and_spec_round_trip() -> None:
    cache, qrels = _synthetic()
    base = load_spec("hybrid")
    report = tune(Scorer(cache, qrels, window=20), base, SearchSpace(depths=(20, 40), rounds=1),
                  folds=3)
    spec = parse_spec(report.spec)  # what --spec accepts
    assert spec.to_dict() == report.spec
    data = report.to_dict()
    assert data["held_out_ndcg@10"] == pytest.approx(report.cv.held_out_mean)
    assert "not a held-out" in data["final"]["note"]


def test_base_config_round_trips_through_config_spec() -> None:
    base = load_spec("hybrid")
    space = SearchSpace()
    config = base_config(base, space)
    again = config_spec(base, config, space.maxsim_window)
    assert base_config(again, space) == config
    assert [s.type for s in again.first_stages] == [s.type for s in base.first_stages]
    dropped = config_spec(base, Config("linear", "zscore", 60, (0.0, 2.0, 1.0), (50, 200, 100), 0.0))
    assert [s.type for s in dropped.first_stages] == ["dense", "sparse"]
    assert dropped.first_stages[0].k == 200 and dropped.first_stages[0].num_candidates >= 200
    assert dropped.fusion.weights == [2.0, 1.0] and dropped.rescore == []
    with pytest.raises(TuneError):
        config_spec(base, Config("rrf", "minmax", 60, (0.0, 0.0, 0.0), (50, 50, 50), 0.0))
