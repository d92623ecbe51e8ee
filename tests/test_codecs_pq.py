"""Product quantization: error falls with M, agreement with faiss, lookup tables, bad input."""

from __future__ import annotations

import json
import warnings

import faiss
import numpy as np
import pytest

from osneural.codecs.pq import ProductQuantizer


def _minilm_like(n: int, dim: int, seed: int = 0) -> np.ndarray:
    """Unit vectors with a shared direction and a decaying spectrum, like sentence embeddings."""
    rng = np.random.default_rng(seed)
    scales = 1.0 / np.sqrt(np.arange(1, dim + 1))
    mixing, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    x = rng.standard_normal((n, dim)) * scales @ mixing + 0.6 * mixing[0]
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module", autouse=True)
def _one_faiss_thread():
    """OpenMP spin-waiting on a shared 2-core machine makes tiny k-means runs 10x slower."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


@pytest.fixture(scope="module")
def sample() -> np.ndarray:
    return _minilm_like(3000, 32)


def _fit(M: int, x: np.ndarray, **kwargs) -> ProductQuantizer:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # small samples on purpose: tests stay fast
        return ProductQuantizer(M, niter=kwargs.pop("niter", 12), **kwargs).fit(x)


def test_reconstruction_error_falls_as_m_grows(sample: np.ndarray) -> None:
    errors = [_fit(M, sample).reconstruction_error(sample) for M in (1, 2, 4, 8)]
    assert all(b < 0.9 * a for a, b in zip(errors, errors[1:], strict=False)), errors


def test_decode_of_encode_agrees_with_faiss(sample: np.ndarray) -> None:
    pq = _fit(8, sample)
    assert pq.codebooks.shape == (8, 256, 4) and pq.codebooks.dtype == np.float32
    reference = faiss.ProductQuantizer(32, 8, 8)
    faiss.copy_array_to_vector(pq.codebooks.ravel(), reference.centroids)
    x = _minilm_like(3000, 32, seed=9)
    # encode() runs through faiss itself; the numpy path is the independent reading.
    assert np.array_equal(pq.encode(x), reference.compute_codes(x))
    ours, theirs = pq.encode_numpy(x), reference.compute_codes(x)
    assert ours.shape == (3000, 8) and ours.dtype == np.uint8
    # Where the assignments differ, the two centroids must be equally near (float rounding only).
    for i, j in zip(*np.nonzero(ours != theirs), strict=True):
        sub = x[i, j * 4 : (j + 1) * 4]
        d_ours = ((pq.codebooks[j, ours[i, j]] - sub) ** 2).sum()
        d_theirs = ((pq.codebooks[j, theirs[i, j]] - sub) ** 2).sum()
        assert abs(d_ours - d_theirs) < 1e-6
    assert (ours == theirs).mean() > 0.999
    np.testing.assert_allclose(pq.decode(ours), reference.decode(ours), rtol=0, atol=1e-7)
    np.testing.assert_allclose(pq.decode(theirs), reference.decode(theirs), rtol=0, atol=1e-7)


@pytest.mark.parametrize("nbits", [4, 8])
def test_encode_picks_the_nearest_centroid_in_every_subspace(
    sample: np.ndarray, nbits: int
) -> None:
    pq = _fit(4, sample, nbits=nbits)
    x = _minilm_like(200, 32, seed=3)
    codes = pq.encode(x)
    assert codes.shape == (200, 4) and codes.max() < 2**nbits
    for j in range(4):
        dist = ((x[:, None, j * 8 : (j + 1) * 8] - pq.codebooks[j][None]) ** 2).sum(axis=2)
        np.testing.assert_allclose(
            dist[np.arange(200), codes[:, j]], dist.min(axis=1), rtol=1e-5, atol=1e-6
        )


def test_lookup_tables_give_asymmetric_scores(sample: np.ndarray) -> None:
    pq = _fit(8, sample)
    x = _minilm_like(500, 32, seed=4)
    codes = pq.encode(x)
    decoded = pq.decode(codes)
    rng = np.random.default_rng(5)
    for q in rng.standard_normal((3, 32)).astype(np.float32):
        lut_ip = pq.lookup_table(q, "ip")
        lut_l2 = pq.lookup_table(q, metric="l2")
        assert lut_ip.shape == (8, 256) and lut_ip.dtype == np.float32
        np.testing.assert_allclose(pq.adc(codes, lut_ip), decoded @ q, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(
            pq.adc(codes, lut_l2), ((decoded - q) ** 2).sum(axis=1), rtol=1e-4, atol=1e-4
        )


def test_fixed_seed_is_deterministic_and_round_trips_through_json(sample: np.ndarray) -> None:
    a, b = _fit(4, sample, seed=7), _fit(4, sample, seed=7)
    assert np.array_equal(a.codebooks, b.codebooks)
    for pq in (a, _fit(2, sample, nbits=5)):
        data = json.loads(json.dumps(pq.to_dict()))
        assert data["kind"] == "pq" and data["version"] == 1
        back = ProductQuantizer.from_dict(data)
        assert np.array_equal(back.codebooks, pq.codebooks)
        assert np.array_equal(back.encode(sample[:100]), pq.encode(sample[:100]))
        np.testing.assert_array_equal(back.lookup_table(sample[0]), pq.lookup_table(sample[0]))


def test_parallel_training_equals_each_sub_space_trained_alone(sample: np.ndarray) -> None:
    """Sub-spaces train on a thread pool, one single-threaded k-means each: every codebook is
    the one faiss trains for that sub-space alone with its seed and point cap, and the fit
    leaves faiss's own thread setting as it found it."""
    faiss.omp_set_num_threads(2)
    try:
        pq = _fit(8, sample, seed=3, max_points_per_centroid=8)  # 3000 rows: subsampled to 2048
        assert faiss.omp_get_max_threads() == 2
    finally:
        faiss.omp_set_num_threads(1)
    dsub = sample.shape[1] // 8
    for j in (0, 5, 7):
        km = faiss.Kmeans(dsub, 256, niter=12, seed=3 + j, verbose=False, min_points_per_centroid=1,
                          max_points_per_centroid=8)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            km.train(np.ascontiguousarray(sample[:, j * dsub:(j + 1) * dsub]))
        np.testing.assert_array_equal(pq.codebooks[j], km.centroids)


def test_pq_rejects_bad_input(sample: np.ndarray) -> None:
    with pytest.raises(ValueError, match="dimension 32 is not divisible by M=5"):
        ProductQuantizer(5).fit(sample)
    with pytest.raises(ValueError, match="255 training vectors for 256 centroids"):
        ProductQuantizer(4).fit(sample[:255])
    bad = sample[:1000].copy()
    bad[12, 3] = np.inf
    with pytest.raises(ValueError, match="row 12"):
        _fit(4, bad)
    pq = _fit(4, sample)
    with pytest.raises(ValueError, match="expected dimension 32, got 16"):
        pq.encode(sample[:, :16])
    with pytest.raises(ValueError, match="metric"):
        pq.lookup_table(sample[0], "cosine")
    with pytest.raises(ValueError, match=r"uint8 \[n, 4\]"):
        pq.decode(np.zeros((3, 5), dtype=np.uint8))
    with pytest.raises(ValueError, match="lut shape"):
        pq.adc(np.zeros((3, 4), dtype=np.uint8), np.zeros((4, 16), dtype=np.float32))
    with pytest.raises(ValueError, match="not fitted"):
        ProductQuantizer(4).encode(sample)
    with pytest.raises(ValueError, match="nbits"):
        ProductQuantizer(4, nbits=9)
