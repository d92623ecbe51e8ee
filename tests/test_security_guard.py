"""The request guard's rules, without a node: each attack from issue #12 refused, each normal
request (including look-alikes such as a field literally named `script`) let through."""

from __future__ import annotations

import json

import pytest
from osneural.plugin import request_guard as rg
from osneural.plugin.request_guard import GuardError, Limits, Policy

ALLOW = Policy(("docs-*",))


def _refused(fn, *args, status: int | None = None, match: str = ""):
    with pytest.raises(GuardError) as info:
        fn(*args)
    if status is not None:
        assert info.value.status == status, info.value.reason
    assert match in info.value.reason, info.value.reason
    return info.value


# ------------------------------------------------------------------ bodies


def test_strict_json_parsing_names_the_problem():
    assert rg.parse_json_body(b'{"a": [1, 2.5, "x"]}', 64) == {"a": [1, 2.5, "x"]}
    _refused(rg.parse_json_body, b'{"a": "\xff\xfe"}', 64, status=400, match="not valid UTF-8 (byte offset 7)")
    for bad, what in ((b'{"w": [NaN]}', "NaN"), (b'{"w": [Infinity]}', "Infinity"),
                      (b'{"w": [-Infinity]}', "-Infinity"), (b'{"w": [1e999]}', "overflows")):
        _refused(rg.parse_json_body, bad, 64, status=400, match=what)
    _refused(rg.parse_json_body, b'{"a": 1, "a": 2}', 64, status=400, match="duplicate field [a]")
    _refused(rg.parse_json_body, b'{"q": "ok \\ud800 no"}', 64, status=400, match="[q]")
    _refused(rg.parse_json_body, b'{"q": [1', 64, status=400, match="not valid JSON")
    assert rg.parse_json_body(b'{"q": "\\ud83d\\ude00"}', 64) == {"q": "\U0001F600"}


def test_depth_is_checked_before_the_parser_recurses():
    deep = b"[" * 200_000 + b"]" * 200_000  # far beyond Python's recursion limit
    _refused(rg.parse_json_body, deep, 64, status=400, match="deeper than 64")
    ok = json.dumps({"a": [[[[{"b": 1}]]]]}).encode()
    assert rg.parse_json_body(ok, 8)
    _refused(rg.parse_json_body, ok, 5, status=400, match="deeper than 5")
    # brackets inside strings do not count
    assert rg.parse_json_body(json.dumps({"s": "[" * 1000, "t": "\\\"[[["}).encode(), 4)


def test_json_content_types():
    assert rg.is_json_content_type("application/json")
    assert rg.is_json_content_type("application/json; charset=UTF-8")
    assert rg.is_json_content_type("application/vnd.api+json")
    for ct in (None, "", "text/plain", "application/x-www-form-urlencoded", "multipart/form-data"):
        assert not rg.is_json_content_type(ct)


# ------------------------------------------------------------------ index expressions


@pytest.mark.parametrize("expr", [
    "docs-a,secret", "docs-*", "docs-a%2C%2A", "docs-a%252C%252A", "docs-a:secret",
    "<docs-{now}>", "_all", "-docs-a", "docs-?", "_docs",
])
def test_expressions_are_refused_with_an_allow_list(expr):
    _refused(rg.check_index_expression, expr, ALLOW, status=403)


def test_plain_names_and_no_allow_list():
    assert rg.check_index_expression("docs-a", ALLOW) == "docs-a"
    _refused(rg.check_index_expression, "secret", ALLOW, status=403, match="allow-list")
    open_policy = Policy()
    assert rg.check_index_expression("a,b*", open_policy) == "a,b*"
    _refused(rg.check_index_expression, "a/../b", open_policy, status=400)
    _refused(rg.check_index_expression, "a b", open_policy, status=400)


def test_resolved_names_must_all_be_allowed():
    alias = {"indices": [], "aliases": [{"name": "docs-alias", "indices": ["secret-1"]}],
             "data_streams": []}
    _refused(rg.check_resolved, "docs-alias", alias, ALLOW, status=403, match="outside")
    stream = {"data_streams": [{"name": "docs-ds", "backing_indices": [".ds-docs-ds-000001"]}]}
    _refused(rg.check_resolved, "docs-ds", stream, ALLOW, status=403)
    rg.check_resolved("docs-a", {"indices": [{"name": "docs-a"}]}, ALLOW)


# ------------------------------------------------------------------ clauses


def _walk(body, policy=ALLOW):
    return rg.walk_clauses(body, policy)


