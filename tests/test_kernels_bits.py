"""`maxsim_bits` (tokens at 1, 2 or 4 bits per dimension) against its numpy reference, and the
build's OpenMP report."""

from __future__ import annotations

import importlib
import warnings

import numpy as np
import pytest
from osneural.cython_ext import bits_byte_table, maxsim_bits, openmp_enabled
from osneural.cython_ext import reference as ref

from osneural.codecs.residual import pack_bits


def _case(rng, nbits, dim, lengths, q=5, n_centroids=7, scales=True, centroids=True):
    t = int(sum(lengths))
    buckets = rng.integers(0, 1 << nbits, (t, dim))
    codes = pack_bits(buckets, nbits)
    kw = {}
    if scales:
        kw["scales"] = rng.random(t).astype(np.float32) + 0.1
    if centroids:
        kw["centroids"] = rng.standard_normal((n_centroids, dim)).astype(np.float32)
        kw["centroid_ids"] = rng.integers(0, n_centroids, t)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    weights = rng.standard_normal(1 << nbits).astype(np.float32)
    query = rng.standard_normal((q, dim)).astype(np.float32)
    return query, codes, offsets, weights, buckets, kw


@pytest.mark.parametrize("nbits", [1, 2, 4])
@pytest.mark.parametrize("dim", [1, 5, 8, 63, 64, 65, 384])
@pytest.mark.parametrize("parts", [(True, True), (True, False), (False, True), (False, False)])
def test_maxsim_bits_matches_reference(nbits, dim, parts):
    rng = np.random.default_rng(nbits * 1000 + dim)
    lengths = [0, 3, 1, 0, 70, 129, 2]  # empty documents, one token, more than one piece of 64
    query, codes, offsets, weights, buckets, kw = _case(rng, nbits, dim, lengths, q=37,
                                                        scales=parts[0], centroids=parts[1])
    assert (ref.unpack_bits(codes, nbits, dim) == buckets).all()
    got = maxsim_bits(query, codes, offsets, weights, nbits, **kw)
    want = ref.maxsim_bits(query, codes, offsets, weights, nbits, kw.get("scales"),
                           kw.get("centroids"), kw.get("centroid_ids"))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    assert got[0] == 0.0 and got[3] == 0.0  # documents without tokens score 0.0


@pytest.mark.parametrize("q", [1, 16, 17, 20, 24, 25, 32, 33, 49, 56, 57])
def test_maxsim_bits_query_sizes_and_threads(q):
    rng = np.random.default_rng(q)
    query, codes, offsets, weights, _, kw = _case(rng, 1, 384, [5, 40, 1, 17], q=q)
    one = maxsim_bits(query, codes, offsets, weights, 1, n_threads=1, **kw)
    two = maxsim_bits(query, codes, offsets, weights, 1, n_threads=2, **kw)
    np.testing.assert_array_equal(one, two)
    want = ref.maxsim_bits(query, codes, offsets, weights, 1, kw["scales"], kw["centroids"],
                           kw["centroid_ids"])
    np.testing.assert_allclose(one, want, rtol=1e-4, atol=1e-4)


def test_maxsim_bits_all_equal_tokens_and_no_candidates():
    rng = np.random.default_rng(0)
    query = rng.standard_normal((4, 70)).astype(np.float32)
    codes = np.full((30, 9), 0b10101010, dtype=np.uint8)  # every token the same
    weights = np.array([-0.5, 0.5], np.float32)
    offsets = np.array([0, 10, 30], np.int64)
    got = maxsim_bits(query, codes, offsets, weights, 1)
    assert got[0] == pytest.approx(got[1], rel=1e-6)
    np.testing.assert_allclose(got, ref.maxsim_bits(query, codes, offsets, weights, 1), rtol=1e-5)
    empty = maxsim_bits(query, np.zeros((0, 9), np.uint8), np.array([0]), weights, 1)
    assert empty.shape == (0,)
    no_query = maxsim_bits(np.zeros((0, 70), np.float32), codes, offsets, weights, 1)
    np.testing.assert_array_equal(no_query, [0.0, 0.0])


