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
