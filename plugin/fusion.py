"""Fusing the candidate lists of several first stages into one ranking.

Scores of different first stages live on unrelated scales (BM25 is unbounded, cosine is in [-1, 1],
rank_feature sums depend on the sparse model), so they are fused either by rank (RRF) or after a
per-list normalisation (linear). The conventions follow ranx (`rrf`, `wsum` over `min-max` /
`zmuv`) so results can be checked against it: a document missing from a list contributes 0 to the
weighted sum. Two deliberate differences: a list whose scores are all equal min-max normalises to
1.0 (every entry is that stage's best, ranx gives 0), and ties in the fused score are broken by the
best rank any stage gave the document, then by id, so every interface returns the same order.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Run = Sequence[tuple[str, float]]
"""One stage's candidates, best first: (doc id, score)."""


def _weights(weights: Sequence[float] | None, n: int) -> np.ndarray:
    if weights is None:
        return np.ones(n, dtype=np.float64)
    if len(weights) != n:
        raise ValueError(f"{len(weights)} weights for {n} runs")
    return np.asarray(weights, dtype=np.float64)


def _ordered(
    fused: dict[str, float], best_rank: dict[str, int]
) -> list[tuple[str, float]]:
    return sorted(fused.items(), key=lambda kv: (-kv[1], best_rank[kv[0]], kv[0]))


def _best_ranks(runs: Sequence[Run]) -> dict[str, int]:
    best: dict[str, int] = {}
    for run in runs:
        for rank, (doc_id, _score) in enumerate(run):
            if rank < best.get(doc_id, rank + 1):
                best[doc_id] = rank
    return best


def rrf(
    runs: Sequence[Run], rank_constant: int = 60, weights: Sequence[float] | None = None
) -> list[tuple[str, float]]:
    """Weighted reciprocal rank fusion: sum_i w_i / (rank_constant + rank_i), ranks from 1.

    Only ranks count, so stages whose scores live on unrelated scales fuse without calibration.

    Args:
        runs: one candidate list per first stage, each best first; scores are ignored.
        rank_constant: k of RRF (>= 1); larger values flatten the gap between top ranks.
        weights: one weight per run (default: all 1).

    Returns:
        (doc id, fused score) for every document of any run, best first; ties broken by the best
        rank any run gave the document, then by id. A ValueError for rank_constant < 1 or a
        weights length that is not one per run.

    Example:
        >>> rrf([[("a", 9.0), ("b", 7.0)], [("b", 0.8), ("c", 0.5)]], rank_constant=1)
        [('b', 0.8333333333333333), ('a', 0.5), ('c', 0.3333333333333333)]
    """
    if rank_constant < 1:
        raise ValueError("rank_constant must be >= 1")
    w = _weights(weights, len(runs))
    fused: dict[str, float] = {}
    for wi, run in zip(w, runs, strict=True):
        for rank, (doc_id, _score) in enumerate(run, start=1):
            fused[doc_id] = fused.get(doc_id, 0.0) + float(wi) / (rank_constant + rank)
    return _ordered(fused, _best_ranks(runs))


def normalize(scores: np.ndarray, method: str) -> np.ndarray:
    """Min-max to [0, 1], or z-score with the population standard deviation (as ranx `zmuv`).

    Args:
        scores: one run's scores.
        method: `"minmax"` or `"zscore"` (anything else is a ValueError).

    Returns:
        float64 scores of the same length. Min-max of equal scores gives 1.0 everywhere (every
        entry is the stage's best); z-score divides by at least 1e-9 so equal scores give 0.

    Example:
        >>> normalize(np.array([2.0, 4.0, 3.0]), "minmax").tolist()
        [0.0, 1.0, 0.5]
        >>> normalize(np.array([1.0, 3.0]), "zscore").tolist()
        [-1.0, 1.0]
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.size == 0:
        return scores
    if method == "minmax":
        lo, hi = scores.min(), scores.max()
        if hi - lo <= 1e-12 * max(1.0, abs(hi)):
            return np.ones_like(scores)
        return (scores - lo) / (hi - lo)
    if method == "zscore":
        std = scores.std()
        return (scores - scores.mean()) / max(std, 1e-9)
    raise ValueError(f"unknown normalization {method!r} (expected 'minmax' or 'zscore')")


def linear(
    runs: Sequence[Run], normalization: str = "minmax", weights: Sequence[float] | None = None
) -> list[tuple[str, float]]:
    """Weighted sum of per-run normalised scores; a document absent from a run gets 0 there.

    Args:
        runs: one candidate list per first stage, each best first, with the stage's own scores.
        normalization: how each run's scores are rescaled first, `"minmax"` or `"zscore"`.
        weights: one weight per run (default: all 1); an empty run contributes nothing.

    Returns:
        (doc id, fused score) for every document of any run, best first, ties broken as in `rrf`.

    Example:
        >>> linear([[("a", 10.0), ("b", 5.0)], [("b", 0.9), ("c", 0.1)]], weights=[1.0, 2.0])
        [('b', 2.0), ('a', 1.0), ('c', 0.0)]
    """
    w = _weights(weights, len(runs))
    fused: dict[str, float] = {}
    for wi, run in zip(w, runs, strict=True):
        if not run:
            continue
        ids = [doc_id for doc_id, _ in run]
        norm = normalize(np.array([s for _, s in run], dtype=np.float64), normalization)
        for doc_id, s in zip(ids, norm, strict=True):
            fused[doc_id] = fused.get(doc_id, 0.0) + float(wi) * float(s)
    return _ordered(fused, _best_ranks(runs))


def fuse(
    runs: Sequence[Run],
    method: str,
    *,
    weights: Sequence[float] | None = None,
    rank_constant: int = 60,
    normalization: str = "minmax",
) -> list[tuple[str, float]]:
    """Dispatch on the spec's fusion type; a single run is returned as is (no rescaling).

    Args:
        runs: one candidate list per first stage, each best first.
        method: the spec's fusion type, `"rrf"` or `"linear"` (anything else is a ValueError).
        weights: one weight per run (default: all 1).
        rank_constant: k of RRF, used by `"rrf"` only.
        normalization: `"minmax"` or `"zscore"`, used by `"linear"` only.

    Returns:
        (doc id, score) best first: the fused ranking, or a lone run's own scores unchanged.

    Example:
        >>> fuse([[("a", 3.0), ("b", 1.0)]], "rrf")
        [('a', 3.0), ('b', 1.0)]
        >>> fuse([[("a", 3.0)], [("b", 1.0)]], "rrf", rank_constant=1)
        [('a', 0.5), ('b', 0.5)]
    """
    if len(runs) == 1 and (weights is None or weights[0] > 0):
        return [(doc_id, float(s)) for doc_id, s in runs[0]]
    if method == "rrf":
        return rrf(runs, rank_constant=rank_constant, weights=weights)
    if method == "linear":
        return linear(runs, normalization=normalization, weights=weights)
    raise ValueError(f"unknown fusion {method!r} (expected 'rrf' or 'linear')")
