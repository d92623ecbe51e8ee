"""An app's data stays the app's, against the session's real node.

* A catalog with keyword, integer, boolean, date and nested-object fields: native `term`, `range`,
  `nested`, `terms` aggregation and `sort` on the app's fields answer what the corpus file itself
  says; items with an empty title and text are indexed with their fields, counted, and not failed;
  a changed item re-ingested replaces its representations and fields.
* Bad input (`--mapping` not JSON or taking osneural's names, a text path no document has, a
  missing or forbidden source) is refused before anything is written.
* `--from-index` of a 3-shard source: same count, the source's field mappings and analysis, a
  searchable neural index; killed mid-run (a bulk request held by a proxy, the process SIGKILLed)
  and `--resume`d with 0 lost and 0 duplicated; `--swap-alias` leaves the alias on the target.
* `--in-place` adds what needs no `index.knn`, and refuses vectors saying what to run instead.
* An index built the previous way (app fields under a stored-only `metadata`, strict mapping)
  keeps answering today's Searcher, and both upgrade paths make its fields filterable.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections import Counter
from pathlib import Path

import pytest
from ingest_proxy import CuttingProxy
from osneural.ingest.codec_store import delete_codecs
from osneural.ingest.commands import load_mapping_file
from osneural.ingest.corpus import FieldNames
from osneural.ingest.indexer import index_corpus, index_options
from osneural.ingest.source_index import open_source, resume_marker
from osneural.plugin import Searcher
from osneural.plugin.resources import EncoderCache, ResourceCache
from test_ingest_fakes import fake_encoders
from test_ingest_indexer import _fetch
from tls_front import USERS

from osneural.cli import main as cli_main

pytestmark = pytest.mark.integration

CATEGORIES = ("lamps", "chairs", "desks", "rugs")
COLORS = ("red", "green", "blue")
WORDS = ("oak", "steel", "linen", "walnut", "brass", "wool", "glass", "cotton")


def catalog(n: int = 120) -> list[dict]:
    """A product catalog; every 25th item has no title and no description (facets only)."""
    out = []
    for i in range(n):
        cat = CATEGORIES[i % 4]
        a, b = WORDS[i % 8], WORDS[(i * 3 + 1) % 8]
        doc = {"_id": f"p{i:03d}", "title": f"{a} {cat[:-1]} number {i}",
               "text": f"A {a} and {b} {cat[:-1]}, item {i}, sold in {COLORS[i % 3]}.",
               "category": cat, "price": (i * 37) % 500 + 5, "in_stock": i % 3 != 0,
               "published": f"2024-{1 + i % 12:02d}-{1 + i % 28:02d}",
               "specs": [{"color": COLORS[i % 3], "weight": i % 7},
                         {"color": COLORS[(i + 1) % 3], "weight": (i + 2) % 7}]}
        if i % 25 == 7:
            doc["title"] = doc["text"] = ""
        out.append(doc)
    return out


APP_MAPPING = {"properties": {"category": {"type": "keyword"}, "price": {"type": "integer"},
                              "in_stock": {"type": "boolean"}, "published": {"type": "date"},
                              "specs": {"type": "nested", "properties": {
                                  "color": {"type": "keyword"}, "weight": {"type": "integer"}}}}}


def _write_jsonl(path: Path, docs: list[dict]) -> Path:
    path.write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    return path


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def _search(client, index: str, body: dict) -> dict:
    return client.search(index=index, body=body)


def _ids(resp: dict) -> list[str]:
    return [h["_id"] for h in resp["hits"]["hits"]]


@pytest.fixture
def names(opensearch_client):
    tag = uuid.uuid4().hex[:8]
    made = {k: f"test-app-{k}-{tag}" for k in ("src", "tgt", "alias", "old", "new")}
    yield made
    for key in ("src", "tgt", "old", "new"):
        opensearch_client.indices.delete(index=made[key], ignore_unavailable=True)
        delete_codecs(opensearch_client, made[key])


def assert_native_answers(client, index: str, docs: list[dict]) -> None:
    """term, range, bool, nested, terms aggregation and sort against the corpus itself."""
    client.indices.refresh(index=index)
    n = len(docs)
    resp = _search(client, index, {"size": n, "query": {"term": {"category": "lamps"}}})
    assert sorted(_ids(resp)) == sorted(d["_id"] for d in docs if d["category"] == "lamps")
    resp = _search(client, index, {"size": n, "query": {"bool": {"filter": [
        {"range": {"price": {"gte": 100, "lt": 300}}}, {"term": {"in_stock": True}}]}}})
    assert sorted(_ids(resp)) == sorted(
        d["_id"] for d in docs if 100 <= d["price"] < 300 and d["in_stock"])
    resp = _search(client, index, {"size": n, "query": {"range": {"published": {"gte": "2024-06-01"}}}})
    assert sorted(_ids(resp)) == sorted(d["_id"] for d in docs if d["published"] >= "2024-06-01")
    # nested: both conditions on the same spec row
    resp = _search(client, index, {"size": n, "query": {"nested": {"path": "specs", "query": {
        "bool": {"filter": [{"term": {"specs.color": "red"}}, {"term": {"specs.weight": 3}}]}}}}})
    assert sorted(_ids(resp)) == sorted(d["_id"] for d in docs if any(
        s["color"] == "red" and s["weight"] == 3 for s in d["specs"]))
    resp = _search(client, index, {"size": 0, "aggs": {"c": {"terms": {"field": "category"}}}})
    got = {b["key"]: b["doc_count"] for b in resp["aggregations"]["c"]["buckets"]}
    assert got == dict(Counter(d["category"] for d in docs))
    resp = _search(client, index, {"size": 10, "sort": [{"price": "desc"}, {"published": "asc"}],
                                   "_source": ["price"]})
    want = sorted(docs, key=lambda d: (-d["price"], d["published"]))[:10]
    assert [h["_source"]["price"] for h in resp["hits"]["hits"]] == [d["price"] for d in want]


def test_catalog_fields_filters_facets_sorts_empty_items_and_updates(
        opensearch_client, opensearch_url, names, tmp_path: Path) -> None:
    client, index = opensearch_client, names["tgt"]
    corpus = _write_jsonl(tmp_path / "catalog.jsonl", catalog())
    mapping = tmp_path / "mapping.json"
    mapping.write_text(json.dumps(APP_MAPPING), encoding="utf-8")
    docs = _read_jsonl(corpus)
    empty = [d["_id"] for d in docs if not d["title"] and not d["text"]]
    assert empty  # the corpus has items with no title and no description

    app, settings = load_mapping_file(str(mapping))
    options = dataclasses.replace(index_options(), app_mapping=app, app_settings=settings)
    summary = index_corpus(client, corpus, index, representations="dense,sparse",
                           encoders=fake_encoders(), progress=False, options=options,
                           failure_report=tmp_path / "f.jsonl")
    assert (summary.indexed, summary.failed, summary.empty) == (len(docs), 0, len(empty))
    assert f"{len(empty)} of the indexed documents have an empty title and text" in summary.format()
    props = client.indices.get_mapping(index=index)[index]["mappings"]["properties"]
    assert props["specs"]["type"] == "nested" and props["price"]["type"] == "integer"
    assert_native_answers(client, index, docs)
    hit = client.get(index=index, id=empty[0])["_source"]
    assert "dense" not in hit and "sparse" not in hit and hit["category"] == docs[7]["category"]

    # through osneural: a spec's filter on an app field applies to every first stage
    spec = {"first_stages": [{"type": "bm25", "k": 50}], "fusion": {"type": "rrf"},
            "filter": {"term": {"category": "rugs"}}, "size": 20}
    s = Searcher(client, index, cache=ResourceCache(EncoderCache()))
    try:
        got = s.search("walnut rug", spec)["hits"]["hits"]
    finally:
        s.close()
    assert got and all(h["_source"]["category"] == "rugs" for h in got)

    # an update: the changed item replaces every representation and field of the old one
    before = _fetch(client, index, ["p001"])["p001"]["_source"]
    changed = dict(docs[1], text="now a completely different velvet product", price=1)
    del changed["in_stock"]
    summary = index_corpus(client, [changed], index, encoders=fake_encoders(), progress=False,
                           failure_report=tmp_path / "f2.jsonl")
    assert summary.indexed == 1
    after = _fetch(client, index, ["p001"])["p001"]["_source"]
    assert after["price"] == 1 and "in_stock" not in after and after["dense"] != before["dense"]
    assert after["sparse"] != before["sparse"] and "velvet" in after["sparse"]


def test_bad_input_is_refused_before_anything_is_written(
        opensearch_client, opensearch_url, names, tmp_path: Path, tls_front) -> None:
    client, index = opensearch_client, names["tgt"]
    renamed = [{"_id": d["_id"], "name": d["title"], "description": d["text"],
                "category": d["category"]} for d in catalog(10)]
    corpus = _write_jsonl(tmp_path / "catalog.jsonl", renamed)
    base = ["ingest", str(corpus), "--index", index, "--url", opensearch_url, "--no-progress",
            "--representations", "sparse"]
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{properties: 1", encoding="utf-8")
    taken = tmp_path / "taken.json"
    taken.write_text(json.dumps({"properties": {"sparse": {"type": "keyword"}}}), encoding="utf-8")
    cases = [
        (["--mapping", str(bad_json), "--title-field", "name"], f"--mapping {bad_json} is not JSON"),
        (["--mapping", str(taken), "--title-field", "name"],
         "field 'sparse' is one of osneural's own fields"),
        (["--text-field", "body", "--title-field", "headline"],
         "has the title field 'headline' or a text field ('body')"),
    ]
    for extra, message in cases:
        err = _cli_stderr(base + extra)
        assert message in err, err
        assert not client.indices.exists(index=index)
    src = ["ingest", "--index", index, "--url", opensearch_url, "--no-progress"]
    err = _cli_stderr([*src, "--from-index", names["src"]])
    assert f"source index {names['src']!r} does not exist" in err
    # a source the caller may not read (403 from the secured front, as the security plugin says)
    forbidden = f"restricted-{names['src']}"
    client.indices.create(index=forbidden, body={"mappings": {"properties": {"text": {"type": "text"}}}})
    try:
        err = _cli_stderr(["ingest", "--from-index", forbidden, "--index", index, "--url",
                           tls_front.url, "--user", "bob", "--password", USERS["bob"],
                           "--ca-certs", str(tls_front.ca), "--no-progress"])
        assert f"the caller may not read source index {forbidden!r} (403" in err, err
        err = _cli_stderr([*src, "--from-index", forbidden, "--text-field", "body.summary"])
        assert "maps none of the title field 'title' or text fields 'body.summary'" in err, err
        # an alias that names another index is not the source's to move
        client.indices.create(index=names["old"])
        client.indices.put_alias(index=names["old"], name=names["alias"])
        err = _cli_stderr([*src, "--from-index", forbidden, "--swap-alias", names["alias"]])
        assert f"alias {names['alias']!r} points at {names['old']}, not at the source" in err, err
        err = _cli_stderr([*src, "--from-index", forbidden, "--index", forbidden])
        assert "is the source index" in err, err
    finally:
        client.indices.delete(index=forbidden)
    assert not client.indices.exists(index=index)


def _cli_stderr(argv: list[str]) -> str:
    """Run the CLI in a subprocess (exit 2 expected); its stderr."""
    proc = subprocess.run([sys.executable, "-m", "osneural.cli", *argv], capture_output=True,
                          text=True, timeout=600, check=False)
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    return proc.stderr


def _make_source(client, name: str, docs: list[dict]) -> None:
    """A 3-shard app index with its own analyzer, mapping and a nested field."""
    props = {**APP_MAPPING["properties"],
             "name": {"type": "text", "analyzer": "shop_text",
                      "fields": {"raw": {"type": "keyword"}}},
             "description": {"type": "text", "analyzer": "shop_text"},
             "details": {"properties": {"summary": {"type": "text"}}}}
    client.indices.create(index=name, body={
        "settings": {"index": {"number_of_shards": 3, "number_of_replicas": 0},
                     "analysis": {"analyzer": {"shop_text": {
                         "type": "custom", "tokenizer": "standard",
                         "filter": ["lowercase", "asciifolding"]}}}},
        "mappings": {"properties": props}})
    body = []
    for d in docs:
        src = {k: v for k, v in d.items() if k not in ("_id", "title", "text")}
        src["name"] = d["title"]
        src["description"] = d["text"]
        src["details"] = {"summary": f"catalog entry {d['_id']}"} if d["text"] else {}
        body += [{"index": {"_index": name, "_id": d["_id"]}}, src]
    resp = client.bulk(body=body, refresh=True)
    assert not resp["errors"]


def test_source_is_read_whole_once_by_pages_and_by_slices(opensearch_client, names) -> None:
    docs = catalog(61)
    _make_source(opensearch_client, names["src"], docs)
    src = open_source(opensearch_client, names["src"], FieldNames(title="name", text="description"))
    assert src.count == len(docs) and len(src) == len(docs)

    def open_pits() -> int:
        return len(opensearch_client.transport.perform_request(
            "GET", "/_search/point_in_time/_all").get("pits", []))

    before = open_pits()
    for slices in (1, 3):
        src.slices, src.page_size = slices, 7  # several pages per shard and per slice
        seen = Counter(r["_id"] for r in src.records())
        assert set(seen) == {d["_id"] for d in docs} and set(seen.values()) == {1}, slices
    assert open_pits() == before  # every PIT the reads opened was closed again


class HoldBulk:
    """A proxy `cut` that holds the `n`-th bulk request until released, then drops it."""

    def __init__(self, n: int) -> None:
        self.n, self.seen = n, 0
        self.held, self.release = threading.Event(), threading.Event()

    def __call__(self, data: bytes) -> bool:
        line = data.split(b"\r\n", 1)[0]
        if not (line.startswith(b"POST /") and b"/_bulk" in line):
            return False
        self.seen += 1
        if self.seen != self.n:
            return False
        self.held.set()
        self.release.wait(600)
        return True


@pytest.mark.slow
def test_from_index_kill_resume_swap_alias_and_search(
        opensearch_client, opensearch_url, names, tmp_path: Path) -> None:
    client = opensearch_client
    docs = catalog(160)
    _make_source(client, names["src"], docs)
    client.indices.put_alias(index=names["src"], name=names["alias"])
    src_props = client.indices.get_mapping(index=names["src"])[names["src"]]["mappings"]["properties"]
    argv = ["ingest", "--from-index", names["alias"], "--index", names["tgt"], "--title-field",
            "name", "--text-field", "description", "--text-field", "details.summary",
            "--representations", "dense,sparse", "--batch-size", "16", "--no-progress",
            "--failures", str(tmp_path / "f.jsonl")]
    hold = HoldBulk(3)
    proxy = CuttingProxy(opensearch_url, hold)
    proc = subprocess.Popen([sys.executable, "-m", "osneural.cli", *argv, "--url", proxy.url],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert hold.held.wait(600), proc.communicate(timeout=60)
        os.kill(proc.pid, signal.SIGKILL)  # mid-run: two bulks landed, the third is in flight
        proc.wait(timeout=60)
    finally:
        hold.release.set()
        proxy.close()
    client.indices.refresh(index=names["tgt"])
    assert client.count(index=names["tgt"])["count"] == 32

    rc = cli_main([*argv, "--resume", "--swap-alias", names["alias"], "--url", opensearch_url,
                   "--json"])
    assert rc == 0
    client.indices.refresh(index=names["tgt"])
    # 0 lost, 0 duplicated: every source id once, nothing else
    got = {}
    for hit in client.search(index=names["tgt"], body={"size": 1000, "_source": {"excludes": [
            "dense", "sparse"]}})["hits"]["hits"]:
        got[hit["_id"]] = hit["_source"]
    assert client.count(index=names["tgt"])["count"] == len(docs) == len(got)
    src_docs = {h["_id"]: h["_source"] for h in client.search(
        index=names["src"], body={"size": 1000})["hits"]["hits"]}
    assert set(got) == set(src_docs)
    for doc_id, src in src_docs.items():  # every source field kept as it was
        assert {k: got[doc_id][k] for k in src} == src
        assert got[doc_id]["title"] == src["name"]
    # the source's mapping and analysis came along
    tgt = client.indices.get(index=names["tgt"])[names["tgt"]]
    for field, prop in src_props.items():
        assert tgt["mappings"]["properties"][field] == prop, field
    assert tgt["settings"]["index"]["number_of_shards"] == "3"
    assert tgt["settings"]["index"]["analysis"]["analyzer"]["shop_text"]["tokenizer"] == "standard"
    assert_native_answers(client, names["tgt"], docs)
    # the alias moved in one call: it names exactly the target now
    assert set(client.indices.get_alias(name=names["alias"])) == {names["tgt"]}
    # a searchable neural index, read through the alias
    s = Searcher(client, names["alias"])
    try:
        target = docs[41]
        hits = s.search(target["text"], "dense")["hits"]["hits"]
    finally:
        s.close()
    assert target["_id"] in [h["_id"] for h in hits[:3]]


@pytest.mark.slow
def test_in_place_adds_what_needs_no_knn_and_refuses_vectors(
        opensearch_client, opensearch_url, names, tmp_path: Path) -> None:
    client = opensearch_client
    docs = catalog(40)
    _make_source(client, names["src"], docs)
    base = ["ingest", "--from-index", names["src"], "--in-place", "--title-field", "name",
            "--text-field", "description", "--url", opensearch_url, "--no-progress",
            "--failures", str(tmp_path / "f.jsonl")]
    err = _cli_stderr([*base, "--representations", "dense,sparse"])
    assert "--in-place cannot add dense" in err and "index.knn=true" in err
    assert f"--from-index {names['src']} --index {names['src']}-neural --swap-alias" in err
    assert "--representations sparse" in err
    assert "_meta" not in client.indices.get_mapping(index=names["src"])[names["src"]]["mappings"]

    summary = index_corpus(client, open_source(client, names["src"], FieldNames(
        title="name", text="description")), names["src"], representations="sparse,binary",
        encoders=fake_encoders(), progress=False, in_place=True, failure_report=tmp_path / "g")
    assert summary.indexed == len(docs) and summary.failed == 0
    client.indices.refresh(index=names["src"])
    hit = client.get(index=names["src"], id="p002")["_source"]
    assert hit["name"] == docs[2]["title"] and hit["price"] == docs[2]["price"]
    assert hit["sparse"] and hit["bin_tokens"] and hit["title"] == docs[2]["title"]
    assert client.count(index=names["src"])["count"] == len(docs)
    assert_native_answers(client, names["src"], docs)
    # resuming an in-place run skips what is enriched already; an alias names the source too
    client.indices.put_alias(index=names["src"], name=names["alias"])
    again = index_corpus(client, open_source(client, names["alias"], FieldNames(
        title="name", text="description")), names["alias"], encoders=fake_encoders(),
        progress=False, in_place=True, resume=True, failure_report=tmp_path / "h")
    non_empty = sum(1 for d in docs if d["title"] or d["text"])
    assert again.skipped == non_empty and again.failed == 0


@pytest.mark.slow
def test_index_built_the_previous_way_answers_and_upgrades(
        opensearch_client, names, tmp_path: Path) -> None:
    from osneural.encoders import load_default

    client, old = opensearch_client, names["old"]
    encoders = {k: load_default(k) for k in ("dense", "sparse")}
    # the previous release's layout: strict mapping, every app field in a stored-only object
    client.indices.create(index=old, body={
        "settings": {"index": {"knn": True, "number_of_shards": 1, "number_of_replicas": 0}},
        "mappings": {"dynamic": "strict", "properties": {
            "title": {"type": "text", "analyzer": "english"},
            "text": {"type": "text", "analyzer": "english"},
            "metadata": {"type": "object", "enabled": False}}}})
    docs = catalog(40)
    old_style = [{"_id": d["_id"], "title": d["title"] or "untitled", "text": d["text"],
                  "metadata": {"category": d["category"], "price": d["price"]}} for d in docs]
    index_corpus(client, old_style, old, representations="dense,sparse", encoders=encoders,
                 progress=False, failure_report=tmp_path / "f")
    mapping = client.indices.get_mapping(index=old)[old]["mappings"]
    assert mapping["dynamic"] == "strict" and mapping["properties"]["metadata"]["enabled"] is False
    assert client.get(index=old, id="p003")["_source"]["metadata"]["category"] == docs[3]["category"]
    # today's Searcher answers it
    s = Searcher(client, old)
    try:
        for spec in ("bm25", "dense"):
            hits = s.search(docs[5]["text"], spec)["hits"]["hits"]
            assert hits[0]["_id"] == "p005", spec
    finally:
        s.close()
    # upgrade 1: copy it with --from-index; the stored-only fields become filterable
    summary = index_corpus(client, open_source(client, old, FieldNames()), names["new"],
                           representations="dense,sparse", encoders=encoders, progress=False,
                           failure_report=tmp_path / "g")
    assert summary.indexed == len(docs)
    client.indices.refresh(index=names["new"])
    resp = client.search(index=names["new"], body={"size": 100, "query": {"term": {
        "category.keyword": "lamps"}}})
    assert sorted(_ids(resp)) == sorted(d["_id"] for d in docs if d["category"] == "lamps")
    # upgrade 2: re-ingest into the old index itself; its mapping now takes top-level fields
    changed = dict(old_style[0], category="lamps", text="a new description")
    summary = index_corpus(client, [changed], old, encoders=encoders, progress=False,
                           failure_report=tmp_path / "h")
    assert summary.indexed == 1 and any("strict mapping" in n for n in summary.notes)
    client.indices.refresh(index=old)
    resp = client.search(index=old, body={"query": {"term": {"category.keyword": "lamps"}}})
    assert _ids(resp) == ["p000"]


def test_documents_with_an_empty_title_and_text_do_not_fail_the_run(
        opensearch_client, names, tmp_path: Path) -> None:
    lines = [{"_id": "1", "title": "Flow", "text": "boundary layer flow over a flat plate"},
             {"_id": "2", "title": "", "text": ""},  # as in BEIR corpora: present, empty
             {"_id": "3", "title": " ", "text": "", "journal": "J. Aero"},
             {"_id": "4"}]  # nothing but an id: rejected
    corpus = _write_jsonl(tmp_path / "corpus.jsonl", lines)
    s = index_corpus(opensearch_client, corpus, names["tgt"], representations="dense,sparse",
                     encoders=fake_encoders(), progress=False, failure_report=tmp_path / "f.jsonl")
    assert (s.indexed, s.empty, s.failed) == (3, 2, 1)
    opensearch_client.indices.refresh(index=names["tgt"])
    got = opensearch_client.search(index=names["tgt"], body={"query": {"term": {
        "journal.keyword": "J. Aero"}}})["hits"]["hits"]
    assert [h["_id"] for h in got] == ["3"] and "dense" not in got[0]["_source"]


def test_the_resume_marker_is_a_field_an_update_can_drop() -> None:
    """An in-place `--resume` finds the documents to re-encode by a field they lack: one kept
    out of `_source` when there is one (an `_update` drops those), else the first one written."""
    every = ["text", "dense", "sparse", "binary", "pq", "multivector"]
    assert resume_marker(every, ("dense", "fde", "mv_codes")) == "mv_codes"
    assert resume_marker(["text", "dense", "binary"], ("dense", "internal_notes")) == "dense"
    assert resume_marker(["text", "dense", "binary"], ()) == "bin_code"
    assert resume_marker(every, ()) == "mv_codes"  # an index that refused the exclusion
    assert resume_marker(["text", "sparse"], ("mv_codes",)) is None  # nothing answers exists


def test_a_partial_update_drops_what_is_kept_out_of_source_and_a_resume_restores_it(
        opensearch_client, names, tmp_path: Path) -> None:
    """`mv_codes` lives outside `_source`, and so do the vectors of an index that excludes any
    field (the k-NN derived source is off there: `vectors_out_of_source`), so OpenSearch's
    `_update` (which rebuilds the document from `_source`) drops them and keeps every other
    representation; `--in-place --resume` on an index with the multivector representation
    re-encodes exactly the documents that lost them, with the index's own codecs, and leaves the
    updated field alone."""
    from osneural.mappings.stored_vectors import read_vector, request_parts, vector_fields

    client, index = opensearch_client, names["tgt"]
    docs = [d for d in catalog(30) if d["title"]]
    every = {d["_id"] for d in docs}
    summary = index_corpus(client, docs, index, representations="dense,sparse,binary,multivector",
                           encoders=fake_encoders(), progress=False,
                           failure_report=tmp_path / "f.jsonl")
    assert summary.indexed == len(docs) and summary.failed == 0
    mapping = client.indices.get_mapping(index=index)[index]["mappings"]
    assert {"mv_codes", "dense", "fde"} <= set(mapping["_source"]["excludes"])
    settings = client.indices.get_settings(index=index, flat_settings=True)[index]["settings"]
    assert settings["index.knn.derived_source.enabled"] == "false"
    vectors = vector_fields(mapping)
    assert not vectors["dense"].in_source and vectors["fde"].byte

    def holding(field: str) -> dict[str, str]:
        client.indices.refresh(index=index)
        resp = client.search(index=index, body={
            "size": 100, "_source": False, "docvalue_fields": [field],
            "query": {"exists": {"field": field}}})
        return {h["_id"]: h["fields"][field][0] for h in resp["hits"]["hits"]}

    def stored(field: str) -> dict[str, list]:
        client.indices.refresh(index=index)
        source, scripts = request_parts(vectors, [field])
        resp = client.search(index=index, body={"size": 100, "_source": source or False,
                                                "script_fields": scripts})
        out = {h["_id"]: read_vector(h, vectors[field]) for h in resp["hits"]["hits"]}
        return {k: v for k, v in out.items() if v is not None}

    codes, dense, fde = holding("mv_codes"), stored("dense"), stored("fde")
    assert set(codes) == set(dense) == set(fde) == every
    assert len(dense["p003"]) == 384 and all(-128 <= x <= 127 for x in fde["p003"])
    # each document's own vector (not one array shared by every hit of the page)
    assert len({tuple(v) for v in dense.values()}) == len({tuple(v) for v in fde.values()}) == len(docs)
    got = client.search(index=index, body={"size": 1, "query": {"ids": {"values": ["p003"]}}})
    assert not {"dense", "fde", "mv_codes"} & set(got["hits"]["hits"][0]["_source"])
    for doc_id, price in (("p001", 7), ("p002", 8)):
        client.update(index=index, id=doc_id, body={"doc": {"price": price}})
    for field in ("mv_codes", "dense", "fde"):
        after = holding(field) if field == "mv_codes" else stored(field)
        assert set(after) == every - {"p001", "p002"}, field
    assert set(holding("bin_code")) == every  # in `_source`: kept

    again = index_corpus(client, open_source(client, index, FieldNames(title="title", text="text")),
                         index, encoders=fake_encoders(), progress=False, in_place=True,
                         resume=True,
                         failure_report=tmp_path / "g.jsonl")
    assert (again.indexed, again.skipped, again.failed) == (2, len(docs) - 2, 0)
    assert holding("mv_codes") == codes  # the same codes, from the index's own codecs
    assert stored("fde") == fde
    restored = stored("dense")
    assert set(restored) == every
    for doc_id in ("p001", "p002"):
        assert restored[doc_id] == pytest.approx(dense[doc_id], abs=1e-6)
    assert client.get(index=index, id="p001")["_source"]["price"] == 7
