"""`osneural eval` end to end against a real OpenSearch node, on a hand-made BEIR folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from osneural.cli import main

pytestmark = pytest.mark.integration

DOCS = [
    ("d1", "Aspirin", "aspirin reduces the risk of heart attack"),
    ("d2", "Vitamin D", "vitamin d deficiency is linked to bone fractures"),
    ("d3", "Coffee", "coffee consumption and sleep quality in adults"),
    ("d4", "Exercise", "regular exercise improves mood and sleep"),
    ("q3", "Self", "this document shares its id with query q3 and mentions glaciers"),
    ("d5", "Glaciers", "glaciers are retreating as temperatures rise"),
]
QUERIES = {
    "q1": "aspirin heart attack",  # d1 at rank 1
    "q2": "vitamin d bone",  # d2 at rank 1
    "q3": "glaciers shares id",  # q3 (itself) ranks first and must be dropped, then d5
    "q4": "unmatched words entirely",  # judged but nothing matches: a real zero
    "q5": "exercise",  # no judgments: skipped and counted
}
QRELS = [("q1", "d1", 1), ("q2", "d2", 2), ("q3", "d5", 1), ("q4", "d4", 1), ("q4", "missing", 1)]


@pytest.fixture
def beir_dir(tmp_path: Path) -> Path:
    root = tmp_path / "toy"
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": i, "title": t, "text": x}) + "\n" for i, t, x in DOCS)
    )
    (root / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in QUERIES.items())
    )
    (root / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t{s}\n" for q, d, s in QRELS)
    )
    return root


def test_eval_bm25_and_a_failing_spec(
    opensearch_client, opensearch_url: str, index_name: str, beir_dir: Path, tmp_path: Path, capsys
) -> None:
    from osneural.ingest.indexer import index_corpus

    summary = index_corpus(opensearch_client, beir_dir, index_name, representations=["text"],
                           progress=False, failure_report=tmp_path / "f.jsonl")
    assert summary.indexed == len(DOCS)
    # A dense spec against a text-only index fails on every query: reported, not scored as 0.
    dense = tmp_path / "dense.json"
    dense.write_text(json.dumps({"first_stages": [{"type": "dense", "k": 10}]}))
    out = tmp_path / "r1.json"
    argv = ["eval", str(beir_dir), "--index", index_name, "--url", opensearch_url,
            "--spec", "bm25", "--out", str(out)]
    code = main([*argv, "--spec", str(dense)])
    printed = capsys.readouterr().out
    assert code == 1
    result = json.loads(out.read_text())
    bm25, failing = result["runs"]
    assert bm25["name"] == "bm25" and bm25["complete"] and bm25["evaluated"] == 4
    # q1, q2, q3 find their document at rank 1 (q3 after dropping itself); q4 finds nothing.
    assert bm25["metrics"]["mrr@10"] == pytest.approx(3 / 4)
    assert bm25["metrics"]["ndcg@10"] == pytest.approx(3 / 4)
    assert bm25["metrics"]["recall@100"] == pytest.approx(3 / 4)
    assert bm25["identical_ids_dropped"] == 1
    assert bm25["latency_ms"]["p95"] >= bm25["latency_ms"]["p50"] > 0
    assert failing["name"] == "dense" and failing["failed"] == 4 and failing["evaluated"] == 0
    assert failing["metrics"]["ndcg@10"] is None and failing["errors"][0]["query_id"] == "q1"
    coll = result["collection"]
    assert coll["unjudged_queries"] == 1 and coll["unjudged_examples"] == ["q5"]
    assert coll["qrels_docs_missing_from_corpus"] == 1
    assert "dense: 4 of 4 queries failed" in printed

    # Again without BEIR's identical-id rule, compared with the first run.
    code = main([*argv, "--out", str(tmp_path / "r2.json"), "--compare", str(out),
                 "--keep-identical-ids"])
    printed = capsys.readouterr().out
    assert code == 0
    deltas = printed.split("compared with")[1]
    row = next(line for line in deltas.splitlines() if line.startswith("bm25"))
    # q3's own document now holds rank 1, pushing d5 to rank 2: MRR drops by (1 - 1/2) / 4
    assert row.split()[3] == "-0.1250"
    assert "dense: only in the earlier result" in printed


def test_eval_missing_index(opensearch_url: str, beir_dir: Path, capsys) -> None:
    code = main(["eval", str(beir_dir), "--index", "osneural-no-such-index", "--url", opensearch_url,
                 "--spec", "bm25"])
    assert code == 2
    assert "index 'osneural-no-such-index' not found" in capsys.readouterr().err
