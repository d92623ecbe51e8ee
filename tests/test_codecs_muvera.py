"""MUVERA FDE: exact against a loop reference, Chamfer correlation, serialization, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from osneural.codecs.muvera import MuveraFDE, chamfer


def _unit(a: np.ndarray) -> np.ndarray:
    return (a / np.linalg.norm(a, axis=-1, keepdims=True)).astype(np.float32)


def _reference_blocks(fde: MuveraFDE, tokens: np.ndarray, query: bool) -> np.ndarray:
    """Loop-by-loop reading of the paper for d_proj=None, no final projection."""
    out = []
    for r in range(fde.reps):
        ids = []
        for tok in tokens:
            bucket = 0
            for k in range(fde.k_sim):
                bucket = bucket * 2 + int(tok @ fde.hyperplanes[r, :, k] > 0)
            ids.append(bucket)
        for b in range(fde.n_buckets):
            members = [tok for tok, i in zip(tokens, ids, strict=True) if i == b]
            if members:
                out.append(np.sum(members, axis=0) if query else np.mean(members, axis=0))
            elif query:
                out.append(np.zeros(tokens.shape[1]))
            else:
                nearest = min(range(len(ids)), key=lambda j: (bin(ids[j] ^ b).count("1"), j))
                out.append(tokens[nearest])
    return np.concatenate(out) / np.sqrt(fde.reps)


def test_matches_loop_reference_on_random_and_tiny_sets() -> None:
    rng = np.random.default_rng(0)
    fde = MuveraFDE(16, k_sim=3, reps=3, d_proj=None, seed=1)
    assert fde.fde_dim == 3 * 8 * 16
    for t in (1, 2, 5, 40):
        tokens = _unit(rng.standard_normal((t, 16)))
        for query in (True, False):
            got = fde.encode_query(tokens) if query else fde.encode_document(tokens)
            np.testing.assert_allclose(got, _reference_blocks(fde, tokens, query), atol=1e-6)


def test_projections_are_linear_sketches_of_the_plain_encoding() -> None:
    rng = np.random.default_rng(1)
    tokens = _unit(rng.standard_normal((30, 24)))
    projected = MuveraFDE(24, k_sim=2, reps=2, d_proj=8, seed=4)
    sketched = MuveraFDE(24, k_sim=2, reps=2, d_proj=8, final_dim=20, seed=4)
    assert sketched.fde_dim == 20
    inner = projected.encode_document(tokens)
    expected = np.zeros(20)
    np.add.at(expected, sketched.sketch_index, inner * sketched.sketch_sign)
    np.testing.assert_allclose(sketched.encode_document(tokens), expected, atol=1e-5)
    # Single-token document: every bucket is filled with that token's projection.
    one = projected.encode_document(tokens[:1]).reshape(2, 4, 8) * np.sqrt(2)
    for r in range(2):
        np.testing.assert_allclose(
            one[r], np.tile(tokens[0] @ projected.projections[r], (4, 1)), atol=1e-6
        )


def _clustered_sets(dim: int, seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    centers = _unit(rng.standard_normal((300, dim)))

    def tokens(n: int, topics: np.ndarray) -> np.ndarray:
        c = centers[rng.choice(topics, n)]
        return _unit(c + 0.5 * rng.standard_normal((n, dim)) / np.sqrt(dim))

    doc_topics = [rng.choice(300, 12, replace=False) for _ in range(120)]
    docs = [tokens(90, t) for t in doc_topics]
    queries = []
    for _ in range(12):
        source = doc_topics[rng.integers(120)]
        topics = np.concatenate([rng.choice(source, 3, replace=False), rng.choice(300, 1)])
        queries.append(tokens(16, topics))
    return queries, docs


def test_fde_inner_product_correlates_with_chamfer() -> None:
    """Reported figure: Pearson r of <FDE_q, FDE_d> with Chamfer over query x document pairs."""
    queries, docs = _clustered_sets(128, seed=2)
    fde = MuveraFDE(128, seed=0)  # defaults: 2048 dimensions
    assert fde.fde_dim <= 2048
    estimate = fde.encode_queries(queries) @ fde.encode_documents(docs).T
    truth = np.array([[chamfer(q, d) for d in docs] for q in queries])
    r = np.corrcoef(estimate.ravel(), truth.ravel())[0, 1]
    print(f"FDE/Chamfer Pearson r = {r:.3f}")
    assert r > 0.7
    # The best true document is in the FDE top 5 for most queries.
    hits = [int(np.argmax(truth[i])) in np.argsort(-estimate[i])[:5] for i in range(len(queries))]
    assert np.mean(hits) >= 0.75


def test_round_trips_through_json() -> None:
    rng = np.random.default_rng(3)
    tokens = _unit(rng.standard_normal((12, 32)))
    for fde in (MuveraFDE(32, seed=5), MuveraFDE(32, 3, 2, None, 100, seed=6)):
        data = json.loads(json.dumps(fde.to_dict()))
        assert data["kind"] == "muvera" and data["fde_dim"] == fde.fde_dim
        back = MuveraFDE.from_dict(data)
        np.testing.assert_array_equal(back.encode_document(tokens), fde.encode_document(tokens))
        np.testing.assert_array_equal(back.encode_query(tokens), fde.encode_query(tokens))


def test_rejects_bad_input() -> None:
    fde = MuveraFDE(8, k_sim=2, reps=1, d_proj=4)
    tokens = np.ones((3, 8), dtype=np.float32)
    with pytest.raises(ValueError, match="expected dimension 8, got 7"):
        fde.encode_query(tokens[:, :7])
    with pytest.raises(ValueError, match="at least 1 row"):
        fde.encode_document(tokens[:0])
    tokens[1, 4] = np.nan
    with pytest.raises(ValueError, match="document token set 2: non-finite value nan at row 1"):
        fde.encode_documents([tokens[:1], tokens[:1], tokens])
    with pytest.raises(ValueError, match="k_sim"):
        MuveraFDE(8, k_sim=13)
    data = fde.to_dict()
    data["hyperplanes"] = MuveraFDE(9, k_sim=2, reps=1).to_dict()["hyperplanes"]
    with pytest.raises(ValueError, match="hyperplanes has shape"):
        MuveraFDE.from_dict(data)
