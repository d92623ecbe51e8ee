"""The query plugin against a real OpenSearch node: every stage, both fusions, every rescorer,
filters, the three interfaces, pass-through, limits and the timeout fallback.

The index is built here with the agreed field layout and the real codecs; the query encoders are
small deterministic bag-of-words models (a test double for the ONNX encoders only, so the tests
run without exported models). OpenSearch itself is never mocked.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
import zlib

import httpx
import numpy as np
import pytest
from osneural.ingest.documents import b64, sparse_feature_name
from osneural.mappings import compose_index_body, vectors_out_of_source
from osneural.plugin import Searcher, SpecError, load_spec
from osneural.plugin.resources import EncoderCache, ResourceCache, StageError
from osneural.plugin.searcher import SearchError

from osneural.codecs import BinaryQuantizer, CodecBundle, MuveraFDE, ProductQuantizer
from osneural.codecs import code_tokens as mih_code_tokens
from osneural.codecs.bundle import CODECS_INDEX, store_bundle

pytestmark = pytest.mark.integration

DIM = 16
VOCAB = ["heart", "cancer", "cell", "gene", "protein", "virus", "brain", "lung", "blood", "drug", "trial", "mouse", "insulin", "tumor", "immune", "vaccine", "u.s.", "diet", "sleep", "bone"]


def _word_vec(word: str) -> np.ndarray:
    v = np.random.default_rng(zlib.crc32(word.encode())).standard_normal(DIM)
    return (v / np.linalg.norm(v)).astype(np.float32)


class _Enc:
    def __init__(self, kind: str) -> None:
        self.manifest = {"name": f"test-{kind}", "kind": kind, "sha256": f"sha-test-{kind}"}

    @staticmethod
    def _words(text: str) -> list[str]:
        return [w for w in text.lower().split() if w]


class DenseEnc(_Enc):
    def __init__(self) -> None:
        super().__init__("dense")

    def encode_queries(self, texts):
        out = np.stack([sum(_word_vec(w) for w in self._words(t)) for t in texts])
        return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32)

    encode_documents = encode_queries


class SparseEnc(_Enc):
    def __init__(self) -> None:
        super().__init__("sparse")

    def encode_queries(self, texts, idf=None):
        # Like SparseEncoder: an IDF table switches to inference-free (tokens only, no model);
        # this stand-in weighs every query word 1.0 then.
        if idf is not None:
            return [{w: 1.0 for w in self._words(t)} for t in texts]
        return [{w: 1.0 + len(w) / 10 for w in self._words(t)} for t in texts]

    def encode_documents(self, texts):
        return self.encode_queries(texts)


class MultiEnc(_Enc):
    def __init__(self) -> None:
        super().__init__("multivector")

    def encode_queries(self, texts):
        return [np.stack([_word_vec(w) for w in self._words(t)]) for t in texts]

    encode_documents = encode_queries


def _corpus(n: int = 80) -> list[dict]:
    rng = np.random.default_rng(7)
    docs = []
    for i in range(n):
        words = list(rng.choice(VOCAB, size=rng.integers(3, 7), replace=False))
        docs.append({"id": f"doc{i}", "title": " ".join(words[:2]), "text": " ".join(words),
                     "year": int(2000 + i % 5)})
    return docs


@pytest.fixture(scope="module")
def cache() -> ResourceCache:
    enc = EncoderCache()
    enc.put("dense", DenseEnc())
    enc.put("sparse", SparseEnc())
    enc.put("multivector", MultiEnc())
    return ResourceCache(enc)


def build_plugin_index(client, name: str, settings: dict | None = None) -> dict:
    """A small index with every representation, its codec bundle stored beside it; its
    documents are written without `osneural_id` (`settings` may name a final pipeline)."""
    docs = _corpus()
    dense_enc, sparse_enc, mv_enc = DenseEnc(), SparseEnc(), MultiEnc()
    texts = [d["text"] for d in docs]
    dense = dense_enc.encode_documents(texts)
    tokens = mv_enc.encode_documents(texts)
    rng = np.random.default_rng(0)
    train = np.concatenate([dense, rng.standard_normal((600, DIM)).astype(np.float32)])
    bq = BinaryQuantizer().fit(dense)
    pq_dense = ProductQuantizer(M=4).fit(train)
    all_tok = np.concatenate(tokens + [rng.standard_normal((600, DIM)).astype(np.float32)])
    pq_tok = ProductQuantizer(M=4).fit(all_tok)
    fde = MuveraFDE(dim=DIM, k_sim=2, reps=2, d_proj=8)
    bundle = CodecBundle(binary=bq, pq_dense=pq_dense, pq_tokens=pq_tok, fde=fde,
                         params={"mih_m": 4, "mih_radius": 1, "idf": {"format": "stand-in"}})
    codes = bq.encode(dense)
    terms = mih_code_tokens(codes, 4, n_bits=bq.n_bits)
    fdes = np.stack([fde.encode_document(t) for t in tokens])
    meta = {"schema_version": 1,
            "encoders": {k: e.manifest for k, e in
                         (("dense", dense_enc), ("sparse", sparse_enc), ("multivector", mv_enc))}}
    body = compose_index_body(["text", "dense", "sparse", "binary", "pq", "multivector",
                               "float_tokens"],
                              dense_dim=DIM, fde_dim=fdes.shape[1], meta=meta, settings=settings)
    body["mappings"]["properties"]["year"] = {"type": "integer"}
    vectors_out_of_source(body)  # the layout `osneural ingest` gives a new index
    client.indices.create(index=name, body=body)
    lines = []
    for i, d in enumerate(docs):
        src = {
            "title": d["title"], "text": d["text"], "year": d["year"],
            "dense": dense[i].tolist(),
            "sparse": {sparse_feature_name(t): w for t, w in sparse_enc.encode_documents([d["text"]])[0].items()},
            "bin_tokens": terms[i], "bin_code": b64(codes[i]),
            "dense_pq": b64(pq_dense.encode(dense[i][None])[0]),
            "mv_codes": b64(pq_tok.encode(tokens[i])), "fde": fdes[i].tolist(),
            "mv_f16": b64(tokens[i].astype("<f2").view(np.uint8)),
        }
        lines += [json.dumps({"index": {"_index": name, "_id": d["id"]}}), json.dumps(src)]
    resp = client.bulk(body="\n".join(lines) + "\n", refresh=True)
    assert not resp["errors"], resp
    store_bundle(client, name, bundle)
    return {"name": name, "docs": {d["id"]: d for d in docs}, "dense": dense, "tokens": tokens,
            "bundle": bundle, "codes": codes}


@pytest.fixture(scope="module")
def plugin_index(opensearch_client, cache):
    """`build_plugin_index`: hits' ids read from `_id` (no id pipeline)."""
    client = opensearch_client
    name = f"test-plugin-{uuid.uuid4().hex[:8]}"
    yield build_plugin_index(client, name)
    client.indices.delete(index=name, ignore_unavailable=True)
    client.delete(index=CODECS_INDEX, id=name, ignore=404)


