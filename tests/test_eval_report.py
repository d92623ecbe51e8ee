"""Result JSON, the printed table, and `--compare` deltas."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from osneural.eval.report import (
    ResultFileError,
    SpecResult,
    build_result,
    compare,
    format_table,
    load_result,
)


def _spec_result(name: str, ndcg: float, mean_ms: float, failed: int = 0, **kw) -> SpecResult:
    return SpecResult(
        name=name,
        pipeline=kw.pop("pipeline", {"first_stages": [{"type": name}]}),
        metrics={"ndcg@10": ndcg, "recall@100": 0.9, "mrr@10": 0.6},
        latency_ms={"mean": mean_ms, "p50": mean_ms, "p95": mean_ms * 2, "max": mean_ms * 3},
        queries=10,
        evaluated=10 - failed,
        failed=failed,
        errors=[{"query_id": "q7", "error": "StageError: boom"}] if failed else [],
        **kw,
    )


def _result(*runs: SpecResult, evaluated: int = 10) -> dict:
    return build_result(
        runs,
        collection={"name": "toy", "split": "test", "evaluated": evaluated, "unjudged_queries": 2},
        index="toy-index",
        url="http://x",
        settings={},
        created="2025-01-01T00:00:00+00:00",
    )


def test_table_rows_and_failure_note() -> None:
    result = _result(_spec_result("bm25", 0.6512, 12.34), _spec_result("dense", 0.7, 5.0, failed=3))
    text = format_table(result)
    lines = text.splitlines()
    assert lines[0].split() == ["spec", "nDCG@10", "R@100", "MRR@10", "mean", "ms", "p95", "ms",
                                "failed", "warned"]
    assert lines[2].split()[:6] == ["bm25", "0.6512", "0.9000", "0.6000", "12.3", "24.7"]
    assert "dense *" in lines[3] and "3/10" in lines[3]
    assert "dense: 3 of 10 queries failed" in text and "q7" in text and "StageError: boom" in text
    assert "2 queries without judgments were skipped" in text


def test_markdown_table() -> None:
    text = format_table(_result(_spec_result("bm25", 0.5, 1.0)), markdown=True)
    assert text.splitlines()[0].startswith("| spec | nDCG@10 |")
    assert text.splitlines()[1] == "|---|---:|---:|---:|---:|---:|---:|---:|"
    assert "| bm25 | 0.5000 |" in text


def test_missing_metrics_print_as_dash() -> None:
    run = _spec_result("broken", 0.0, 0.0, failed=10)
    run.metrics = {"ndcg@10": None, "recall@100": None, "mrr@10": None}
    run.latency_ms = {"mean": None, "p50": None, "p95": None, "max": None}
    row = format_table(_result(run)).splitlines()[2]
    assert row.split()[:5] == ["broken", "*", "-", "-", "-"]


def test_compare_deltas_and_notes() -> None:
    old = _result(_spec_result("bm25", 0.60, 10.0), _spec_result("gone", 0.1, 1.0))
    new = _result(
        _spec_result("bm25", 0.65, 8.0),
        _spec_result("fresh", 0.2, 1.0),
        evaluated=9,
    )
    text = compare(new, old)
    row = next(line for line in text.splitlines() if line.startswith("bm25"))
    assert row.split() == ["bm25", "+0.0500", "+0.0000", "+0.0000", "-2.0", "-4.0"]
    assert "fresh: not in the earlier result" in text
    assert "gone: only in the earlier result" in text
    assert "collection evaluated differs: now 9, earlier 10" in text


def test_compare_flags_changed_pipeline_and_nothing_in_common() -> None:
    old = _result(_spec_result("bm25", 0.6, 1.0, pipeline={"a": 1}))
    new = _result(_spec_result("bm25", 0.6, 1.0, pipeline={"a": 2}))
    assert "bm25: the pipeline spec differs" in compare(new, old)
    other = _result(_spec_result("dense", 0.6, 1.0))
    assert compare(other, old).startswith("no spec name in common")


def test_json_round_trip_and_bad_files(tmp_path: Path) -> None:
    run = _spec_result("bm25", 0.6, 1.0)
    run.per_query = {"q1": {"ndcg@10": 0.6}}
    result = _result(run)
    assert "per_query" not in result["runs"][0] and result["runs"][0]["complete"] is True
    path = tmp_path / "r.json"
    path.write_text(json.dumps(result))
    assert load_result(path)["runs"][0]["metrics"]["ndcg@10"] == 0.6
    with pytest.raises(ResultFileError, match="not found"):
        load_result(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ResultFileError, match="not valid JSON"):
        load_result(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text('{"schema": "something-else"}')
    with pytest.raises(ResultFileError, match="not an osneural eval result"):
        load_result(tmp_path / "other.json")
    (tmp_path / "noname.json").write_text('{"schema": "osneural-eval/1", "runs": [{}]}')
    with pytest.raises(ResultFileError, match="'runs' must be a list"):
        load_result(tmp_path / "noname.json")
