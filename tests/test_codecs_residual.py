"""ResidualCodec (binarized and ColBERTv2-style residual token codes): training, storage layout,
JSON round trip, MaxSim against the decoded float tokens, and the bundle's token codec."""

from __future__ import annotations

import json

import numpy as np
import pytest
from osneural.cython_ext import reference as ref
from osneural.ingest.codec_training import token_codec
from osneural.ingest.plan import CodecParams

from osneural.codecs import CodecBundle, ProductQuantizer, ResidualCodec, maxsim_blobs


def _tokens(n=3000, dim=48, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim)).astype(np.float32) * np.linspace(2, 0.2, dim, dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize(("nbits", "centroids", "scale", "row_bytes"),
                         [(1, 0, False, 6), (1, 0, True, 8), (1, 32, False, 8), (2, 32, True, 16)])
def test_layout_and_round_trip(nbits, centroids, scale, row_bytes):
    x = _tokens()
    codec = ResidualCodec(nbits, centroids, scale=scale, niter=5).fit(x)
    assert codec.row_bytes == row_bytes
    rows = codec.encode(x[:50])
    blob = rows.tobytes()
    assert len(blob) == 50 * row_bytes
    np.testing.assert_array_equal(codec.parse(blob), rows)
    again = ResidualCodec.from_dict(json.loads(json.dumps(codec.to_dict())))
    assert again.encode(x[:50]).tobytes() == blob
    np.testing.assert_array_equal(again.decode(rows), codec.decode(rows))
    assert codec.describe() == {"kind": "residual", "nbits": nbits, "n_centroids": centroids,
                                "scale": scale, "dim": 48, "row_bytes": row_bytes}


def test_more_bits_and_centroids_reconstruct_better():
    x = _tokens()
    errors = [ResidualCodec(b, c, scale=s, niter=5).fit(x).reconstruction_error(x[:500])
              for b, c, s in ((1, 0, False), (1, 0, True), (1, 64, False), (2, 64, False))]
    assert errors[1] < errors[0]  # a per-token scale keeps each token's magnitude
    assert errors[2] < errors[0]  # a centroid leaves a smaller residual to code
    assert errors[3] < errors[2] < 1.0  # 2 bits beat 1 bit; all beat coding nothing (|x| = 1)


def test_binarized_tokens_are_sign_bits():
    x = _tokens(500, 16)
    codec = ResidualCodec(1, 0, scale=False).fit(x)
    assert codec.cutoffs.tolist() == [0.0]
    buckets = ref.unpack_bits(codec.encode(x)["bits"], 1, 16)
    np.testing.assert_array_equal(buckets, (x >= 0).astype(np.uint8))
    assert codec.weights[0] < 0 < codec.weights[1]


def test_maxsim_matches_decoded_float_tokens_and_empty_documents():
    x = _tokens()
    codec = ResidualCodec(2, 16, scale=True, niter=5).fit(x)
    q = _tokens(9, seed=3)
    docs = [x[:40], x[40:41], x[41:41], x[41:300]]
    blobs = [codec.encode(d).tobytes() for d in docs]
    got = maxsim_blobs(codec, q, blobs)
    decoded = [codec.decode(codec.parse(b)) for b in blobs]
    offsets = np.concatenate([[0], np.cumsum([len(d) for d in decoded])])
    want = ref.maxsim(q, np.concatenate(decoded), offsets)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert got[2] == 0.0
    exact = ref.maxsim(q, np.concatenate(docs), offsets)
    assert np.abs(got - exact).max() < 0.2 * np.abs(exact).max()


def test_bad_blob_names_the_document():
    codec = ResidualCodec(1, 0).fit(_tokens(300))
    with pytest.raises(ValueError, match="mv_codes of document 'd7': 9 bytes is not a multiple"):
        maxsim_blobs(codec, _tokens(2), [b"\x00" * 9], ["mv_codes of document 'd7'"])


@pytest.mark.parametrize("code", ["pq", "bin2s-centroids"])
def test_joined_blobs_score_as_each_alone_and_a_bad_one_is_named_by_position(code):
    """maxsim_blobs parses the blobs joined: each score must equal that blob scored alone, and
    a bad blob among good ones is named through the callable, by its own position."""
    x = _tokens(400)
    codec = (ProductQuantizer(M=8, nbits=4).fit(_tokens(700)) if code == "pq"
             else ResidualCodec(2, 8, scale=True, niter=3).fit(x))
    q = _tokens(5, seed=4)
    blobs = [codec.encode(x[a:b]).tobytes() for a, b in [(0, 7), (7, 7), (7, 8), (8, 60)]]
    got = maxsim_blobs(codec, q, blobs)
    alone = [maxsim_blobs(codec, q, [b])[0] for b in blobs]
    np.testing.assert_allclose(got, alone, rtol=1e-6, atol=1e-6)
    row = len(blobs[2])
    names = lambda i: f"mv_codes of document 'doc{i}'"  # noqa: E731
    with pytest.raises(ValueError, match=f"'doc2': {row + 1} bytes"):
        maxsim_blobs(codec, q, [blobs[0], blobs[1], blobs[2] + b"\x01", blobs[3]], names)


def test_constant_and_tiny_training_sets():
    x = np.ones((40, 10), np.float32) / np.sqrt(10)
    codec = ResidualCodec(2, 4, scale=True, niter=3).fit(x)
    np.testing.assert_allclose(codec.decode(codec.encode(x)), x, atol=1e-3)
    with pytest.raises(ValueError, match="need at least as many tokens"):
        ResidualCodec(1, 64).fit(x)
    with pytest.raises(ValueError, match="nbits must be 1, 2 or 4"):
        ResidualCodec(3)
    with pytest.raises(ValueError, match="not fitted"):
        ResidualCodec().encode(x)


def test_bundle_token_codec_and_training_choice():
    x = _tokens(800)
    res = ResidualCodec(1, 8, niter=3).fit(x)
    bundle = CodecBundle.from_dict(json.loads(json.dumps(CodecBundle(res_tokens=res).to_dict())))
    assert isinstance(bundle.token_codec, ResidualCodec)
    assert bundle.token_codec.encode(x[:5]).tobytes() == res.encode(x[:5]).tobytes()
    pq = ProductQuantizer(4, nbits=4, niter=3).fit(x)
    assert CodecBundle(pq_tokens=pq).token_codec is pq  # indices built with PQ codes
    with pytest.raises(ValueError, match="both res_tokens and pq_tokens"):
        _ = CodecBundle(pq_tokens=pq, res_tokens=res).token_codec
    params = CodecParams()
    chosen = token_codec("res2s", 200_000, params)
    assert (chosen.nbits, chosen.n_centroids, chosen.scale) == (2, min(4096, params.token_centroids), True)
    assert token_codec("res1", 1000, params).n_centroids == 256  # 2**floor(log2(16 * 31.6))
    for bad in ("res2ss", "bin3", "res", "binary1", "RES1", ""):
        with pytest.raises(ValueError, match=f"token code {bad!r}"):
            CodecParams(token_code=bad)
        with pytest.raises(ValueError, match=f"token code {bad!r}"):
            token_codec(bad, 1000, params)
    assert token_codec("res1", 3, params).n_centroids == 3  # never more than the tokens
    assert token_codec("bin1", 10, params).n_centroids == 0
    with pytest.raises(ValueError, match="token code 'opq9'"):
        token_codec("opq9", 10, params)


def test_rescoring_scores_any_token_codec():
    from osneural.plugin import rescoring

    x = _tokens(1200)
    q = _tokens(4, seed=5)
    for codec in (ResidualCodec(1, 16, scale=True, niter=3).fit(x),
                  ProductQuantizer(8, nbits=4, niter=3).fit(x)):
        raw = {"a": codec.encode(x[:30]).tobytes(), "b": codec.encode(x[30:31]).tobytes()}
        got = rescoring.maxsim_scores(q, raw, ["a", "missing", "b"], codec, "mv_codes")
        want = maxsim_blobs(codec, q, [raw["a"], raw["b"]])
        np.testing.assert_allclose(got[[0, 2]], want, rtol=1e-6)
        assert np.isnan(got[1])  # no codes: sinks in the window instead of failing the query
        with pytest.raises(ValueError, match="mv_codes of document 'a'"):
            rescoring.maxsim_scores(q, {"a": raw["a"][:-1]}, ["a"], codec, "mv_codes")


def _low_rank_tokens(n=3000, dim=48, rank=12, seed=0):
    """Correlated tokens: most of their energy in `rank` directions that no axis lines up with."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.standard_normal((dim, dim)))[0][:, :rank]
    x = rng.standard_normal((n, rank)) @ basis.T + 0.05 * rng.standard_normal((n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize(("nbits", "centroids", "scale", "dims", "row_bytes"),
                         [(2, 0, False, 24, 6), (1, 0, False, 48, 6), (2, 8, True, 12, 7),
                          (1, 0, True, 1, 3), (2, 0, False, 500, 12)])
def test_projected_codes_score_as_their_decoded_tokens(nbits, centroids, scale, dims, row_bytes):
    """A code over principal directions: layout, JSON round trip, and the kernel's MaxSim (query
    projected) equal to the numpy MaxSim against the tokens decoded back to the tokens' space, on
    empty, one-token and long documents; `dims` above D keeps all D (a pure rotation)."""
    x = _low_rank_tokens()
    codec = ResidualCodec(nbits, centroids, scale=scale, niter=3, dims=dims).fit(x)
    kept = min(dims, 48)
    assert codec.code_dim == kept and codec.row_bytes == row_bytes
    np.testing.assert_allclose(codec.rotation @ codec.rotation.T, np.eye(kept), atol=1e-5)
    assert codec.describe()["projected_dims"] == kept
    again = ResidualCodec.from_dict(json.loads(json.dumps(codec.to_dict())))
    docs = [x[:40], x[40:41], x[41:41], x[41:400]]
    blobs = [codec.encode(d).tobytes() for d in docs]
    assert [again.encode(d).tobytes() for d in docs] == blobs
    q = _low_rank_tokens(7, seed=9)
    got = maxsim_blobs(codec, q, blobs)
    decoded = [codec.decode(codec.parse(b)) for b in blobs]
    assert all(d.shape[1] == 48 for d in decoded)
    offsets = np.concatenate([[0], np.cumsum([len(d) for d in decoded])])
    np.testing.assert_allclose(got, ref.maxsim(q, np.concatenate(decoded), offsets),
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(maxsim_blobs(again, q, blobs), got, rtol=1e-6)
    assert got[2] == 0.0
    with pytest.raises(ValueError, match="query: expected dimension 48"):
        codec.maxsim(q[:, :kept - 1 if kept > 1 else 2], codec.parse(blobs[0]), np.array([0, 40]))


def test_principal_directions_spend_the_bits_where_the_energy_is():
    """On correlated tokens, 2 bits over the 12 directions that hold the energy reconstruct
    better than 2 bits over each of the 48 axes, at a quarter of the bytes; and the kept
    directions span the sample's top singular subspace."""
    x = _low_rank_tokens()
    projected = ResidualCodec(2, 0, scale=False, dims=12).fit(x)
    plain = ResidualCodec(2, 0, scale=False).fit(x)
    assert projected.row_bytes * 4 == plain.row_bytes
    assert projected.reconstruction_error(x[:500]) < plain.reconstruction_error(x[:500])
    top = np.linalg.svd(x.astype(np.float64), full_matrices=False)[2][:12]
    overlap = np.linalg.svd(projected.rotation.astype(np.float64) @ top.T, compute_uv=False)
    assert overlap.min() > 0.999  # cosines of the principal angles between the two subspaces
    with pytest.raises(ValueError, match="dims must be a positive"):
        ResidualCodec(2, dims=0)


