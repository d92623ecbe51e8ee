"""Ray ingestion against the real node and a local two-CPU Ray: the index it builds is the
single-process one, document for document, and a worker killed mid-run loses nothing after
`resume`. Stand-in encoders (deterministic per text) ship to the actors by pickle, so any
difference would come from the ingestion path, not from model numerics."""

from __future__ import annotations

import json
import os
import signal
import uuid
from pathlib import Path

import pytest
from osneural.ingest.bulk import FailureReport
from osneural.ingest.codec_store import delete_codecs
from osneural.ingest.indexer import CodecParams, IngestError, index_corpus
from osneural.ingest.ray_ingest import ray_index_corpus
from test_ingest_fakes import FakeDense, fake_encoders

from osneural.codecs.bundle import CODECS_INDEX
from osneural.connection import ClusterConfig

pytestmark = [pytest.mark.integration, pytest.mark.slow]

N_DOCS = 48
PARAMS = CodecParams(train_docs=16)  # the head (2 batches of 8) trains; 4 batches go to actors
HIDDEN = ["bin_code", "dense_pq", "mv_codes"]


class PidDense(FakeDense):
    """Records which process encoded each batch (one file per call)."""

    def __init__(self, folder: Path) -> None:
        super().__init__()
        self.folder = folder

    def encode_documents(self, texts):
        (self.folder / f"{os.getpid()}-{uuid.uuid4().hex[:6]}").touch()
        return super().encode_documents(texts)


class KillingDense(FakeDense):
    """SIGKILLs the Ray worker process it runs in on its second batch, once per marker file."""

    def __init__(self, marker: Path, driver_pid: int) -> None:
        super().__init__()
        self.marker, self.driver_pid, self.calls = marker, driver_pid, 0

    def encode_documents(self, texts):
        self.calls += 1
        if os.getpid() != self.driver_pid and self.calls >= 2 and not self.marker.exists():
            self.marker.touch()
            os.kill(os.getpid(), signal.SIGKILL)
        return super().encode_documents(texts)


