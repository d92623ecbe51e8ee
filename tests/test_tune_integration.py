"""`osneural tune` end to end, CI-sized: a tiny corpus with the real default encoders in a real
node, a BEIR folder written here, 9 judged queries, 3 folds; the spec it writes runs in `eval`.

Also the premise of tuning from a cache: re-fusing the cached first-stage runs and MaxSim scores
in Python gives exactly the ranking the Searcher returns for the same spec.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from osneural.cli import main

pytestmark = [pytest.mark.integration, pytest.mark.slow]

N_DOCS = 36


@pytest.fixture(scope="module")
def tiny(opensearch_client, tmp_path_factory):
    from osneural.ingest.codec_store import delete_codecs
    from osneural.ingest.indexer import index_corpus
    from osneural.ingest.sample import sample_corpus

    docs = sample_corpus(limit=N_DOCS)
    root = tmp_path_factory.mktemp("tune") / "tiny"
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    # A query is the first line of a docstring; its document is relevant (grade 2) and so is the
    # document before it in the module listing (grade 1): shared vocabulary, several stages agree.
    judged = docs[1::4][:9]
    queries = {f"q{i}": d["text"].splitlines()[0][:120] for i, d in enumerate(judged)}
    (root / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in queries.items()))
    rows = []
    for i, d in enumerate(judged):
        rows.append(f"q{i}\t{d['_id']}\t2\n")
        prev = docs[docs.index(d) - 1]
        rows.append(f"q{i}\t{prev['_id']}\t1\n")
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(rows))
    index = "test-tune-tiny"
    opensearch_client.indices.delete(index=index, ignore_unavailable=True)
    delete_codecs(opensearch_client, index)
    summary = index_corpus(opensearch_client, root, index,
                           representations=["text", "dense", "sparse", "multivector"],
                           progress=False, failure_report=root / "failures.jsonl")
    assert summary.indexed == N_DOCS
    yield index, root
    opensearch_client.indices.delete(index=index, ignore_unavailable=True)
    delete_codecs(opensearch_client, index)


def test_cached_refusion_equals_the_searcher(opensearch_client, tiny) -> None:
    from osneural.eval.beir import load_beir
    from osneural.eval.tune import (
        Config,
        SearchSpace,
        base_config,
        build_cache,
        config_spec,
        simulate,
    )
    from osneural.plugin import Searcher, load_spec

    index, root = tiny
    collection = load_beir(root, "test", check_corpus=False, limit=4)
    base = load_spec("hybrid")
    space = SearchSpace(depths=(20, 200))
    searcher = Searcher(opensearch_client, index)
    try:
        cache = build_cache(searcher, collection, base, space, maxsim=True)
        assert not cache.failed and sorted(cache.stage_runs) == sorted(collection.queries)
        configs = [
            base_config(base, space),
            Config("linear", "zscore", 60, (0.5, 1.0, 0.0), (200, 200, 200), 0.3),
            Config("rrf", "minmax", 10, (1.0, 2.0, 1.0), (200, 200, 200), 0.0),
        ]
        for config in configs:
            spec = config_spec(base, config, space.maxsim_window).to_dict()
            spec.update({"size": 100, "_source": False, "timeout_ms": 60_000})
            for qid, text in collection.queries.items():
                real = [h["_id"] for h in searcher.search(text, spec)["hits"]["hits"]]
                assert simulate(cache, qid, config) == real, (config, qid)
    finally:
        searcher.close()


def test_tune_cli_end_to_end(opensearch_url: str, tiny, tmp_path: Path, capsys) -> None:
    index, root = tiny
    spec_out, report_out = tmp_path / "tuned.json", tmp_path / "report.json"
    code = main(["tune", str(root), "--index", index, "--url", opensearch_url, "--folds", "3",
                 "--qrels", str(root / "qrels" / "test.tsv"), "--depths", "20,50",
                 "--rounds", "1", "--out", str(spec_out), "--report", str(report_out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "final spec fitted on all 9 queries: in-sample" in captured.out
    report = json.loads(report_out.read_text())
    assert report["queries"] == 9 and [f["test_queries"] for f in report["folds"]] == [3, 3, 3]
    assert all(f["train_queries"] == 6 for f in report["folds"])
    assert 0.0 <= report["held_out_ndcg@10"] <= 1.0 and 0.0 <= report["base_ndcg@10"] <= 1.0
    # the fold lines on stderr come from cross-validation, one per fold
    assert captured.err.count("held-out nDCG@10") == 3
    assert json.loads(spec_out.read_text()) == report["spec"]

    # the written spec is what `--spec` accepts
    out = tmp_path / "eval.json"
    code = main(["eval", str(root), "--index", index, "--url", opensearch_url,
                 "--spec", str(spec_out), "--out", str(out), "--no-progress"])
    assert code == 0
    (run,) = json.loads(out.read_text())["runs"]
    assert run["name"] == "tuned" and run["failed"] == 0 and run["evaluated"] == 9


def test_tune_bad_input(tiny, tmp_path: Path, capsys) -> None:
    index, root = tiny
    assert main(["tune", str(root), "--index", index, "--folds", "20"]) == 2
    assert "9 queries cannot make 20 folds" in capsys.readouterr().err
    assert main(["tune", str(root), "--index", index, "--base", "nosuch"]) == 2
    assert "unknown spec 'nosuch'" in capsys.readouterr().err
