"""Ingestion robustness against the real node (issue #12's ingestion bullets, #13 item 4).

Lone surrogates, an unreachable node at the start, connections cut during the `--resume`
existence check (a real TCP proxy cuts them), a cluster at the flood-stage disk watermark and an
index template that rejects the mapping; shards, replicas and index settings; adopting an empty
index someone else created; codec generations.
"""

from __future__ import annotations

import json
import re
import socket
import time
from pathlib import Path

import pytest
from ingest_proxy import CuttingProxy, cut_first
from osneural.ingest.bulk import FailureReport
from osneural.ingest.codec_store import delete_codecs, save_codecs
from osneural.ingest.indexer import IndexMismatch, IngestError, index_corpus
from osneural.ingest.recode import recode_binary
from test_ingest_fakes import FakeDense, fake_encoders

from osneural.cli import main as cli_main
from osneural.codecs import CodecBundle
from osneural.codecs.bundle import CODECS_INDEX

pytestmark = pytest.mark.integration


def _docs(n: int, start: int = 0) -> list[dict]:
    return [{"_id": f"d{i}", "title": f"T{i}", "text": f"document {i} about topic {i % 3}"}
            for i in range(start, start + n)]


def _codec_doc(client, index: str) -> dict | None:
    if not client.indices.exists(index=CODECS_INDEX):
        return None
    resp = client.get(index=CODECS_INDEX, id=index, ignore=404)
    return resp.get("_source") if resp.get("found") else None


def _meta(client, index: str) -> dict:
    return client.indices.get_mapping(index=index)[index]["mappings"]["_meta"]["osneural"]


def _settings(client, index: str) -> dict:
    return client.indices.get_settings(index=index, flat_settings=True)[index]["settings"]


def test_lone_surrogates_are_one_failure_each_and_resume_works(
        opensearch_client, index_name, tmp_path: Path) -> None:
    good = _docs(10)
    lines = [json.dumps(d) for d in good]  # json.dumps writes "\ud800" as the JSON escape
    lines.insert(2, json.dumps({"_id": "s-text", "text": "broken \ud800 text"}))
    lines.insert(5, json.dumps({"_id": "s-extra", "text": "fine", "extra": {"k": ["\udfff"]}}))
    lines.insert(8, json.dumps({"_id": "s-id\ud800", "text": "fine"}))
    assert "\\ud800" in lines[2]
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    report = tmp_path / "failures.jsonl"
    try:
        summary = index_corpus(opensearch_client, corpus, index_name, representations="dense,sparse",
                               batch_size=4, encoders=fake_encoders(), failure_report=report,
                               progress=False)
        assert (summary.indexed, summary.failed) == (10, 3)
        rows = FailureReport.read(report)
        assert [(r["line"], r["id"]) for r in rows] == [
            (3, "s-text"), (6, "s-extra"), (9, "s-id\\ud800")]
        assert ["'text'" in rows[0]["reason"], "'extra.k[0]'" in rows[1]["reason"],
                "'_id'" in rows[2]["reason"]] == [True, True, True]
        assert all("lone UTF-16 surrogate" in r["reason"] for r in rows)
        assert opensearch_client.count(index=index_name)["count"] == 10

        again = index_corpus(opensearch_client, corpus, index_name, resume=True, batch_size=4,
                             encoders=fake_encoders(), failure_report=report, progress=False)
        assert (again.indexed, again.skipped, again.failed) == (0, 10, 3)
        assert len(FailureReport.read(report)) == 3
    finally:
        delete_codecs(opensearch_client, index_name)


def test_template_rejecting_the_mapping_leaves_no_codec_document(
        opensearch_client, index_name, tmp_path: Path) -> None:
    # An older index of this name left its codec document behind; it must not survive either.
    save_codecs(opensearch_client, index_name, CodecBundle(params={"stale": True}), generation="old")
    template = f"reject-{index_name}"
    opensearch_client.indices.put_index_template(name=template, body={
        "index_patterns": [index_name], "priority": 500,
        "template": {"settings": {"index.mapping.total_fields.limit": 3}}})
    try:
        with pytest.raises(IngestError, match=r"could not be created: .*total fields") as info:
            index_corpus(opensearch_client, _docs(6), index_name, representations="dense,sparse",
                         encoders=fake_encoders(), progress=False,
                         failure_report=tmp_path / "r.jsonl")
        assert "\n" not in str(info.value)
        assert not opensearch_client.indices.exists(index=index_name)
        assert _codec_doc(opensearch_client, index_name) is None
    finally:
        opensearch_client.indices.delete_index_template(name=template)


