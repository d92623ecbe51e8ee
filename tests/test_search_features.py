"""A search page's features beside a pipeline, through `osneural serve` and an opensearch-py
client pointed at it as an app would point it, against a real node.

The catalog is the plugin tests' index (every representation, built with the real codecs) plus
app fields added with native OpenSearch calls (`put_mapping`, bulk partial updates). Every
expected answer is computed without osneural's query code: the matched set from native queries
(one per first stage of the default pipeline, read from its spec file), bucket counts and field
orders from the corpus the test wrote, and paging against one bigger page of the same query.
"""

from __future__ import annotations

import json
from collections import Counter

import httpx
import pytest
from opensearchpy import OpenSearch, RequestError, TransportError
from osneural.plugin import Searcher, load_spec
from osneural.plugin.server import create_app
from serve_thread import serve_in_thread
from test_plugin_integration import DenseEnc, cache, plugin_index  # noqa: F401 - shared fixtures

pytestmark = pytest.mark.integration

CATEGORIES = ["books", "garden", "kitchen", "toys"]
Q = "heart cancer gene"
FILTER = {"range": {"year": {"gte": 2001}}}


def _app_fields(i: int) -> dict:
    """The app fields of doc{i}; every ninth document has no category."""
    out = {"price": (i * 37) % 50, "in_stock": i % 3 != 0}
    if i % 9 != 8:
        out["category"] = CATEGORIES[(i * 7) % 4]
    return out




@pytest.fixture(scope="module")
def catalog(opensearch_client, plugin_index):  # noqa: F811
    """The plugin index with `category` (keyword), `price` (integer), `in_stock` (boolean)."""
    name = plugin_index["name"]
    opensearch_client.indices.put_mapping(index=name, body={"properties": {
        "category": {"type": "keyword"}, "price": {"type": "integer"},
        "in_stock": {"type": "boolean"}}})
    lines = []
    for doc_id in plugin_index["docs"]:
        lines += [json.dumps({"update": {"_index": name, "_id": doc_id}}),
                  json.dumps({"doc": _app_fields(int(doc_id[3:]))})]
    resp = opensearch_client.bulk(body="\n".join(lines) + "\n", refresh=True)
    assert not resp["errors"]
    fields = {d: {**plugin_index["docs"][d], **_app_fields(int(d[3:]))} for d in plugin_index["docs"]}
    return {"name": name, "fields": fields}


@pytest.fixture(scope="module")
def service(opensearch_url, catalog, cache):  # noqa: F811
    app = create_app(opensearch_url, allow_index=["test-*"], cache=cache)
    with serve_in_thread(app) as url:
        yield url


@pytest.fixture(scope="module")
def app(service):
    client = OpenSearch(hosts=[service], timeout=60)
    yield client
    client.close()


def _neural(spec=None, text=Q, **body) -> dict:
    """A neural search body; `query` among `body` is the filter, as in any `_search` body."""
    block = {"query": text} if spec is None else {"query": text, "spec": spec}
    return {**body, "ext": {"osneural": block}}


def _ids(resp) -> list[str]:
    return [h["_id"] for h in resp["hits"]["hits"]]


def _native_matched_set(client, index: str, flt: dict | None) -> set[str]:
    """The union of the default pipeline's first stages' matches, by native queries built from
    the spec file's stage parameters and the test's own query encoder."""
    spec = load_spec("hybrid")
    filters = [flt] if flt else []
    ids: set[str] = set()
    for stage in spec.first_stages:
        if stage.type == "bm25":
            query = {"bool": {"must": [{"multi_match": {"query": Q, "fields": list(stage.fields),
                                                        "type": "best_fields"}}], "filter": filters}}
        elif stage.type == "dense":
            knn = {"vector": DenseEnc().encode_queries([Q])[0].tolist(), "k": stage.k}
            if stage.num_candidates:
                knn["method_parameters"] = {"ef_search": stage.num_candidates}
            if flt:
                knn["filter"] = flt
            query = {"knn": {stage.field: knn}}
        elif stage.type == "sparse":
            query = {"bool": {"should": [{"rank_feature": {"field": f"{stage.field}.{w}"}}
                                         for w in Q.split()],
                              "minimum_should_match": 1, "filter": filters}}
        else:
            pytest.fail(f"the default pipeline gained a {stage.type} stage this test cannot mirror")
        resp = client.search(index=index, body={"size": 1000, "query": query, "_source": False})
        ids |= {h["_id"] for h in resp["hits"]["hits"]}
    return ids


