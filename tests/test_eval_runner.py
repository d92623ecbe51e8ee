"""The evaluation loop: failures reported (never zero-averaged), warnings counted, spec adapted."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from osneural.eval.beir import prepare_collection
from osneural.eval.runner import evaluate_spec, for_evaluation, spec_label
from osneural.plugin.spec import PipelineSpec, load_spec, parse_spec

from osneural.cli import main

QUERIES = {"q1": "alpha", "q2": "beta", "q3": "gamma", "q4": "delta"}
QRELS = {"q1": {"d1": 1}, "q2": {"d2": 1}, "q3": {"d3": 1}, "q4": {"d4": 1}}


def _response(ids: list[str], warnings: list[str] | None = None) -> dict[str, Any]:
    return {
        "took": 1,
        "timed_out": False,
        "hits": {"hits": [{"_id": i, "_score": 1.0} for i in ids]},
        "ext": {"osneural": {"warnings": warnings or [], "timings_ms": {}}},
    }


class FakeSearch:
    """Answers from a table keyed by query text; records the specs it was given."""

    def __init__(self, answers: dict[str, Any]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, PipelineSpec]] = []

    def __call__(self, text: str, spec: PipelineSpec) -> dict[str, Any]:
        self.calls.append((text, spec))
        answer = self.answers[text]
        if isinstance(answer, Exception):
            raise answer
        return answer


def test_failures_are_reported_not_averaged_in() -> None:
    coll = prepare_collection(QUERIES, QRELS)
    search = FakeSearch({
        "alpha": _response(["d1", "x"]),  # nDCG 1
        "beta": RuntimeError("stage exploded"),
        "gamma": _response(["x", "d3"], warnings=["rescore[0] (maxsim) timed out"]),
        "delta": {"unexpected": "shape"},
    })
    result = evaluate_spec(search, coll, parse_spec(None), "bm25", warmup=0)
    assert (result.queries, result.evaluated, result.failed) == (4, 2, 2)
    assert not result.complete
    assert result.errors[0] == {"query_id": "q2", "error": "RuntimeError: stage exploded"}
    assert result.errors[1]["query_id"] == "q4" and "malformed search response" in result.errors[1]["error"]
    # the mean is over the two queries that answered: (1 + 1/2) / 2, not divided by 4
    assert result.metrics["mrr@10"] == pytest.approx((1 + 0.5) / 2)
    assert result.with_warnings == 1
    assert result.warnings == [{"query_id": "q3", "warnings": ["rescore[0] (maxsim) timed out"]}]
    assert result.latency_ms["mean"] is not None and set(result.per_query) == {"q1", "q3"}


def test_all_failed_gives_no_metrics() -> None:
    coll = prepare_collection({"q1": "alpha"}, {"q1": {"d1": 1}})
    result = evaluate_spec(FakeSearch({"alpha": ValueError("no")}), coll, parse_spec(None), "x", warmup=0)
    assert result.metrics == {"ndcg@10": None, "recall@100": None, "mrr@10": None}
    assert result.failed == 1 and result.latency_ms["mean"] is None


def test_spec_is_run_deep_without_payloads_and_query_ids_dropped() -> None:
    coll = prepare_collection({"q1": "alpha"}, {"q1": {"d1": 1}})
    search = FakeSearch({"alpha": _response(["q1", "d1"])})
    spec = load_spec("hybrid")
    result = evaluate_spec(search, coll, spec, "hybrid", warmup=2, timeout_ms=9000)
    assert len(search.calls) == 2  # one warm-up (only one query exists) + one timed
    used = search.calls[-1][1]
    assert used.size == 100 and used.from_ == 0 and used.source is False and not used.explain
    assert used.timeout_ms == 9000
    assert used.first_stages == spec.first_stages and used.rescore == spec.rescore
    assert result.pipeline == spec.to_dict()  # the user's spec is what the result records
    assert result.identical_ids_dropped == 1 and result.metrics["mrr@10"] == 1.0
    kept = evaluate_spec(search, coll, spec, "hybrid", warmup=0, drop_identical_ids=False)
    assert kept.metrics["mrr@10"] == 0.5


def test_for_evaluation_keeps_a_larger_size() -> None:
    assert for_evaluation(parse_spec({"size": 500})).size == 500


def test_spec_labels_are_unique() -> None:
    taken: set[str] = set()
    assert spec_label("bm25", taken) == "bm25"
    assert spec_label("/x/bm25.json", taken) == "bm25#2"
    assert spec_label("specs/dense.json", taken) == "dense"


def _beir(tmp_path: Path) -> Path:
    (tmp_path / "qrels").mkdir(parents=True)
    (tmp_path / "corpus.jsonl").write_text('{"_id": "d1", "text": "alpha"}\n')
    (tmp_path / "queries.jsonl").write_text('{"_id": "q1", "text": "alpha"}\n')
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    return tmp_path


def test_cli_bad_input_exits_2_with_a_clear_message(tmp_path: Path, capsys) -> None:
    beir = _beir(tmp_path / "b")
    bad_spec = tmp_path / "bad.json"
    bad_spec.write_text(json.dumps({"first_stages": [{"type": "dense", "k": 0}]}))
    assert main(["eval", str(beir), "--index", "i", "--spec", str(bad_spec)]) == 2
    assert "first_stages[0].k" in capsys.readouterr().err
    assert main(["eval", str(beir), "--index", "i", "--spec", "bm25", "--split", "dev"]) == 2
    assert "no qrels for split 'dev'" in capsys.readouterr().err
    assert main(["eval", str(beir), "--index", "i", "--spec", "bm25", "--compare", str(tmp_path / "no.json")]) == 2
    assert "result file not found" in capsys.readouterr().err
    assert main(["eval", str(beir), "--index", "i", "--spec", "nosuchspec"]) == 2
    assert "unknown spec 'nosuchspec'" in capsys.readouterr().err
