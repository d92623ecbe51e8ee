"""Compiled kernels against their numpy references on random and adversarial shapes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from osneural.cython_ext import (
    hamming_distances,
    maxsim,
    maxsim_pq,
    pq_adc,
    pq_lookup_tables,
    topk,
)
from osneural.cython_ext import reference as ref

FAST = settings(max_examples=40, deadline=None)


def _offsets(rng: np.random.Generator, n: int, max_len: int, empty_p: float = 0.2) -> np.ndarray:
    lengths = rng.integers(1, max_len + 1, size=n)
    lengths[rng.random(n) < empty_p] = 0
    return np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)


def _tol(query: np.ndarray, tokens: np.ndarray) -> float:
    """float32 rounding bound for a sum of Q maxima of D-term dot products."""
    q = np.abs(query).max(initial=0.0)
    t = np.abs(tokens.astype(np.float32)).max(initial=0.0)
    return 1e-5 * query.shape[0] * max(query.shape[1], 1) * q * t + 1e-6


shapes = st.tuples(
    st.integers(0, 70),  # Q: 0, under one vector, several 32-token chunks with a 16 tail
    st.sampled_from([1, 3, 7, 8, 15, 16, 17, 33, 128, 130]),  # D, incl. not multiples of 8/16
    st.integers(0, 12),  # N candidates
    st.integers(1, 25),  # max tokens per document
    st.integers(0, 2**31 - 1),
)


@FAST
@given(shapes, st.sampled_from(["float32", "float16", "int8"]), st.sampled_from([1, 2]))
def test_maxsim_matches_reference(shape, dtype, n_threads):
    q_n, dim, n, max_len, seed = shape
    rng = np.random.default_rng(seed)
    offsets = _offsets(rng, n, max_len)
    query = rng.standard_normal((q_n, dim)).astype(np.float32)
    scales = None
    if dtype == "int8":
        tokens = rng.integers(-128, 128, size=(offsets[-1], dim)).astype(np.int8)
        scales = (rng.random(offsets[-1]) * 0.02).astype(np.float32)
    else:
        tokens = rng.standard_normal((offsets[-1], dim)).astype(dtype)
    got = maxsim(query, tokens, offsets, scales, n_threads=n_threads)
    want = ref.maxsim(query, tokens, offsets, scales)
    assert got.dtype == np.float32 and got.shape == (n,)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=_tol(query, ref.decode_tokens(tokens, scales)))
    assert np.all(got[np.diff(offsets) == 0] == 0.0)


def test_maxsim_large_dim_and_long_documents():
    rng = np.random.default_rng(7)
    offsets = np.array([0, 1, 300, 301, 700], dtype=np.int64)
    query = rng.standard_normal((32, 4096)).astype(np.float32)
    tokens = rng.standard_normal((700, 4096)).astype(np.float32)
    for stored in (tokens, tokens.astype(np.float16)):
        np.testing.assert_allclose(maxsim(query, stored, offsets), ref.maxsim(query, stored, offsets),
                                   rtol=1e-5, atol=_tol(query, tokens))


def test_maxsim_negative_scores_are_not_clamped_to_zero():
    # Every dot product is negative: a kernel initialising its running max at 0 would return 0.
    query = -np.ones((3, 5), dtype=np.float32)
    tokens = np.abs(np.random.default_rng(0).standard_normal((4, 5))).astype(np.float32) + 0.1
    offsets = np.array([0, 4])
    got = maxsim(query, tokens, offsets)
    assert got[0] < 0
    np.testing.assert_allclose(got, ref.maxsim(query, tokens, offsets), rtol=1e-6)


def test_maxsim_edge_shapes():
    q = np.ones((4, 8), dtype=np.float32)
    assert maxsim(q, np.zeros((0, 8), np.float32), [0]).shape == (0,)
    np.testing.assert_array_equal(maxsim(q, np.zeros((0, 8), np.float32), [0, 0, 0]), [0.0, 0.0])
    np.testing.assert_array_equal(
        maxsim(np.zeros((0, 8), np.float32), np.ones((3, 8), np.float32), [0, 1, 3]), [0.0, 0.0])
    one = maxsim(q, np.full((1, 8), 0.5, np.float32), [0, 1])
    np.testing.assert_allclose(one, [4 * 8 * 0.5])


def test_maxsim_copies_non_contiguous_inputs():
    rng = np.random.default_rng(3)
    big = rng.standard_normal((40, 34)).astype(np.float32)
    query = big[:10, ::2]  # strided view
    tokens = np.asfortranarray(rng.standard_normal((30, 17)).astype(np.float32))
    offsets = np.array([0, 10, 30])
    np.testing.assert_allclose(maxsim(query, tokens, offsets),
                               ref.maxsim(np.ascontiguousarray(query), tokens, offsets), rtol=1e-5)


def test_n_threads_does_not_change_results():
    rng = np.random.default_rng(5)
    offsets = _offsets(rng, 200, 40)
    query = rng.standard_normal((32, 64)).astype(np.float32)
    tokens = rng.standard_normal((offsets[-1], 64)).astype(np.float32)
    np.testing.assert_array_equal(maxsim(query, tokens, offsets, n_threads=1),
                                  maxsim(query, tokens, offsets, n_threads=2))
    with pytest.raises(ValueError, match="n_threads"):
        maxsim(query, tokens, offsets, n_threads=0)


@pytest.mark.parametrize("where", ["query", "float32", "float16", "scales"])
def test_maxsim_nan_is_an_error(where):
    rng = np.random.default_rng(0)
    query = rng.standard_normal((4, 8)).astype(np.float32)
    tokens = rng.standard_normal((6, 8)).astype(np.float32)
    offsets = np.array([0, 2, 6])
    scales = None
    if where == "query":
        query[1, 2] = np.nan
        match = "query"
    elif where == "scales":
        tokens = rng.integers(-5, 5, (6, 8)).astype(np.int8)
        scales = np.ones(6, np.float32)
        scales[3] = np.nan
        match = "scales"
    else:
        tokens[4, 7] = np.nan
        tokens = tokens.astype(where)
        match = "document 1"
    with pytest.raises(ValueError, match=match):
        maxsim(query, tokens, offsets, scales)


def test_maxsim_inf_token_is_an_error():
    tokens = np.ones((3, 4), np.float32)
    tokens[0, 0] = np.inf
    with pytest.raises(ValueError, match="document 0"):
        maxsim(np.ones((2, 4), np.float32), tokens, [0, 1, 3])


@pytest.mark.parametrize("lane", [0, 15, 16, 19, 23])
@pytest.mark.parametrize("q_n", [20, 24, 52])
def test_maxsim_overflow_in_any_query_lane_is_an_error(lane, q_n):
    """A dot product that overflows in one query token only (here in the 16 + 8 lane chunks a
    17-24 token query runs in) is caught like any other."""
    query = np.ones((q_n, 4), np.float32)
    lane = 32 + min(lane, q_n - 33) if q_n > 32 else min(lane, q_n - 1)
    query[lane, :] = 3e38
    tokens = np.full((5, 4), 10.0, np.float32)
    with pytest.raises(ValueError, match="document 1"):
        maxsim(query, tokens, [0, 0, 5])
    assert np.isfinite(maxsim(query[:lane], tokens, [0, 0, 5])).all()


@pytest.mark.parametrize(
    ("tokens", "offsets", "scales", "match"),
    [
        (np.ones((5, 7), np.float32), [0, 5], None, "dimension mismatch"),
        (np.ones((5, 8), np.float32), [0, 3, 2, 5], None, "non-decreasing: document 1"),
        (np.ones((5, 8), np.float32), [0, 3, 4], None, r"offsets\[-1\]"),
        (np.ones((5, 8), np.float32), [1, 5], None, r"offsets\[0\]"),
        (np.ones((5, 8), np.float32), [0.0, 5.0], None, "integers"),
        (np.ones((5, 8), np.float64), [0, 5], None, "dtype"),
        (np.ones((5, 8), np.float32), [0, 5], np.ones(5, np.float32), "int8"),
        (np.ones((5, 8), np.int8), [0, 5], np.ones(4, np.float32), "scales has 4"),
        (np.ones(8, np.float32), [0, 1], None, "2-D"),
    ],
)
def test_maxsim_bad_input(tokens, offsets, scales, match):
    with pytest.raises(ValueError, match=match):
        maxsim(np.ones((2, 8), np.float32), tokens, offsets, scales)


pq_shapes = st.tuples(
    st.integers(0, 40),  # Q
    st.sampled_from([(1, 3), (4, 2), (8, 4), (16, 8), (3, 5)]),  # (M, dsub)
    st.sampled_from([1, 7, 256]),  # K centroids
    st.integers(0, 10),
    st.integers(1, 20),
    st.integers(0, 2**31 - 1),
)


@FAST
@given(pq_shapes, st.sampled_from(["lut", "decode", "auto"]))
def test_maxsim_pq_matches_reference(shape, method):
    q_n, (m, dsub), k, n, max_len, seed = shape
    rng = np.random.default_rng(seed)
    offsets = _offsets(rng, n, max_len)
    query = rng.standard_normal((q_n, m * dsub)).astype(np.float32)
    codebooks = rng.standard_normal((m, k, dsub)).astype(np.float32)
    codes = rng.integers(0, k, size=(offsets[-1], m)).astype(np.uint8)
    got = maxsim_pq(query, codes, offsets, codebooks, method=method)
    want = ref.maxsim_pq(query, codes, offsets, codebooks)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=_tol(query, codebooks))


def test_pq_lookup_tables_match_decoded_dot_products():
    rng = np.random.default_rng(2)
    query = rng.standard_normal((5, 12)).astype(np.float32)
    codebooks = rng.standard_normal((4, 9, 3)).astype(np.float32)
    lut = pq_lookup_tables(query, codebooks)
    for i in range(5):
        np.testing.assert_allclose(lut[i], ref.pq_lookup_table(query[i], codebooks), rtol=1e-5, atol=1e-5)


def test_maxsim_pq_bad_input():
    cb = np.zeros((4, 10, 2), np.float32)
    q = np.ones((2, 8), np.float32)
    codes = np.zeros((3, 4), np.uint8)
    codes[2, 1] = 10
    with pytest.raises(ValueError, match=r"codes\[2, 1\] = 10 is out of range for a codebook of 10"):
        maxsim_pq(q, codes, [0, 3], cb)
    with pytest.raises(ValueError, match="M=3"):
        maxsim_pq(q, np.zeros((3, 3), np.uint8), [0, 3], cb)
    with pytest.raises(ValueError, match="dimension mismatch"):
        maxsim_pq(np.ones((2, 9), np.float32), np.zeros((3, 4), np.uint8), [0, 3], cb)
    bad_cb = cb.copy()
    bad_cb[1, 2, 0] = np.nan
    with pytest.raises(ValueError, match="codebooks"):
        maxsim_pq(q, np.zeros((3, 4), np.uint8), [0, 3], bad_cb)
    with pytest.raises(ValueError, match="method"):
        maxsim_pq(q, np.zeros((3, 4), np.uint8), [0, 3], cb, method="fast")


@FAST
@given(st.integers(0, 5000), st.sampled_from([1, 3, 8, 16, 32, 64]), st.sampled_from([2, 200, 256]),
       st.sampled_from(["ip", "l2"]), st.integers(0, 2**31 - 1))
def test_pq_adc_matches_reference(n, m, k, metric, seed):
    rng = np.random.default_rng(seed)
    codebooks = rng.standard_normal((m, k, 4)).astype(np.float32)
    lut = ref.pq_lookup_table(rng.standard_normal(m * 4), codebooks, metric)
    codes = rng.integers(0, k, size=(n, m)).astype(np.uint8)
    got = pq_adc(codes, lut, n_threads=int(rng.integers(1, 3)))
    np.testing.assert_allclose(got, ref.pq_adc(codes, lut), rtol=1e-5, atol=1e-4)


def test_pq_adc_bad_input():
    with pytest.raises(ValueError, match="M=4 rows"):
        pq_adc(np.zeros((5, 3), np.uint8), np.zeros((4, 256), np.float32))
    with pytest.raises(ValueError, match="out of range"):
        pq_adc(np.full((5, 2), 9, np.uint8), np.zeros((2, 9), np.float32))
    lut = np.zeros((2, 256), np.float32)
    lut[1, 3] = np.nan
    with pytest.raises(ValueError, match="lut contains NaN"):
        pq_adc(np.zeros((5, 2), np.uint8), lut)


@FAST
@given(st.integers(0, 3000), st.sampled_from([1, 3, 7, 8, 16, 32, 40, 600]), st.integers(0, 2**31 - 1))
def test_hamming_matches_reference(n, nbytes, seed):
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 256, size=(n, nbytes)).astype(np.uint8)
    query = rng.integers(0, 256, size=nbytes).astype(np.uint8)
    got = hamming_distances(query, codes, n_threads=int(rng.integers(1, 3)))
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, ref.hamming_distances(query, codes))


def test_hamming_extremes_and_bad_input():
    codes = np.array([[0] * 32, [255] * 32], np.uint8)
    np.testing.assert_array_equal(hamming_distances(np.zeros(32, np.uint8), codes), [0, 256])
    np.testing.assert_array_equal(hamming_distances(np.zeros(16, np.uint8), codes[:, ::2]), [0, 128])
    with pytest.raises(ValueError, match="width mismatch"):
        hamming_distances(np.zeros(31, np.uint8), codes)
    with pytest.raises(ValueError, match="uint8"):
        hamming_distances(np.zeros(32, np.int64), codes)


@FAST
@given(st.lists(st.sampled_from([-1.0, 0.0, 0.5, 2.0, -np.inf, np.inf, 1e30]), max_size=300),
       st.integers(0, 400))
def test_topk_matches_reference_with_ties(values, k):
    scores = np.array(values, dtype=np.float32)
    np.testing.assert_array_equal(topk(scores, k), ref.topk(scores, k))


def test_topk_random_and_errors():
    scores = np.random.default_rng(1).standard_normal(100_000).astype(np.float32)
    np.testing.assert_array_equal(topk(scores, 100), ref.topk(scores, 100))
    assert topk(scores[:0], 5).shape == (0,)
    with pytest.raises(ValueError, match="NaN"):
        topk(np.array([1.0, np.nan]), 1)
    with pytest.raises(ValueError, match="k must"):
        topk(scores, -1)
