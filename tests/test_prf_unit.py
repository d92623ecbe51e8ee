"""Pseudo-relevance feedback numerics against plain numpy, and the stage's spec validation."""

from __future__ import annotations

import numpy as np
import pytest
from osneural.plugin.prf import expansion_tokens, kmeans, rocchio
from osneural.plugin.spec import SpecError, parse_spec


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_rocchio_is_alpha_q_plus_beta_mean_normalised() -> None:
    rng = np.random.default_rng(0)
    q, fb = _unit(rng.standard_normal(16)), _unit(rng.standard_normal((5, 16)))
    want = 0.8 * q + 0.4 * fb.mean(axis=0)
    np.testing.assert_allclose(rocchio(q, fb, 0.8, 0.4), want / np.linalg.norm(want), atol=1e-6)
    np.testing.assert_allclose(rocchio(q, fb[:0], 1.0, 0.5), q, atol=1e-6)  # no feedback: q


def test_kmeans_recovers_separated_clusters_deterministically() -> None:
    rng = np.random.default_rng(1)
    centers = _unit(rng.standard_normal((4, 32)))
    x = np.concatenate([_unit(c + 0.05 * rng.standard_normal((30, 32))) for c in centers])
    found, labels = kmeans(x, 4, seed=3)
    # every true cluster maps to exactly one found centroid, and back
    groups = [set(labels[i * 30:(i + 1) * 30]) for i in range(4)]
    assert all(len(g) == 1 for g in groups) and len(set().union(*groups)) == 4
    for j in range(4):
        members = x[labels == j]
        np.testing.assert_allclose(found[j], _unit(members.sum(axis=0)), atol=1e-5)
    again, labels2 = kmeans(x, 4, seed=3)
    np.testing.assert_array_equal(labels, labels2)
    np.testing.assert_array_equal(found, again)
    assert kmeans(x[:3], 10)[0].shape == (3, 32)  # never more centroids than points


def test_expansion_weights_contrast_feedback_with_the_window() -> None:
    rng = np.random.default_rng(2)
    feedback = [_unit(rng.standard_normal((int(n), 8))) for n in (12, 15, 10)]
    background = [_unit(rng.standard_normal((int(rng.integers(5, 15)), 8))) for _ in range(9)]
    vectors, weights = expansion_tokens(feedback, background, clusters=6, expansion=4, beta=0.5)
    centroids, _ = kmeans(np.concatenate(feedback), 6, seed=0)

    def mean_best(docs):
        return np.mean([np.max(d @ centroids.T, axis=0) for d in docs], axis=0)

    w = mean_best(feedback) - mean_best(background)
    order = np.argsort(-w, kind="stable")[:4]
    order = order[w[order] > 0]
    assert len(order) > 0
    np.testing.assert_allclose(weights, 0.5 * w[order] / w[order].max(), rtol=1e-5)
    np.testing.assert_allclose(vectors, centroids[order] * weights[:, None], rtol=1e-4, atol=1e-6)
    assert weights.max() == pytest.approx(0.5)
    # a window that matches the feedback as well as the feedback itself gives no expansion
    same, none = expansion_tokens(feedback, feedback, clusters=6, expansion=4, beta=0.5)
    assert len(same) == 0 and len(none) == 0


def test_expanded_query_through_the_kernel_is_colbert_prf_scoring() -> None:
    """MaxSim over [Q; w_e * e] = sum_q max_t q.t + sum_e w_e max_t e.t (w_e > 0)."""
    from osneural.cython_ext import maxsim

    rng = np.random.default_rng(4)
    q = _unit(rng.standard_normal((5, 16))).astype(np.float32)
    e = _unit(rng.standard_normal((3, 16))).astype(np.float32)
    w = np.array([0.5, 0.3, 0.1], dtype=np.float32)
    docs = [_unit(rng.standard_normal((int(n), 16))).astype(np.float32) for n in (4, 9, 6)]
    offsets = np.cumsum([0] + [len(d) for d in docs]).astype(np.int64)
    got = maxsim(np.concatenate([q, e * w[:, None]]), np.concatenate(docs), offsets)
    want = [np.max(q @ d.T, axis=1).sum() + (w * np.max(e @ d.T, axis=1)).sum() for d in docs]
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_prf_stage_spec_validation() -> None:
    spec = parse_spec({"rescore": [{"type": "prf"}]})
    assert spec.rescore[0].field == "dense" and spec.rescore[0].mode == "dense"
    assert parse_spec({"rescore": [{"type": "prf", "mode": "multivector"}]}).rescore[0].field \
        == "mv_codes"
    for bad, where in (({"fb_docs": 0}, "rescore[0].fb_docs"), ({"typo": 1}, "rescore[0].typo"),
                       ({"k": 50, "num_candidates": 10}, "num_candidates"),
                       ({"alpha": 0, "beta": 0}, "alpha and beta")):
        with pytest.raises(SpecError, match=where.replace("[", r"\[").replace("]", r"\]")):
            parse_spec({"rescore": [{"type": "prf", **bad}]})