def _cluster_settings(client) -> dict:
    s = client.cluster.get_settings(flat_settings=True)
    return {**s.get("persistent", {}), **s.get("transient", {})}


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(1)


def test_flood_stage_watermark_leaves_no_codec_document(
        opensearch_client, index_name, tmp_path: Path) -> None:
    client = opensearch_client
    flood = {"cluster.routing.allocation.disk.threshold_enabled": True,
             "cluster.routing.allocation.disk.watermark.low": "1000tb",
             "cluster.routing.allocation.disk.watermark.high": "1000tb",
             "cluster.routing.allocation.disk.watermark.flood_stage": "1000tb",
             "cluster.info.update.interval": "10s"}
    client.cluster.put_settings(body={"transient": flood})
    try:
        # every node is past flood stage: OpenSearch blocks index creation and writes itself
        _wait(lambda: _cluster_settings(client).get("cluster.blocks.create_index") == "true",
              90, "the flood-stage create-index block")
        with pytest.raises(IngestError, match=r"flood-stage|create-index blocked") as info:
            index_corpus(client, _docs(6), index_name, representations="dense,binary",
                         encoders=fake_encoders(), progress=False,
                         failure_report=tmp_path / "r.jsonl")
        assert "\n" not in str(info.value)
        assert not client.indices.exists(index=index_name)
        assert _codec_doc(client, index_name) is None
    finally:
        client.cluster.put_settings(body={"transient": dict.fromkeys(flood)})
        # The disk monitor may still be finishing a check that re-applies the blocks: clear them
        # until two checks a second apart find none, so later tests get a writable cluster.
        clean = 0
        for _ in range(30):
            client.cluster.put_settings(body={"persistent": {"cluster.blocks.create_index": None},
                                              "transient": {"cluster.blocks.create_index": None}})
            client.indices.put_settings(index="_all",
                                        body={"index.blocks.read_only_allow_delete": None})
            blocked = "cluster.blocks.create_index" in _cluster_settings(client) or any(
                "index.blocks.read_only_allow_delete" in v["settings"]
                for v in client.indices.get_settings(index="_all", flat_settings=True).values())
            clean = 0 if blocked else clean + 1
            if clean >= 2:
                break
            time.sleep(1)
        assert clean >= 2, "the flood-stage blocks kept coming back"


def test_codec_generation_is_new_per_index_build_and_recode(
        opensearch_client, index_name, tmp_path: Path) -> None:
    client = opensearch_client
    kw = dict(representations="dense,binary", encoders=fake_encoders(), progress=False,
              failure_report=tmp_path / "r.jsonl")
    try:
        s1 = index_corpus(client, _docs(8), index_name, **kw)
        gen1 = _meta(client, index_name)["codec_generation"]
        assert re.fullmatch(r"[0-9a-f]{32}", gen1) and s1.codec_generation == gen1
        assert _codec_doc(client, index_name)["generation"] == gen1
        # a resumed run keeps the index's codecs and so its generation
        index_corpus(client, _docs(10), index_name, resume=True, **kw)
        assert _meta(client, index_name)["codec_generation"] == gen1

        client.indices.delete(index=index_name)  # the codec document stays behind, stale
        assert _codec_doc(client, index_name)["generation"] == gen1
        index_corpus(client, _docs(8), index_name, **kw)
        gen2 = _meta(client, index_name)["codec_generation"]
        assert gen2 != gen1 and _codec_doc(client, index_name)["generation"] == gen2

        recode_binary(client, index_name, 8)
        gen3 = _meta(client, index_name)["codec_generation"]
        assert gen3 not in (gen1, gen2) and _codec_doc(client, index_name)["generation"] == gen3
        index_corpus(client, _docs(9), index_name, resume=True, **kw)  # generations agree

        # codecs replaced behind the index's back: documents would disagree with them, refused
        from osneural.ingest.codec_store import load_codecs

        save_codecs(client, index_name, load_codecs(client, index_name), generation="f" * 32)
        with pytest.raises(IndexMismatch, match=f"codec generation {gen3}.*holds f{{32}}"):
            index_corpus(client, _docs(12), index_name, resume=True, **kw)
        assert client.count(index=index_name)["count"] == 9  # d0-d8, nothing from the refused run
    finally:
        delete_codecs(client, index_name)