@pytest.mark.parametrize("body, where", [
    ({"query": {"terms": {"text": {"index": "secret", "id": "1", "path": "text"}}}},
     "query.terms.text"),
    ({"query": {"bool": {"filter": [{"more_like_this": {"fields": ["text"], "like": [
        {"_index": "secret", "_id": "1"}]}}]}}}, "query.bool.filter[0].more_like_this.like[0]._index"),
    ({"query": {"geo_shape": {"loc": {"indexed_shape": {"index": "secret", "id": "1",
                                                        "path": "shape"}}}}},
     "query.geo_shape.loc.indexed_shape.index"),
    ({"query": {"geo_shape": {"loc": {"indexed_shape": {"id": "1"}}}}},  # default index: shapes
     "indexed_shape.index"),
    ({"query": {"percolate": {"field": "q", "index": "secret", "id": "1"}}}, "query.percolate.index"),
    ({"query": {"terms": {"text": {"index": "docs-a,secret", "id": "1", "path": "t"}}}},
     "query.terms.text"),
])
def test_other_index_reads_are_refused(body, where):
    err = _refused(_walk, body, status=403, match=where)
    assert err.kind == "osneural_clause_not_allowed"


def test_other_index_reads_inside_the_allow_list_are_returned_for_resolution():
    body = {"query": {"terms": {"text": {"index": "docs-b", "id": "1", "path": "t"}}},
            "ext": {"osneural": {"spec": {"filter": {"more_like_this": {
                "like": {"_index": "docs-c", "_id": "2"}}}}}}}
    refs = _walk(body)
    assert sorted((r.index, r.path) for r in refs) == [
        ("docs-b", "query.terms.text"),
        ("docs-c", "ext.osneural.spec.filter.more_like_this.like[0]._index")]
    # no allow-list: references are the cluster's business (passthrough: its security decides)
    assert len(rg.walk_clauses({"query": {"terms": {"t": {"index": "x", "id": "1"}}}}, Policy())) == 1


@pytest.mark.parametrize("body, where", [
    ({"script_fields": {"f": {"script": {"source": "1"}}}}, "script_fields"),
    ({"query": {"script": {"script": "doc['n'].value > 1"}}}, "query.script"),
    ({"query": {"script_score": {"query": {"match_all": {}}, "script": {"source": "1"}}}},
     "query.script_score"),
    ({"query": {"function_score": {"functions": [{"script_score": {"script": "1"}}]}}},
     "query.function_score.functions[0].script_score"),
    ({"runtime_mappings": {"x": {"type": "keyword", "script": "emit('a')"}}}, "runtime_mappings"),
    ({"search_pipeline": {"request_processors": [{"script": {"source": "1"}}]}}, "search_pipeline"),
    ({"aggs": {"a": {"terms": {"script": {"source": "1"}}}}}, "aggs.a.terms.script"),
    ({"aggs": {"a": {"scripted_metric": {"map_script": "1"}}}}, "aggs.a.scripted_metric"),
    ({"sort": [{"_script": {"type": "number", "script": "1"}}]}, "sort[0]._script"),
    ({"aggs": {"a": {"filters": {"filters": [{"script": {"script": "1"}}]}}}},
     "aggs.a.filters.filters[0].script"),
    ({"query": {"terms_set": {"t": {"terms": ["a"], "minimum_should_match_script": {
        "source": "1"}}}}}, "minimum_should_match_script"),
    ({"profile": True}, "profile"),
    ({"query": {"wrapper": {"query": "eyJtYXRjaF9hbGwiOnt9fQ=="}}}, "query.wrapper"),
    ({"suggest": {"s": {"text": "x", "phrase": {"field": "t", "collate": {
        "query": {"source": "{}"}}}}}}, "collate"),
])
def test_scripts_profile_and_hidden_clauses_are_refused(body, where):
    _refused(_walk, body, status=403, match=where)


def test_operator_opt_ins_and_look_alikes():
    scripts = Policy(("docs-*",), allow_scripts=True, allow_profile=True)
    assert _walk({"query": {"script": {"script": "1"}}, "profile": True}, scripts) == []
    # look-alikes: field names and values that happen to be clause keywords
    assert _walk({"query": {"bool": {"must": [{"match": {"like": "x"}},
                                              {"term": {"profile": "admin"}},
                                              {"terms": {"tags": ["index", "id"]}}]}},
                  "_source": ["script", "profile"], "sort": [{"percolate": "asc"}],
                  "aggs": {"by_tag": {"terms": {"field": "tags", "order": {"_count": "desc"},
                                                "include": {"partition": 0, "num_partitions": 2}}}},
                  "highlight": {"fields": {"like": {}}}}) == []


# ------------------------------------------------------------------ parameters and caps


def test_parameters():
    assert rg.check_params([("size", "3"), ("q", "x")], "search", ALLOW) == {"size": "3", "q": "x"}
    _refused(rg.check_params, [("search_pipeline", "p")], "search", ALLOW, status=403,
             match="--allow-scripts")
    _refused(rg.check_params, [("error_trace", "true")], "search", ALLOW, status=403,
             match="--allow-profile")
    _refused(rg.check_params, [("source", "{}")], "search", ALLOW, status=403)
    _refused(rg.check_params, [("scroll", "1m")], "search", ALLOW, status=400)
    _refused(rg.check_params, [("size", "1"), ("size", "2")], "search", ALLOW, status=400)
    _refused(rg.check_params, [("refresh", "true")], "search", ALLOW, status=400,
             match="[refresh]")
    assert rg.check_params([("error_trace", "true")], "doc",
                           Policy(allow_profile=True)) == {"error_trace": "true"}