def test_byte_table_unpacks_little_endian():
    table = bits_byte_table(np.array([0, 1, 2, 3], np.float32), 2)
    np.testing.assert_array_equal(table[0b11100100], [0, 1, 2, 3])
    table = bits_byte_table(np.array([-1, 1], np.float32), 1)
    np.testing.assert_array_equal(table[1], [1, -1, -1, -1, -1, -1, -1, -1])


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"codes": np.zeros((3, 5), np.uint8)}, "needs 6"),
        ({"codes": np.zeros((3, 6), np.int8)}, "dtype uint8"),
        ({"weights": np.zeros(3, np.float32)}, "2\\*\\*nbits"),
        ({"nbits": 3}, "nbits must be 1, 2 or 4"),
        ({"offsets": np.array([0, 2], np.int64)}, "offsets\\[-1\\]"),
        ({"scales": np.ones(2, np.float32)}, "scales has 2 entries"),
        ({"scales": np.array([1, np.nan, 1], np.float32)}, "NaN"),
        ({"centroids": np.zeros((2, 48), np.float32)}, "go together"),
        ({"centroids": np.zeros((2, 48), np.float32), "centroid_ids": np.array([0, 1, 2])},
         "centroid_ids\\[2\\] = 2 is out of range"),
        ({"centroids": np.zeros((2, 47), np.float32), "centroid_ids": np.array([0, 1, 1])},
         "centroids must be"),
        ({"query": np.full((1, 48), np.inf, np.float32)}, "query contains NaN or inf"),
    ],
)
def test_maxsim_bits_bad_input(change, match):
    args = {"query": np.ones((2, 48), np.float32), "codes": np.zeros((3, 6), np.uint8),
            "offsets": np.array([0, 3], np.int64), "weights": np.array([-1, 1], np.float32),
            "nbits": 1}
    args.update(change)
    kw = {k: args.pop(k) for k in ("scales", "centroids", "centroid_ids") if k in args}
    with pytest.raises(ValueError, match=match):
        maxsim_bits(args["query"], args["codes"], args["offsets"], args["weights"], args["nbits"],
                    **kw)


def test_serial_build_warns_once_on_import(monkeypatch):
    import osneural.cython_ext as kernels

    assert isinstance(openmp_enabled(), bool)
    monkeypatch.setattr(kernels._kernels, "openmp_enabled", lambda: False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        importlib.reload(kernels)
    monkeypatch.undo()
    importlib.reload(kernels)
    assert [w.category for w in caught] == [RuntimeWarning]
    assert "without OpenMP" in str(caught[0].message)


@pytest.mark.parametrize(("n", "dim", "k"), [(0, 384, 192), (1, 1, 1), (23, 384, 192), (5, 7, 13),
                                            (3, 64, 64), (40, 129, 65)])
def test_project_matches_numpy(n, dim, k):
    """The query projection of projected token codes against numpy's matmul, on empty, single
    and odd shapes, from non-contiguous and float64 input."""
    from osneural.cython_ext import project

    rng = np.random.default_rng(n * 7 + dim + k)
    x = rng.standard_normal((n, 2 * dim))[:, ::2]  # float64, non-contiguous: cast by the wrapper
    basis_t = rng.standard_normal((dim, k)).astype(np.float32)
    got = project(x, basis_t)
    assert got.shape == (n, k) and got.dtype == np.float32
    np.testing.assert_allclose(got, x.astype(np.float32) @ basis_t, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="x has 3 columns; basis_t"):
        project(np.zeros((2, 3), np.float32), np.zeros((4, 2), np.float32))
    bad = x.copy()
    if n:
        bad[n - 1, dim - 1] = np.nan
        with pytest.raises(ValueError, match="x contains NaN"):
            project(bad, basis_t)
