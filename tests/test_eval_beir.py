"""BEIR/TREC collection loading: formats, line-numbered errors, and the accounting of left-outs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from osneural.eval.beir import (
    EvalDataError,
    find_qrels,
    load_beir,
    load_qrels,
    load_queries,
    prepare_collection,
)


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_beir_and_trec_qrels_read_the_same(tmp_path: Path) -> None:
    beir = _write(tmp_path / "a.tsv", "query-id\tcorpus-id\tscore\nq1\td1\t2\nq1\td2\t0\nq2\td3\t1\n")
    trec = _write(tmp_path / "b.txt", "q1 0 d1 2\nq1 0 d2 0\n\nq2 Q0 d3 1\n")
    expected = {"q1": {"d1": 2, "d2": 0}, "q2": {"d3": 1}}
    assert load_qrels(beir) == expected
    assert load_qrels(trec) == expected


def test_headerless_beir_qrels_and_float_grades(tmp_path: Path) -> None:
    path = _write(tmp_path / "q.tsv", "7\t11\t1.0\n7\t12\t-1\n")
    assert load_qrels(path) == {"7": {"11": 1, "12": -1}}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("query-id\tcorpus-id\tscore\nq1\td1\n", ":2: expected 3 columns"),
        ("q1\td1\tyes\n", ":1: relevance score 'yes' is not a number"),
        ("q1\td1\t1.5\n", ":1: relevance score '1.5' is not an integer grade"),
        ("q1 d1 1\nq2 0 d2 1\n", ":2: 4 columns where earlier lines had 3"),
        ("q1 d1 1\nq1 d1 2\n", ":2: query 'q1' document 'd1' judged 2 here but 1 at line 1"),
        ("query-id\tcorpus-id\tscore\n", "no judgments"),
    ],
)
def test_bad_qrels_name_the_line(tmp_path: Path, text: str, message: str) -> None:
    path = _write(tmp_path / "bad.tsv", text)
    with pytest.raises(EvalDataError) as err:
        load_qrels(path)
    assert message in str(err.value)
    assert str(path) in str(err.value)


def test_repeated_identical_judgment_is_accepted(tmp_path: Path) -> None:
    path = _write(tmp_path / "q.tsv", "q1 d1 1\nq1 d1 1\n")
    assert load_qrels(path) == {"q1": {"d1": 1}}


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", ":2: malformed JSON"),
        ('{"text": "x"}', ":2: missing or invalid query id field '_id'"),
        ('{"_id": "q9"}', ":2: query 'q9': missing or non-string field 'text'"),
        ('{"_id": "q1", "text": "again"}', ":2: duplicate query id 'q1'"),
        ("[1, 2]", ":2: expected a JSON object"),
    ],
)
def test_bad_queries_name_the_line(tmp_path: Path, line: str, message: str) -> None:
    path = _write(tmp_path / "queries.jsonl", '{"_id": "q1", "text": "fine"}\n' + line + "\n")
    with pytest.raises(EvalDataError) as err:
        load_queries(path)
    assert message in str(err.value)


def test_integer_query_ids_become_strings(tmp_path: Path) -> None:
    path = _write(tmp_path / "queries.jsonl", '{"_id": 3, "text": "three"}\n\n')
    assert load_queries(path) == {"3": "three"}


def test_find_qrels_lists_what_exists(tmp_path: Path) -> None:
    _write(tmp_path / "qrels" / "dev.tsv", "q d 1\n")
    assert find_qrels(tmp_path, "dev").name == "dev.tsv"
    with pytest.raises(EvalDataError, match=r"no qrels for split 'test' \(found: dev.tsv\)"):
        find_qrels(tmp_path, "test")


def test_prepare_counts_everything_left_out() -> None:
    queries = {"q1": "a", "q2": "b", "q3": "c", "q4": "d"}
    qrels = {
        "q1": {"d1": 1, "gone": 1},
        "q2": {"d2": 0},  # judged, nothing relevant: kept (BEIR scores it 0)
        "q4": {"d4": 2},
        "q9": {"d1": 1},  # no query text
    }
    coll = prepare_collection(queries, qrels, {"d1", "d2", "d4"}, name="toy")
    assert list(coll.queries) == ["q1", "q2", "q4"]
    assert coll.qrels == {"q1": {"d1": 1, "gone": 1}, "q2": {"d2": 0}, "q4": {"d4": 2}}
    s = coll.stats
    assert (s.queries_in_file, s.evaluated, s.unjudged_queries) == (4, 3, 1)
    assert s.unjudged_examples == ["q3"]
    assert (s.judged_queries_without_text, s.judged_without_text_examples) == (1, ["q9"])
    assert s.queries_without_relevant == 1
    assert s.qrels_docs_missing_from_corpus == 1
    assert s.missing_doc_examples == [["q1", "gone"]]
    assert s.qrels_rows == 5


def test_prepare_limit_and_no_overlap() -> None:
    coll = prepare_collection({"a": "x", "b": "y"}, {"a": {"d": 1}, "b": {"d": 1}}, limit=1)
    assert list(coll.queries) == ["a"] and coll.stats.limited_to == 1
    assert coll.stats.qrels_docs_missing_from_corpus is None  # corpus not checked
    with pytest.raises(EvalDataError, match="no query has judgments"):
        prepare_collection({"a": "x"}, {"b": {"d": 1}})


def test_load_beir_folder(tmp_path: Path) -> None:
    docs = [{"_id": "d1", "title": "t", "text": "one"}, {"_id": "d2", "title": "", "text": ""}]
    _write(tmp_path / "corpus.jsonl", "".join(json.dumps(d) + "\n" for d in docs))
    _write(tmp_path / "queries.jsonl", '{"_id": "q1", "text": "one"}\n{"_id": "q2", "text": "x"}\n')
    _write(tmp_path / "qrels" / "test.tsv",
           "query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\t1\nq1\tgone\t1\n")
    coll = load_beir(tmp_path)
    assert coll.name == tmp_path.name and list(coll.queries) == ["q1"]
    # d2 is empty but still indexed (with no representations), so only "gone" is missing.
    assert coll.stats.qrels_docs_missing_from_corpus == 1
    assert coll.stats.missing_doc_examples == [["q1", "gone"]]
    assert coll.stats.unjudged_queries == 1
    assert coll.describe()["qrels_file"].endswith("test.tsv")
    with pytest.raises(EvalDataError, match="not a folder"):
        load_beir(tmp_path / "nope")
