"""Token pooling: exact Ward against a brute-force reference, MaxSim tolerance, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest

from osneural.codecs.muvera import chamfer
from osneural.codecs.pooling import pool_tokens, ward_clusters


def _unit(a: np.ndarray) -> np.ndarray:
    return (a / np.linalg.norm(a, axis=-1, keepdims=True)).astype(np.float32)


def _brute_force_ward(points: np.ndarray, k: int) -> list[frozenset[int]]:
    clusters = [[i] for i in range(len(points))]
    while len(clusters) > k:
        best = None
        for a in range(len(clusters)):
            for b in range(a + 1, len(clusters)):
                pa, pb = points[clusters[a]], points[clusters[b]]
                na, nb = len(pa), len(pb)
                cost = na * nb / (na + nb) * ((pa.mean(0) - pb.mean(0)) ** 2).sum()
                if best is None or cost < best[0]:
                    best = (cost, a, b)
        _, a, b = best
        clusters[a] = clusters[a] + clusters[b]
        del clusters[b]
    return sorted(frozenset(c) for c in clusters)


def _greedy_ward(points: np.ndarray, n_clusters: int) -> np.ndarray:
    """The merge loop `ward_clusters` replaced, kept as its reference: the globally cheapest
    pair is joined at each step, each live cluster caching its cheapest partner."""
    n = points.shape[0]
    if not 1 <= n_clusters <= n:
        raise ValueError(f"n_clusters must be between 1 and {n}, got {n_clusters}")
    points = points.astype(np.float64)
    means = points.copy()
    msq = (points**2).sum(axis=1)
    sizes = np.ones(n)
    labels = np.arange(n)
    alive = np.ones(n, dtype=bool)
    cost = 0.5 * (msq[:, None] + msq[None, :] - 2.0 * points @ points.T)  # 1*1/2 * ||a-b||^2
    np.maximum(cost, 0.0, out=cost)
    np.fill_diagonal(cost, np.inf)
    partner = np.argmin(cost, axis=1)
    best = cost[np.arange(n), partner]
    for _ in range(n - n_clusters):
        a = int(np.argmin(best))
        b = int(partner[a])
        a, b = min(a, b), max(a, b)
        # Merge b into a.
        means[a] = (means[a] * sizes[a] + means[b] * sizes[b]) / (sizes[a] + sizes[b])
        msq[a] = means[a] @ means[a]
        sizes[a] += sizes[b]
        labels[labels == b] = a
        alive[b] = False
        cost[b, :] = np.inf
        cost[:, b] = np.inf
        best[b] = np.inf
        others = np.flatnonzero(alive)
        others = others[others != a]
        # ||mu_o - mu_a||^2 for every row by one matrix-vector product (no gathered copies).
        gap = np.maximum(msq + msq[a] - 2.0 * (means @ means[a]), 0.0)[others]
        new = sizes[others] * sizes[a] / (sizes[others] + sizes[a]) * gap
        cost[a, others] = new
        cost[others, a] = new
        if others.size:
            partner[a] = others[np.argmin(new)]
            best[a] = cost[a, partner[a]]
        else:
            best[a] = np.inf
        # Rows that pointed at a or b must rescan; others only compare with their new cost to a.
        stale = others[(partner[others] == a) | (partner[others] == b)]
        for row in stale:
            partner[row] = int(np.argmin(cost[row]))
            best[row] = cost[row, partner[row]]
        closer = others[new < best[others]]
        partner[closer] = a
        best[closer] = cost[closer, a]
    _, dense = np.unique(labels, return_inverse=True)  # roots are first members: order kept
    return dense


def _sse(points: np.ndarray, labels: np.ndarray) -> float:
    return float(sum(((points[labels == c] - points[labels == c].mean(0)) ** 2).sum()
                     for c in np.unique(labels)))


@pytest.mark.parametrize("seed", range(6))
def test_ward_matches_the_greedy_merge_loop_on_token_shapes(seed: int) -> None:
    """Documents of 2 to 400 tokens of 384 dims, clustered like a text's tokens (near repeats):
    the same partition, numbered the same way, as joining the cheapest pair at every step."""
    rng = np.random.default_rng(seed)
    for n in (2, 3, int(rng.integers(20, 120)), int(rng.integers(120, 400))):
        centers = _unit(rng.standard_normal((max(1, n // 3), 384))).astype(np.float64)
        points = centers[rng.integers(0, len(centers), n)]
        points = _unit(points + 0.3 * rng.standard_normal(points.shape)).astype(np.float64)
        for k in sorted({1, max(1, n // 4), math.ceil(n / 2), n - 1 if n > 1 else 1, n}):
            assert np.array_equal(ward_clusters(points, k), _greedy_ward(points, k)), (n, k)


def test_ward_with_ties_costs_what_the_greedy_loop_costs() -> None:
    """Exact repeats tie at cost 0 (and all-equal rows tie everywhere): the partition may
    break the ties another way, but its Ward cost (within-cluster squared error) is the same."""
    rng = np.random.default_rng(11)
    base = _unit(rng.standard_normal((15, 32))).astype(np.float64)
    for points in (np.repeat(base, 3, axis=0), np.tile(base[:1], (12, 1)),
                   np.vstack([base, base[::-1], base[:5]])):
        n = len(points)
        for k in (1, 2, 5, n // 2, n - 1, n):
            ours, ref = ward_clusters(points, k), _greedy_ward(points, k)
            assert len(np.unique(ours)) == k
            firsts = [int(np.flatnonzero(ours == c)[0]) for c in range(k)]
            assert firsts == sorted(firsts)
            assert _sse(points, ours) == pytest.approx(_sse(points, ref), abs=1e-9)


@pytest.mark.parametrize("seed", range(4))
def test_ward_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 25))
    points = _unit(rng.standard_normal((n, 6))).astype(np.float64)
    k = int(rng.integers(1, n + 1))
    labels = ward_clusters(points, k)
    ours = sorted(frozenset(np.flatnonzero(labels == c).tolist()) for c in range(k))
    assert ours == _brute_force_ward(points, k)
    # Labels are numbered by each cluster's first member.
    firsts = [int(np.flatnonzero(labels == c)[0]) for c in range(k)]
    assert firsts == sorted(firsts)


def test_duplicated_tokens_pool_back_to_the_originals() -> None:
    rng = np.random.default_rng(4)
    base = _unit(rng.standard_normal((20, 16)))
    doubled = np.repeat(base, 2, axis=0)
    pooled = pool_tokens(doubled * 3.0, pool_factor=2)  # scale must not matter
    np.testing.assert_allclose(pooled, base, atol=1e-6)


def test_shape_protection_and_norms() -> None:
    rng = np.random.default_rng(5)
    tokens = rng.standard_normal((31, 8)).astype(np.float32)
    for factor in (1, 2, 3, 1.5):
        pooled = pool_tokens(tokens, factor, protected=1)
        assert pooled.shape == (1 + math.ceil(30 / factor), 8) and pooled.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(pooled, axis=1), 1.0, atol=1e-5)
        np.testing.assert_allclose(pooled[0], _unit(tokens[0]), atol=1e-6)
    np.testing.assert_allclose(pool_tokens(tokens, 1), _unit(tokens), atol=1e-6)
    # Exactly opposite tokens forced together keep a direction instead of a zero vector.
    opposite = np.array([[1.0, 0.0], [-1.0, 0.0]], dtype=np.float32)
    np.testing.assert_allclose(pool_tokens(opposite, 2), [[1.0, 0.0]])


def test_pooling_keeps_maxsim_within_tolerance() -> None:
    """Reported figure: relative MaxSim change on 180-token clustered documents."""
    rng = np.random.default_rng(6)
    dim = 128
    centers = _unit(rng.standard_normal((400, dim)))

    def tokens(n: int, topics: np.ndarray, noise: float) -> np.ndarray:
        c = centers[rng.choice(topics, n)]
        return _unit(c + noise * rng.standard_normal((n, dim)) / np.sqrt(dim))

    topics = [rng.choice(400, 40, replace=False) for _ in range(8)]
    docs = [tokens(180, t, 0.6) for t in topics]
    queries = [tokens(24, rng.choice(t, 6), 0.6) for t in topics]
    truth = np.array([[chamfer(q, d) for d in docs] for q in queries])
    for factor, tolerance in ((2, 0.08), (3, 0.12)):
        pooled = [pool_tokens(d, factor) for d in docs]
        assert sum(len(p) for p in pooled) == len(docs) * math.ceil(180 / factor)
        scores = np.array([[chamfer(q, p) for p in pooled] for q in queries])
        rel = np.abs(scores - truth) / truth
        print(f"pool x{factor}: mean rel. MaxSim change {rel.mean():.4f}, max {rel.max():.4f}")
        assert rel.mean() < tolerance
        assert rel.max() < 2.5 * tolerance
        # Pooling must not reorder documents for a query: the best document stays the best.
        assert np.array_equal(scores.argmax(axis=1), truth.argmax(axis=1))


def test_rejects_bad_input() -> None:
    tokens = np.ones((4, 3), dtype=np.float32)
    with pytest.raises(ValueError, match="pool_factor"):
        pool_tokens(tokens, 0.5)
    with pytest.raises(ValueError, match="protected"):
        pool_tokens(tokens, 2, protected=5)
    tokens[2] = 0.0
    with pytest.raises(ValueError, match="token 2 is the zero vector"):
        pool_tokens(tokens, 2)
    tokens[2, 1] = np.inf
    with pytest.raises(ValueError, match="row 2, column 1"):
        pool_tokens(tokens, 2)
    with pytest.raises(ValueError, match="2-D"):
        pool_tokens(np.ones(3), 2)
