"""bench/defaults.py's selection rule and bench/quality.py's generated-block writing (no index)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.fixture(scope="module")
def defaults():
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location("bench_defaults", BENCH / "defaults.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_defaults"] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


def test_best_mean_rank_wins_and_ties_go_to_the_simpler(defaults) -> None:
    table = {
        "simple": {"a": 0.70, "b": 0.35},  # ranks 2, 1 -> mean 1.5
        "complex": {"a": 0.72, "b": 0.34},  # ranks 1, 2 -> mean 1.5, but more stages
        "bad": {"a": 0.60, "b": 0.30},  # ranks 3, 3
    }
    rows = defaults.rank_candidates(table, {"simple": 3, "complex": 4, "bad": 3})
    assert [r["name"] for r in rows] == ["simple", "complex", "bad"]
    assert rows[0]["ranks"] == {"a": 2, "b": 1} and rows[0]["mean_rank"] == 1.5
    # one collection's large win does not buy the default: ranks, not means, decide
    table["spiky"] = {"a": 0.90, "b": 0.10}
    rows = defaults.rank_candidates(table, {"simple": 3, "complex": 4, "bad": 3, "spiky": 3})
    assert rows[0]["name"] == "simple" and rows[0]["mean_ndcg@10"] < rows[-1]["mean_ndcg@10"] + 1
    # equal scores share a rank
    rows = defaults.rank_candidates({"x": {"a": 0.5}, "y": {"a": 0.5}}, {"x": 4, "y": 3})
    assert [r["ranks"]["a"] for r in rows] == [1, 1] and rows[0]["name"] == "y"


def test_compact_spec_round_trips_and_prf_goes_before_maxsim(defaults) -> None:
    from osneural.plugin.spec import load_spec, parse_spec

    full = load_spec("hybrid").to_dict()
    short = defaults.compact(full)
    assert parse_spec(short).to_dict() == full
    assert all("type" in s for s in short["first_stages"])
    with_prf = defaults.prf_spec(full, defaults.PRF_VARIANTS["+prf dense"])
    assert [r["type"] for r in with_prf["rescore"]] == ["prf", "maxsim"]
    no_maxsim = {**full, "rescore": []}
    assert defaults.prf_spec(no_maxsim, defaults.PRF_VARIANTS["+prf multivector"]) is None
    for spec in defaults.PRF_VARIANTS.values():
        parse_spec({"rescore": [spec, {"type": "maxsim"}]})


def test_generated_blocks_replace_only_themselves(tmp_path: Path) -> None:
    sys.path.insert(0, str(BENCH))
    from quality import replace_block

    doc = tmp_path / "r.md"
    doc.write_text("# title\n\nhand-written\n")
    replace_block(doc, "defaults", "one")
    replace_block(doc, "matryoshka", "two")
    replace_block(doc, "defaults", "three")
    text = doc.read_text()
    assert text.startswith("# title\n\nhand-written\n")
    assert "one" not in text and text.count("<!-- defaults:begin -->") == 1
    assert text.index("three") < text.index("two")
