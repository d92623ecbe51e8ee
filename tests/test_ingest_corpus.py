"""Corpus readers: every bad line becomes a Rejected record naming file, line and reason."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from osneural.ingest.corpus import (
    CorpusDocument,
    CorpusError,
    FieldNames,
    Rejected,
    corpus_files,
    iter_corpus,
)


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_beir_lines_good_and_bad(tmp_path: Path) -> None:
    path = _write(tmp_path / "corpus.jsonl", [
        json.dumps({"_id": "a", "title": "T", "text": "alpha", "metadata": {"year": 2020}}),
        "{not json",
        json.dumps({"title": "no id", "text": "x"}),
        json.dumps({"_id": "b", "title": "no text"}),
        "",
        json.dumps({"_id": "a", "text": "dup"}),
        json.dumps([1, 2]),
        json.dumps({"_id": "c", "text": 5}),
        json.dumps({"_id": "d", "text": "  ", "title": ""}),
        json.dumps({"_id": 7, "text": "integer id", "extra": "kept"}),
    ])
    items = list(iter_corpus(path))
    good = [i for i in items if isinstance(i, CorpusDocument)]
    bad = [i for i in items if isinstance(i, Rejected)]
    assert [d.id for d in good] == ["a", "7"]
    assert good[0].metadata == {"year": 2020} and good[0].line == 1
    assert good[1].metadata == {"extra": "kept"} and good[1].line == 10
    reasons = {r.line: (r.doc_id, r.reason) for r in bad}
    assert reasons[2][1].startswith("malformed JSON")
    assert reasons[3] == (None, "missing id field '_id'")
    assert reasons[4] == ("b", "missing text field 'text'")
    assert reasons[6] == ("a", "duplicate id in this corpus")
    assert "JSON object" in reasons[7][1]
    assert reasons[8] == ("c", "text field 'text' must be a string")
    assert reasons[9][1].startswith("empty document")
    assert 5 not in reasons  # blank line is not an error
    assert all(r.source == str(path) for r in bad)


def test_custom_field_names_and_memory_corpus() -> None:
    fields = FieldNames(id="doc", title="head", text="body")
    items = list(iter_corpus([{"doc": "x", "head": "H", "body": "B"}, {"doc": "y"}], fields))
    assert isinstance(items[0], CorpusDocument) and items[0].title == "H" and items[0].text == "B"
    assert isinstance(items[1], Rejected) and items[1].line == 2 and items[1].source == "<memory>"
    assert items[1].reason == "missing text field 'body'"


def test_folder_prefers_corpus_jsonl_and_reads_all_otherwise(tmp_path: Path) -> None:
    beir = tmp_path / "beir"
    beir.mkdir()
    _write(beir / "corpus.jsonl", [json.dumps({"_id": "1", "text": "t"})])
    _write(beir / "queries.jsonl", [json.dumps({"_id": "q", "text": "q"})])
    assert corpus_files(beir) == [beir / "corpus.jsonl"]
    parts = tmp_path / "parts"
    parts.mkdir()
    _write(parts / "b.jsonl", [json.dumps({"_id": "2", "text": "t"})])
    _write(parts / "a.jsonl", [json.dumps({"_id": "1", "text": "t"}), json.dumps({"_id": "2", "text": "d"})])
    items = list(iter_corpus(parts))
    assert [type(i).__name__ for i in items] == ["CorpusDocument", "CorpusDocument", "Rejected"]
    assert items[2].source.endswith("b.jsonl") and items[2].reason == "duplicate id in this corpus"


def test_missing_path_and_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="no such file"):
        corpus_files(tmp_path / "nope.jsonl")
    with pytest.raises(CorpusError, match="no \\*.jsonl"):
        corpus_files(tmp_path)


def test_invalid_utf8_is_a_line_error(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_bytes(b'{"_id": "1", "text": "ok"}\n\xff\xfe garbage\n')
    items = list(iter_corpus(path))
    assert isinstance(items[1], Rejected) and items[1].line == 2