def _ids(resp) -> list[str]:
    return [h["_id"] for h in resp["hits"]["hits"]]


@pytest.fixture
def searcher(opensearch_client, plugin_index, cache):
    s = Searcher(opensearch_client, plugin_index["name"], cache=cache)
    yield s
    s.close()


# ------------------------------------------------------------------ first stages


def test_binary_doc_values_come_back_base64(opensearch_client, plugin_index):
    from osneural.plugin.rescoring import fetch_codes

    raw = fetch_codes(opensearch_client, plugin_index["name"], ["doc3"], "bin_code")
    assert np.frombuffer(raw["doc3"], np.uint8).tolist() == plugin_index["codes"][3].tolist()


def test_bm25_stage_finds_the_term(searcher, plugin_index):
    resp = searcher.search("insulin", {"first_stages": [{"type": "bm25", "k": 50}], "size": 50})
    ids = _ids(resp)
    expected = {i for i, d in plugin_index["docs"].items() if "insulin" in d["text"].split()}
    assert set(ids) == expected and expected
    hit = resp["hits"]["hits"][0]
    assert hit["_index"] == plugin_index["name"] and "insulin" in hit["_source"]["text"]
    assert resp["hits"]["max_score"] == hit["_score"]


def test_dense_stage_matches_numpy_nearest(searcher, plugin_index):
    q = "heart gene"
    resp = searcher.search(q, {"first_stages": [{"type": "dense", "k": 5, "num_candidates": 80}],
                               "size": 5})
    qv = DenseEnc().encode_queries([q])[0]
    order = np.argsort(-(plugin_index["dense"] @ qv))[:5]
    assert _ids(resp) == [f"doc{i}" for i in order]