# ------------------------------------------------------------------ aggregations, totals, post_filter


def test_aggregations_and_total_cover_the_matched_set(app, catalog, opensearch_client):
    name, fields = catalog["name"], catalog["fields"]
    matched = _native_matched_set(opensearch_client, name, FILTER)
    body = _neural(query=FILTER, track_total_hits=True, aggs={
        "cats": {"terms": {"field": "category", "size": 10}},
        "price": {"stats": {"field": "price"}},
        "all": {"global": {}, "aggs": {"n": {"value_count": {"field": "price"}}}}})
    resp = app.search(index=name, body=body)
    assert resp["ext"]["osneural"]["spec"] == "hybrid"
    expected = Counter(fields[d]["category"] for d in matched if "category" in fields[d])
    got = {b["key"]: b["doc_count"] for b in resp["aggregations"]["cats"]["buckets"]}
    assert got == dict(expected)
    prices = [fields[d]["price"] for d in matched]
    stats = resp["aggregations"]["price"]
    assert stats["count"] == len(matched) and stats["sum"] == sum(prices)
    assert resp["aggregations"]["all"]["n"]["value"] == len(fields)  # global: the whole index
    assert resp["hits"]["total"] == {"value": len(matched), "relation": "eq"}
    assert set(_ids(resp)) <= matched
    assert all(fields[h["_id"]]["year"] >= 2001 for h in resp["hits"]["hits"])

    # post_filter narrows hits and the total, never the aggregations
    narrowed = app.search(index=name, body={**body, "size": 50,
                                            "post_filter": {"term": {"in_stock": True}}})
    assert narrowed["aggregations"] == resp["aggregations"]
    assert narrowed["hits"]["hits"] and all(fields[d]["in_stock"] for d in _ids(narrowed))
    assert narrowed["hits"]["total"]["value"] == sum(fields[d]["in_stock"] for d in matched)
    unfiltered = app.search(index=name, body=_neural(query=FILTER, size=500))
    assert _ids(narrowed) == [d for d in _ids(unfiltered) if fields[d]["in_stock"]][:50]


# ------------------------------------------------------------------ paging


@pytest.mark.parametrize("sort", [None, [{"price": "desc"}], ["category", "_score"]])
def test_pages_concatenate_and_search_after_resumes(app, catalog, sort):
    name = catalog["name"]
    extra = {} if sort is None else {"sort": sort}
    big = app.search(index=name, body=_neural(size=30, **extra))["hits"]["hits"]
    assert len(big) == 30
    pages = [app.search(index=name, body=_neural(size=10, **{"from": f}, **extra))["hits"]["hits"]
             for f in (0, 10, 20)]
    assert [h["_id"] for p in pages for h in p] == [h["_id"] for h in big]
    width = 2 + (len(sort) if sort else 0)
    assert all(len(h["sort"]) == width and h["sort"][-1] == h["_id"] for h in big)
    for i, hit in enumerate(pages[0]):
        nxt = app.search(index=name, body=_neural(size=10, search_after=hit["sort"], **extra))
        assert _ids(nxt) == [h["_id"] for h in big[i + 1 : i + 11]]


