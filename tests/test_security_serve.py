"""`osneural serve` under attack, against a real node.

Each class of attack is sent over HTTP and must be refused before anything
reaches OpenSearch (or answered by OpenSearch's own security), with OpenSearch-shaped JSON:
spec names as file paths, percent-encoded and resolving index expressions, clauses that read other
indices, scripts, unbounded work, malformed input. Identity is tested behind the TLS + basic-auth
front (tests/tls_front.py), whose access log shows whose credentials reached the upstream.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest
from osneural.plugin.request_guard import Limits
from osneural.plugin.server import create_app
from serve_thread import serve_in_thread
from test_plugin_integration import cache, plugin_index  # noqa: F401 - shared fixtures
from tls_front import USERS

from osneural.connection import ClusterConfig

pytestmark = pytest.mark.integration

SECRET_TEXT = "the launch code is 7341 zebra"




@pytest.fixture(scope="module")
def names(opensearch_client, plugin_index):  # noqa: F811
    """The allowed index, a private one beside it, and aliases: one inside the allow-list that
    points outside it, one the front forbids to bob."""
    tag = uuid.uuid4().hex[:6]
    private = f"private-{tag}"
    opensearch_client.indices.create(index=private, body={"mappings": {"properties": {
        "text": {"type": "text"}, "n": {"type": "integer"}, "q": {"type": "percolator"},
        "shape": {"type": "geo_shape"}}}})
    opensearch_client.index(index=private, id="1", refresh=True, body={
        "text": SECRET_TEXT, "n": 1, "q": {"match": {"text": "heart"}},
        "shape": {"type": "point", "coordinates": [1.0, 1.0]}})
    evil = f"test-plugin-evil-{tag}"
    restricted = f"test-plugin-restricted-{tag}"
    opensearch_client.indices.put_alias(index=private, name=evil)
    opensearch_client.indices.put_alias(index=plugin_index["name"], name=restricted)
    yield {"index": plugin_index["name"], "private": private, "evil": evil,
           "restricted": restricted}
    opensearch_client.indices.delete(index=private, ignore_unavailable=True)
    opensearch_client.indices.delete_alias(index=plugin_index["name"], name=restricted, ignore=404)


@pytest.fixture(scope="module")
def guarded(opensearch_url, names, cache):  # noqa: F811
    app = create_app(opensearch_url, allow_index=["test-plugin-*"], cache=cache, auth="service",
                     limits=Limits(max_concurrent=2))
    with serve_in_thread(app) as url:
        yield url


def _neural(query="heart gene", spec="bm25", **body):
    return {**body, "ext": {"osneural": {"query": query, "spec": spec}}}


def _search_count(client, index) -> int:
    stats = client.indices.stats(index=index, metric="search")
    return stats["_all"]["total"]["search"]["query_total"]


def _assert_refused(r: httpx.Response, status: int, kind: str, where: str = "") -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["status"] == status and body["error"]["type"] == kind, body
    assert body["error"]["root_cause"][0]["type"] == kind
    assert where in body["error"]["reason"], body
    assert SECRET_TEXT not in r.text and "7341" not in r.text
    return body


# ------------------------------------------------------------------ 1. spec names as paths


def test_spec_name_is_never_read_as_a_file(guarded, names, tmp_path):
    leak = tmp_path / "leak.json"
    leak.write_text(json.dumps({"first_stages": [{"type": "bm25"}], "api_key": "k-9f8e7d"}))
    hostname = Path("/etc/hostname").read_text().strip() if Path("/etc/hostname").exists() else "\0"
    for spec in (str(leak), "/etc/passwd", "/proc/self/environ", "../../../../etc/hostname",
                 "../specs/bm25", "bm25.json"):
        r = httpx.post(f"{guarded}/{names['index']}/_search", json=_neural(spec=spec))
        body = _assert_refused(r, 400, "osneural_spec_error", "unknown built-in spec")
        text = json.dumps(body)
        assert "k-9f8e7d" not in text and "api_key" not in text and "root:x" not in text
        assert "PATH=" not in text and (hostname == "\0" or f"{hostname}\n" not in text)
    r = httpx.post(f"{guarded}/{names['index']}/_search", timeout=60, json=_neural(
        spec={"first_stages": [{"type": "bm25"}], "timeout_ms": 30000}))
    assert r.status_code == 200 and r.json()["hits"]["hits"]


# ------------------------------------------------------------------ 2. index expressions


def test_index_expressions_cannot_escape_the_allow_list(guarded, names, opensearch_client):
    idx, private, evil = names["index"], names["private"], names["evil"]
    before = _search_count(opensearch_client, private)
    paths = [f"/{idx}%252C%252A/_search", f"/{idx}%2C{private}/_search", f"/{idx},{private}/_search",
             f"/{idx}%2C%2A/_search", f"/test-plugin-x:{private}/_search", "/_all/_search",
             "/test-plugin-*/_search", f"/-{idx}/_search", f"/{evil}/_search", f"/{evil}/_count",
             f"/{evil}/_mapping", f"/{evil}/_doc/1", f"/{private}/_doc/1",
             "/%3Ctest-plugin-%7Bnow%7D%3E/_search"]
    with httpx.Client() as http:
        for path in paths:
            method = "GET" if path.endswith(("_mapping", "/1")) else "POST"
            r = http.request(method, guarded + path,
                             json=None if method == "GET" else {"query": {"match_all": {}}})
            _assert_refused(r, 403, "osneural_index_not_allowed")
        r = http.post(f"{guarded}/{evil}/_search", json=_neural())
        _assert_refused(r, 403, "osneural_index_not_allowed", "resolves to")
        # a path the router cannot take is a JSON error, never a plain-text one
        r = http.post(f"{guarded}/{idx}%2F..%2F{private}/_search", json={})
        assert r.status_code in (400, 403, 404) and r.json()["error"]["type"]
    assert _search_count(opensearch_client, private) == before  # nothing reached it
    ok = httpx.post(f"{guarded}/{idx}/_search", json={"query": {"match": {"text": "heart"}}})
    assert ok.status_code == 200 and ok.json()["hits"]["hits"]


def test_an_alias_moved_outside_the_allow_list_is_refused_at_once(guarded, names,
                                                                   opensearch_client):
    """An alias searched while it was allowed (its description cached by the process), then
    moved to a private index, is refused at its next request, before a bad body or parameter is
    reported, and nothing is sent to the private index."""
    moved = f"test-plugin-moved-{uuid.uuid4().hex[:6]}"
    opensearch_client.indices.put_alias(index=names["index"], name=moved)
    spec = {"first_stages": [{"type": "dense", "k": 5}, {"type": "sparse", "k": 5}]}
    try:
        ok = httpx.post(f"{guarded}/{moved}/_search", json=_neural(spec=spec), timeout=60)
        assert ok.status_code == 200 and ok.json()["hits"]["hits"], ok.text
        opensearch_client.indices.update_aliases(body={"actions": [
            {"remove": {"index": names["index"], "alias": moved}},
            {"add": {"index": names["private"], "alias": moved}}]})
        before = _search_count(opensearch_client, names["private"])
        for body in (_neural(spec=spec), _neural(spec=spec, size=-1), _neural(spec={"x": 1})):
            r = httpx.post(f"{guarded}/{moved}/_search", json=body, timeout=60)
            _assert_refused(r, 403, "osneural_index_not_allowed", "resolves to")
        r = httpx.post(f"{guarded}/{moved}/_search", params={"q": "x"}, json=_neural(spec=spec))
        _assert_refused(r, 403, "osneural_index_not_allowed", "resolves to")
        assert _search_count(opensearch_client, names["private"]) == before
    finally:
        opensearch_client.indices.delete_alias(index="_all", name=moved, ignore=404)


# ------------------------------------------------------------------ 3. clauses reading other indices


def _lookups(private: str) -> dict[str, dict]:
    return {
        "terms lookup": {"terms": {"text": {"index": private, "id": "1", "path": "text"}}},
        "more_like_this": {"more_like_this": {"fields": ["text"], "min_term_freq": 1,
                                              "min_doc_freq": 1,
                                              "like": [{"_index": private, "_id": "1"}]}},
        "geo_shape": {"geo_shape": {"shape": {"indexed_shape": {"index": private, "id": "1",
                                                                "path": "shape"}}}},
        "percolate": {"percolate": {"field": "q", "index": private, "id": "1"}},
    }


def test_clauses_reading_other_indices_are_refused_on_every_interface(guarded, names):
    idx = names["index"]
    with httpx.Client() as http:
        for clause in _lookups(names["private"]).values():
            for url, body in (
                (f"{guarded}/{idx}/_search", {"query": {"bool": {"filter": [clause]}}}),
                (f"{guarded}/{idx}/_count", {"query": clause}),
                (f"{guarded}/{idx}/_search", _neural(query=clause)),
                (f"{guarded}/{idx}/_search", _neural(spec={"first_stages": [{"type": "bm25"}],
                                                           "filter": clause})),
            ):
                r = http.post(url, json=body)
                _assert_refused(r, 403, "osneural_clause_not_allowed", names["private"])
        r = http.post(f"{guarded}/{idx}/_search",
                      json={"profile": True, "query": {"match": {"text": "heart"}}})
        _assert_refused(r, 403, "osneural_clause_not_allowed", "[profile]")
        # a lookup inside the allow-list is fine: doc1's year, read from the same index
        r = http.post(f"{guarded}/{idx}/_search", json={"query": {"terms": {
            "year": {"index": idx, "id": "doc1", "path": "year"}}}})
        assert r.status_code == 200 and r.json()["hits"]["total"]["value"] > 0


# ------------------------------------------------------------------ 4. scripts


def test_scripts_and_debug_parameters_are_refused(guarded, names):
    idx = names["index"]
    bodies = {
        "script_fields": {"script_fields": {"x": {"script": {"source": "params['_source']"}}}},
        "query.script": {"query": {"script": {"script": {"source": "true"}}}},
        "query.script_score": {"query": {"script_score": {"query": {"match_all": {}},
                                                          "script": {"source": "1"}}}},
        "runtime_mappings": {"runtime_mappings": {"r": {"type": "keyword",
                                                        "script": {"source": "emit('a')"}}}},
        "search_pipeline": {"search_pipeline": {"request_processors": [
            {"filter_query": {"query": {"match_all": {}}}}]}},
        "aggs.a.terms.script": {"aggs": {"a": {"terms": {"script": {"source": "'x'"}}}}},
        "query.wrapper": {"query": {"wrapper": {"query": "eyJtYXRjaF9hbGwiOnt9fQ=="}}},
    }
    with httpx.Client() as http:
        for where, body in bodies.items():
            r = http.post(f"{guarded}/{idx}/_search", json=body)
            _assert_refused(r, 403, "osneural_clause_not_allowed", where)
        r = http.post(f"{guarded}/{idx}/_search", json=_neural(
            query={"script": {"script": {"source": "true"}}}))
        _assert_refused(r, 403, "osneural_clause_not_allowed", "query.script")
        for param, kind in (("search_pipeline=p", "osneural_parameter_not_allowed"),
                            ("error_trace=true", "osneural_parameter_not_allowed"),
                            ("source=%7B%7D&source_content_type=application/json",
                             "osneural_parameter_not_allowed")):
            r = http.post(f"{guarded}/{idx}/_search?{param}", json={"query": {"match_all": {}}})
            _assert_refused(r, 403, kind, param.split("=")[0])
        r = http.get(f"{guarded}/{idx}/_doc/doc1?error_trace=true")
        _assert_refused(r, 403, "osneural_parameter_not_allowed", "error_trace")


# ------------------------------------------------------------------ 5. unbounded work


def test_stage_caps_and_sizes_refuse_before_any_search(guarded, names, opensearch_client):
    idx = names["index"]
    before = _search_count(opensearch_client, idx)
    with httpx.Client(timeout=30) as http:
        r = http.post(f"{guarded}/{idx}/_search", json=_neural(
            spec={"first_stages": [{"type": "bm25", "k": 10}] * 2000}))
        _assert_refused(r, 400, "osneural_spec_error", "first_stages: 2000 stages")
        r = http.post(f"{guarded}/{idx}/_search", json=_neural(
            spec={"first_stages": [{"type": "bm25"}], "rescore": [{"type": "dense"}] * 300}))
        _assert_refused(r, 400, "osneural_spec_error", "rescore: 300 stages")
        r = http.post(f"{guarded}/{idx}/_search", json=_neural(query="heart " * 2000))
        _assert_refused(r, 400, "osneural_spec_error", "ext.osneural.query: 12000 characters")
        deep = b'{"query":' + b'{"bool":{"must":[' * 5000 + b"{}" + b"]}}" * 5000 + b"}"
        r = http.post(f"{guarded}/{idx}/_search", content=deep,
                      headers={"content-type": "application/json"})
        _assert_refused(r, 400, "osneural_parse_error", "nesting deeper than 64")
    assert _search_count(opensearch_client, idx) == before


def test_one_request_cannot_take_the_pool_from_others(guarded, names):
    """Heavy requests (8 first stages each) from 4 callers while a normal query runs: the heavy
    ones queue for one of the 2 slots, each running one with its own 8 stage threads, so the
    normal query is never starved into a timeout (old code: one shared pool -> 504)."""
    idx = names["index"]
    heavy = _neural(spec={"first_stages": [{"type": "bm25", "k": 50}, {"type": "dense", "k": 50}] * 4,
                          "timeout_ms": 20000})
    statuses: list[int] = []
    stop = threading.Event()

    def hammer() -> None:
        with httpx.Client(timeout=60) as http:
            while not stop.is_set():
                statuses.append(http.post(f"{guarded}/{idx}/_search", json=heavy).status_code)

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.5)
        normal = []
        with httpx.Client(timeout=60) as http:
            for _ in range(3):
                r = http.post(f"{guarded}/{idx}/_search",
                              json=_neural(spec={"first_stages": [{"type": "bm25"}],
                                                 "timeout_ms": 5000}))
                normal.append((r.status_code, r.json().get("timed_out")))
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert normal == [(200, False)] * 3
    assert statuses and set(statuses) <= {200, 503}


# ------------------------------------------------------------------ 6. malformed input


def test_malformed_input_is_a_400_or_415(guarded, names):
    idx = names["index"]
    url = f"{guarded}/{idx}/_search"
    js = {"content-type": "application/json"}
    with httpx.Client() as http:
        r = http.post(url, content=b'{"ext":{"osneural":{"query":"caf\xe9"}}}', headers=js)
        _assert_refused(r, 400, "osneural_parse_error", "not valid UTF-8")
        r = http.post(url, content=b'{"query":{"match":{"text":"\xc3"}}}', headers=js)
        _assert_refused(r, 400, "osneural_parse_error", "not valid UTF-8")
        for bad in (b"NaN", b"Infinity", b"-Infinity", b"1e999"):
            raw = (b'{"ext":{"osneural":{"query":"heart","spec":{"first_stages":[{"type":"bm25"},'
                   b'{"type":"dense"}],"fusion":{"type":"linear","weights":[1,' + bad + b']}}}}}')
            r = http.post(url, content=raw, headers=js)
            _assert_refused(r, 400, "osneural_parse_error")
        r = http.post(url, content=b'{"ext":{"osneural":{"query":"heart \\udc00"}}}', headers=js)
        _assert_refused(r, 400, "osneural_parse_error", "ext.osneural.query")
        body = json.dumps(_neural())
        for ct in ("text/plain", "application/x-www-form-urlencoded", None):
            r = http.post(url, content=body, headers={"content-type": ct} if ct else {})
            _assert_refused(r, 415, "osneural_media_type_not_supported")
        r = http.post(url, content=json.dumps({"query": {"match_all": {}}}),
                      headers={"content-type": "text/plain"})
        _assert_refused(r, 415, "osneural_media_type_not_supported")
        r = http.delete(url)
        assert r.status_code == 400 and r.json()["error"]["type"] == "osneural_no_handler"


# ------------------------------------------------------------------ 7. identity (TLS + auth front)


@pytest.fixture(scope="module")
def passthrough_server(tls_front, names, cache):  # noqa: F811
    """Passthrough mode; the service also has its own (svc) credentials, for health only."""
    cluster = ClusterConfig.from_values(tls_front.url, user="svc", password=USERS["svc"],
                                        ca_certs=str(tls_front.ca))
    app = create_app(cluster, allow_index=["test-plugin-*"], cache=cache, auth="passthrough")
    with serve_in_thread(app) as url:
        yield url


@pytest.fixture(scope="module")
def service_server(tls_front, names, cache):  # noqa: F811
    cluster = ClusterConfig.from_values(tls_front.url, user="svc", password=USERS["svc"],
                                        ca_certs=str(tls_front.ca))
    app = create_app(cluster, allow_index=["test-plugin-*"], cache=cache, auth="service")
    with serve_in_thread(app) as url:
        yield url


ALICE = ("alice", USERS["alice"])
STAGE_SPECS = {
    "bm25": {"first_stages": [{"type": "bm25", "k": 20}]},
    "dense": {"first_stages": [{"type": "dense", "k": 20}], "rescore": [{"type": "dense", "window": 5}]},
    "sparse": {"first_stages": [{"type": "sparse", "k": 20}]},
    "binary": {"first_stages": [{"type": "binary", "k": 40}],
               "rescore": [{"type": "hamming", "window": 20}, {"type": "pq", "window": 10}]},
    "fde": {"first_stages": [{"type": "fde", "k": 20}], "rescore": [{"type": "maxsim", "window": 10}]},
}


def _interfaces(base: str, names: dict) -> list[tuple[str, str, dict | None]]:
    idx = names["index"]
    out = [("POST", f"{base}/{idx}/_search", {"query": {"match": {"text": "heart"}}}),
           ("POST", f"{base}/{idx}/_count", {"query": {"match": {"text": "heart"}}}),
           ("GET", f"{base}/{idx}/_doc/doc1", None),
           ("GET", f"{base}/{idx}/_mapping", None)]
    out += [("POST", f"{base}/{idx}/_search", _neural(spec=spec)) for spec in STAGE_SPECS.values()]
    return out


def test_passthrough_forwards_the_callers_credentials(passthrough_server, tls_front, names):
    mark = tls_front.log_mark()
    with httpx.Client(auth=ALICE, timeout=30) as http:
        for method, url, body in _interfaces(passthrough_server, names):
            r = http.request(method, url, json=body)
            assert r.status_code == 200, (url, body, r.text)
            if body and "ext" in body:
                assert r.json()["hits"]["hits"] and not r.json()["ext"]["osneural"]["warnings"]
    rows = tls_front.requests_since(mark)
    assert len(rows) >= 9
    assert {user for user, *_ in rows} == {"alice"}, rows  # never svc, never anonymous
    health = httpx.get(f"{passthrough_server}/_osneural/health").json()
    assert health["status"] == "ok" and health["auth"] == "passthrough"


def test_wrong_or_missing_credentials_are_401_on_every_interface(passthrough_server, tls_front,
                                                                 names):
    mark = tls_front.log_mark()
    for auth in (None, ("alice", "wrong-password-123"), ("mallory", USERS["alice"])):
        with httpx.Client(auth=auth, timeout=30) as http:
            for method, url, body in _interfaces(passthrough_server, names):
                r = http.request(method, url, json=body)
                assert r.status_code == 401, (auth, url, r.text)
                assert r.json()["status"] == 401 and r.json()["error"]["type"]
                assert r.headers["www-authenticate"].startswith("Basic")
                assert "wrong-password-123" not in r.text and USERS["alice"] not in r.text
    users = {user for user, *_ in tls_front.requests_since(mark)}
    assert "svc" not in users  # the service's own credentials are never borrowed


def test_search_features_and_msearch_act_as_the_caller(passthrough_server, tls_front, names):
    """Aggregations, sorting, highlights and every `_msearch` item reach the cluster with the
    caller's credentials only; a wrong password fails each item with the cluster's 401."""
    idx = names["index"]
    features = _neural(spec="hybrid", aggs={"y": {"terms": {"field": "year"}}}, sort=["year"],
                       highlight={"fields": {"text": {}}}, track_total_hits=True,
                       post_filter={"term": {"year": 2003}})
    lines = "\n".join(json.dumps(x) for x in [{"index": idx}, features, {"index": idx},
                                               {"size": 0}]) + "\n"
    nd = {"content-type": "application/x-ndjson"}
    mark = tls_front.log_mark()
    with httpx.Client(auth=ALICE, timeout=30) as http:
        r = http.post(f"{passthrough_server}/{idx}/_search", json=features)
        assert r.status_code == 200 and r.json()["aggregations"]["y"]["buckets"], r.text
        items = http.post(f"{passthrough_server}/_msearch", content=lines, headers=nd).json()
        assert [i["status"] for i in items["responses"]] == [200, 200]
        assert http.get(f"{passthrough_server}/").status_code == 200
    assert {user for user, *_ in tls_front.requests_since(mark)} == {"alice"}
    mark = tls_front.log_mark()
    r = httpx.post(f"{passthrough_server}/_msearch", content=lines, headers=nd,
                   auth=("alice", "wrong-password-123"))
    assert [i["status"] for i in r.json()["responses"]] == [401, 401]
    assert "svc" not in {user for user, *_ in tls_front.requests_since(mark)}
    assert httpx.get(f"{passthrough_server}/").status_code == 401


def test_an_upstream_403_passes_through(passthrough_server, names):
    url = f"{passthrough_server}/{names['restricted']}/_search"
    bob = ("bob", USERS["bob"])
    for body in ({"query": {"match_all": {}}}, _neural()):
        r = httpx.post(url, json=body, auth=bob)
        assert r.status_code == 403 and r.json()["error"]["type"] == "security_exception", r.text
        ok = httpx.post(url, json=body, auth=ALICE)
        assert ok.status_code == 200, ok.text


def test_a_passed_access_check_is_remembered_per_credential_and_index(tls_front, names):
    """The size-0 search a neural search starts with is made once per credential and index
    within the window, again once it has passed, and a refusal is never remembered."""
    import base64

    from opensearchpy import AuthorizationException
    from osneural.plugin.access_check import AccessCheck
    from osneural.plugin.neural_handler import caller_scope
    from osneural.plugin.passthrough import CallerClient

    upstream = ClusterConfig.from_values(tls_front.url, ca_certs=str(tls_front.ca)).client()
    now = [1000.0]
    check = AccessCheck(window_s=10, clock=lambda: now[0])

    def who(user: str):
        token = base64.b64encode(f"{user}:{USERS[user]}".encode()).decode()
        return CallerClient(upstream, {"authorization": f"Basic {token}"})

    alice, bob = who("alice"), who("bob")
    idx, restricted = names["index"], names["restricted"]
    mark = tls_front.log_mark()
    for _ in range(3):
        check.check(alice, idx, caller_scope(alice))
    check.check(bob, idx, caller_scope(bob))  # another credential: its own check
    for _ in range(2):  # refused each time: never remembered
        with pytest.raises(AuthorizationException):
            check.check(bob, restricted, caller_scope(bob))
    now[0] += 10.5  # the window has passed: checked again
    check.check(alice, idx, caller_scope(alice))
    rows = [(user, status) for user, _, uri, status in tls_front.requests_since(mark, 5)
            if "/_search" in uri]
    assert rows == [("alice", 200), ("bob", 200), ("bob", 403), ("bob", 403), ("alice", 200)]
    assert check.checks == 3
    every_time = AccessCheck(window_s=0)
    mark = tls_front.log_mark()
    for _ in range(2):
        every_time.check(alice, idx, caller_scope(alice))
    assert len(tls_front.requests_since(mark, 2)) == 2
    upstream.close()


def test_service_mode_uses_its_own_credentials_only(service_server, tls_front, names):
    mark = tls_front.log_mark()
    for auth in (ALICE, ("alice", "wrong-password-123"), None):
        with httpx.Client(auth=auth, timeout=30) as http:
            for method, url, body in _interfaces(service_server, names)[:5]:
                r = http.request(method, url, json=body)
                assert r.status_code == 200, (auth, url, r.text)
    users = {user for user, *_ in tls_front.requests_since(mark)}
    assert users == {"svc"}


# ------------------------------------------------------------------ transport (issue #13)


def _dead_url() -> str:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"  # nothing listens there once closed


def test_pass_through_uses_every_host_and_answers_json_when_none_answers(opensearch_url, names,
                                                                         cache):  # noqa: F811
    idx = names["index"]
    cluster = ClusterConfig.from_values([_dead_url(), opensearch_url], timeout=10)
    with serve_in_thread(create_app(cluster, allow_index=["test-plugin-*"], cache=cache)) as url, \
            httpx.Client(timeout=30) as http:
        for _ in range(6):  # round-robin meets the dead host; the transport retries the other
            assert http.post(f"{url}/{idx}/_search", json={"query": {"match_all": {}}}).status_code == 200
            assert http.get(f"{url}/{idx}/_count").json()["count"] == 80
        r = http.post(f"{url}/{idx}/_search", json=_neural(
            spec={"first_stages": [{"type": "bm25"}], "timeout_ms": 20000}))
        assert r.status_code == 200 and r.json()["hits"]["hits"]
    dead = ClusterConfig.from_values([_dead_url(), _dead_url()], timeout=5)
    with serve_in_thread(create_app(dead, cache=cache)) as url, httpx.Client(timeout=60) as http:
        for method, path in (("POST", f"/{idx}/_search"), ("GET", f"/{idx}/_count"),
                             ("GET", f"/{idx}/_doc/doc1"), ("GET", f"/{idx}/_mapping")):
            r = http.request(method, url + path, json={} if method == "POST" else None)
            assert r.status_code == 502, r.text
            assert r.json()["error"]["type"] == "osneural_upstream_unreachable"
