"""Corpus readers: BEIR `corpus.jsonl`, plain JSONL with other field names, folders of either.

Every field of a record other than the id, title and text is an *app field*: it is written at the
top level of the indexed document as it came (an app filters, facets and sorts on it), so an
explicit `metadata` object is just an app field named `metadata`. Title and text may be dotted
paths into objects (`specs.summary`), and several text paths are joined; a top-level field that
is used as title or text is consumed (written as osneural's `title` / `text`), a dotted one stays
in its object too. A document whose title and text are empty is still a document (its fields are
indexed, it gets no neural representations); one with nothing but an id (no title or text
field at all, no other field) is rejected.

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

from osneural.errors import IngestError


@dataclass(frozen=True)
class FieldNames:
    """Where id, title and text live in the input records (BEIR names by default).

    `title` is a field name or dotted path; `text` is one, or a comma list whose values are joined.
    """

    id: str = "_id"
    title: str = "title"
    text: str = "text"

    @property
    def text_paths(self) -> tuple[str, ...]:
        return tuple(p.strip() for p in self.text.split(",") if p.strip())

    #: keep the title/text source fields as app fields too (a source index keeps all its
    #: fields); only fields literally named `title` / `text` are then osneural's
    keep: bool = False

    @property
    def consumed(self) -> frozenset[str]:
        """Top-level record keys that become osneural's id, title and text (not app fields)."""
        paths = [p for p in (self.title, *self.text_paths) if "." not in p]
        if self.keep:
            paths = [p for p in paths if p in ("title", "text")]
        return frozenset((self.id, *paths))


class _Missing:
    pass


MISSING: Any = _Missing()


def values_at(record: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted path (lists of objects are walked element-wise), or `MISSING`.

    A key that itself holds the dots (`{"a.b": ...}`) is found first, as OpenSearch reads it."""
    if isinstance(record, Mapping) and path in record:
        return record[path]
    node: Any = record
    for part in path.split("."):
        if isinstance(node, list):
            found = [values_at(x, part) for x in node if isinstance(x, Mapping)]
            found = [v for v in found if v is not MISSING]
            node = [v for f in found for v in (f if isinstance(f, list) else [f])]
            if not node:
                return MISSING
        elif isinstance(node, Mapping) and part in node:
            node = node[part]
        else:
            return MISSING
    return node


def text_at(record: Mapping[str, Any], path: str) -> str:
    """The string at a path: a string, or a list of strings joined by newlines; None (absent,
    or JSON null) is ""; any other value raises `TypeError`."""
    value = values_at(record, path)
    if value is MISSING or value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(v, str) or v is None for v in value):
        return "\n".join(v for v in value if v)
    raise TypeError(type(value).__name__)


@dataclass
class CorpusDocument:
    """One valid input document, with where it came from for error reports."""

    id: str
    title: str
    text: str
    #: the app's own fields, written at the top level of the indexed document as they came
    fields: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    line: int = 0
    #: whether the record held the title or a text path at all (absent everywhere = a wrong
    #: --title-field / --text-field, which the run refuses before writing)
    has_text_fields: bool = True

    @property
    def empty(self) -> bool:
        """No title and no text: indexed with its fields only, no neural representations."""
        return not self.title.strip() and not self.text.strip()


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


class CorpusError(IngestError, ValueError):
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
    paths = (fields.title, *fields.text_paths)
    try:
        title = text_at(record, fields.title)
    except TypeError:
        return Rejected(source, line, doc_id, f"title field {fields.title!r} must be a string")
    texts = []
    for path in fields.text_paths:
        try:
            texts.append(text_at(record, path))
        except TypeError:
            return Rejected(source, line, doc_id, f"text field {path!r} must be a string")
    text = "\n".join(t for t in texts if t)
    app = {k: v for k, v in record.items() if k not in fields.consumed}
    from osneural.mappings import reserved_field

    for key in app:
        if reserved_field(key):
            return Rejected(source, line, doc_id,
                            f"field {key!r} is one of osneural's own fields; rename it in the "
                            "corpus (or name it as --title-field / --text-field)")
    found = any(values_at(record, p) is not MISSING for p in paths)
    if not app and not found:
        # `{"_id": "x"}`: nothing at all to index. An empty title and text that are there
        # (`"title": "", "text": ""`, as in some BEIR corpora) make an empty document instead.
        return Rejected(source, line, doc_id, "empty document: no text, no title and no other field")
    return CorpusDocument(doc_id, title, text, app, source, line, found)


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
    memory_ids: int | None = None,
) -> Iterator[CorpusItem]:
    """Every item of a corpus path (file/folder) or of an iterable of dicts, duplicates rejected.

    The duplicate check holds at most `memory_ids` ids in memory (default
    `seen_ids.DEFAULT_MEMORY_IDS`) and the rest in a temporary SQLite file, so a corpus of any
    length reads in bounded memory.

    For an iterable, `line` is the 1-based position and `source` is `"<memory>"`; for a source
    index (an object with `records()`), the position in its reading order and the index name.
    """
    if hasattr(corpus, "records"):  # an existing index (osneural.ingest.source_index)
        where = str(corpus)
        items = (parse_record(rec, fields, where, i)
                 for i, rec in enumerate(corpus.records(), start=1))
    elif isinstance(corpus, str | Path):
        items: Iterable[CorpusItem] = (
            item for f in corpus_files(corpus) for item in read_jsonl(f, fields)
        )
    else:
        items = (
            parse_record(rec, fields, "<memory>", i) for i, rec in enumerate(corpus, start=1)
        )
    from osneural.ingest.seen_ids import DEFAULT_MEMORY_IDS, SeenIds

    memory_ids = DEFAULT_MEMORY_IDS if memory_ids is None else memory_ids
    # bounded: recent ids in a set, older ones in a scratch SQLite file (see seen_ids)
    with SeenIds(memory_ids) as seen:
        for item in items:
            if isinstance(item, CorpusDocument) and not seen.add(item.id):
                yield Rejected(item.source, item.line, item.id, "duplicate id in this corpus")
                continue
            yield item