def test_sort_orders_candidates_by_field_then_pipeline(app, catalog):
    name, fields = catalog["name"], catalog["fields"]
    plain = app.search(index=name, body=_neural(size=500))
    depth = plain["ext"]["osneural"]["paging_depth"]
    ranking = _ids(plain)
    assert len(ranking) <= depth
    resp = app.search(index=name, body=_neural(size=500, sort=[{"price": "asc"}]))
    expected = sorted(ranking, key=lambda d: (fields[d]["price"], ranking.index(d)))
    assert _ids(resp) == expected
    assert [h["sort"][0] for h in resp["hits"]["hits"]] == [fields[d]["price"] for d in expected]
    # missing values go last whatever the order, as in OpenSearch
    resp = app.search(index=name, body=_neural(size=500, sort=[{"category": "desc"}]))
    cats = [fields[d].get("category") for d in _ids(resp)]
    present = [c for c in cats if c is not None]
    assert present == sorted(present, reverse=True) and cats == present + [None] * (len(cats) - len(present))


def test_paging_past_the_pipelines_depth_is_a_clear_400(app, catalog):
    depth = app.search(index=catalog["name"], body=_neural(size=1))["ext"]["osneural"]["paging_depth"]
    with pytest.raises(RequestError) as err:
        app.search(index=catalog["name"], body=_neural(**{"from": depth}))
    assert err.value.status_code == 400 and "paging depth" in err.value.info["error"]["reason"]


# ------------------------------------------------------------------ collapse, min_score


def test_collapse_keeps_the_best_hit_per_value(app, catalog):
    name, fields = catalog["name"], catalog["fields"]
    ranking = _ids(app.search(index=name, body=_neural(size=500)))
    resp = app.search(index=name, body=_neural(size=500, collapse={"field": "category"}))
    keys = [h["fields"]["category"][0] for h in resp["hits"]["hits"]]
    assert len(keys) == len(set(keys))
    first: dict = {}
    for d in ranking:
        first.setdefault(fields[d].get("category"), d)
    assert _ids(resp) == [d for d in ranking if first[fields[d].get("category")] == d]
    scores = [h["_score"] for h in resp["hits"]["hits"]]
    assert [fields[d].get("category") for d in _ids(resp)] == keys
    assert len(scores) == len(first)