@pytest.fixture(scope="module")
def local_ray():
    import ray

    # actors unpickle the stand-in encoders by module name: put tests/ on the workers' path
    old = os.environ.get("PYTHONPATH")
    here = str(Path(__file__).resolve().parent)
    os.environ["PYTHONPATH"] = here + (os.pathsep + old if old else "")
    ray.init(num_cpus=2, object_store_memory=200 * 1024 * 1024, include_dashboard=False,
             log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()
    if old is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = old


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ray") / "corpus.jsonl"
    lines = [json.dumps({"_id": f"r{i}", "title": f"Title {i}",
                         "text": f"ray document {i} on subject {i % 5} and {i % 7}",
                         "extra": {"n": i}}) for i in range(N_DOCS)]
    lines.insert(20, "{not json")
    lines.insert(35, json.dumps({"_id": "lone", "text": "bad \ud800"}))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _fetch_all(client, index: str) -> dict[str, tuple[dict, dict]]:
    client.indices.refresh(index=index)
    hits = client.search(index=index, body={"size": 1000, "query": {"match_all": {}},
                                            "docvalue_fields": HIDDEN})["hits"]["hits"]
    return {h["_id"]: (h["_source"], h.get("fields", {})) for h in hits}


def _codecs(client, index: str) -> dict:
    src = dict(client.get(index=CODECS_INDEX, id=index)["_source"])
    return {k: v for k, v in src.items() if k not in ("generation", "target_index")}


def _meta(client, index: str) -> dict:
    meta = dict(client.indices.get_mapping(index=index)[index]["mappings"]["_meta"]["osneural"])
    meta.pop("codec_generation")
    meta.pop("codec_store")
    return meta


@pytest.fixture(scope="module")
def reference(opensearch_client, corpus: Path, tmp_path_factory):
    """The single-process index every Ray-built one is compared with."""
    name = f"test-ray-ref-{uuid.uuid4().hex[:8]}"
    report = tmp_path_factory.mktemp("ref") / "failures.jsonl"
    summary = index_corpus(opensearch_client, corpus, name, batch_size=8, encoders=fake_encoders(),
                           codec_params=PARAMS, progress=False, failure_report=report)
    yield name, summary, FailureReport.read(report)
    opensearch_client.indices.delete(index=name, ignore_unavailable=True)
    delete_codecs(opensearch_client, name)


def _assert_same_index(client, ref: str, got: str) -> None:
    a, b = _fetch_all(client, ref), _fetch_all(client, got)
    assert len(a) == N_DOCS and sorted(a) == sorted(b)
    for doc_id in a:
        assert a[doc_id] == b[doc_id], doc_id  # _source and binary doc values, byte for byte
    assert _codecs(client, ref) == _codecs(client, got)
    assert _meta(client, ref) == _meta(client, got)


def test_ray_builds_the_single_process_index(opensearch_client, opensearch_url, local_ray,
                                             corpus, reference, tmp_path: Path) -> None:
    ref, ref_summary, ref_rows = reference
    name = f"test-ray-{uuid.uuid4().hex[:8]}"
    pids = tmp_path / "pids"
    pids.mkdir()
    encs = fake_encoders()
    encs["dense"] = PidDense(pids)
    report = tmp_path / "failures.jsonl"
    try:
        s = ray_index_corpus(ClusterConfig.from_values(opensearch_url), corpus, name,
                             batch_size=8, workers=2, encoders=encs, codec_params=PARAMS,
                             progress=False, failure_report=report)
        assert (s.indexed, s.failed, s.skipped) == (ref_summary.indexed, ref_summary.failed, 0)
        assert (s.indexed, s.failed) == (N_DOCS, 2)
        assert FailureReport.read(report) == ref_rows
        assert [r["line"] for r in ref_rows] == [21, 36]
        workers = {p.name.split("-")[0] for p in pids.iterdir()} - {str(os.getpid())}
        assert len(workers) == 2  # both actors encoded batches, the driver only the head
        _assert_same_index(opensearch_client, ref, name)

        again = ray_index_corpus(ClusterConfig.from_values(opensearch_url), corpus, name,
                                 batch_size=8, workers=2, resume=True, encoders=fake_encoders(),
                                 progress=False, failure_report=report)
        assert (again.indexed, again.skipped, again.failed) == (0, N_DOCS, 2)
    finally:
        opensearch_client.indices.delete(index=name, ignore_unavailable=True)
        delete_codecs(opensearch_client, name)


def test_killed_worker_loses_nothing_after_resume(opensearch_client, opensearch_url, local_ray,
                                                  corpus, reference, tmp_path: Path) -> None:
    ref = reference[0]
    name = f"test-ray-kill-{uuid.uuid4().hex[:8]}"
    cfg = ClusterConfig.from_values(opensearch_url)
    encs = fake_encoders()
    encs["dense"] = KillingDense(tmp_path / "killed", os.getpid())
    try:
        # No actor restarts: the SIGKILLed worker stops the run, as a lost machine would.
        with pytest.raises(IngestError, match="a Ray worker failed") as info:
            ray_index_corpus(cfg, corpus, name, batch_size=8, workers=2, encoders=encs,
                             codec_params=PARAMS, progress=False,
                             failure_report=tmp_path / "f1.jsonl",
                             ray_remote_args={"max_restarts": 0})
        assert (tmp_path / "killed").exists()
        first = info.value.summary
        assert first.indexed < N_DOCS
        # The summary counts what the driver saw acknowledged; a bulk request the surviving actor
        # had already sent may still land after the run stopped, so the index may hold more.
        opensearch_client.indices.refresh(index=name)
        assert opensearch_client.count(index=name)["count"] >= first.indexed

        done = ray_index_corpus(cfg, corpus, name, batch_size=8, workers=2, resume=True,
                                encoders=fake_encoders(), progress=False,
                                failure_report=tmp_path / "f2.jsonl")
        # every document exactly once: what had landed is skipped, the rest is indexed now
        assert done.skipped >= first.indexed and done.skipped + done.indexed == N_DOCS
        _assert_same_index(opensearch_client, ref, name)

        # With Ray's default actor restarts the killed batch is retried: one run, nothing lost.
        opensearch_client.indices.delete(index=name)
        (tmp_path / "killed").unlink()
        encs["dense"] = KillingDense(tmp_path / "killed", os.getpid())
        s = ray_index_corpus(cfg, corpus, name, batch_size=8, workers=2, encoders=encs,
                             codec_params=PARAMS, progress=False,
                             failure_report=tmp_path / "f3.jsonl")
        assert (tmp_path / "killed").exists() and (s.indexed, s.failed) == (N_DOCS, 2)
        _assert_same_index(opensearch_client, ref, name)
    finally:
        opensearch_client.indices.delete(index=name, ignore_unavailable=True)
        delete_codecs(opensearch_client, name)


def test_cli_ray_with_the_default_encoders(opensearch_client, opensearch_url, local_ray, corpus,
                                           capsys) -> None:
    from osneural.cli import main as cli_main
    from osneural.encoders import ensure_default_models

    ensure_default_models(["dense"])
    name = f"test-ray-cli-{uuid.uuid4().hex[:8]}"
    try:
        rc = cli_main(["ingest", str(corpus), "--index", name, "--ray", "--ray-workers", "2",
                       "--representations", "dense", "--train-docs", "8", "--batch-size", "8",
                       "--no-progress", "--json", "--url", opensearch_url])
        out, err = capsys.readouterr()
        summary = json.loads(out)
        # two bad lines: exit 1 (some documents failed), every good one indexed by the actors
        assert rc == 1 and "Traceback" not in err
        assert (summary["indexed"], summary["failed"], summary["workers"]) == (N_DOCS, 2, 2)
        # dense trains nothing on encodings: the driver encodes no sample, the actors do it all
        assert summary["loop_docs"] == N_DOCS
        opensearch_client.indices.refresh(index=name)
        assert opensearch_client.count(index=name)["count"] == N_DOCS
    finally:
        opensearch_client.indices.delete(index=name, ignore_unavailable=True)
        delete_codecs(opensearch_client, name)


def test_from_index_on_ray_reads_slices_and_keeps_every_field(
        opensearch_client, opensearch_url, local_ray, tmp_path: Path) -> None:
    from collections import Counter

    from osneural.ingest.corpus import FieldNames
    from osneural.ingest.source_index import open_source

    tag = uuid.uuid4().hex[:8]
    src, tgt, alias = f"test-ray-src-{tag}", f"test-ray-tgt-{tag}", f"test-ray-alias-{tag}"
    opensearch_client.indices.create(index=src, body={
        "settings": {"index": {"number_of_shards": 3, "number_of_replicas": 0}},
        "mappings": {"properties": {"category": {"type": "keyword"}, "price": {"type": "integer"},
                                    "name": {"type": "text"}, "description": {"type": "text"}}}})
    docs = {f"s{i}": {"name": f"item {i}", "description": f"ray source document {i} of {i % 4}",
                      "category": f"c{i % 3}", "price": i} for i in range(N_DOCS)}
    body = [x for doc_id, d in docs.items() for x in ({"index": {"_id": doc_id}}, d)]
    opensearch_client.bulk(index=src, body=body, refresh=True)
    opensearch_client.indices.put_alias(index=src, name=alias)
    try:
        source = open_source(opensearch_client, alias, FieldNames(title="name", text="description"))
        s = ray_index_corpus(ClusterConfig.from_values(opensearch_url), source, tgt,
                             representations="dense,sparse", batch_size=8, workers=2,
                             encoders=fake_encoders(), codec_params=PARAMS, progress=False,
                             failure_report=tmp_path / "f.jsonl", swap_alias=alias)
        assert source.slices == 2  # one PIT slice per worker
        assert (s.indexed, s.failed) == (N_DOCS, 0)
        hits = opensearch_client.search(index=tgt, body={"size": 200})["hits"]["hits"]
        assert Counter(h["_id"] for h in hits) == Counter(list(docs))  # each once
        for h in hits:
            want = docs[h["_id"]]
            assert {k: h["_source"][k] for k in want} == want
            assert h["_source"]["title"] == want["name"] and h["_source"]["dense"]
        assert set(opensearch_client.indices.get_alias(name=alias)) == {tgt}
    finally:
        for name in (src, tgt):
            opensearch_client.indices.delete(index=name, ignore_unavailable=True)
            delete_codecs(opensearch_client, name)
