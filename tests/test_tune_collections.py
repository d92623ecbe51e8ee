"""`osneural tune` over several collections: equal weight per collection, leave-one-collection-out
that never scores a collection with a fit that saw it, and the command line's collection and
index arguments (synthetic caches; no node needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from osneural.eval.tune import (
    Config,
    HeldOutLeakError,
    PooledScorer,
    Scorer,
    SearchSpace,
    TuneError,
    collection_indexes,
    fit,
    held_out_scores,
    leave_one_collection_out,
    tune_collections,
)
from osneural.plugin.spec import load_spec, parse_spec
from test_tune_cv import _synthetic

from osneural.cli import main

SPACE = SearchSpace(depths=(20, 40), rounds=1)
START = Config("rrf", "minmax", 60, (1.0, 1.0, 1.0), (40, 40, 40), 0.0)


def _scorers(n: int = 3) -> dict[str, Scorer]:
    out = {}
    for i in range(n):
        cache, qrels = _synthetic(seed=i)
        out[f"c{i}"] = Scorer(cache, qrels, window=20)
    return out


def test_pooled_mean_weighs_each_collection_the_same() -> None:
    scorers = _scorers(2)
    pooled = PooledScorer(scorers)
    # c0 with 2 queries, c1 with all 30: the mean is the mean of the two collection means
    ids = ["c0/q0", "c0/q1", *(f"c1/{q}" for q in sorted(scorers["c1"].cache.stage_runs))]
    expected = (scorers["c0"].mean(START, ["q0", "q1"])
                + scorers["c1"].mean(START, sorted(scorers["c1"].cache.stage_runs))) / 2
    assert pooled.mean(START, ids) == pytest.approx(expected)
    per_query = pooled.per_query(START, ids)
    assert set(per_query) == set(ids)


def test_leave_one_collection_out_never_scores_with_a_fit_that_saw_it() -> None:
    scorers = _scorers(3)
    pooled = PooledScorer(scorers)
    splits = leave_one_collection_out(pooled, START, SPACE)
    assert [s.held_out for s in splits] == ["c0", "c1", "c2"]
    for s in splits:
        assert s.held_out not in s.train_collections
        refit = fit(pooled, pooled.ids(s.train_collections), START, SPACE)
        assert refit.config == s.config
        assert s.held_out_ndcg == pytest.approx(scorers[s.held_out].mean(
            s.config, sorted(scorers[s.held_out].cache.stage_runs)))
        # the guard: a fit's own collection is refused as a held-out set
        with pytest.raises(HeldOutLeakError):
            held_out_scores(pooled, refit, pooled.ids([s.train_collections[0]]))
    with pytest.raises(TuneError, match="at least two"):
        leave_one_collection_out(PooledScorer(_scorers(1)), START, SPACE)


def test_tune_collections_report_and_spec() -> None:
    report = tune_collections(_scorers(2), load_spec("hybrid"), SPACE)
    assert parse_spec(report.spec).to_dict() == report.spec  # what --spec accepts
    data = json.loads(json.dumps(report.to_dict()))
    assert [s["held_out"] for s in data["splits"]] == ["c0", "c1"]
    assert data["queries"] == {"c0": 30, "c1": 30}
    assert "not a held-out" in data["final"]["note"]
    assert set(data["final"]["in_sample_per_collection"]) == {"c0", "c1"}


def test_collection_indexes_by_template_or_one_per_collection() -> None:
    folders = [Path("/d/SciFact"), Path("/d/lisa")]
    assert collection_indexes(folders, ["q-{name}"]) == ["q-scifact", "q-lisa"]
    assert collection_indexes(folders, ["a", "b"]) == ["a", "b"]
    with pytest.raises(TuneError, match="2 collections need 2 --index"):
        collection_indexes(folders, ["a"])


def _folder(path: Path) -> Path:
    (path / "qrels").mkdir(parents=True)
    (path / "queries.jsonl").write_text('{"_id": "1", "text": "q"}\n')
    (path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n1\td1\t1\n")
    return path


def test_tune_command_resolves_names_and_refuses_bad_collection_arguments(
        tmp_path: Path, monkeypatch, capsys) -> None:
    root = tmp_path / "data"
    _folder(root / "alpha")
    _folder(root / "beta")
    monkeypatch.setenv("OSNEURAL_DATA_PATH", str(root))
    assert main(["tune", "alpha", "beta", "--index", "one"]) == 2
    assert "2 collections need 2 --index values" in capsys.readouterr().err
    assert main(["tune", "alpha", "gamma", "--index", "x-{name}"]) == 2
    assert "gamma: no such folder" in capsys.readouterr().err
    qrels = root / "alpha" / "qrels" / "test.tsv"
    assert main(["tune", "alpha", "beta", "--index", "x-{name}", "--qrels", str(qrels)]) == 2
    assert "one collection" in capsys.readouterr().err