def test_neural_caps():
    limits = Limits(max_first_stages=2, max_rescore_stages=1, max_query_chars=10)
    rg.check_neural_bounds({"query": "short", "spec": {"first_stages": [{}, {}]}}, limits)
    _refused(rg.check_neural_bounds, {"query": "x" * 11}, limits, status=400,
             match="ext.osneural.query: 11 characters")
    _refused(rg.check_neural_bounds, {"query": "x", "spec": {"first_stages": [{}] * 3}}, limits,
             match="ext.osneural.spec.first_stages: 3 stages")
    _refused(rg.check_neural_bounds, {"query": "x", "spec": {"rescore": [{}] * 2}}, limits,
             match="ext.osneural.spec.rescore: 2 stages")


def test_spec_strings_are_builtin_names_never_paths(tmp_path):
    from osneural.plugin.server import _spec_from_body
    from osneural.plugin.spec import SpecError

    secret = tmp_path / "leak.json"
    secret.write_text(json.dumps({"first_stages": [{"type": "bm25"}], "aws_secret": "s3cr3t"}))
    reasons = []
    for name in (str(secret), "../../../../etc/passwd", "/proc/self/environ", "/no/such/file",
                 str(tmp_path / "leak")):
        with pytest.raises(SpecError) as info:
            _spec_from_body({"ext": {"osneural": {"query": "x", "spec": name}}})
        reason = str(info.value)
        assert "unknown built-in spec" in reason and "s3cr3t" not in reason
        assert "root:" not in reason and "PATH=" not in reason
        reasons.append(reason.split("]", 1)[1])  # the text after the (echoed, bounded) name
    assert len(set(reasons)) == 1  # existing and missing files answer alike: nothing to probe
    spec = _spec_from_body({"ext": {"osneural": {"query": "x", "spec": "bm25"}}}).spec
    assert [s.type for s in spec.first_stages] == ["bm25"]


def test_passthrough_refuses_an_upstream_client_that_carries_credentials():
    """Passthrough's upstream client must hold no identity of its own, or an anonymous caller
    would borrow it."""
    from opensearchpy import OpenSearch
    from osneural.plugin.server import create_app

    with_creds = OpenSearch(hosts=["http://127.0.0.1:9"], http_auth=("svc", "pw"))
    with pytest.raises(ValueError, match="without credentials"):
        create_app("http://127.0.0.1:9", client=with_creds, auth="passthrough")
    create_app("http://127.0.0.1:9", client=with_creds, auth="service")  # its own identity: fine
    with pytest.raises(ValueError, match="auth must be one of"):
        create_app("http://127.0.0.1:9", auth="anonymous")


def test_access_check_window_from_the_environment_is_validated(monkeypatch) -> None:
    """A bad `OSNEURAL_ACCESS_CHECK_S` (not a number, negative, NaN) is an error naming it,
    never a silent default."""
    from osneural.plugin.access_check import AccessCheck, window_from_env

    monkeypatch.delenv("OSNEURAL_ACCESS_CHECK_S", raising=False)
    assert window_from_env() == 10.0
    for good, want in (("0", 0.0), ("2.5", 2.5)):
        monkeypatch.setenv("OSNEURAL_ACCESS_CHECK_S", good)
        assert window_from_env() == want and AccessCheck().window_s == want
    for bad in ("abc", "-1", "nan", "inf-"):
        monkeypatch.setenv("OSNEURAL_ACCESS_CHECK_S", bad)
        with pytest.raises(ValueError, match="OSNEURAL_ACCESS_CHECK_S"):
            window_from_env()


def test_a_remembered_access_check_is_passed_only_within_its_window_and_scope() -> None:
    """`passed` (the handler's no-thread fast path) says yes only for the credential and index
    that passed, only until the window ends, never with the window off, never for a refusal."""
    from osneural.plugin.access_check import AccessCheck

    now = [100.0]

    class Caller:
        def __init__(self, refuse: bool = False) -> None:
            self.refuse, self.calls = refuse, 0

        def search(self, **_kw):
            self.calls += 1
            if self.refuse:
                raise PermissionError("403")

    check = AccessCheck(window_s=10, clock=lambda: now[0])
    who = Caller()
    assert not check.passed("docs", "alice")
    check.check(who, "docs", "alice")
    assert who.calls == 1
    assert check.passed("docs", "alice")
    assert not check.passed("docs", "bob") and not check.passed("other", "alice")
    now[0] += 9.9
    assert check.passed("docs", "alice")
    now[0] += 0.2
    assert not check.passed("docs", "alice")
    with pytest.raises(PermissionError):
        check.check(Caller(refuse=True), "docs", "mallory")
    assert not check.passed("docs", "mallory")
    off = AccessCheck(window_s=0, clock=lambda: now[0])
    off.check(who, "docs", "alice")
    assert not off.passed("docs", "alice")
