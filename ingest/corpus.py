"""Corpus readers: BEIR `corpus.jsonl`, plain JSONL with other field names, folders of either.

Readers never raise on a bad line: they yield a `Rejected` record naming the file, the line and
the reason, so one malformed line in a million costs one line in the failure report and not the
run. Duplicate ids are rejected here too (first occurrence wins) because two documents with one
`_id` would silently overwrite each other in OpenSearch.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class FieldNames:
    """Where id, title and text live in the input records (BEIR names by default)."""

    id: str = "_id"
    title: str = "title"
    text: str = "text"


@dataclass
class CorpusDocument:
    """One valid input document, with where it came from for error reports."""

    id: str
    title: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    line: int = 0


@dataclass
class Rejected:
    """One input record that will not be indexed, and why."""

    source: str
    line: int
    doc_id: str | None
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "line": self.line, "id": self.doc_id, "reason": self.reason}


CorpusItem = CorpusDocument | Rejected


class CorpusError(ValueError):
    """The corpus as a whole is unusable (missing path, no files, no documents)."""


def corpus_files(path: str | Path) -> list[Path]:
    """The JSONL files of a corpus path: the file itself, or `*.jsonl` in a folder (sorted)."""
    p = Path(path)
    if p.is_file():
        return [p]
    if p.is_dir():
        files = sorted(q for q in p.rglob("*.jsonl") if q.is_file())
        if not files:
            raise CorpusError(f"{p}: folder holds no *.jsonl files")
        # A BEIR folder also holds queries.jsonl; it is not part of the corpus.
        corpus = [q for q in files if q.name == "corpus.jsonl"]
        return corpus or files
    raise CorpusError(f"{p}: no such file or folder")


def _printable(text: str) -> str:
    """`text` with lone surrogates written as `\\udXXX` escapes (safe to encode as UTF-8)."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _not_utf8(value: Any, path: str) -> str | None:
    """The path of the first string (key or value) in `value` that UTF-8 cannot encode.

    JSON allows a lone surrogate escape (`"\\ud800"`); Python decodes it into a str that no
    tokenizer, bulk body or report file can encode, so it must be caught per document here.
    """
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return path
        return None
    if isinstance(value, Mapping):
        for k, v in value.items():
            sub = f"{path}.{_printable(str(k))}" if path else _printable(str(k))
            bad = _not_utf8(k, sub) or _not_utf8(v, sub)
            if bad:
                return bad
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            bad = _not_utf8(v, f"{path}[{i}]")
            if bad:
                return bad
    return None


def parse_record(
    record: Any, fields: FieldNames, source: str, line: int
) -> CorpusItem:
    """Validate one decoded record into a document, or say what is wrong with it."""
    if not isinstance(record, Mapping):
        return Rejected(source, line, None, f"expected a JSON object, got {type(record).__name__}")
    bad = _not_utf8(record, "")
    if bad is not None:
        raw_id = record.get(fields.id)
        doc_id = _printable(str(raw_id)) if isinstance(raw_id, str | int) else None
        return Rejected(source, line, doc_id,
                        f"field {bad!r} holds a lone UTF-16 surrogate (a \\ud800-\\udfff escape "
                        "not part of a pair), which is not valid Unicode text")
    raw_id = record.get(fields.id)
    if raw_id is None or (isinstance(raw_id, str) and not raw_id.strip()):
        return Rejected(source, line, None, f"missing id field {fields.id!r}")
    if not isinstance(raw_id, str | int) or isinstance(raw_id, bool):
        return Rejected(source, line, None, f"id field {fields.id!r} must be a string or integer")
    doc_id = str(raw_id)
    if len(doc_id.encode("utf-8")) > 512:
        return Rejected(source, line, doc_id[:64], "id longer than 512 bytes (OpenSearch limit)")
    if fields.text not in record:
        return Rejected(source, line, doc_id, f"missing text field {fields.text!r}")
    text = record[fields.text]
    title = record.get(fields.title) or ""
    if not isinstance(text, str):
        return Rejected(source, line, doc_id, f"text field {fields.text!r} must be a string")
    if not isinstance(title, str):
        return Rejected(source, line, doc_id, f"title field {fields.title!r} must be a string")
    if not text.strip() and not title.strip():
        return Rejected(source, line, doc_id, "empty document: no text and no title")
    meta_in = record.get("metadata")
    metadata: dict[str, Any] = dict(meta_in) if isinstance(meta_in, Mapping) else {}
    for key, value in record.items():
        if key not in (fields.id, fields.title, fields.text, "metadata"):
            metadata[key] = value
    return CorpusDocument(doc_id, title, text, metadata, source, line)


def read_jsonl(path: str | Path, fields: FieldNames = FieldNames()) -> Iterator[CorpusItem]:
    """Documents and rejections of one JSONL file, line numbers 1-based; blank lines skipped."""
    source = str(path)
    with open(path, "rb") as fh:
        for line_no, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                yield Rejected(source, line_no, None, f"malformed JSON: {exc}")
                continue
            yield parse_record(record, fields, source, line_no)


def iter_corpus(
    corpus: str | Path | Iterable[Mapping[str, Any]],
    fields: FieldNames = FieldNames(),
) -> Iterator[CorpusItem]:
    """Every item of a corpus path (file/folder) or of an iterable of dicts, duplicates rejected.

    For an iterable, `line` is the 1-based position and `source` is `"<memory>"`.
    """
    seen: set[str] = set()
    if isinstance(corpus, str | Path):
        items: Iterable[CorpusItem] = (
            item for f in corpus_files(corpus) for item in read_jsonl(f, fields)
        )
    else:
        items = (
            parse_record(rec, fields, "<memory>", i) for i, rec in enumerate(corpus, start=1)
        )
    for item in items:
        if isinstance(item, CorpusDocument):
            if item.id in seen:
                yield Rejected(item.source, item.line, item.id, "duplicate id in this corpus")
                continue
            seen.add(item.id)
        yield item
