"""Metric conventions: hand-computed cases, and agreement with pytrec_eval (what BEIR uses)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import pytrec_eval
from osneural.eval.metrics import compute_metrics, latency_stats, ranked_run


def _run(ids: list[str]) -> dict[str, float]:
    return ranked_run(ids)[0]


def test_hand_computed_graded_case() -> None:
    qrels = {"q": {"d1": 2, "d2": 1, "d3": 0}}
    means, per_query = compute_metrics(qrels, {"q": _run(["d3", "d1", "x", "d2"])})
    dcg = 2 / math.log2(3) + 1 / math.log2(5)  # gain = grade; d3 (grade 0) contributes nothing
    idcg = 2 / math.log2(2) + 1 / math.log2(3)
    assert means["ndcg@10"] == pytest.approx(dcg / idcg)
    assert means["mrr@10"] == pytest.approx(0.5)  # the grade-0 hit at rank 1 is not relevant
    assert means["recall@100"] == pytest.approx(1.0)  # 2 of the 2 grade>=1 documents
    assert per_query["q"] == means


def test_cutoffs() -> None:
    qrels = {"q": {"rel_a": 1, "rel_b": 1}}
    ranking = [f"n{i}" for i in range(10)] + ["rel_a"] + [f"m{i}" for i in range(89)] + ["rel_b"]
    means, _ = compute_metrics(qrels, {"q": _run(ranking)})
    assert len(ranking) == 101
    assert means["ndcg@10"] == 0.0
    assert means["mrr@10"] == 0.0  # first relevant at rank 11
    assert means["recall@100"] == pytest.approx(0.5)  # rel_b at rank 101 is past the cutoff


def test_means_over_queries_and_empty_ranking_is_zero() -> None:
    qrels = {"a": {"d": 1}, "b": {"d": 1}, "c": {"z": 0}}
    means, per_query = compute_metrics(qrels, {"a": _run(["d"]), "b": {}, "c": _run(["z"])})
    assert per_query["a"]["ndcg@10"] == 1.0
    assert per_query["b"] == {"ndcg@10": 0.0, "recall@100": 0.0, "mrr@10": 0.0}
    assert per_query["c"]["ndcg@10"] == 0.0  # judged, nothing relevant: counts as 0
    assert means["ndcg@10"] == pytest.approx(1 / 3)
    only_empty, _ = compute_metrics(qrels, {"b": {}})
    assert only_empty["recall@100"] == 0.0


def test_unjudged_or_empty_input_is_an_error() -> None:
    with pytest.raises(ValueError, match="no judgments"):
        compute_metrics({"a": {"d": 1}}, {"zzz": {"d": 1.0}})
    with pytest.raises(ValueError, match="nothing to evaluate"):
        compute_metrics({"a": {"d": 1}}, {})


def test_ranked_run_keeps_pipeline_order_drops_query_id_and_repeats() -> None:
    run, dropped = ranked_run(["d2", "q1", "d1", "d2", "d3"], query_id="q1")
    assert dropped == 1
    assert sorted(run, key=run.get, reverse=True) == ["d2", "d1", "d3"]
    run, dropped = ranked_run(["q1", "d1"])
    assert dropped == 0 and "q1" in run


def test_dropping_the_query_itself_changes_the_score() -> None:
    """ArguAna: the query is a corpus document; BEIR removes it from the ranking before scoring."""
    qrels = {"q1": {"d1": 1}}
    kept, _ = compute_metrics(qrels, {"q1": _run(["q1", "d1"])})
    dropped, _ = compute_metrics(qrels, {"q1": ranked_run(["q1", "d1"], "q1")[0]})
    assert kept["mrr@10"] == 0.5 and dropped["mrr@10"] == 1.0


def _pytrec(qrels: dict, runs: dict) -> dict[str, dict[str, float]]:
    ev = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.100"})
    full = ev.evaluate(runs)
    top10 = {q: dict(sorted(r.items(), key=lambda kv: -kv[1])[:10]) for q, r in runs.items()}
    rr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(top10)
    return {
        q: {"ndcg@10": v["ndcg_cut_10"], "recall@100": v["recall_100"], "mrr@10": rr[q]["recip_rank"]}
        for q, v in full.items()
    }


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agrees_with_pytrec_eval_on_random_graded_runs(seed: int) -> None:
    rng = np.random.default_rng(seed)
    docs = [f"d{i}" for i in range(300)]
    qrels: dict[str, dict[str, int]] = {}
    runs: dict[str, dict[str, float]] = {}
    for q in range(40):
        qid = f"q{q}"
        judged = rng.choice(len(docs), size=int(rng.integers(1, 30)), replace=False)
        qrels[qid] = {docs[j]: int(rng.integers(0, 3)) for j in judged}  # grades 0..2
        depth = int(rng.integers(1, 150))  # shorter and longer than 100
        ranking = [docs[j] for j in rng.choice(len(docs), size=depth, replace=False)]
        runs[qid] = _run(ranking)
    ours, per_query = compute_metrics(qrels, runs)
    ref = _pytrec(qrels, runs)
    for qid in runs:
        for metric in ("ndcg@10", "recall@100", "mrr@10"):
            assert per_query[qid][metric] == pytest.approx(ref[qid][metric], abs=1e-9), (qid, metric)
    assert ours["ndcg@10"] == pytest.approx(np.mean([r["ndcg@10"] for r in ref.values()]))


def test_latency_stats() -> None:
    stats = latency_stats([float(i) for i in range(1, 101)])
    assert stats["mean"] == pytest.approx(50.5)
    assert stats["p50"] == pytest.approx(50.5)
    assert stats["p95"] == pytest.approx(95.05)  # rank 0.95 * 99 = 94.05, between 95 and 96
    assert stats["max"] == 100.0
    assert latency_stats([]) == {"mean": None, "p50": None, "p95": None, "max": None}
    assert latency_stats([7.0])["p95"] == 7.0