class SpyDense(FakeDense):
    """Records the index's refresh interval each time it encodes once the index exists."""

    def __init__(self, client, index: str) -> None:
        super().__init__()
        self.client, self.index, self.seen = client, index, []

    def encode_documents(self, texts):
        if self.client.indices.exists(index=self.index):
            self.seen.append(_settings(self.client, self.index).get("index.refresh_interval"))
        return super().encode_documents(texts)


def test_shards_replicas_settings_and_refresh_interval_during_bulk(
        opensearch_client, index_name, tmp_path: Path) -> None:
    from osneural.ingest.indexer import CodecParams

    spy = SpyDense(opensearch_client, index_name)
    try:
        s = index_corpus(opensearch_client, _docs(12), index_name, representations="dense",
                         batch_size=4, encoders={"dense": spy}, progress=False,
                         codec_params=CodecParams(train_docs=4), shards=2, replicas=0,
                         index_settings={"codec": "best_compression", "refresh_interval": "5s"},
                         bulk_refresh_interval="-1", failure_report=tmp_path / "r.jsonl")
        assert s.indexed == 12 and opensearch_client.count(index=index_name)["count"] == 12
        # dense trains nothing on encodings: every batch, the training sample's too, is encoded
        # after the index was created with the bulk refresh interval
        assert spy.seen == ["-1", "-1", "-1"]
        got = _settings(opensearch_client, index_name)
        assert (got["index.number_of_shards"], got["index.number_of_replicas"],
                got["index.codec"], got["index.refresh_interval"]) == ("2", "0", "best_compression",
                                                                      "5s")
    finally:
        delete_codecs(opensearch_client, index_name)


def test_a_load_relaxes_an_unset_refresh_interval_only(
        opensearch_client, index_name, tmp_path: Path) -> None:
    """By default a load refreshes every 30 s where the index's interval is unset, and leaves
    it unset again; an interval someone chose is kept, and `keep` changes nothing."""
    from osneural.ingest.indexer import CodecParams
    from osneural.ingest.prepare import LOAD_REFRESH_INTERVAL

    client = opensearch_client
    kw = dict(representations="dense", batch_size=4, progress=False,
              codec_params=CodecParams(train_docs=4), failure_report=tmp_path / "r.jsonl")
    try:
        spy = SpyDense(client, index_name)
        index_corpus(client, _docs(8), index_name, encoders={"dense": spy}, **kw)
        assert spy.seen and set(spy.seen) == {LOAD_REFRESH_INTERVAL}
        assert "index.refresh_interval" not in _settings(client, index_name)
        assert client.count(index=index_name)["count"] == 8  # refreshed at the end

        spy = SpyDense(client, index_name)  # more documents into the existing index
        index_corpus(client, _docs(12), index_name, encoders={"dense": spy}, **kw)
        assert spy.seen and set(spy.seen) == {LOAD_REFRESH_INTERVAL}
        assert "index.refresh_interval" not in _settings(client, index_name)

        client.indices.put_settings(index=index_name, body={"index.refresh_interval": "2s"})
        spy = SpyDense(client, index_name)
        index_corpus(client, _docs(14), index_name, encoders={"dense": spy}, **kw)
        assert spy.seen and set(spy.seen) == {"2s"}
        assert _settings(client, index_name)["index.refresh_interval"] == "2s"
    finally:
        delete_codecs(client, index_name)
    other = f"{index_name}-keep"
    try:
        spy = SpyDense(client, other)
        index_corpus(client, _docs(8), other, encoders={"dense": spy},
                     bulk_refresh_interval="keep", **kw)
        assert spy.seen and set(spy.seen) == {None}
        assert client.count(index=other)["count"] == 8
    finally:
        delete_codecs(client, other)
        client.indices.delete(index=other, ignore_unavailable=True)


