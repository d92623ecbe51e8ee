"""IDF tables for inference-free sparse queries.

In inference-free mode a query is never run through the model: each of its tokens gets the weight
of how rare it is in the corpus. The table is fitted once at ingest time from document frequencies
of token ids, stored as JSON (in the OpenSearch companion document or as `idf.json` beside the
model), and reloaded at query time, so query encoding needs only the tokenizer.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

IDF_FORMAT = "osneural-idf-v1"


@dataclass
class IdfTable:
    """Document frequencies of token ids over `n_docs` documents.

    The weight is BM25's idf, `log(1 + (N - df + 0.5) / (df + 0.5))`, positive for every df, so a
    term present in every document still counts a little; a token never seen gets the largest
    weight (it can only match documents through the model's expansion terms).
    """

    n_docs: int
    vocab_size: int
    df: dict[int, int] = field(default_factory=dict)

    def weights(self) -> np.ndarray:
        """float32 [vocab_size] idf for every token id."""
        df = np.zeros(self.vocab_size, dtype=np.float64)
        if self.df:
            ids = np.fromiter(self.df.keys(), dtype=np.int64, count=len(self.df))
            df[ids] = np.fromiter(self.df.values(), dtype=np.float64, count=len(self.df))
        n = float(self.n_docs)
        return np.log1p((n - df + 0.5) / (df + 0.5)).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        return {"format": IDF_FORMAT, "n_docs": int(self.n_docs), "vocab_size": int(self.vocab_size),
                "df": {str(k): int(v) for k, v in sorted(self.df.items())}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> IdfTable:
        if data.get("format") != IDF_FORMAT:
            raise ValueError(f"IDF table: field 'format' is {data.get('format')!r}, expected {IDF_FORMAT!r}")
        try:
            n_docs = int(data["n_docs"])
            vocab = int(data["vocab_size"])
            df = {int(k): int(v) for k, v in dict(data["df"]).items()}
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"IDF table: malformed ({exc})") from exc
        bad = [k for k, v in df.items() if not (0 <= k < vocab) or not (0 <= v <= n_docs)]
        if bad:
            raise ValueError(f"IDF table: token ids/frequencies out of range, e.g. id {bad[0]}")
        return cls(n_docs=n_docs, vocab_size=vocab, df=df)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict()), encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path) -> IdfTable:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


def document_frequencies(token_ids: Iterable[Iterable[int]], vocab_size: int) -> tuple[int, np.ndarray]:
    """(number of documents, int64 [vocab_size] df) from each document's token ids."""
    counts = np.zeros(vocab_size, dtype=np.int64)
    n = 0
    for ids in token_ids:
        n += 1
        uniq = np.unique(np.asarray(list(ids), dtype=np.int64))
        if uniq.size:
            counts += np.bincount(uniq, minlength=vocab_size)[:vocab_size]
    return n, counts


def idf_from_counts(n_docs: int, counts: np.ndarray) -> IdfTable:
    nz = np.flatnonzero(counts)
    return IdfTable(n_docs=n_docs, vocab_size=int(counts.shape[0]),
                    df={int(i): int(counts[i]) for i in nz})


def merge(tables: Iterable[IdfTable]) -> IdfTable:
    """Combine tables fitted on disjoint shards of a corpus (ingestion works in chunks)."""
    tables = list(tables)
    if not tables:
        raise ValueError("merge needs at least one IDF table")
    vocab = tables[0].vocab_size
    if any(t.vocab_size != vocab for t in tables):
        raise ValueError("IDF tables come from different vocabularies")
    df: dict[int, int] = {}
    for t in tables:
        for k, v in t.df.items():
            df[k] = df.get(k, 0) + v
    return IdfTable(n_docs=sum(t.n_docs for t in tables), vocab_size=vocab, df=df)