def test_sparse_stage_is_the_dot_product(searcher, plugin_index):
    q = "u.s. diet"
    for mode in ("model", "inference_free"):
        resp = searcher.search(q, {"first_stages": [{"type": "sparse", "k": 80, "mode": mode}],
                                   "size": 80})
        qw = SparseEnc().encode_queries([q], idf=None if mode == "model" else {})[0]
        want = {}
        for i, d in plugin_index["docs"].items():
            dw = SparseEnc().encode_documents([d["text"]])[0]
            s = sum(qw[t] * dw[t] for t in qw if t in dw)
            if s > 0:
                want[i] = s
        got = {h["_id"]: h["_score"] for h in resp["hits"]["hits"]}
        assert set(got) == set(want) and want
        for i, s in want.items():  # rank_feature keeps ~9 significant bits
            assert got[i] == pytest.approx(s, rel=1e-2)


def test_binary_stage_and_hamming_rescoring(searcher, plugin_index):
    q = "brain tumor"
    resp = searcher.search(q, {"first_stages": [{"type": "binary", "k": 80, "radius": 1}],
                               "rescore": [{"type": "hamming", "window": 80}], "size": 10,
                               "explain": True})
    bq = plugin_index["bundle"].binary
    qcode = bq.encode(DenseEnc().encode_queries([q]))[0]
    dist = np.unpackbits(plugin_index["codes"] ^ qcode, axis=1)[:, : bq.n_bits].sum(1)
    hits = resp["hits"]["hits"]
    assert hits
    for h in hits:
        i = int(h["_id"][3:])
        assert h["_score"] == pytest.approx(bq.n_bits - dist[i])
        assert "binary" in h["_explanation"]["first_stages"]
        assert "hamming" in h["_explanation"]["rescore"]
    assert [h["_score"] for h in hits] == sorted((h["_score"] for h in hits), reverse=True)


def test_fde_stage_and_maxsim_rescoring(searcher, plugin_index):
    q = "vaccine immune virus"
    resp = searcher.search(q, {"first_stages": [{"type": "fde", "k": 80, "num_candidates": 80}],
                               "rescore": [{"type": "maxsim", "window": 80}], "size": 10})
    pq = plugin_index["bundle"].pq_tokens
    qt = MultiEnc().encode_queries([q])[0]
    exact = {}
    for i, toks in enumerate(plugin_index["tokens"]):
        dec = pq.decode(pq.encode(toks))
        exact[f"doc{i}"] = float((qt @ dec.T).max(1).sum())
    got = resp["hits"]["hits"]
    want = sorted(exact, key=lambda k: -exact[k])[:10]
    assert {h["_id"] for h in got} == set(want)
    for h in got:
        assert h["_score"] == pytest.approx(exact[h["_id"]], rel=1e-4)


def test_rescoring_from_the_code_cache_answers_as_a_plain_fetch(opensearch_client, plugin_index):
    """Warm queries score cached codes (only versions are read); the answer is the one a
    searcher without the cache gives, for every rescoring stage that reads doc values."""
    spec = {"first_stages": [{"type": "bm25", "k": 40}, {"type": "dense", "k": 40}],
            "rescore": [{"type": "hamming", "window": 40}, {"type": "pq", "window": 30},
                        {"type": "maxsim", "window": 20, "combine": "linear", "weight": 0.3}],
            "size": 10}
    enc = EncoderCache()
    for kind, e in (("dense", DenseEnc()), ("sparse", SparseEnc()), ("multivector", MultiEnc())):
        enc.put(kind, e)
    cached_res = ResourceCache(enc)
    with_cache = Searcher(opensearch_client, plugin_index["name"], cache=cached_res)
    without = Searcher(opensearch_client, plugin_index["name"], cache=ResourceCache(enc),
                       code_cache=False)
    try:
        for q in ("vaccine immune virus", "insulin glucose", "vaccine immune virus"):
            a, b = with_cache.search(q, spec), without.search(q, spec)
            assert [(h["_id"], h["_score"]) for h in a["hits"]["hits"]] == \
                [(h["_id"], h["_score"]) for h in b["hits"]["hits"]]
        assert cached_res.codes.hits > 0 and len(cached_res.codes) > 0
    finally:
        with_cache.close()
        without.close()


