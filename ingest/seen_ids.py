"""`SeenIds`: the duplicate-id check of a corpus read, in bounded memory.

Rejecting a duplicate `_id` needs every id read so far (the duplicate may come ten million lines
after the first occurrence), but a Python set of ten million ids costs about a gigabyte. Ids are
kept in a set up to `memory_ids`; past that the set is flushed into a SQLite table in a private
temporary folder (one B-tree keyed by id, `WITHOUT ROWID`) and emptied, so memory stays at one
set of `memory_ids` plus SQLite's page cache, and the disk holds the ids once. SQLite is in the
standard library, is crash-safe enough for a scratch file and answers a point lookup in a few
microseconds, which is nothing next to encoding the document.
"""

from __future__ import annotations

import contextlib
import sqlite3
import tempfile
from pathlib import Path

#: ids held in memory before they move to disk (about 100 bytes each for short string ids)
DEFAULT_MEMORY_IDS = 200_000

#: SQLite page cache for the lookups, in KiB (negative `cache_size` means KiB)
_CACHE_KIB = 32 * 1024


class SeenIds:
    """Set-like record of the ids read so far: `add(id)` is True for a new id, False for a repeat.

    Use as a context manager (or call `close()`): the spill file is deleted on close."""

    def __init__(self, memory_ids: int = DEFAULT_MEMORY_IDS, folder: str | Path | None = None) -> None:
        if memory_ids < 1:
            raise ValueError(f"memory_ids must be >= 1, got {memory_ids}")
        self.memory_ids = memory_ids
        self._folder = folder
        self._recent: set[str] = set()
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._db: sqlite3.Connection | None = None
        #: ids held on disk
        self.spilled = 0

    def __len__(self) -> int:
        return len(self._recent) + self.spilled

    def __contains__(self, doc_id: str) -> bool:
        if doc_id in self._recent:
            return True
        if self._db is None:
            return False
        row = self._db.execute("SELECT 1 FROM ids WHERE id = ?", (doc_id,)).fetchone()
        return row is not None

    def add(self, doc_id: str) -> bool:
        """Record `doc_id`; False when it was seen before (nothing changes then)."""
        if doc_id in self:
            return False
        self._recent.add(doc_id)
        if len(self._recent) >= self.memory_ids:
            self._spill()
        return True

    def _spill(self) -> None:
        if self._db is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="osneural-ids-", dir=self._folder)
            path = Path(self._tmp.name) / "ids.sqlite"
            # autocommit off; one transaction per spill. No journal: the file is scratch.
            self._db = sqlite3.connect(path, isolation_level="DEFERRED", check_same_thread=False)
            self._db.execute("PRAGMA journal_mode = OFF")
            self._db.execute("PRAGMA synchronous = OFF")
            self._db.execute(f"PRAGMA cache_size = -{_CACHE_KIB}")
            self._db.execute("CREATE TABLE ids (id TEXT PRIMARY KEY) WITHOUT ROWID")
        # sorted inserts fill the B-tree page by page instead of splitting pages at random
        self._db.executemany("INSERT INTO ids (id) VALUES (?)",
                             ((i,) for i in sorted(self._recent)))
        self._db.commit()
        self.spilled += len(self._recent)
        self._recent.clear()

    def close(self) -> None:
        """Drop the spill file (the set then behaves as empty-on-disk; reuse is not intended)."""
        if self._db is not None:
            self._db.close()
            self._db = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
        self._recent.clear()
        self.spilled = 0

    def __enter__(self) -> SeenIds:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # a generator dropped unfinished still removes its spill file
        with contextlib.suppress(Exception):  # interpreter shutdown: the temp folder is best effort
            self.close()
