"""The helpers every bench/ script shares: nDCG@10 agrees with `osneural.eval.metrics`, timing and
percentiles, the text table, corpus records and the passage osneural encodes, index sizes by file kind."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from osneural.eval import benchkit


def test_ndcg10_is_the_metrics_module_over_rankings() -> None:
    from osneural.eval.metrics import compute_metrics, ranked_run

    qrels = {"q1": {"a": 2, "b": 1}, "q2": {"c": 1}, "q3": {"z": 1}}
    run = {"q1": ["b", "x", "a"], "q2": ["y", "c"], "q3": [], "unjudged": ["a"]}
    expected = compute_metrics(
        qrels, {q: ranked_run(ids)[0] for q, ids in run.items() if q in qrels}, ["ndcg@10"]
    )[0]["ndcg@10"]
    assert benchkit.ndcg10(run, qrels) == pytest.approx(expected)
    # by hand: q1 = (1 + 2/log2(4)) / (2 + 1/log2(3)), q2 = 1/log2(3), q3 = 0
    q1 = (1 + 2 / 2) / (2 + 1 / np.log2(3))
    assert benchkit.ndcg10(run, qrels) == pytest.approx((q1 + 1 / np.log2(3) + 0) / 3)


def test_pct_is_numpys_linear_percentiles() -> None:
    xs = [5.0, 1.0, 3.0, 2.0, 4.0, 100.0]
    assert benchkit.pct(xs) == (float(np.percentile(xs, 50)), float(np.percentile(xs, 95)))


def test_timed_map_returns_every_result_with_a_latency_each() -> None:
    out, lat, seconds = benchkit.timed_map(lambda x: x * x, list(range(20)), workers=4)
    assert out == {i: i * i for i in range(20)}
    assert len(lat) == 20 and all(ms >= 0 for ms in lat)
    assert seconds >= 0


def test_best_and_median_time_call_the_function_and_return_seconds() -> None:
    calls = []

    def fn() -> None:
        calls.append(time.perf_counter())

    assert benchkit.best_time(fn, repeat=3) >= 0 and len(calls) == 4  # one warm-up
    calls.clear()
    assert benchkit.median_time(fn, min_time=0.0, min_reps=5) >= 0 and len(calls) == 6


def test_format_table_aligns_and_leaves_missing_cells_blank() -> None:
    rows = [{"what": "dense", "p50": 1.234, "n": 3}, {"what": "hybrid end-to-end", "p50": None}]
    text = benchkit.format_table(rows, [("what", "what", ""), ("p50", "p50 ms", ".1f"),
                                        ("n", "n", "d")])
    lines = text.splitlines()
    assert len(lines) == 3 and len({len(line.rstrip()) for line in lines[:2]}) == 1
    assert lines[1].startswith("dense ") and lines[1].split() == ["dense", "1.2", "3"]
    assert lines[2].split() == ["hybrid", "end-to-end"]


def test_corpus_records_and_passage(tmp_path: Path) -> None:
    folder = tmp_path / "toy"
    folder.mkdir()
    docs = [{"_id": "1", "title": "Title", "text": "body one"}, {"_id": "2", "title": "", "text": "two"},
            {"_id": "3", "text": "three"}]
    (folder / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs) + "\n")
    assert benchkit.corpus_records(folder, 2) == docs[:2]
    assert benchkit.corpus_records(folder / "corpus.jsonl") == docs
    assert [benchkit.passage(d) for d in docs] == ["Title body one", "two", "three"]


def test_print_json_and_flag(capsys) -> None:
    import argparse

    parser = argparse.ArgumentParser()
    benchkit.add_json_flag(parser)
    assert parser.parse_args(["--json"]).json is True
    benchkit.print_json({"a": 1, "p": Path("x")})
    assert json.loads(capsys.readouterr().out) == {"a": 1, "p": "x"}


def test_file_kinds_of_index_stats() -> None:
    class Indices:
        def stats(self, **_kw):
            return {"indices": {"i": {"primaries": {
                "store": {"size_in_bytes": 100}, "docs": {"count": 4},
                "segments": {"count": 1, "file_sizes": {
                    "vec": {"size_in_bytes": 40}, "dvd": {"size_in_bytes": 30},
                    "weird": {"size_in_bytes": 5}}}}}}}

    class Client:
        indices = Indices()

    got = benchkit.measure_index(Client(), "i")
    assert got["bytes"] == 100 and got["docs"] == 4
    assert got["by_kind"]["vectors"] == 40 and got["by_kind"]["doc_values"] == 30
    assert got["by_kind"]["other"] == 5 and set(got["by_kind"]) == set(benchkit.KINDS)
