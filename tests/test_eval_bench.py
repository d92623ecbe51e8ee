"""bench/quality.py's target checks and outputs, on a synthetic result (no index needed)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench" / "quality.py"


@pytest.fixture(scope="module")
def quality():
    spec = importlib.util.spec_from_file_location("bench_quality", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(name: str, ndcg: float | None, failed: int = 0, mean: float = 10.0) -> dict:
    return {"name": name, "failed": failed, "queries": 5, "evaluated": 5 - failed,
            "metrics": {"ndcg@10": ndcg, "recall@100": 0.8, "mrr@10": 0.5},
            "latency_ms": {"mean": mean, "p50": mean, "p95": mean * 1.5, "max": mean * 2},
            "with_warnings": 0, "errors": []}


def test_specs_are_valid_and_cover_the_issue(quality) -> None:
    from osneural.plugin.spec import parse_spec

    # the 11 fixed pipelines, MaxSim alone over the same window, and float-token twins of the 3 MaxSim rows
    assert len(quality.SPECS) == 15
    names = {s["name"] for s in quality.SPECS}
    for entry in quality.SPECS:
        spec = parse_spec(entry["spec"])
        for part in entry.get("parts", []):
            assert part in names
        if "pq_twin" in entry:
            twin = parse_spec(next(s for s in quality.SPECS if s["name"] == entry["pq_twin"])["spec"])
            assert [r.tokens for r in spec.rescore] == ["float16"]
            assert [r.tokens for r in twin.rescore] == ["pq"]
            # the twins differ in the token form only
            assert spec.model_copy(update={"rescore": twin.rescore}) == twin


def test_targets(quality) -> None:
    runs = [_run("bm25", 0.60), _run("dense", 0.65), _run("sparse", 0.66),
            _run("binary+pq+dense", 0.645), _run("bm25+dense (rrf)", 0.70),
            _run("bm25+dense+sparse (rrf)", 0.655),  # below sparse: must fail
            _run("bm25+dense+sparse (rrf) +maxsim@100", 0.72, failed=1)]  # incomplete: no pass
    checks = {c["claim"]: c for c in quality.check_targets("scifact", runs)}
    assert checks["bm25+dense (rrf) beats BM25 and each of its single stages"]["pass"]
    assert not checks["bm25+dense+sparse (rrf) beats BM25 and each of its single stages"]["pass"]
    assert not checks["bm25+dense+sparse (rrf) +maxsim@100 beats BM25 and each of its single stages"]["pass"]
    assert not checks["bm25+dense+sparse (linear) +maxsim@100 beats BM25 and each of its single stages"]["pass"]
    best = checks["best pipeline reaches nDCG@10 0.7"]
    assert best["pass"] and best["detail"] == "bm25+dense (rrf) 0.7000"
    assert checks["binary-token first stage with rescoring within 1 point of dense"]["pass"]
    runs[3] = _run("binary+pq+dense", 0.639)
    checks = {c["claim"]: c for c in quality.check_targets("scifact", runs)}
    assert not checks["binary-token first stage with rescoring within 1 point of dense"]["pass"]


def test_pq_against_float_target(quality) -> None:
    alone = "bm25+dense+sparse (rrf) then maxsim@100 alone"
    claim = f"PQ-coded MaxSim within 0.5 point of float: {alone}"
    for pq, fl, ok in ((0.700, 0.704, True), (0.712, 0.704, True), (0.698, 0.704, False)):
        runs = [_run(alone, pq), _run(f"{alone}, float tokens", fl)]
        assert {c["claim"]: c for c in quality.check_targets("scifact", runs)}[claim]["pass"] is ok
    checks = {c["claim"]: c for c in quality.check_targets("scifact", [_run(alone, 0.71)])}
    assert not checks[claim]["pass"]  # no float figure: not a pass


def test_plot_and_markdown(quality, tmp_path: Path) -> None:
    result = {"index": "i", "collection": {"evaluated": 5}, "runs": [
        _run("bm25", 0.6), _run("bm25+dense (rrf)", 0.7, mean=20.0), _run("broken", None, 5)]}
    result["runs"][2]["latency_ms"] = {"mean": None, "p50": None, "p95": None, "max": None}
    png = tmp_path / "q.png"
    quality.plot("toy", result, png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = {"command": "python bench/quality.py --x", "created": "now", "machine": "m",
              "opensearch": "3.6.0", "url": "u",
              "datasets": [{"name": "toy", "index": {"documents": 9}, "result": result,
                            "targets": quality.check_targets("toy", result["runs"]),
                            "chart": "q.png"}]}
    md = tmp_path / "r.md"
    quality.write_markdown(report, md)
    text = md.read_text()
    assert "python bench/quality.py --x" in text and "![toy recall against latency](q.png)" in text
    assert "| bm25+dense (rrf) | 0.7000 |" in text and "| broken * | - |" in text
    # dense was not run, so the hybrid's claim cannot pass
    assert ("bm25+dense (rrf) beats BM25 and each of its single stages | FAIL | "
            "0.7000 vs bm25 0.6000, dense missing |") in text
    table = quality._table("toy", result, markdown=False)
    assert "+0.1000" in table and "2.00x" in table
