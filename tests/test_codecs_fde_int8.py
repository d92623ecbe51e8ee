"""int8 MUVERA FDEs (k-NN byte vectors): checked against a numpy reference of the float FDE."""

from __future__ import annotations

import numpy as np
import pytest

from osneural.codecs import MuveraFDE
from osneural.codecs.bundle import CodecBundle


def _token_sets(rng: np.random.Generator, n: int, dim: int) -> list[np.ndarray]:
    sets = []
    for _ in range(n):
        t = rng.standard_normal((int(rng.integers(5, 40)), dim)).astype(np.float32)
        sets.append(t / np.linalg.norm(t, axis=1, keepdims=True))
    return sets


@pytest.fixture(scope="module")
def data() -> tuple[list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(7)
    return _token_sets(rng, 60, 32), _token_sets(rng, 8, 32)


def test_document_codes_are_the_rounded_scaled_float_fde(data) -> None:
    docs, _ = data
    fde = MuveraFDE(32, k_sim=3, reps=4, d_proj=8, seed=3)
    floats = fde.encode_documents(docs)
    fde.calibrate_int8(docs, clip_quantile=0.999)
    assert fde.dtype == "int8" and fde.data_type == "byte"
    assert fde.int8_scale == pytest.approx(127.0 / np.quantile(np.abs(floats), 0.999), rel=1e-6)
    want = np.clip(np.rint(floats * fde.int8_scale), -128, 127)
    got = fde.encode_documents(docs)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(fde.encode_document(docs[0]), want[0])
    np.testing.assert_array_equal(fde.encode_documents_float(docs), floats)
    # 0.1% of the values clip at most, and the clipped ones sit at the ends of the range.
    assert np.mean(np.abs(got) >= 127) <= 0.002


def test_query_codes_are_integers_scaled_to_127_and_keep_the_ranking(data) -> None:
    docs, queries = data
    fde = MuveraFDE(32, k_sim=3, reps=4, d_proj=8, seed=3)
    qf, df = fde.encode_queries(queries), fde.encode_documents(docs)
    fde.calibrate_int8(docs)
    qi, di = fde.encode_queries(queries), fde.encode_documents(docs)
    assert np.all(qi == np.rint(qi)) and np.all(np.abs(qi) <= 127)
    np.testing.assert_array_equal(np.abs(qi).max(axis=1), 127)
    np.testing.assert_array_equal(qi, np.rint(qf * (127 / np.abs(qf).max(axis=1, keepdims=True))))
    np.testing.assert_array_equal(fde.encode_query(queries[1]), qi[1])
    exact, coded = qf @ df.T, qi @ di.T
    for q in range(len(queries)):  # per query, the int8 scores order documents like the floats
        r = np.corrcoef(np.argsort(np.argsort(exact[q])), np.argsort(np.argsort(coded[q])))[0, 1]
        assert r > 0.98, (q, r)


def test_float32_stays_the_default_and_uncalibrated_int8_refuses(data) -> None:
    docs, _ = data
    fde = MuveraFDE(32, k_sim=2, reps=2, d_proj=4)
    assert fde.dtype == "float32" and fde.data_type == "float"
    assert not np.all(fde.encode_document(docs[0]) == np.rint(fde.encode_document(docs[0])))
    with pytest.raises(ValueError, match="calibrate_int8"):
        MuveraFDE(32, k_sim=2, reps=2, d_proj=4, dtype="int8").encode_documents(docs[:2])
    with pytest.raises(ValueError, match="dtype"):
        MuveraFDE(32, dtype="float16")
    with pytest.raises(ValueError, match="int8_scale"):
        MuveraFDE(32, dtype="int8", int8_scale=-1.0)
    with pytest.raises(ValueError, match="clip_quantile"):
        fde.calibrate_int8(docs, clip_quantile=0.2)


def test_serialization_keeps_dtype_and_scale_and_reads_older_bundles(data) -> None:
    docs, queries = data
    fde = MuveraFDE(32, k_sim=3, reps=2, d_proj=8, final_dim=40, seed=9).calibrate_int8(docs)
    back = CodecBundle.from_dict(CodecBundle(fde=fde).to_dict()).fde
    assert back.dtype == "int8" and back.int8_scale == fde.int8_scale and back.fde_dim == 40
    np.testing.assert_array_equal(back.encode_documents(docs), fde.encode_documents(docs))
    np.testing.assert_array_equal(back.encode_queries(queries), fde.encode_queries(queries))
    old = MuveraFDE(32, k_sim=3, reps=2, d_proj=8, seed=9).to_dict()
    del old["dtype"], old["int8_scale"]
    assert MuveraFDE.from_dict(old).dtype == "float32"
