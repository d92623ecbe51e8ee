"""The Ray driver's corpus batches, spooled to disk and read back by the actors.

Why a spool: reading must stay in one process (line numbers, rejected lines and the first-wins
duplicate check need one reader, in file order), yet the pool of actors must not wait for the
driver to hold the whole corpus in memory. The driver reads the corpus once, exactly as the
single-process loop does (`CorpusReader`), and appends each batch as one JSON line to a scratch
file, keeping only the byte offset where each batch starts (8 bytes a batch: 2.5 MB for ten
million documents in batches of 32). The Ray dataset then holds only each batch's byte range,
one block per batch from the start (so every free actor takes the next batch), and each actor
reads its batch from the spool itself (`read_batch`): the spool must sit on a filesystem the
actors see, which a local Ray always does.

The spool costs disk (about the corpus's own size, in the system temp folder or `spool_dir`),
not memory, and is deleted when the run ends.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from osneural.ingest.corpus import CorpusDocument


class BatchSpool:
    """Append-only file of batches (one JSON list of documents a line) and their offsets."""

    def __init__(self, folder: str | Path | None = None) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="osneural-spool-", dir=folder)
        self.path = Path(self._tmp.name) / "batches.jsonl"
        self._fh = open(self.path, "wb")  # noqa: SIM115 - open for the spool's life, closed by close()
        self._starts = _Int64List()

    @property
    def batches(self) -> int:
        return len(self._starts)

    def write(self, batch: list[CorpusDocument]) -> None:
        self._starts.append(self._fh.tell())
        line = json.dumps([asdict(d) for d in batch]).encode("utf-8")
        self._fh.write(line + b"\n")

    def write_all(self, batches: Iterable[list[CorpusDocument]]) -> None:
        for batch in batches:
            self.write(batch)

    def finish(self) -> np.ndarray:
        """Close the file for writing; the batch boundaries (n + 1 offsets)."""
        end = self._fh.tell()
        self._fh.close()
        return np.append(self._starts.array(), np.int64(end))

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()
        self._tmp.cleanup()

    def __enter__(self) -> BatchSpool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Int64List:
    """A growable int64 array (a Python list of ints costs 36 bytes an entry, this 8)."""

    def __init__(self) -> None:
        self._chunks: list[np.ndarray] = []
        self._buf = np.empty(65_536, dtype=np.int64)
        self._n = 0

    def __len__(self) -> int:
        return sum(len(c) for c in self._chunks) + self._n

    def append(self, value: int) -> None:
        if self._n == len(self._buf):
            self._chunks.append(self._buf)
            self._buf = np.empty(len(self._buf), dtype=np.int64)
            self._n = 0
        self._buf[self._n] = value
        self._n += 1

    def array(self) -> np.ndarray:
        return np.concatenate([*self._chunks, self._buf[: self._n]])


def read_batch(path: str | Path, lo: int, hi: int) -> list[dict[str, Any]]:
    """The documents of the spooled batch stored between byte offsets `lo` and `hi`."""
    with open(path, "rb") as fh:
        fh.seek(lo)
        return json.loads(fh.read(hi - lo))
