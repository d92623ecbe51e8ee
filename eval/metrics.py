"""Retrieval metrics with BEIR's conventions, computed by ranx, and latency statistics.

Conventions (the ones BEIR reports through pytrec_eval, cross-checked in the tests):
* nDCG@10 with the gain equal to the grade (Järvelin & Kekäläinen, trec_eval's `ndcg_cut`);
* grade 0 is non-relevant; Recall@100 and MRR@10 count grades >= 1;
* a hit whose id equals the query id is dropped (BEIR's `ignore_identical_ids`, needed for
  ArguAna where a query is itself a corpus document);
* the run handed to ranx scores documents by rank, not by the pipeline's scores: after a rescoring
  window the scores of a pipeline are not monotone in rank (rescored and fused scores live on
  different scales), and re-sorting by score would evaluate a ranking the pipeline never returned.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

METRICS: tuple[str, ...] = ("ndcg@10", "recall@100", "mrr@10")
# The depth every run must reach for the metrics above to be meaningful.
RUN_DEPTH = 100


def ranked_run(doc_ids: Sequence[str], query_id: str | None = None) -> tuple[dict[str, float], int]:
    """`{doc: score}` that orders documents exactly as given, and how many were dropped.

    Drops hits equal to `query_id` (BEIR convention) and repeated ids (a ranking lists a document
    once; a later repeat would otherwise overwrite the earlier, better rank).

    Args:
        doc_ids: the ranking as returned, best first.
        query_id: the query's own id, dropped from the ranking when given.

    Returns:
        `({doc id: score}, dropped)`: scores n, n-1, ... by rank (n = len(doc_ids)), and how many
        hits equalled `query_id`.

    Example:
        >>> ranked_run(["d1", "q7", "d2", "d1"], query_id="q7")
        ({'d1': 4.0, 'd2': 2.0}, 1)
    """
    run: dict[str, float] = {}
    dropped = 0
    n = len(doc_ids)
    for rank, doc_id in enumerate(doc_ids):
        if query_id is not None and doc_id == query_id:
            dropped += 1
            continue
        if doc_id in run:
            continue
        run[doc_id] = float(n - rank)
    return run, dropped


def compute_metrics(
    qrels: Mapping[str, Mapping[str, int]],
    runs: Mapping[str, Mapping[str, float]],
    metrics: Sequence[str] = METRICS,
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Mean and per-query metrics over the queries in `runs` (each must be judged in `qrels`).

    Only the queries that were run are evaluated: a query that failed is absent from `runs` and
    must not count as a zero. An empty ranking is a legitimate zero.

    Args:
        qrels: `{query id: {doc id: grade}}`, grade 0 non-relevant.
        runs: `{query id: {doc id: score}}`, e.g. built by `ranked_run`.
        metrics: ranx metric names.

    Returns:
        `(means, per_query)`: `{metric: mean over the run queries}` and
        `{query id: {metric: value}}`. A ValueError when no query was run or a run query has no
        judgments.

    Example:
        >>> qrels = {"q1": {"d1": 1}, "q2": {"d9": 2}}
        >>> runs = {"q1": ranked_run(["d1", "d2"])[0], "q2": {}}
        >>> means, per_query = compute_metrics(qrels, runs, ["ndcg@10"])
        >>> means, per_query["q2"]
        ({'ndcg@10': 0.5}, {'ndcg@10': 0.0})
    """
    if not runs:
        raise ValueError("no query was run; nothing to evaluate")
    unjudged = [qid for qid in runs if qid not in qrels]
    if unjudged:
        raise ValueError(f"{len(unjudged)} run queries have no judgments, e.g. {unjudged[0]!r}")
    from ranx import Qrels, Run, evaluate

    qids = sorted(runs)
    # An empty ranking scores 0 on every metric here; ranx cannot build a run where all are empty,
    # so those queries are filled in directly instead of being handed to it.
    per_query: dict[str, dict[str, float]] = {qid: dict.fromkeys(metrics, 0.0) for qid in qids}
    ranked = [qid for qid in qids if runs[qid]]
    if ranked:
        # Queries judged only with grade 0 stay in: pytrec_eval (hence BEIR) scores them 0.
        sub_qrels = {qid: {d: int(s) for d, s in qrels[qid].items()} for qid in ranked}
        run = Run({qid: dict(runs[qid]) for qid in ranked})
        # save_results_in_run keys every score by query id: no assumption about ranx's order.
        with warnings.catch_warnings():
            # numba's uint64->int64 cast notice on ranx's id hashes; harmless and noisy.
            warnings.simplefilter("ignore")
            evaluate(
                Qrels(sub_qrels), run, list(metrics), return_mean=False, save_results_in_run=True
            )
        for metric in metrics:
            for qid, value in run.scores[metric].items():
                per_query[qid][metric] = float(value)
    means = {m: float(np.mean([per_query[q][m] for q in qids])) for m in metrics}
    return means, per_query


def latency_stats(latencies_ms: Sequence[float]) -> dict[str, float | None]:
    """Mean, median, p95 and max in milliseconds (p95 by linear interpolation, numpy's default).

    Args:
        latencies_ms: one latency per query, in milliseconds.

    Returns:
        `{"mean", "p50", "p95", "max"}`, each None when there is no latency.

    Example:
        >>> latency_stats([10.0, 20.0, 30.0, 40.0])
        {'mean': 25.0, 'p50': 25.0, 'p95': 38.5, 'max': 40.0}
    """
    if len(latencies_ms) == 0:
        return {"mean": None, "p50": None, "p95": None, "max": None}
    x = np.asarray(latencies_ms, dtype=np.float64)
    return {
        "mean": float(x.mean()),
        "p50": float(np.percentile(x, 50)),
        "p95": float(np.percentile(x, 95)),
        "max": float(x.max()),
    }


def summarize_errors(errors: Sequence[tuple[str, str]], keep: int = 5) -> list[dict[str, Any]]:
    """The first `keep` failures as `{query_id, error}` records, for the report.

    Args:
        errors: `(query id, message)` of every failed query, in run order.
        keep: how many to report.

    Returns:
        At most `keep` records, first failures first.

    Example:
        >>> summarize_errors([("q1", "timeout"), ("q2", "HTTP 500")], keep=1)
        [{'query_id': 'q1', 'error': 'timeout'}]
    """
    return [{"query_id": qid, "error": msg} for qid, msg in errors[:keep]]


def ndcg_at_k(ranked: Sequence[str], judged: Mapping[str, int], k: int = 10) -> float:
    """nDCG@k of one ranking with the conventions above (gain = grade, log2 discount, grade <= 0
    non-relevant), without ranx: `osneural tune` scores thousands of candidate fusions per fold and
    ranx's per-call overhead would dominate. Checked against `compute_metrics` in the tests.

    Args:
        ranked: document ids, best first.
        judged: `{doc id: grade}` of the query.
        k: the cut-off.

    Returns:
        nDCG@k in [0, 1]; 0.0 when the query has no relevant document.

    Example:
        >>> round(ndcg_at_k(["d2", "d1"], {"d1": 1, "d2": 0}), 4)
        0.6309
    """
    ideal = sorted((g for g in judged.values() if g > 0), reverse=True)[:k]
    if not ideal:
        return 0.0
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = sum(max(judged.get(d, 0), 0) * discounts[i] for i, d in enumerate(ranked[:k]))
    return float(dcg / float(np.dot(ideal, discounts[: len(ideal)])))