def test_maxsim_over_float16_tokens_is_exact(searcher, plugin_index):
    q = "vaccine immune virus"
    resp = searcher.search(q, {"first_stages": [{"type": "fde", "k": 80, "num_candidates": 80}],
                               "rescore": [{"type": "maxsim", "window": 80, "tokens": "float16"}],
                               "size": 10})
    qt = MultiEnc().encode_queries([q])[0]
    exact = {f"doc{i}": float((qt @ t.astype(np.float16).astype(np.float32).T).max(1).sum())
             for i, t in enumerate(plugin_index["tokens"])}
    got = resp["hits"]["hits"]
    # the ten best exact scores, best first (ids may swap within ties of this small corpus)
    assert [h["_score"] for h in got] == pytest.approx(sorted(exact.values())[::-1][:10], rel=1e-5)
    for h in got:
        assert h["_score"] == pytest.approx(exact[h["_id"]], rel=1e-5)


def test_pq_and_dense_rescoring(searcher, plugin_index):
    q = "lung cancer trial"
    spec = {"first_stages": [{"type": "bm25", "k": 80}],
            "rescore": [{"type": "pq", "window": 40}, {"type": "dense", "window": 10}], "size": 10}
    resp = searcher.search(q, spec)
    qv = DenseEnc().encode_queries([q])[0]
    cos = {f"doc{i}": float(v @ qv) for i, v in enumerate(plugin_index["dense"])}
    hits = resp["hits"]["hits"]
    # the dense stage reorders the top 10 by exact cosine, on the k-NN (1 + cos) / 2 scale
    assert [h["_id"] for h in hits] == sorted(_ids(resp), key=lambda k: -cos[k])
    for h in hits:
        assert h["_score"] == pytest.approx((1 + cos[h["_id"]]) / 2, abs=1e-4)


# ------------------------------------------------------------------ fusion, filter, paging


@pytest.mark.parametrize("fusion", [{"type": "rrf", "rank_constant": 10},
                                    {"type": "linear", "normalization": "zscore",
                                     "weights": [0.4, 0.6]}])
def test_fusion_of_two_stages_matches_fusion_of_single_stage_runs(searcher, fusion):
    from osneural.plugin import fusion as fusion_mod

    q = "blood drug"
    bm = searcher.search(q, {"first_stages": [{"type": "bm25", "k": 30}], "size": 30,
                             "_source": False})
    de = searcher.search(q, {"first_stages": [{"type": "dense", "k": 30}], "size": 30,
                             "_source": False})
    runs = [[(h["_id"], h["_score"]) for h in r["hits"]["hits"]] for r in (bm, de)]
    want = fusion_mod.fuse(runs, fusion["type"], weights=fusion.get("weights"),
                           rank_constant=fusion.get("rank_constant", 60),
                           normalization=fusion.get("normalization", "minmax"))[:10]
    resp = searcher.search(q, {"first_stages": [{"type": "bm25", "k": 30},
                                                {"type": "dense", "k": 30}],
                               "fusion": fusion, "size": 10, "_source": False})
    assert _ids(resp) == [d for d, _ in want]
    assert "_source" not in resp["hits"]["hits"][0]


def test_filter_applies_to_every_stage(searcher, plugin_index):
    spec = {"first_stages": [{"type": "bm25", "k": 50}, {"type": "dense", "k": 50},
                             {"type": "sparse", "k": 50}, {"type": "binary", "k": 50},
                             {"type": "fde", "k": 50}],
            "filter": {"term": {"year": 2003}}, "size": 50, "explain": True}
    resp = searcher.search("heart protein cell", spec)
    hits = resp["hits"]["hits"]
    assert hits and all(h["_source"]["year"] == 2003 for h in hits)
    stages_seen = {s for h in hits for s in h["_explanation"]["first_stages"]}
    assert stages_seen == {"bm25", "dense", "sparse", "binary", "fde"}


def test_paging_and_source_filtering(searcher):
    spec = {"first_stages": [{"type": "dense", "k": 20}], "size": 5}
    full = _ids(searcher.search("sleep bone", {**spec, "size": 10}))
    page2 = searcher.search("sleep bone", {**spec, "from": 5, "_source": ["title"]})
    assert _ids(page2) == full[5:10]
    assert set(page2["hits"]["hits"][0]["_source"]) == {"title"}


# ------------------------------------------------------------------ errors and fallback