def test_old_codes_without_projection_still_load():
    """A bundle written before projections existed has no `dims` / `rotation`: it loads as the
    unprojected code it was, and scores the same."""
    x = _tokens(600)
    codec = ResidualCodec(2, 0, scale=False).fit(x)
    data = codec.to_dict()
    assert "rotation" not in data and "dims" not in data
    again = ResidualCodec.from_dict(json.loads(json.dumps(data)))
    assert again.rotation is None and again.code_dim == 48
    blobs = [codec.encode(x[:9]).tobytes()]
    np.testing.assert_array_equal(maxsim_blobs(again, x[9:12], blobs),
                                  maxsim_blobs(codec, x[9:12], blobs))


def test_projected_token_code_names():
    from osneural.ingest.plan import parse_token_code

    assert parse_token_code("bin2p192") == ("bin", 2, False, 192)
    assert parse_token_code("res1s") == ("res", 1, True, None)
    chosen = token_codec("bin2p192", 50_000, CodecParams())
    assert (chosen.nbits, chosen.n_centroids, chosen.dims) == (2, 0, 192)
    for bad in ("bin2p0", "bin2p", "bin2p-3", "bin2q192", "p192"):
        with pytest.raises(ValueError, match=f"token code {bad!r}"):
            CodecParams(token_code=bad)


def test_ingest_command_refuses_a_bad_token_code_before_any_work(capsys):
    """`osneural ingest --token-code` is checked by argparse: a malformed code exits 2 naming
    the flag and the value; `pq` and projected bit codes are taken as they are."""
    import argparse

    from osneural.ingest.commands import configure_ingest

    parser = argparse.ArgumentParser(prog="osneural ingest")
    configure_ingest(parser)
    for good in ("pq", "bin2p224", "res1s"):
        assert parser.parse_args(["corpus.jsonl", "--token-code", good]).token_code == good
    for bad in ("bin2p0", "bin2p999999", "bin3", "../bin2", "bin2p224;rm"):
        with pytest.raises(SystemExit) as exited:
            parser.parse_args(["corpus.jsonl", "--token-code", bad])
        assert exited.value.code == 2
        err = capsys.readouterr().err
        assert "--token-code" in err and repr(bad) in err
