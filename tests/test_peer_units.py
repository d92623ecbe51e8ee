"""Query- and ingest-side speed levers measured by bench/peer.py: they must not change results.

* token-budget batching of the encoders (`max_batch_tokens`): the batches respect both caps and
  the outputs equal one-text-at-a-time encoding;
* first stages read compact responses (`filter_path`): same candidates, shard failures still seen.
"""

from __future__ import annotations

import numpy as np
import pytest

TEXTS = [
    "Mitochondria produce ATP through oxidative phosphorylation in the inner membrane " * 6,
    "Short text.",
    "Vaccines train the immune system to recognise a pathogen without causing the disease. " * 3,
    "Rain forms when water vapour condenses on dust particles.",
    "",
    "ATP synthase couples the proton gradient to the phosphorylation of ADP " * 10,
    "Caffeine blocks adenosine receptors.",
]


def _batches(enc, texts):
    from osneural.encoders.runtime import EncodeStats

    ids = enc._tokenize(texts, "", enc.max_length, EncodeStats())
    order = sorted((i for i, x in enumerate(ids) if x is not None), key=lambda i: -len(ids[i]))
    return ids, list(enc._batches(order, ids))


@pytest.mark.parametrize("cap", [None, 1, 40, 200])
def test_token_budget_batches_respect_both_caps(cap):
    from osneural.encoders import load_default

    enc = load_default("sparse", batch_size=3, max_batch_tokens=cap)
    ids, batches = _batches(enc, TEXTS)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == sorted(i for i, x in enumerate(ids) if x is not None)  # each text once
    for b in batches:
        assert 1 <= len(b) <= 3
        width = max(len(ids[i]) for i in b)
        if cap is not None and len(b) > 1:
            assert len(b) * width <= cap
    if cap == 200:
        assert any(len(b) > 1 for b in batches) and any(len(b) < 3 for b in batches)


def test_every_default_encoder_has_a_token_budget():
    from osneural.encoders import load_default

    budgets = {kind: load_default(kind).max_batch_tokens for kind in ("sparse", "dense", "multivector")}
    # measured per graph (runtime.py): with SPLADE's vocabulary projected in chunks, 512 tokens
    # per run suit it as they suit MiniLM's activations
    assert budgets == {"sparse": 512, "dense": 512, "multivector": 512}
    assert load_default("dense", max_batch_tokens=4096).max_batch_tokens == 4096


@pytest.mark.parametrize("kind", ["dense", "sparse"])
def test_token_budget_does_not_change_outputs(kind):
    from osneural.encoders import load_default

    # fp32: int8's activation scales depend on the batch, which is not what this test is about
    capped = load_default(kind, precision="fp32", batch_size=32, max_batch_tokens=64).encode_documents(TEXTS)
    single = load_default(kind, precision="fp32", batch_size=1).encode_documents(TEXTS)
    if kind == "dense":
        np.testing.assert_allclose(np.asarray(capped), np.asarray(single), atol=1e-5)
        return
    for a, b in zip(capped, single, strict=True):
        keys = sorted(set(a) | set(b))
        assert len(keys) > 0 or not a
        np.testing.assert_allclose([a.get(k, 0.0) for k in keys], [b.get(k, 0.0) for k in keys],
                                   atol=1e-4)


def test_bad_token_budget_is_refused():
    from osneural.encoders import EncoderError, load_default

    with pytest.raises(EncoderError, match="max_batch_tokens"):
        load_default("sparse", max_batch_tokens=0)


QUERIES = [
    "0-dimensional biomaterials show inductive properties.",
    "ALDH1 expression is associated with poorer prognosis for breast cancer primary tumors.",
    "what makes coffee taste bitter",
]
LONG_QUERY = "the mitochondria produce ATP by oxidative phosphorylation " * 8  # > 32 tokens


def test_one_pass_gives_the_dense_query_vector():
    """The multivector graph's pooled output of a query equals the dense encoder's vector, so a
    dense + MaxSim query needs one model pass; a query cut at the token encoder's shorter
    length gets no stand-in (the dense encoder would see more of it)."""
    from osneural.encoders import load_default

    dense, mv = load_default("dense", precision="fp32"), load_default("multivector", precision="fp32")
    assert mv.shares_query_pass(dense)
    tokens, pooled = mv.encode_queries_and_pooled(QUERIES + [LONG_QUERY], dense)
    want = dense.encode_queries(QUERIES)
    for i in range(len(QUERIES)):
        np.testing.assert_allclose(pooled[i], want[i], atol=1e-5)
        np.testing.assert_allclose(tokens[i], mv.encode_queries([QUERIES[i]])[0], atol=1e-6)
    assert pooled[-1] is None
    assert mv.encode_queries_and_pooled(QUERIES, None)[1] == [None] * len(QUERIES)


