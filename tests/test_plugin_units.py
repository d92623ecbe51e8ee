"""Unit tests of the query plugin's pure parts: spec validation, fusion, query bodies, reordering."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from osneural.plugin import fusion, rescoring, stages
from osneural.plugin.search_body import check_fields, parse_options, parse_timeout
from osneural.plugin.server import _spec_from_body, index_allowed
from osneural.plugin.spec import (
    BinaryStage,
    BM25Stage,
    DenseStage,
    SparseStage,
    SpecError,
    builtin_spec_names,
    load_spec,
    parse_spec,
)

# ------------------------------------------------------------------ spec


def test_default_spec_is_bm25_rrf():
    spec = parse_spec(None)
    assert [s.type for s in spec.first_stages] == ["bm25"]
    assert spec.fusion.type == "rrf" and spec.size == 10 and spec.from_ == 0


def test_builtin_specs_load_and_hybrid_is_the_chosen_default():
    assert {"hybrid", "bm25", "dense", "binary", "multivector"} <= set(builtin_spec_names())
    hybrid = load_spec("hybrid")
    assert [s.type for s in hybrid.first_stages] == ["bm25", "dense", "sparse"]
    # docs/results.md: min-max linear fusion with equal weights, MaxSim blended at 0.2
    assert hybrid.fusion.type == "linear" and hybrid.fusion.normalization == "minmax"
    assert hybrid.fusion.weights is None
    assert [(r.type, r.window, r.combine, r.weight) for r in hybrid.rescore] == [
        ("maxsim", 100, "linear", 0.2)]
    # hybrid-linear is the same pipeline without MaxSim (indexes without token embeddings)
    linear = load_spec("hybrid-linear").to_dict()
    assert linear == {**hybrid.to_dict(), "rescore": []}


def test_spec_round_trips_through_aliases():
    spec = parse_spec({"from": 5, "_source": ["title"], "size": 3})
    data = spec.to_dict()
    assert data["from"] == 5 and data["_source"] == ["title"]
    assert parse_spec(data) == spec


@pytest.mark.parametrize(
    ("bad", "needle"),
    [
        ({"first_stages": [{"type": "colbert"}]}, "first_stages[0]: unknown type 'colbert'"),
        ({"first_stages": [{"type": "bm25"}, {"type": "dense", "k": 0}]}, "first_stages[1].k"),
        ({"first_stages": [{"k": 3}]}, "first_stages[0]: missing 'type'"),
        ({"rescore": [{"type": "maxsim", "windw": 5}]}, "rescore[0].windw: unknown field"),
        ({"rescore": [{"type": "rerank"}]}, "rescore[0]: unknown type 'rerank'"),
        ({"fusion": {"type": "borda"}}, "fusion: unknown type 'borda'"),
        ({"fusion": {"type": "linear", "normalization": "l2"}}, "fusion.normalization"),
        ({"fusion": {"type": "rrf", "weights": [1, 2]}}, "fusion.weights has 2 entries"),
        ({"fusion": {"type": "rrf", "weights": [0]}}, "at least one > 0"),
        ({"first_stages": []}, "first_stages"),
        ({"size": -1}, "size"),
        ({"first_stages": [{"type": "dense", "k": 50, "num_candidates": 10}]}, "num_candidates"),
        ({"filter": {"term": {"a": 1}, "range": {"b": {}}}}, "filter must be one"),
        ({"sizee": 3}, "sizee: unknown field"),
    ],
)
def test_malformed_specs_name_the_field(bad, needle):
    with pytest.raises(SpecError) as err:
        parse_spec(bad)
    assert needle in str(err.value)


def test_spec_from_json_text_and_garbage():
    assert parse_spec('{"size": 4}').size == 4
    with pytest.raises(SpecError, match="not valid JSON"):
        parse_spec("{size: 4")
    with pytest.raises(SpecError, match="JSON object"):
        parse_spec("[1, 2]")
    with pytest.raises(SpecError, match="unknown spec 'nope'"):
        load_spec("nope")


def test_spec_file(tmp_path):
    path = tmp_path / "mine.json"
    path.write_text('{"first_stages": [{"type": "dense", "k": 7}]}')
    assert load_spec(path).first_stages[0].k == 7
    with pytest.raises(SpecError, match="not found"):
        load_spec(tmp_path / "missing.json")


# ------------------------------------------------------------------ fusion

A = [("d1", 12.0), ("d2", 9.5), ("d3", 3.0)]
B = [("d3", 0.91), ("d1", 0.80), ("d4", 0.75), ("d5", 0.10)]


def test_rrf_hand_computed():
    out = dict(fusion.rrf([A, B], rank_constant=60))
    assert out["d1"] == pytest.approx(1 / 61 + 1 / 62)
    assert out["d3"] == pytest.approx(1 / 63 + 1 / 61)
    assert out["d2"] == pytest.approx(1 / 62)
    assert out["d5"] == pytest.approx(1 / 64)
    assert [d for d, _ in fusion.rrf([A, B])] == ["d1", "d3", "d2", "d4", "d5"]


def test_rrf_weights_and_zero_weight():
    out = dict(fusion.rrf([A, B], rank_constant=10, weights=[2.0, 0.5]))
    assert out["d1"] == pytest.approx(2 / 11 + 0.5 / 12)
    only_b = fusion.rrf([A, B], weights=[0.0, 1.0])
    assert [d for d, s in only_b if s > 0] == ["d3", "d1", "d4", "d5"]


def test_linear_minmax_hand_computed():
    out = dict(fusion.linear([A, B], "minmax", weights=[0.3, 0.7]))
    # A: (12, 9.5, 3) -> (1, 6.5/9, 0); B: (.91,.80,.75,.10) -> (1, .70/.81, .65/.81, 0)
    assert out["d1"] == pytest.approx(0.3 * 1 + 0.7 * 0.70 / 0.81)
    assert out["d2"] == pytest.approx(0.3 * 6.5 / 9)
    assert out["d3"] == pytest.approx(0.3 * 0 + 0.7 * 1)
    assert out["d4"] == pytest.approx(0.7 * 0.65 / 0.81)
    assert out["d5"] == pytest.approx(0.0)


def test_linear_zscore_hand_computed():
    out = dict(fusion.linear([A, B], "zscore"))
    a = np.array([12.0, 9.5, 3.0])
    b = np.array([0.91, 0.80, 0.75, 0.10])
    za, zb = (a - a.mean()) / a.std(), (b - b.mean()) / b.std()
    assert out["d1"] == pytest.approx(za[0] + zb[1])
    assert out["d2"] == pytest.approx(za[1])
    assert out["d5"] == pytest.approx(zb[3])


def test_constant_run_minmax_is_one_and_single_run_passes_through():
    assert fusion.normalize(np.array([2.0, 2.0]), "minmax").tolist() == [1.0, 1.0]
    assert fusion.fuse([A], "rrf") == A
    with pytest.raises(ValueError, match="unknown fusion"):
        fusion.fuse([A, B], "borda")


def test_fusion_ties_break_by_best_rank_then_id():
    # d2 and d9 get the same RRF score; d9 was ranked first by some run -> first.
    r1 = [("d9", 1.0), ("d2", 0.5)]
    r2 = [("d2", 1.0), ("d9", 0.5)]
    assert [d for d, _ in fusion.rrf([r1, r2])] == ["d2", "d9"]  # same best rank 0 -> by id


def test_stage_candidates_order_score_ties_by_id_whatever_copy_answered():
    # two copies of a shard return identical documents in their own Lucene order
    primary = {"hits": {"hits": [{"_id": "a.y", "_score": 3.0}, {"_id": "b", "_score": 2.5},
                                 {"_id": "a.x", "_score": 2.5}, {"_id": "c", "_score": 1.0}]}}
    replica = {"hits": {"hits": [{"_id": "a.y", "_score": 3.0}, {"_id": "a.x", "_score": 2.5},
                                 {"_id": "b", "_score": 2.5}, {"_id": "c", "_score": 1.0}]}}
    assert stages.candidates(primary) == stages.candidates(replica) == [
        ("a.y", 3.0), ("a.x", 2.5), ("b", 2.5), ("c", 1.0)]
    assert fusion.rrf([stages.candidates(primary)]) == fusion.rrf([stages.candidates(replica)])
    assert stages.candidates({}) == []  # an empty result drops `hits` under filter_path


def _ranx_run(runs):
    from ranx import Run

    return [Run({"q": {d: float(s) for d, s in run}}) for run in runs]


run_strategy = st.lists(
    st.tuples(st.integers(0, 40), st.floats(-50, 50, allow_nan=False, width=32)),
    min_size=2, max_size=25, unique_by=(lambda t: t[0], lambda t: t[1]),
).map(lambda xs: sorted([(f"d{i}", s) for i, s in xs], key=lambda t: -t[1]))


@settings(max_examples=15, deadline=None)
@given(st.lists(run_strategy, min_size=2, max_size=4), st.integers(1, 100))
def test_rrf_matches_ranx(runs, k):
    from ranx import fuse

    ours = dict(fusion.rrf(runs, rank_constant=k))
    theirs = fuse(_ranx_run(runs), method="rrf", params={"k": k}).to_dict()["q"]
    assert set(ours) == set(theirs)
    for doc_id, score in ours.items():
        assert score == pytest.approx(theirs[doc_id], rel=1e-9)


@settings(max_examples=15, deadline=None)
@given(st.lists(run_strategy, min_size=2, max_size=3), st.sampled_from(["minmax", "zscore"]))
def test_linear_matches_ranx_wsum(runs, norm):
    from ranx import fuse

    # ranx maps a constant list to 0 under min-max; we map it to 1 (documented), so skip those.
    if norm == "minmax" and any(max(s for _, s in r) - min(s for _, s in r) < 1e-6 for r in runs):
        return
    weights = [1.0 / (i + 1) for i in range(len(runs))]
    ours = dict(fusion.linear(runs, norm, weights))
    theirs = fuse(
        _ranx_run(runs), norm={"minmax": "min-max", "zscore": "zmuv"}[norm],
        method="wsum", params={"weights": weights},
    ).to_dict()["q"]
    for doc_id, score in ours.items():
        assert score == pytest.approx(theirs[doc_id], rel=1e-6, abs=1e-6)


# ------------------------------------------------------------------ query bodies


def test_bm25_body_with_filter():
    q = stages.bm25_query(BM25Stage(fields=["title^2", "text"]), "heart attack", {"term": {"x": 1}})
    assert q == {"bool": {
        "must": [{"multi_match": {"query": "heart attack", "fields": ["title^2", "text"],
                                  "type": "best_fields"}}],
        "filter": [{"term": {"x": 1}}]}}
    assert "bool" not in stages.bm25_query(BM25Stage(), "x")


def test_dense_body_uses_ef_search_and_efficient_filter():
    q = stages.dense_query(DenseStage(k=5, num_candidates=50), np.ones(3), {"term": {"x": 1}})
    knn = q["knn"]["dense"]
    assert knn["k"] == 5 and knn["vector"] == [1.0, 1.0, 1.0]
    assert knn["method_parameters"] == {"ef_search": 50}
    assert knn["filter"] == {"term": {"x": 1}}
    with pytest.raises(ValueError, match="finite"):
        stages.dense_query(DenseStage(), np.array([np.nan, 1.0]))


def test_sparse_body_sanitizes_sums_and_caps_terms():
    weights = {"heart": 1.5, "u.s.": 0.5, "neg": -1.0, "zero": 0.0, "b": 2.0}
    q = stages.sparse_query(SparseStage(max_terms=2), weights, {"term": {"x": 1}})
    should = q["bool"]["should"]
    assert [c["rank_feature"]["field"] for c in should] == ["sparse.b", "sparse.heart"]
    assert [c["rank_feature"]["boost"] for c in should] == [2.0, 1.5]
    assert all(c["rank_feature"]["linear"] == {} for c in should)
    assert q["bool"]["filter"] == [{"term": {"x": 1}}]
    q = stages.sparse_query(SparseStage(), {"u.s.": 0.5})
    assert q["bool"]["should"][0]["rank_feature"]["field"] == "sparse.u%2Es%2E"
    with pytest.raises(ValueError, match="no positive-weight"):
        stages.sparse_query(SparseStage(), {"a": -1.0})


def test_binary_body_counts_distinct_terms():
    q = stages.binary_query(BinaryStage(), ["00:ab", "01:cd", "00:ab"])
    terms = [c["constant_score"]["filter"]["term"]["bin_tokens"] for c in q["bool"]["should"]]
    assert terms == ["00:ab", "01:cd"]


# ------------------------------------------------------------------ rescoring helpers


def test_reorder_window_keeps_tail_and_sinks_missing():
    cands = [("a", 5.0), ("b", 4.0), ("c", 3.0), ("d", 2.0)]
    out = rescoring.reorder(cands, 3, np.array([0.1, np.nan, 0.9]))
    assert [d for d, _ in out] == ["c", "a", "b", "d"]
    assert out[2][1] == pytest.approx(0.1)  # missing gets the window's floor
    assert out[3] == ("d", 2.0)
    with pytest.raises(ValueError):
        rescoring.reorder(cands, 2, np.array([1.0]))


def test_hamming_scores_against_numpy():
    rng = np.random.default_rng(0)
    q = rng.integers(0, 256, 8, dtype=np.uint8)
    codes = rng.integers(0, 256, (20, 8), dtype=np.uint8)
    ids = [f"d{i}" for i in range(21)]
    raw = {f"d{i}": codes[i].tobytes() for i in range(20)}
    got = rescoring.hamming_scores(q, raw, ids, 64, "bin_code")
    ref = 64 - np.unpackbits(q[None] ^ codes, axis=1).sum(1)
    assert np.array_equal(got[:20], ref) and math.isnan(got[20])
    with pytest.raises(ValueError, match="document 'd0'"):
        rescoring.hamming_scores(q, {"d0": b"\x00"}, ["d0"], 64, "bin_code")


def test_pq_and_maxsim_scores_against_numpy():
    rng = np.random.default_rng(1)
    m, dsub = 4, 3
    books = rng.standard_normal((m, 256, dsub)).astype(np.float32)
    q = rng.standard_normal(m * dsub).astype(np.float32)
    codes = rng.integers(0, 256, (6, m), dtype=np.uint8)
    lut = np.einsum("mkd,md->mk", books, q.reshape(m, dsub))
    ids = [f"d{i}" for i in range(6)]
    raw = {d: codes[i].tobytes() for i, d in enumerate(ids)}
    got = rescoring.pq_scores(lut, raw, ids, "dense_pq")
    decoded = np.concatenate([books[j, codes[:, j]] for j in range(m)], axis=1)
    assert np.allclose(got, decoded @ q, atol=1e-4)

    qt = rng.standard_normal((3, m * dsub)).astype(np.float32)
    lens = [2, 0, 5]
    tok = [rng.integers(0, 256, (n, m), dtype=np.uint8) for n in lens]
    raw = {"a": tok[0].tobytes(), "b": b"", "c": tok[2].tobytes()}
    got = rescoring.maxsim_scores(qt, raw, ["a", "b", "c", "zz"], books, "mv_codes")
    for i, t in ((0, tok[0]), (2, tok[2])):
        dec = np.concatenate([books[j, t[:, j]] for j in range(m)], axis=1)
        assert got[i] == pytest.approx((qt @ dec.T).max(1).sum(), rel=1e-4)
    assert math.isnan(got[1]) and math.isnan(got[3])
    with pytest.raises(ValueError, match=r"'a'.*multiple of 4 \(PQ codes with M=4\)"):
        rescoring.maxsim_scores(qt, {"a": b"\x01\x02\x03"}, ["a"], books, "mv_codes")


def test_maxsim_float16_scores_against_numpy():
    rng = np.random.default_rng(3)
    qt = rng.standard_normal((4, 6)).astype(np.float32)
    tok = {"a": rng.standard_normal((3, 6)).astype(np.float16),
           "c": rng.standard_normal((1, 6)).astype(np.float16)}
    raw = {k: v.astype("<f2").tobytes() for k, v in tok.items()} | {"b": b""}
    got = rescoring.maxsim_float16_scores(qt, raw, ["a", "b", "c", "zz"], "mv_f16")
    for i, k in ((0, "a"), (2, "c")):
        want = (qt @ tok[k].astype(np.float32).T).max(1).sum()
        assert got[i] == pytest.approx(want, rel=1e-5)
    assert math.isnan(got[1]) and math.isnan(got[3])  # no tokens, no document: sink, not fail
    with pytest.raises(ValueError, match=r"'a'.*multiple of 12 \(float16 tokens of dimension 6\)"):
        rescoring.maxsim_float16_scores(qt, {"a": b"\x00" * 14}, ["a"], "mv_f16")


# ------------------------------------------------------------------ server helpers


def test_allow_list():
    assert index_allowed("anything", None)
    assert index_allowed("docs-1", ["docs-*"])
    # with an allow-list a path names one index: lists and wildcards are refused (issue #12)
    assert not index_allowed("docs-1,docs-2", ["docs-*"])
    assert not index_allowed("docs-1,secret", ["docs-*"])
    assert not index_allowed("*", ["docs-*"])
    assert not index_allowed("_all", ["docs-*"])
    assert not index_allowed("docs-*", ["docs-*"])


def test_body_to_spec_overrides_and_filter():
    req = _spec_from_body({
        "size": 3, "from": 1, "_source": ["title"], "query": {"term": {"t": "a"}},
        "ext": {"osneural": {"query": "hello", "spec": "bm25", "explain": True}},
    })
    assert req.text == "hello" and req.spec_name == "bm25"
    spec = parse_options(req.options).apply(req.spec)
    assert spec.size == 3 and spec.from_ == 1
    assert spec.source == ["title"] and spec.explain and spec.filter == {"term": {"t": "a"}}
    assert _spec_from_body({"ext": {"osneural": {"query": "x"}}}).spec is None  # the default
    with pytest.raises(SpecError, match="query text is empty"):
        _spec_from_body({"ext": {"osneural": {"query": "  "}}})
    # body options a search page needs are accepted; what stays refused names field and reason
    req = _spec_from_body({"aggs": {"c": {"terms": {"field": "c"}}}, "sort": ["year"],
                           "ext": {"osneural": {"query": "x"}}})
    assert parse_options(req.options).aggs == {"c": {"terms": {"field": "c"}}}
    with pytest.raises(SpecError, match=r"\[suggest\].*plain _search"):
        _spec_from_body({"suggest": {}, "ext": {"osneural": {"query": "x"}}})
    with pytest.raises(SpecError, match="first_stages\\[0\\]"):
        _spec_from_body({"ext": {"osneural": {"query": "x", "spec": {"first_stages": [{"type": "?"}]}}}})


@pytest.mark.parametrize("body, needle", [
    ({"search_after": [1.0]}, "search_after: 1 values, but hits of this request carry 2"),
    ({"sort": ["year"], "search_after": [1.0, "a"]}, "carry 3 sort values"),
    ({"search_after": [1.0, "a"], "from": 5}, "from: must be 0 with search_after"),
    ({"sort": [{"year": "up"}]}, "sort\\[0\\].year.order"),
    ({"sort": ["_doc"]}, "sort\\[0\\]: _doc"),
    ({"collapse": {"field": "c", "inner_hits": {}}}, "collapse: \\['inner_hits'\\]"),
    ({"min_score": "high"}, "min_score: must be a number"),
    ({"track_total_hits": "yes"}, "track_total_hits"),
    ({"timeout": "soon"}, "timeout: must be a time value"),
    ({"aggs": {"a": 3}}, "aggs.a: must be an aggregation object"),
    ({"post_filter": {"term": {}, "match": {}}}, "post_filter: must be one query clause"),
    ({"highlight": {}}, "highlight: must be an object with"),
])
def test_search_options_refuse_bad_input_naming_the_field(body, needle):
    with pytest.raises(SpecError, match=needle):
        parse_options(body)


def test_search_options_fields_are_checked_against_the_mapping():
    fields = {"c": {"type": "keyword"}, "t": {"type": "text", "fields": {"raw": {"type": "keyword"}}},
              "n": {"type": "integer"}, "dense": {"type": "knn_vector"}}
    check_fields(parse_options({"sort": ["t.raw", {"n": "desc"}, "_score"], "collapse": {"field": "n"},
                                "aggs": {"a": {"terms": {"field": "c"},
                                               "aggs": {"m": {"max": {"field": "n"}}}}}}), fields, "i")
    for body, needle in (({"sort": ["nope"]}, r"sort\[0\]: index \[i\] has no field \[nope\]"),
                         ({"sort": ["t"]}, r"sort\[0\]: field \[t\] is of type text"),
                         ({"collapse": {"field": "t"}}, r"collapse.field: field \[t\] is of type text"),
                         ({"aggs": {"a": {"terms": {"field": "c"}, "aggs": {
                             "b": {"avg": {"field": "zz"}}}}}}, r"aggs.a.aggs.b.avg.field: .*\[zz\]"),
                         ({"aggs": {"a": {"terms": {"field": "dense"}}}}, "knn_vector")):
        with pytest.raises(SpecError, match=needle):
            check_fields(parse_options(body), fields, "i")
    assert parse_timeout("2s") == 2000 and parse_timeout(150) == 150


def test_parse_spec_accepts_builtin_names_and_rejects_unknown_ones():
    from osneural.plugin.spec import SpecError, load_spec, parse_spec

    assert parse_spec("hybrid") == load_spec("hybrid")
    with pytest.raises(SpecError, match="unknown spec 'hybird'"):
        parse_spec("hybird")
    with pytest.raises(SpecError, match="not valid JSON"):
        parse_spec("{broken")


def test_combine_scores_modes():
    import numpy as np
    from osneural.plugin.rescoring import combine_scores

    prev = [3.0, 2.0, 1.0]  # incoming window, best first
    new = np.array([0.1, 0.9, np.nan])
    assert np.array_equal(combine_scores(prev, new, "replace"), new, equal_nan=True)
    rrf = combine_scores(prev, new, "rrf", weight=0.5, rank_constant=0)
    # ranks: prev 1,2,3; new 2,1,3 (NaN takes the worst score, ties keep incoming order)
    np.testing.assert_allclose(rrf, [0.5 / 1 + 0.5 / 2, 0.5 / 2 + 0.5 / 1, 0.5 / 3 + 0.5 / 3])
    lin = combine_scores(prev, new, "linear", weight=0.25)
    np.testing.assert_allclose(lin, [0.75 * 1.0 + 0.0, 0.75 * 0.5 + 0.25, 0.0 + 0.0])
    assert np.isnan(combine_scores(prev, np.full(3, np.nan), "linear")).all()
    with pytest.raises(ValueError, match="unknown combine mode"):
        combine_scores(prev, new, "max")


def test_binary_query_weights_exact_substrings_above_near_ones():
    from osneural.plugin.spec import BinaryStage
    from osneural.plugin.stages import binary_query

    q = binary_query(BinaryStage(radius=1), ["00:a", "00:b", "01:c"], None, {"00:a", "01:c"})
    boosts = {c["constant_score"]["filter"]["term"]["bin_tokens"]: c["constant_score"]["boost"]
              for c in q["bool"]["should"]}
    assert boosts == {"00:a": 2.0, "00:b": 1.0, "01:c": 2.0}


def test_stage_bodies_are_json_bytes_unless_orjson_would_change_them():
    import json

    vec = np.random.default_rng(0).standard_normal(384).astype(np.float32)
    body = stages.search_body(stages._knn_query("dense", vec, 10, 100, {"term": {"lang": "en"}}), 10)
    out = stages.encode_body(body)
    assert isinstance(out, bytes) and json.loads(out) == json.loads(json.dumps(body))
    # orjson writes NaN / Infinity as null, which would make a range filter unbounded: such a
    # body keeps the standard serializer (NaN, refused by OpenSearch), as does a 65-bit integer
    for hostile in ({"range": {"year": {"gte": float("nan")}}},
                    {"range": {"year": {"lte": float("inf")}}},
                    {"term": {"id": 2**70}}):
        wrapped = stages.search_body({"bool": {"filter": [hostile]}}, 10)
        assert stages.encode_body(wrapped) is wrapped


# ------------------------------------------------------------------ search options beside a pipeline


def test_default_spec_is_hybrid_else_the_best_the_index_can_run():
    from osneural.plugin.resources import IndexResources
    from osneural.plugin.searcher import default_spec

    text = {"title": {"type": "text"}, "text": {"type": "text"}}
    every = {**text, **{f: {"type": "knn_vector"} for f in ("dense", "fde")},
             "sparse": {"type": "rank_features"}, "mv_codes": {"type": "binary"},
             "bin_tokens": {"type": "keyword"}, "bin_code": {"type": "binary"},
             "dense_pq": {"type": "binary"}}
    assert default_spec(IndexResources("i", every, {}, codec_data={}))[1] == "hybrid"
    assert default_spec(IndexResources("i", every, {}, codec_data=None))[1] == "hybrid-linear"
    assert default_spec(IndexResources("i", text, {}))[1] == "bm25"
    assert default_spec(IndexResources("i", {**text, "dense": {"type": "knn_vector"}},
                                       {"default_spec": "dense"}))[1] == "dense"
    assert default_spec(IndexResources("i", text, {"default_spec": "dense"}))[1] == "bm25"


def test_sort_values_compare_like_opensearch():
    from osneural.plugin.search_body import SortKey
    from osneural.plugin.searcher import _compare

    asc, desc = SortKey("f", False, False, {}), SortKey("f", True, False, {})
    first = SortKey("f", True, True, {})
    assert _compare([1], [2], (asc,)) < 0 < _compare([1], [2], (desc,))
    assert _compare(["b"], ["a"], (asc,)) > 0 and _compare(["é"], ["z"], (asc,)) > 0  # code points
    for key in (asc, desc):  # missing values last whatever the order
        assert _compare([None], ["a"], (key,)) > 0 and _compare(["a"], [None], (key,)) < 0
    assert _compare([None], ["a"], (first,)) < 0
    assert _compare([1, None], [1, 5], (asc, asc)) > 0 and _compare([1, 2], [1, 2], (asc, asc)) == 0