def test_bad_input_errors(searcher, opensearch_client, index_name):
    from opensearchpy import NotFoundError

    with pytest.raises(SpecError, match="empty"):
        searcher.search("   ", None)
    with pytest.raises(SpecError, match="first_stages\\[0\\]"):
        searcher.search("x", {"first_stages": [{"type": "nope"}]})
    opensearch_client.indices.create(index=index_name, body={"mappings": {"properties": {
        "title": {"type": "text"}, "text": {"type": "text"}}}})
    plain = Searcher(opensearch_client, index_name, cache=searcher.cache)
    with pytest.raises(StageError, match=r"first_stages\[1\] \(dense\).*no field 'dense'"):
        plain.search("x", {"first_stages": [{"type": "bm25"}, {"type": "dense"}]})
    with pytest.raises(StageError, match=r"rescore\[0\] \(maxsim\)"):
        plain.search("x", {"rescore": [{"type": "maxsim"}]})
    with pytest.raises(StageError, match=r"rescore\[0\] \(maxsim\).*no field 'mv_f16'"):
        plain.search("x", {"rescore": [{"type": "maxsim", "tokens": "float16"}]})
    with pytest.raises(NotFoundError):
        Searcher(opensearch_client, "no-such-index-osneural", cache=searcher.cache).search("x")


def test_encoder_mismatch_fails_loudly(opensearch_client, plugin_index):
    enc = EncoderCache()
    other = DenseEnc()
    other.manifest = {**other.manifest, "sha256": "different"}
    enc.put("dense", other)
    s = Searcher(opensearch_client, plugin_index["name"], cache=ResourceCache(enc))
    with pytest.raises(StageError, match="was built with dense encoder"):
        s.search("heart", {"first_stages": [{"type": "dense"}]})


class SlowClient:
    """The real client, with `search` delayed for knn bodies: a deterministic slow stage."""

    def __init__(self, client, delay: float) -> None:
        self._client, self._delay = client, delay
        self.indices = client.indices
        self.transport = client.transport

    @staticmethod
    def _is_knn(kw) -> bool:
        body = kw.get("body", {})
        text = body.decode() if isinstance(body, bytes) else json.dumps(body)
        return "knn" in text[:200]

    def search(self, **kw):
        if self._is_knn(kw):
            time.sleep(self._delay)
        return self._client.search(**kw)

    def get(self, **kw):
        return self._client.get(**kw)


class TimingOutClient(SlowClient):
    """The real client; a knn search takes `delay` s, and like a real request it gives up with
    `ConnectionTimeout` when its `request_timeout` is shorter."""

    def search(self, **kw):
        from opensearchpy.exceptions import ConnectionTimeout

        if self._is_knn(kw):
            limit = float(kw.get("request_timeout") or 1e9)
            time.sleep(min(self._delay, limit))
            if limit < self._delay:
                raise ConnectionTimeout("TIMEOUT", f"read timed out after {limit:.3f}s", None)
        return self._client.search(**kw)


def _dense_skipped(searcher: Searcher, first_stages: list[dict], position: int) -> None:
    """A 500 ms query whose dense stage (at `position`) is slow: it comes back within the budget
    plus slack, reports that stage as timed out, and answers from BM25 alone."""
    t0 = time.perf_counter()
    resp = searcher.search("heart gene", {"first_stages": first_stages,
                                          "timeout_ms": 500, "size": 5, "explain": True})
    assert time.perf_counter() - t0 < 1.4
    warnings = resp["ext"]["osneural"]["warnings"]
    assert resp["timed_out"] is True
    assert any(f"first_stages[{position}] (dense) timed out" in w for w in warnings), warnings
    assert resp["hits"]["hits"]
    assert all(set(h["_explanation"]["first_stages"]) == {"bm25"} for h in resp["hits"]["hits"])


def test_slow_first_listed_stage_times_out_like_the_others(opensearch_client, plugin_index, cache):
    """The first listed stage runs in the caller's thread: it is bounded by the time left (its
    request's timeout) and reported as timed out, and the other stages still answer."""
    s = Searcher(TimingOutClient(opensearch_client, 1.5), plugin_index["name"], cache=cache)
    _dense_skipped(s, [{"type": "dense", "k": 20}, {"type": "bm25", "k": 20}], 0)
    with pytest.raises(SearchError, match="every first stage failed or timed out"):
        s.search("heart gene", {"first_stages": [{"type": "dense", "k": 20}], "timeout_ms": 300})
    s.close()


def test_slow_stage_is_skipped_with_a_warning(opensearch_client, plugin_index, cache):
    s = Searcher(SlowClient(opensearch_client, 1.5), plugin_index["name"], cache=cache)
    _dense_skipped(s, [{"type": "bm25", "k": 20}, {"type": "dense", "k": 20}], 1)
    s.close()


# ------------------------------------------------------------------ the three interfaces


