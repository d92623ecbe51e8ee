"""BEIR test collections: queries, relevance judgments and the corpus ids they point at.

Judgments come in two spellings: BEIR's `qrels/<split>.tsv` (`query-id corpus-id score`, with a
header) and TREC's `qid iter docid rel`. Both are read into one `{qid: {docid: int}}` mapping.
Problems in a judgment file are errors naming the file and line, because a silently mis-parsed
qrels file produces a plausible but wrong nDCG, the worst kind of result.

Data problems that BEIR itself tolerates (queries without judgments, judged documents that are
not in the corpus) are not errors; they are counted in `CollectionStats` so the report can say
how many there were instead of hiding them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from osneural.errors import EvalError

Qrels = dict[str, dict[str, int]]

QRELS_SUFFIXES = (".tsv", ".txt", ".trec", ".qrels")
EXAMPLES_KEPT = 5


class EvalDataError(EvalError):
    """A collection file is missing or malformed; the message names the file and line."""


def load_queries(path: str | Path) -> dict[str, str]:
    """`{query id: text}` from a BEIR `queries.jsonl` (`_id`, `text`)."""
    p = Path(path)
    if not p.is_file():
        raise EvalDataError(f"{p}: queries file not found")
    queries: dict[str, str] = {}
    with open(p, "rb") as fh:
        for line_no, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            where = f"{p}:{line_no}"
            try:
                record = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise EvalDataError(f"{where}: malformed JSON: {exc}") from None
            if not isinstance(record, dict):
                raise EvalDataError(f"{where}: expected a JSON object")
            qid = record.get("_id")
            if qid is None or isinstance(qid, bool) or not isinstance(qid, str | int):
                raise EvalDataError(f"{where}: missing or invalid query id field '_id'")
            text = record.get("text")
            if not isinstance(text, str):
                raise EvalDataError(f"{where}: query {qid!r}: missing or non-string field 'text'")
            qid = str(qid)
            if qid in queries:
                raise EvalDataError(f"{where}: duplicate query id {qid!r}")
            queries[qid] = text
    if not queries:
        raise EvalDataError(f"{p}: no queries")
    return queries


def _parse_score(token: str, where: str) -> int:
    try:
        value = float(token)
    except ValueError:
        raise EvalDataError(f"{where}: relevance score {token!r} is not a number") from None
    if value != int(value):
        raise EvalDataError(f"{where}: relevance score {token!r} is not an integer grade")
    return int(value)


def load_qrels(path: str | Path) -> Qrels:
    """Judgments from a BEIR tsv (header `query-id corpus-id score`) or TREC `qid 0 docid rel` file.

    The format is decided per line by the column count (3 = BEIR, 4 = TREC), so a file mixing the
    two is caught rather than half-read. A pair judged twice with different grades is an error:
    which grade is right cannot be guessed.
    """
    p = Path(path)
    if not p.is_file():
        raise EvalDataError(f"{p}: qrels file not found")
    qrels: Qrels = {}
    first_line: dict[tuple[str, str], int] = {}
    layout: int | None = None
    with open(p, encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, start=1):
            cols = line.split()
            if not cols:
                continue
            where = f"{p}:{line_no}"
            if line_no == 1 and cols[0].lower() in ("query-id", "query_id", "qid", "query"):
                continue  # header
            if len(cols) not in (3, 4):
                raise EvalDataError(
                    f"{where}: expected 3 columns (query-id corpus-id score) or 4 (TREC: "
                    f"qid iter docid rel), got {len(cols)}"
                )
            if layout is None:
                layout = len(cols)
            elif len(cols) != layout:
                raise EvalDataError(f"{where}: {len(cols)} columns where earlier lines had {layout}")
            qid, docid, score_token = (
                (cols[0], cols[1], cols[2]) if layout == 3 else (cols[0], cols[2], cols[3])
            )
            score = _parse_score(score_token, where)
            judged = qrels.setdefault(qid, {})
            if docid in judged and judged[docid] != score:
                raise EvalDataError(
                    f"{where}: query {qid!r} document {docid!r} judged {score} here but "
                    f"{judged[docid]} at line {first_line[(qid, docid)]}"
                )
            first_line.setdefault((qid, docid), line_no)
            judged[docid] = score
    if not qrels:
        raise EvalDataError(f"{p}: no judgments")
    return qrels


def find_qrels(beir_dir: str | Path, split: str) -> Path:
    """`qrels/<split>.tsv` (or .txt/.trec/.qrels) under a BEIR folder."""
    folder = Path(beir_dir) / "qrels"
    for suffix in QRELS_SUFFIXES:
        candidate = folder / f"{split}{suffix}"
        if candidate.is_file():
            return candidate
    available = sorted(q.name for q in folder.glob("*")) if folder.is_dir() else []
    raise EvalDataError(
        f"{folder}: no qrels for split {split!r}"
        + (f" (found: {', '.join(available)})" if available else "")
    )


def load_corpus_ids(beir_dir: str | Path) -> set[str]:
    """Ids of the documents ingestion would index (its own reader, so rejected records are absent)."""
    from osneural.ingest.corpus import CorpusDocument, iter_corpus

    path = Path(beir_dir) / "corpus.jsonl"
    if not path.is_file():
        raise EvalDataError(f"{path}: corpus file not found")
    return {item.id for item in iter_corpus(path) if isinstance(item, CorpusDocument)}


@dataclass
class CollectionStats:
    """What was evaluated and what was left out, and why."""

    queries_in_file: int = 0
    evaluated: int = 0
    unjudged_queries: int = 0
    unjudged_examples: list[str] = field(default_factory=list)
    judged_queries_without_text: int = 0
    judged_without_text_examples: list[str] = field(default_factory=list)
    queries_without_relevant: int = 0
    qrels_rows: int = 0
    qrels_docs_missing_from_corpus: int | None = None
    missing_doc_examples: list[list[str]] = field(default_factory=list)
    limited_to: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class EvalCollection:
    """The queries to run, their judgments, and the accounting of everything left out."""

    name: str
    split: str
    queries: dict[str, str]
    qrels: Qrels
    stats: CollectionStats
    queries_path: str = ""
    qrels_path: str = ""

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "split": self.split,
            "queries_file": self.queries_path,
            "qrels_file": self.qrels_path,
            **self.stats.to_dict(),
        }


def prepare_collection(
    queries: Mapping[str, str],
    qrels: Mapping[str, Mapping[str, int]],
    corpus_ids: Iterable[str] | None = None,
    *,
    name: str = "",
    split: str = "test",
    limit: int | None = None,
) -> EvalCollection:
    """Keep the judged queries (as BEIR does) and count everything else.

    Queries whose judgments are all grade 0 are kept: BEIR (through pytrec_eval) scores them 0
    rather than dropping them, and dropping them would inflate every metric.
    """
    stats = CollectionStats(queries_in_file=len(queries))
    stats.qrels_rows = sum(len(d) for d in qrels.values())
    for qid in queries:
        if qid not in qrels:
            stats.unjudged_queries += 1
            if len(stats.unjudged_examples) < EXAMPLES_KEPT:
                stats.unjudged_examples.append(qid)
    for qid in qrels:
        if qid not in queries:
            stats.judged_queries_without_text += 1
            if len(stats.judged_without_text_examples) < EXAMPLES_KEPT:
                stats.judged_without_text_examples.append(qid)
    kept = [qid for qid in queries if qid in qrels]
    if limit is not None and limit < len(kept):
        kept = kept[:limit]
        stats.limited_to = limit
    if not kept:
        raise EvalDataError(f"{name or 'collection'}: no query has judgments in split {split!r}")
    run_queries = {qid: queries[qid] for qid in kept}
    run_qrels = {qid: dict(qrels[qid]) for qid in kept}
    stats.evaluated = len(kept)
    stats.queries_without_relevant = sum(
        1 for judged in run_qrels.values() if not any(s > 0 for s in judged.values())
    )
    if corpus_ids is not None:
        ids = corpus_ids if isinstance(corpus_ids, set | frozenset) else set(corpus_ids)
        missing = 0
        for qid, judged in run_qrels.items():
            for docid in judged:
                if docid not in ids:
                    missing += 1
                    if len(stats.missing_doc_examples) < EXAMPLES_KEPT:
                        stats.missing_doc_examples.append([qid, docid])
        stats.qrels_docs_missing_from_corpus = missing
    return EvalCollection(name, split, run_queries, run_qrels, stats)


#: `os.pathsep`-separated folders searched for a collection given by name (`scifact`, `lisa`)
DATA_PATH_ENV = "OSNEURAL_DATA_PATH"


def dataset_roots() -> list[Path]:
    """Folders whose sub-folders are collections that can be named instead of given by path.

    `OSNEURAL_DATA_PATH` when set; else the shared `data/beir` and `data/classic` folders beside
    the checkout (where the development collections live), so `scifact` or `medline` resolve in
    a fresh clone without a path, and a user's own collection folder is found by adding its
    parent to the variable.
    """
    env = os.environ.get(DATA_PATH_ENV)
    if env:
        return [Path(p).expanduser() for p in env.split(os.pathsep) if p]
    shared = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    return [shared / "beir", shared / "classic"]


def resolve_collection(name_or_path: str | Path, roots: Sequence[Path] | None = None) -> Path:
    """The BEIR-layout folder meant by `name_or_path`: an existing folder as given, else the first
    `<root>/<name>` over `roots` (default `dataset_roots()`) that holds a `queries.jsonl`.

    A folder given by path must hold `queries.jsonl`: the error says so at once, rather than
    after an index has been searched. A bare name found nowhere is an error listing the roots
    searched and what they hold, so a typo is not mistaken for a missing download.
    """
    given = Path(name_or_path).expanduser()
    if given.is_dir():
        if not (given / "queries.jsonl").is_file():
            raise EvalDataError(f"{given}: not a BEIR-layout folder (no queries.jsonl)")
        return given
    searched = list(roots) if roots is not None else dataset_roots()
    name = str(name_or_path)
    if given.name == name:  # a bare name, not a path that does not exist
        for root in searched:
            candidate = root / name
            if (candidate / "queries.jsonl").is_file():
                return candidate
    known = sorted({p.name for r in searched if r.is_dir() for p in r.iterdir()
                    if (p / "queries.jsonl").is_file()})
    raise EvalDataError(
        f"{name}: no such folder, and no collection of that name under "
        f"{', '.join(str(r) for r in searched) or '(no data roots)'}"
        + (f" (known: {', '.join(known)})" if known else ""))


def load_beir(
    beir_dir: str | Path,
    split: str = "test",
    *,
    qrels_path: str | Path | None = None,
    check_corpus: bool = True,
    limit: int | None = None,
) -> EvalCollection:
    """A BEIR folder (`corpus.jsonl`, `queries.jsonl`, `qrels/<split>.tsv`) ready to evaluate."""
    root = Path(beir_dir)
    if not root.is_dir():
        raise EvalDataError(f"{root}: not a folder")
    qpath = Path(qrels_path) if qrels_path else find_qrels(root, split)
    queries_file = root / "queries.jsonl"
    queries = load_queries(queries_file)
    qrels = load_qrels(qpath)
    corpus_ids = load_corpus_ids(root) if check_corpus else None
    collection = prepare_collection(
        queries, qrels, corpus_ids, name=root.name, split=split, limit=limit
    )
    collection.queries_path = str(queries_file)
    collection.qrels_path = str(qpath)
    return collection
