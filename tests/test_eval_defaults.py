"""bench/defaults.py's selection rule, its leave-one-collection-out judgment and candidate specs,
the dataset-argument resolution, and the bench helpers' generated-block writing (no index)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.fixture(scope="module")
def defaults():
    spec = importlib.util.spec_from_file_location("bench_defaults", BENCH / "defaults.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_defaults"] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


REFERENCE = {"a": 0.70, "b": 0.40, "c": 0.50}


def test_the_bound_beats_the_mean(defaults) -> None:
    table = {
        # best mean, but 1 point below the best shipped spec on "b": excluded
        "spiky": {"a": 0.80, "b": 0.39, "c": 0.55},
        "steady": {"a": 0.72, "b": 0.401, "c": 0.51},
        "weak": {"a": 0.70, "b": 0.396, "c": 0.50},  # within 0.5 point everywhere, lower mean
    }
    cx = {"spiky": (3, 0, 0), "steady": (3, 1, 0), "weak": (2, 0, 0)}
    choice = defaults.select(table, REFERENCE, cx, tolerance=0.005)
    assert choice.name == "steady" and not choice.fallback
    assert choice.feasible == ["steady", "weak"]
    assert choice.stats["spiky"]["worst_gap_at"] == "b"
    assert choice.stats["spiky"]["worst_gap"] == pytest.approx(-0.01)
    # a looser bound lets the spiky one in, and its mean wins
    assert defaults.select(table, REFERENCE, cx, tolerance=0.011).name == "spiky"


def test_ties_go_to_the_simpler_and_fallback_takes_the_smallest_shortfall(defaults) -> None:
    table = {"complex": {"a": 0.7205, "b": 0.41, "c": 0.51},
             "simple": {"a": 0.72, "b": 0.41, "c": 0.5099}}
    cx = {"complex": (3, 1, 0), "simple": (2, 0, 0)}
    assert defaults.select(table, REFERENCE, cx, tie=0.001).name == "simple"
    assert defaults.select(table, REFERENCE, cx, tie=0.0).name == "complex"
    # nothing within the bound: the smallest worst-case shortfall wins, and says so
    table = {"x": {"a": 0.90, "b": 0.30, "c": 0.50}, "y": {"a": 0.68, "b": 0.38, "c": 0.48}}
    choice = defaults.select(table, REFERENCE, {"x": (1, 0, 0), "y": (3, 1, 1)})
    assert choice.name == "y" and choice.fallback and choice.feasible == []


def test_leave_one_out_never_sees_the_held_out_collection(defaults) -> None:
    # "oracle" is far ahead on "c" only: in-sample it wins; when "c" is held out the rule
    # cannot see that and picks "steady", whose score on "c" is what gets reported
    table = {"oracle": {"a": 0.70, "b": 0.40, "c": 0.70},
             "steady": {"a": 0.71, "b": 0.41, "c": 0.49}}
    cx = {"oracle": (3, 0, 0), "steady": (3, 0, 0)}
    assert defaults.select(table, REFERENCE, cx).name == "oracle"
    rows = defaults.leave_one_out({h: table for h in REFERENCE}, REFERENCE, cx,
                                  bm25={"a": 0.6, "b": 0.3, "c": 0.4})
    by = {r["held_out"]: r for r in rows}
    assert by["c"]["chosen"] == "steady" and by["c"]["ndcg@10"] == pytest.approx(0.49)
    assert by["c"]["gap"] == pytest.approx(-0.01) and not by["c"]["within"]
    assert by["a"]["chosen"] == "oracle" and by["a"]["within"]
    # a fitted candidate's fold table is its fit without the held-out collection
    folds = {h: dict(table) for h in REFERENCE}
    folds["c"]["fitted"] = {"a": 0.75, "b": 0.45, "c": 0.30}
    rows = defaults.leave_one_out(folds, REFERENCE, {**cx, "fitted": (3, 0, 1)})
    assert {r["held_out"]: r["chosen"] for r in rows}["c"] == "fitted"
    assert {r["held_out"]: r["ndcg@10"] for r in rows}["c"] == pytest.approx(0.30)


def test_decide_reads_per_query_scores_and_picks_hybrid_linear_among_linear(defaults) -> None:
    def pq(*scores: float) -> dict[str, float]:
        return {str(i): s for i, s in enumerate(scores)}

    lin = {"first_stages": [{"type": "bm25"}, {"type": "dense"}], "fusion": {"type": "linear"},
           "size": 10}
    rrf = {**lin, "fusion": {"type": "rrf"},
           "rescore": [{"type": "maxsim", "combine": "linear", "weight": 0.2}]}
    data = {
        "datasets": ["a", "b"],
        "shipped": {"bm25": {"a": {"failed": 0, "per_query": pq(0.5, 0.7)},
                             "b": {"failed": 0, "per_query": pq(0.3)}},
                    "broken": {"a": {"failed": 1, "per_query": pq(0.9)},
                               "b": {"failed": 0, "per_query": pq(0.9)}}},
        "candidates": {
            "lin": {"spec": lin, "complexity": [2, 0, 0],
                    "per_query": {"a": pq(0.6, 0.7), "b": pq(0.35)}},
            "rrf": {"spec": rrf, "complexity": [2, 1, 0],
                    "per_query": {"a": pq(0.7, 0.8), "b": pq(0.36)}}},
    }
    dec = defaults.decide(data, tolerance=0.005, tie=0.001)
    assert dec["shipped_skipped"] == ["broken"]  # a failed query keeps a spec out of the reference
    assert dec["reference"] == pytest.approx({"a": 0.6, "b": 0.3})
    assert dec["winner"]["name"] == "rrf" and dec["linear"]["name"] == "lin"
    assert [r["held_out"] for r in dec["loco"]] == ["a", "b"]
    assert json.loads(json.dumps(dec))  # the report is plain JSON


def test_candidate_specs_are_real_specs_and_shipped_hybrid_round_trips(defaults) -> None:
    from osneural.plugin.spec import load_spec, parse_spec

    grid = defaults.grid_candidates()
    assert len(grid) == 12 and len({c.name for c in grid}) == 12
    for cand in grid:
        spec = parse_spec(cand.spec())
        assert len(spec.first_stages) == cand.stages
        assert bool(spec.rescore) == (cand.maxsim > 0)
        assert spec.fusion.weights is None  # equal weights
    for name in ("hybrid", "hybrid-linear"):
        shipped = load_spec(name)
        cand = defaults.shipped_candidate(name, shipped)
        assert cand is not None, name
        # the simulated candidate stands for exactly the shipped spec
        assert parse_spec(cand.spec()).to_dict() == shipped.to_dict()
    simple = next(c for c in grid if c.name == "bm25+dense rrf")
    heavy = next(c for c in grid if c.name == "bm25+dense+sparse rrf +maxsim")
    assert simple.complexity < heavy.complexity
    assert defaults.shipped_candidate("bm25", load_spec("bm25")) is None


def test_compact_spec_round_trips(defaults) -> None:
    from osneural.plugin.spec import load_spec, parse_spec

    for name in ("hybrid", "hybrid-linear", "bm25"):
        full = load_spec(name).to_dict()
        short = defaults.compact(full)
        assert parse_spec(short).to_dict() == full
        assert all("type" in s for s in short["first_stages"])


def _collection(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "queries.jsonl").write_text('{"_id": "1", "text": "q"}\n')
    return folder


def test_dataset_argument_resolves_names_in_any_root_and_paths(tmp_path: Path,
                                                               monkeypatch) -> None:
    from osneural.eval.beir import EvalDataError, dataset_roots, resolve_collection

    beir, classic = tmp_path / "beir", tmp_path / "classic"
    sci = _collection(beir / "scifact")
    lisa = _collection(classic / "lisa")
    mine = _collection(tmp_path / "elsewhere" / "mine")
    roots = [beir, classic]
    assert resolve_collection("scifact", roots) == sci
    assert resolve_collection("lisa", roots) == lisa  # the second root is searched too
    assert resolve_collection(str(mine), roots) == mine  # any BEIR-layout folder by path
    with pytest.raises(EvalDataError, match="known: lisa, scifact"):
        resolve_collection("lisaa", roots)
    with pytest.raises(EvalDataError, match="no such folder"):
        resolve_collection(str(tmp_path / "nope" / "lisa"), roots)  # a path is not a name
    (tmp_path / "empty").mkdir()
    with pytest.raises(EvalDataError, match="no queries.jsonl"):
        resolve_collection(str(tmp_path / "empty"), roots)
    monkeypatch.setenv("OSNEURAL_DATA_PATH", f"{classic}:{beir}")
    assert dataset_roots() == [classic, beir]
    assert resolve_collection("scifact") == sci


def test_bench_finds_the_classic_collections(monkeypatch, tmp_path: Path) -> None:
    from osneural.eval import benchkit

    monkeypatch.setenv("OSNEURAL_BEIR_DIR", str(tmp_path / "beir"))
    monkeypatch.setenv("OSNEURAL_CLASSIC_DIR", str(tmp_path / "classic"))
    med = _collection(tmp_path / "classic" / "medline")
    assert benchkit.dataset_dir("medline") == med


def test_generated_blocks_replace_only_themselves(tmp_path: Path) -> None:
    from osneural.eval.benchkit import replace_block

    doc = tmp_path / "r.md"
    doc.write_text("# title\n\nhand-written\n")
    replace_block(doc, "defaults", "one")
    replace_block(doc, "matryoshka", "two")
    replace_block(doc, "defaults", "three")
    text = doc.read_text()
    assert text.startswith("# title\n\nhand-written\n")
    assert "one" not in text and text.count("<!-- defaults:begin -->") == 1
    assert text.index("three") < text.index("two")


def test_the_spec_being_chosen_is_not_its_own_reference(defaults) -> None:
    def pq(*scores: float) -> dict[str, float]:
        return {str(i): s for i, s in enumerate(scores)}

    lin = {"first_stages": [{"type": "bm25"}, {"type": "dense"}], "fusion": {"type": "linear"},
           "size": 10}
    data = {
        "datasets": ["a", "b"],
        "shipped": {"bm25": {"a": {"failed": 0, "per_query": pq(0.5)},
                             "b": {"failed": 0, "per_query": pq(0.3)}},
                    # fitted on "a": the best shipped spec there, by far
                    "hybrid": {"a": {"failed": 0, "per_query": pq(0.9)},
                               "b": {"failed": 0, "per_query": pq(0.2)}}},
        "candidates": {"lin": {"spec": lin, "complexity": [2, 0, 0],
                               "per_query": {"a": pq(0.6), "b": pq(0.35)}}},
    }
    dec = defaults.decide(data, tolerance=0.005, tie=0.001)
    assert dec["reference"] == pytest.approx({"a": 0.5, "b": 0.3})
    assert dec["best_shipped_at"] == {"a": "bm25", "b": "bm25"}
    assert dec["winner"] == {"name": "lin", "fallback": False, "spec": defaults.compact(lin)}
    # with the replaced spec in the reference nothing meets the bound on "a"
    assert dec["reference_all"] == pytest.approx({"a": 0.9, "b": 0.3})
    assert dec["with_replaced"]["fallback"] and dec["with_replaced"]["feasible"] == []
    # hybrid-linear's reference leaves out hybrid as well (it cannot run where the other is used)
    assert dec["linear"]["name"] == "lin" and not dec["linear"]["fallback"]
    assert "best shipped but `hybrid` (reference)" in defaults.markdown(
        {"datasets": ["a", "b"], "command": "x", "created": "now",
         "collections": {d: {"queries": 1, "documents": 1} for d in "ab"}, "decision": dec})