@pytest.fixture(scope="module")
def server(opensearch_url, opensearch_client, plugin_index, cache):
    import uvicorn
    from osneural.plugin.server import create_app

    app = create_app(opensearch_url, allow_index=["test-*"], max_body_bytes=4096,
                     client=opensearch_client, cache=cache)
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    for _ in range(200):
        if srv.started:
            break
        time.sleep(0.02)
    port = srv.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(5)


def test_hybrid_identical_through_python_cli_and_http(searcher, plugin_index, server, opensearch_url,
                                                      cache, capsys, monkeypatch):
    from osneural.plugin import resources

    from osneural.cli import main

    q = "heart cancer gene"
    py = searcher.search(q, load_spec("hybrid"))
    r = httpx.post(f"{server}/{plugin_index['name']}/_search",
                   json={"ext": {"osneural": {"query": q, "spec": "hybrid"}}})
    assert r.status_code == 200, r.text
    monkeypatch.setattr(resources, "_DEFAULT", cache)
    rc = main(["search", "--index", plugin_index["name"], q, "--url", opensearch_url])
    cli = json.loads(capsys.readouterr().out)
    assert rc == 0
    strip = [[(h["_id"], round(h["_score"], 5), h["_source"]) for h in x["hits"]["hits"]]
             for x in (py, r.json(), cli)]
    assert strip[0] == strip[1] == strip[2] and len(strip[0]) == 10
    assert set(py["ext"]["osneural"]["timings_ms"]) >= {
        "first_stage.bm25", "first_stage.dense", "first_stage.sparse", "rescore.maxsim", "total"}


def test_http_passthrough_and_limits(server, plugin_index, opensearch_url):
    name = plugin_index["name"]
    body = {"query": {"match": {"text": "heart"}}, "size": 3}
    ours = httpx.post(f"{server}/{name}/_search", json=body).json()
    theirs = httpx.post(f"{opensearch_url}/{name}/_search", json=body).json()
    assert [h["_id"] for h in ours["hits"]["hits"]] == [h["_id"] for h in theirs["hits"]["hits"]]
    assert httpx.get(f"{server}/{name}/_count").json()["count"] == 80
    assert "mappings" in httpx.get(f"{server}/{name}/_mapping").json()[name]
    assert httpx.get(f"{server}/{name}/_doc/doc1").json()["_source"]["title"]
    missing = httpx.get(f"{server}/{name}/_doc/nope")
    assert missing.status_code == 404 and missing.json()["found"] is False
    r = httpx.post(f"{server}/test-missing-idx/_search",
                   json={"ext": {"osneural": {"query": "x", "spec": "bm25"}}})
    assert r.status_code == 404 and r.json()["error"]["type"] == "index_not_found_exception"
    r = httpx.post(f"{server}/test-missing-idx/_search", json={"query": {"match_all": {}}})
    assert r.status_code == 404
    # allow-list: nothing leaves for other indices, neural or not
    for url in (f"{server}/osneural-codecs/_search", f"{server}/other/_count",
                f"{server}/test-a,secret/_search", f"{server}/*/_search"):
        r = httpx.post(url, json={"query": {"match_all": {}}}) if "_search" in url else httpx.get(url)
        assert r.status_code == 403, url
    r = httpx.post(f"{server}/{name}/_search", content=b"{" + b" " * 5000 + b"}",
                   headers={"content-type": "application/json"})
    assert r.status_code == 413
    r = httpx.post(f"{server}/{name}/_search",
                   json={"ext": {"osneural": {"query": "x", "spec": {"first_stages": [{"type": "zz"}]}}}})
    assert r.status_code == 400 and "first_stages[0]" in r.json()["error"]["reason"]
    r = httpx.post(f"{server}/{name}/_search", json={"ext": {"osneural": {"query": ""}}})
    assert r.status_code == 400 and "empty" in r.json()["error"]["reason"]
    health = httpx.get(f"{server}/_osneural/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"


def test_http_closed_index_error_passes_through(server, opensearch_client, index_name):
    opensearch_client.indices.create(index=index_name, body={"mappings": {"properties": {
        "title": {"type": "text"}, "text": {"type": "text"}}}})
    opensearch_client.indices.close(index=index_name)
    r = httpx.post(f"{server}/{index_name}/_search",
                   json={"ext": {"osneural": {"query": "x", "spec": "bm25"}}})
    assert r.status_code in (400, 404) and "closed" in r.text  # OpenSearch's own status and body