def test_the_default_int8_passes_give_the_same_dense_query_vector():
    """With the defaults (dense and multivector int8) the token pass's pooled output is the int8
    dense encoder's vector, so a dense + MaxSim query takes one model pass and its dense vector
    does not depend on which encoder computed it."""
    from osneural.encoders import load_default

    dense, mv = load_default("dense"), load_default("multivector")
    assert dense.precision == mv.precision == "int8" and mv.shares_query_pass(dense)
    _tokens, pooled = mv.encode_queries_and_pooled(QUERIES, dense)
    want = dense.encode_queries(QUERIES)
    for i in range(len(QUERIES)):
        np.testing.assert_allclose(pooled[i], want[i], atol=1e-5)


def test_an_fp32_token_pass_stands_in_for_int8_dense_documents_never_queries():
    """With an fp32 token encoder beside the int8 dense one a document build with both takes
    one model pass: the fp32 pooled output stands in for the int8 dense vector (the fp32 vector,
    which int8 approximates). A query does not share the pass: its dense vector must not depend
    on whether some earlier spec loaded the token encoder, so it is always the int8 one."""
    from osneural.encoders import load_default

    dense8, dense32 = load_default("dense", precision="int8"), load_default("dense", precision="fp32")
    mv = load_default("multivector", precision="fp32")
    assert mv.precision == "fp32" and mv.shares_dense_pass(dense8)
    assert not mv.shares_query_pass(dense8) and mv.shares_query_pass(dense32)
    _tokens, pooled = mv.encode_documents_and_pooled(QUERIES)
    want32, want8 = dense32.encode_documents(QUERIES), dense8.encode_documents(QUERIES)
    for i in range(len(QUERIES)):
        np.testing.assert_allclose(pooled[i], want32[i], atol=1e-5)
        assert 0.98 < float(pooled[i] @ want8[i]) < 1.0 - 1e-6  # close to int8's, and not it
    assert mv.encode_queries_and_pooled(QUERIES, dense8)[1] == [None] * len(QUERIES)


class _Res:
    """The part of `IndexResources` query encodings read: the encoders the index was built with."""

    def __init__(self, encoders):
        self.index = "peer-units"
        self.meta = {"encoders": {k: {"name": k, "sha256": e.sha256} for k, e in encoders.items()}}

    def expected_encoder(self, kind):
        return self.meta["encoders"].get(kind)


def test_query_encodings_share_the_pass_only_with_a_token_stage():
    from osneural.plugin.resources import EncoderCache, ResourceCache
    from osneural.plugin.searcher import QueryEncodings

    cache = ResourceCache(EncoderCache("fp32"))
    dense = cache.encoders.get("dense")
    res = _Res({"dense": dense, "multivector": cache.encoders.get("multivector")})
    enc = QueryEncodings(QUERIES[1], res, cache)
    vec = enc.dense()
    assert "encode.shared" in enc.timings_ms  # one pass for both
    np.testing.assert_allclose(vec, dense.encode_queries([QUERIES[1]])[0], atol=1e-5)
    enc.tokens()
    assert "encode.tokens" in enc.timings_ms and "encode.shared" in enc.timings_ms

    long_enc = QueryEncodings(LONG_QUERY, res, cache)  # truncated by the token encoder
    np.testing.assert_allclose(long_enc.dense(), dense.encode_queries([LONG_QUERY])[0], atol=1e-6)

    # The defaults (dense int8, tokens fp32): the token encoder being loaded changes nothing,
    # the dense vector is the int8 encoder's, so rankings do not depend on the process's history.
    default = ResourceCache()
    dense8 = default.encoders.get("dense")
    assert dense8.precision == "int8"
    res8 = _Res({"dense": dense8, "multivector": default.encoders.get("multivector")})
    enc = QueryEncodings(QUERIES[1], res8, default)
    np.testing.assert_array_equal(enc.dense(), dense8.encode_queries([QUERIES[1]])[0])
    assert "encode.dense" in enc.timings_ms  # its own pass, not the token graph's

    only_dense = ResourceCache()
    only_dense.encoders.get("dense")
    enc = QueryEncodings(QUERIES[1], _Res({"dense": dense}), only_dense)
    enc.dense()
    assert "encode.shared" not in enc.timings_ms