def test_min_score_applies_to_the_final_score(app, catalog):
    name = catalog["name"]
    full = app.search(index=name, body=_neural(size=500))["hits"]["hits"]
    cut = full[len(full) // 3]["_score"]
    resp = app.search(index=name, body=_neural(size=500, min_score=cut, track_total_hits=True))
    assert _ids(resp) == [h["_id"] for h in full if h["_score"] >= cut]
    assert resp["hits"]["total"] == {"value": len(_ids(resp)), "relation": "eq"}


# ------------------------------------------------------------------ fetch options


def test_highlight_source_docvalues_and_explain(app, catalog):
    name, fields = catalog["name"], catalog["fields"]
    resp = app.search(index=name, body=_neural(
        size=5, highlight={"fields": {"text": {}}},
        _source={"includes": ["title", "category"], "excludes": ["category"]},
        docvalue_fields=["price"], explain=True, timeout="5s", version=True))
    hits = resp["hits"]["hits"]
    assert hits
    words = set(Q.split())
    for h in hits:
        assert set(h["_source"]) == {"title"} and h["_source"]["title"] == fields[h["_id"]]["title"]
        assert h["fields"]["price"] == [fields[h["_id"]]["price"]]
        assert "first_stages" in h["_explanation"] and h["_version"] >= 1
        if words & set(fields[h["_id"]]["text"].split()):
            marked = " ".join(h["highlight"]["text"])
            assert any(f"<em>{w}</em>" in marked for w in words)
    bare = app.search(index=name, body=_neural(size=3, stored_fields="_none_"))["hits"]["hits"]
    assert [h["_id"] for h in bare] == [h["_id"] for h in hits[:3]]
    assert all("_source" not in h for h in bare)
    # a highlight query of the body's own replaces the query text
    own = app.search(index=name, body=_neural(size=5, highlight={
        "fields": {"text": {}}, "highlight_query": {"match": {"text": "protein"}}}))
    for h in own["hits"]["hits"]:
        assert all("<em>heart</em>" not in s for s in h.get("highlight", {}).get("text", []))


def test_source_leaves_out_representations_unless_asked(app, catalog, opensearch_client):
    """With no `_source` in the body or the spec, a hit carries the document (title, text, the
    app's fields) without osneural's vectors, weights and codes; any `_source` given is
    OpenSearch's, `true` included."""
    name, fields = catalog["name"], catalog["fields"]
    mapped = opensearch_client.indices.get_mapping(index=name)[name]["mappings"]["properties"]
    representations = {"dense", "sparse", "bin_tokens", "bin_code", "dense_pq", "osneural_id"}
    assert representations <= set(mapped)  # the index has them, in _source too (not dense)
    hits = app.search(index=name, body=_neural(size=5))["hits"]["hits"]
    assert hits
    for h in hits:
        want = {k: v for k, v in fields[h["_id"]].items() if k in mapped}
        assert {k: h["_source"].get(k) for k in want} == want  # title, text, category, price...
        assert not representations & set(h["_source"])
    for body in (_neural(size=5, _source=True), _neural(spec={**load_spec("hybrid").model_dump(
            by_alias=True, exclude_unset=True), "_source": True}, size=5)):
        full = app.search(index=name, body=body)["hits"]["hits"]
        assert [h["_id"] for h in full] == [h["_id"] for h in hits]
        for h in full:
            assert {"sparse", "bin_tokens"} <= set(h["_source"])
            assert "dense" not in h["_source"]  # kept out of `_source` by the index's layout
            assert h["_source"]["title"] == fields[h["_id"]]["title"]
    named = app.search(index=name, body=_neural(size=2, _source=["sparse"]))["hits"]["hits"]
    assert all(set(h["_source"]) == {"sparse"} for h in named)


# ------------------------------------------------------------------ _msearch, routes, default spec


def test_msearch_items_equal_the_same_single_requests(app, catalog):
    name = catalog["name"]
    facets = {"size": 0, "aggs": {"cats": {"terms": {"field": "category"}}}}
    neural = _neural(size=5, spec="hybrid", aggs={"cats": {"terms": {"field": "category"}}})
    out = app.msearch(body=[{"index": name}, facets, {"index": name}, neural,
                            {"index": name}, _neural(aggs={"x": {"terms": {"field": "nope"}}})])
    items = out["responses"]
    assert [i["status"] for i in items] == [200, 200, 400]
    single = app.search(index=name, body=facets)
    assert items[0]["aggregations"] == single["aggregations"]
    one = app.search(index=name, body=neural)
    assert items[1]["aggregations"] == one["aggregations"]
    assert [(h["_id"], h["_score"], h["sort"]) for h in items[1]["hits"]["hits"]] == \
           [(h["_id"], h["_score"], h["sort"]) for h in one["hits"]["hits"]]
    assert items[2]["error"]["type"] == "osneural_spec_error" and "[nope]" in items[2]["error"]["reason"]


def test_msearch_bad_lines_and_limits_are_400s_naming_the_item(service, catalog):
    url = f"{service}/_msearch"
    nd = {"content-type": "application/x-ndjson"}
    r = httpx.post(url, headers=nd, content=f'{{"index":"{catalog["name"]}"}}\n{{"size": 1,\n')
    assert r.status_code == 400 and "line 2 (item 0 body)" in r.json()["error"]["reason"]
    lines = "".join(f'{{"index":"{catalog["name"]}"}}\n{{"size":0}}\n' for _ in range(17))
    r = httpx.post(url, headers=nd, content=lines)
    assert r.status_code == 400 and "17 items" in r.json()["error"]["reason"]
    # each item is checked like a single request: an index outside the allow-list, a script
    body = "\n".join(json.dumps(x) for x in [
        {"index": "secret"}, {"size": 0},
        {"index": catalog["name"]}, _neural(aggs={"s": {"terms": {"script": "1"}}}),
        {}, {"size": 0}]) + "\n"
    items = httpx.post(url, headers=nd, content=body).json()["responses"]
    assert [i["status"] for i in items] == [403, 403, 403]
    assert "allow-list" in items[0]["error"]["reason"] and "aggs.s.terms.script" in items[1]["error"]["reason"]


def test_root_and_index_less_search(service, opensearch_url, catalog, cache):  # noqa: F811
    root = httpx.get(f"{service}/")
    assert root.status_code == 200 and root.json()["version"] == httpx.get(opensearch_url).json()["version"]
    r = httpx.post(f"{service}/_search", json={"query": {"match_all": {}}})
    assert r.status_code == 403  # the allow-list cannot be checked without an index
    with serve_in_thread(create_app(opensearch_url, cache=cache)) as open_url:
        body = {"query": {"ids": {"values": ["doc1"]}}}
        ours = httpx.post(f"{open_url}/_search", json=body).json()
        theirs = httpx.post(f"{opensearch_url}/_search", json=body).json()
        assert [h["_id"] for h in ours["hits"]["hits"]] == [h["_id"] for h in theirs["hits"]["hits"]]


def test_no_spec_runs_hybrid_or_the_best_spec_the_index_can_run(app, catalog, opensearch_client,
                                                                 cache, index_name):  # noqa: F811
    name = catalog["name"]
    default = app.search(index=name, body=_neural())
    named = app.search(index=name, body=_neural(spec="hybrid"))
    assert default["ext"]["osneural"]["spec"] == "hybrid"
    assert [(h["_id"], h["_score"]) for h in default["hits"]["hits"]] == \
           [(h["_id"], h["_score"]) for h in named["hits"]["hits"]]
    py = Searcher(opensearch_client, name, cache=cache).search(Q)
    assert py["ext"]["osneural"]["spec"] == "hybrid" and _ids(py) == _ids(default)
    # an index with text only runs BM25, and says so
    opensearch_client.indices.create(index=index_name, body={"mappings": {"properties": {
        "title": {"type": "text"}, "text": {"type": "text"}}}})
    opensearch_client.index(index=index_name, id="a", body={"title": "x", "text": "heart"},
                            refresh=True)
    plain = app.search(index=index_name, body=_neural())
    assert plain["ext"]["osneural"]["spec"] == "bm25" and _ids(plain) == ["a"]


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize("body, status, needle", [
    ({"aggs": {"c": {"terms": {"field": "colour"}}}}, 400, "aggs.c.terms.field: index [{i}] has no field [colour]"),
    ({"sort": ["text"]}, 400, "sort[0]: field [text] is of type text"),
    ({"sort": ["nope"]}, 400, "sort[0]: index [{i}] has no field [nope]"),
    ({"collapse": {"field": "title"}}, 400, "collapse.field: field [title] is of type text"),
    ({"search_after": [1.0]}, 400, "search_after: 1 values"),
    ({"suggest": {"s": {"text": "x", "term": {"field": "text"}}}}, 400, "[suggest]"),
    ({"sort": [{"_script": {"type": "number", "script": "1"}}]}, 403, "scripts are refused"),
    ({"aggs": {"a": {"avg": {"script": "1"}}}}, 403, "aggs.a.avg.script"),
])
def test_bad_body_options_answer_naming_the_field(app, catalog, body, status, needle):
    with pytest.raises(TransportError) as err:
        app.search(index=catalog["name"], body=_neural(**body))
    assert err.value.status_code == status
    assert needle.format(i=catalog["name"]) in err.value.info["error"]["reason"]


def test_python_api_takes_the_same_body_options(opensearch_client, catalog, app, cache):  # noqa: F811
    body = {"size": 5, "sort": [{"price": "desc"}], "aggs": {"c": {"terms": {"field": "category"}}},
            "post_filter": {"term": {"in_stock": True}}}
    py = Searcher(opensearch_client, catalog["name"], cache=cache).search(Q, None, body)
    http = app.search(index=catalog["name"], body=_neural(**body))
    assert [(h["_id"], h["sort"]) for h in py["hits"]["hits"]] == \
           [(h["_id"], h["sort"]) for h in http["hits"]["hits"]]
    assert py["aggregations"] == http["aggregations"]
    kw = Searcher(opensearch_client, catalog["name"], cache=cache).search(
        Q, "hybrid", size=3, from_=2, source=["title"])
    assert [set(h["_source"]) for h in kw["hits"]["hits"]] == [{"title"}] * 3
