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
    assert [d.id for d in good] == ["a", "b", "d", "7"]
    # every field but id, title and text is the app's own; a `metadata` object is one of them
    assert good[0].fields == {"metadata": {"year": 2020}} and good[0].line == 1
    assert good[1].title == "no text" and good[1].text == "" and not good[1].empty
    assert good[2].empty and good[2].fields == {}
    assert good[3].fields == {"extra": "kept"} and good[3].line == 10
    reasons = {r.line: (r.doc_id, r.reason) for r in bad}
    assert reasons[2][1].startswith("malformed JSON")
    assert reasons[3] == (None, "missing id field '_id'")
    assert reasons[6] == ("a", "duplicate id in this corpus")
    assert "JSON object" in reasons[7][1]
    assert reasons[8] == ("c", "text field 'text' must be a string")
    assert 9 not in reasons  # an empty title and text that are there: an empty document
    assert 5 not in reasons  # blank line is not an error
    assert all(r.source == str(path) for r in bad)


def test_custom_field_names_and_memory_corpus() -> None:
    fields = FieldNames(id="doc", title="head", text="body")
    items = list(iter_corpus([{"doc": "x", "head": "H", "body": "B"}, {"doc": "y"}], fields))
    assert isinstance(items[0], CorpusDocument) and items[0].title == "H" and items[0].text == "B"
    assert isinstance(items[1], Rejected) and items[1].line == 2 and items[1].source == "<memory>"
    assert items[1].reason.startswith("empty document")


def test_app_fields_empty_documents_paths_and_reserved_names() -> None:
    fields = FieldNames(title="name", text="specs.summary,notes")
    recs = [
        {"_id": "p1", "name": "Lamp", "specs": {"summary": "warm light", "watts": 9},
         "notes": ["dims", None, "white"], "price": 12, "in_stock": True},
        {"_id": "p2", "name": "", "price": 3, "category": "misc"},
        {"_id": "p3", "name": "Chair", "dense": [1.0]},
        {"_id": "p4", "name": "Desk", "title": "a second title"},
        {"_id": "p5", "name": {"not": "text"}},
    ]
    items = list(iter_corpus(recs, fields))
    p1, p2 = items[0], items[1]
    assert isinstance(p1, CorpusDocument) and p1.title == "Lamp"
    assert p1.text == "warm light\ndims\nwhite"
    # a top-level title/text field is consumed; a dotted one stays in its object
    assert p1.fields == {"specs": {"summary": "warm light", "watts": 9}, "price": 12,
                         "in_stock": True}
    assert isinstance(p2, CorpusDocument) and p2.empty and p2.fields == {"price": 3, "category": "misc"}
    assert isinstance(items[2], Rejected) and "'dense' is one of osneural's own fields" in items[2].reason
    assert isinstance(items[3], Rejected) and "'title' is one of osneural's own fields" in items[3].reason
    assert isinstance(items[4], Rejected) and items[4].reason == "title field 'name' must be a string"
    kept = FieldNames(title="name", text="notes", keep=True)
    doc = next(iter_corpus(recs[:1], kept))
    assert doc.fields["name"] == "Lamp" and "notes" in doc.fields


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


def test_duplicate_far_apart_is_caught_after_ids_spill_to_disk(tmp_path: Path) -> None:
    """The duplicate check keeps only `memory_ids` ids in memory; a repeat of an id read
    thousands of lines earlier (long since moved to the scratch file) is still rejected, naming
    its own line, and the first occurrence is the one kept."""
    lines = [json.dumps({"_id": f"d{i}", "text": f"text {i}"}) for i in range(5000)]
    lines.append(json.dumps({"_id": "d3", "text": "again"}))        # line 5001: repeat of line 4
    lines.append(json.dumps({"_id": "d4999", "text": "again"}))     # line 5002: repeat of a recent id
    lines.append(json.dumps({"_id": "new", "text": "fresh"}))
    path = _write(tmp_path / "corpus.jsonl", lines)
    items = list(iter_corpus(path, memory_ids=100))
    bad = [i for i in items if isinstance(i, Rejected)]
    assert [(r.line, r.doc_id, r.reason) for r in bad] == [
        (5001, "d3", "duplicate id in this corpus"),
        (5002, "d4999", "duplicate id in this corpus")]
    docs = [i for i in items if isinstance(i, CorpusDocument)]
    assert len(docs) == 5001 and docs[3].text == "text 3" and docs[-1].id == "new"


def test_seen_ids_spills_and_removes_its_file(tmp_path: Path) -> None:
    from osneural.ingest.seen_ids import SeenIds

    ids = [f"id-{i}" for i in range(1000)]
    with SeenIds(memory_ids=64, folder=tmp_path) as seen:
        assert all(seen.add(i) for i in ids)
        assert seen.spilled >= 900 and len(seen) == 1000
        assert not any(seen.add(i) for i in ids[::7])  # old (on disk) and recent (in memory)
        assert "id-0" in seen and "id-1000" not in seen
        assert list(tmp_path.iterdir())  # the scratch folder lives in the folder given
    assert not list(tmp_path.iterdir())  # and is gone on close
    with pytest.raises(ValueError, match="memory_ids"):
        SeenIds(memory_ids=0)