def test_a_bad_bulk_refresh_interval_is_a_clear_error_and_writes_nothing(
        opensearch_client, index_name, tmp_path: Path) -> None:
    from osneural.ingest.indexer import CodecParams

    client = opensearch_client
    kw = dict(representations="dense", batch_size=4, progress=False, encoders=fake_encoders(),
              codec_params=CodecParams(train_docs=4), failure_report=tmp_path / "r.jsonl")
    try:
        with pytest.raises(IngestError, match="refresh_interval"):
            index_corpus(client, _docs(4), index_name, bulk_refresh_interval="soon", **kw)
        assert not client.indices.exists(index=index_name)
        index_corpus(client, _docs(4), index_name, **kw)
        with pytest.raises(IngestError, match="refresh_interval"):
            index_corpus(client, _docs(8), index_name, bulk_refresh_interval="-5s; x", **kw)
        client.indices.refresh(index=index_name)
        assert client.count(index=index_name)["count"] == 4
        assert "index.refresh_interval" not in _settings(client, index_name)
    finally:
        delete_codecs(client, index_name)


def test_adopts_an_empty_foreign_index_and_refuses_a_filled_one(
        opensearch_client, index_name, tmp_path: Path) -> None:
    client = opensearch_client
    kw = dict(encoders=fake_encoders(), progress=False, failure_report=tmp_path / "r.jsonl")
    client.indices.create(index=index_name, body={
        "settings": {"index": {"knn": True, "number_of_shards": 2, "number_of_replicas": 0}},
        "mappings": {"properties": {"category": {"type": "keyword"}}}})
    other = f"{index_name}-x"
    try:
        s = index_corpus(client, _docs(6), index_name, **kw)
        assert s.indexed == 6 and s.codecs_trained
        mapping = client.indices.get_mapping(index=index_name)[index_name]["mappings"]
        assert {"category", "dense", "sparse", "bin_tokens", "mv_codes", "fde"} <= set(mapping["properties"])
        # created with properties: OpenSearch refuses _source.excludes now, mv_codes stays in it
        assert "_source" not in mapping and any("_source.excludes" in n for n in s.notes)
        assert mapping["_meta"]["osneural"]["codec_generation"] == _codec_doc(client, index_name)["generation"]
        assert _settings(client, index_name)["index.number_of_shards"] == "2"
        hit = client.search(index=index_name, body={"query": {"knn": {"dense": {
            "vector": client.get(index=index_name, id="d3")["_source"]["dense"], "k": 1}}}})
        assert hit["hits"]["hits"][0]["_id"] == "d3"

        client.indices.create(index=other, body={"settings": {"index": {"knn": True}}})
        client.index(index=other, id="mine", body={"text": "someone else's"}, refresh=True)
        with pytest.raises(IndexMismatch, match="holds 1 documents and was not created by osneural"):
            index_corpus(client, _docs(3), other, **kw)
        client.indices.delete(index=other)
        client.indices.create(index=other)
        with pytest.raises(IndexMismatch, match="index.knn=true"):
            index_corpus(client, _docs(3), other, **kw)
        client.indices.delete(index=other)
        client.indices.create(index=other, body={"settings": {"index": {"knn": True}},
                                                 "mappings": {"properties": {"text": {"type": "keyword"}}}})
        with pytest.raises(IndexMismatch, match="maps field 'text' as 'keyword'"):
            index_corpus(client, _docs(3), other, **kw)
        client.indices.delete(index=other)
        client.indices.create(index=other, body={"settings": {"index": {"knn": True,
                                                                        "number_of_shards": 1}}})
        with pytest.raises(IndexMismatch, match="number_of_shards=1; number_of_shards=3"):
            index_corpus(client, _docs(3), other, shards=3, **kw)
        assert "_meta" not in client.indices.get_mapping(index=other)[other]["mappings"]
        assert _codec_doc(client, other) is None
    finally:
        client.indices.delete(index=other, ignore_unavailable=True)
        delete_codecs(client, index_name)
        delete_codecs(client, other)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_cli_unreachable_node_and_cut_resume_checks(
        opensearch_client, opensearch_url, index_name, tmp_path: Path, capsys) -> None:
    from osneural.encoders import ensure_default_models

    ensure_default_models(["dense"])
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(d) + "\n" for d in _docs(6)), encoding="utf-8")
    base = ["ingest", str(corpus), "--index", index_name, "--representations", "dense",
            "--no-progress", "--batch-size", "2"]

    def run(*extra: str) -> tuple[int, str, str]:
        rc = cli_main([*base, *extra])
        out, err = capsys.readouterr()
        return rc, out, err

    # node down when ingestion starts: one line, exit 2
    rc, _out, err = run("--url", f"http://127.0.0.1:{_closed_port()}")
    assert rc == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "cannot reach OpenSearch" in err and "connection refused" in err
    # the Python API says the same in one line
    from opensearchpy import OpenSearch

    with pytest.raises(IngestError, match="cannot reach OpenSearch") as info:
        index_corpus(OpenSearch(f"http://127.0.0.1:{_closed_port()}", max_retries=0), corpus,
                     index_name, representations="dense", progress=False)
    assert "\n" not in str(info.value)

    try:
        rc, _out, err = run("--url", opensearch_url, "--shards", "1", "--replicas", "0",
                            "--index-setting", "codec=best_compression")
        assert rc == 0, err
        assert _settings(opensearch_client, index_name)["index.codec"] == "best_compression"
        with open(corpus, "a", encoding="utf-8") as fh:
            fh.writelines(json.dumps(d) + "\n" for d in _docs(4, start=6))

        # every existence check cut: a clear stop, exit 2, the batch in the report
        proxy = CuttingProxy(opensearch_url, lambda data: b"/_mget" in data)
        try:
            rc, _out, err = run("--url", proxy.url, "--resume", "--max-retries", "1",
                                "--retry-backoff", "0.05")
        finally:
            proxy.close()
        assert rc == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
        assert "resume check" in err and proxy.cuts >= 2
        rows = FailureReport.read(tmp_path / f"{index_name}.failures.jsonl")
        assert {r["stage"] for r in rows} == {"resume_check"} and len(rows) == 2
        opensearch_client.indices.refresh(index=index_name)
        assert opensearch_client.count(index=index_name)["count"] == 6

        # the first four checks cut (more than the client's own retries): retried, nothing lost
        proxy = CuttingProxy(opensearch_url, cut_first(4, b"/_mget"))
        try:
            rc, out, err = run("--url", proxy.url, "--resume", "--retry-backoff", "0.05", "--json")
        finally:
            proxy.close()
        assert rc == 0, err
        summary = json.loads(out)
        assert proxy.cuts == 4 and (summary["skipped"], summary["indexed"]) == (6, 4)
        assert summary["bulk_retries"] >= 1
        assert opensearch_client.count(index=index_name)["count"] == 10
    finally:
        delete_codecs(opensearch_client, index_name)


class PoisonDense(FakeDense):
    """Refuses any batch holding the word 'poison', as an encoder refusing one input would."""

    def encode_documents(self, texts):
        if any("poison" in t for t in texts):
            raise ValueError("cannot encode this text")
        return super().encode_documents(texts)


def test_a_document_the_encoder_refuses_is_one_failure(opensearch_client, index_name,
                                                       tmp_path: Path) -> None:
    from osneural.ingest.indexer import CodecParams

    docs = _docs(11)
    docs.insert(6, {"_id": "bad", "text": "a poison pill"})
    report = tmp_path / "r.jsonl"
    try:
        s = index_corpus(opensearch_client, docs, index_name, representations="dense",
                         batch_size=4, encoders={"dense": PoisonDense()}, progress=False,
                         codec_params=CodecParams(train_docs=4), failure_report=report)
        assert (s.indexed, s.failed, s.truncated) == (11, 1, 0)
        rows = FailureReport.read(report)
        assert [(r["id"], r["line"], r["stage"]) for r in rows] == [("bad", 7, "encode")]
        assert "cannot encode this text" in rows[0]["reason"]
        assert opensearch_client.count(index=index_name)["count"] == 11
    finally:
        delete_codecs(opensearch_client, index_name)
