"""The Ray driver's corpus batches, spooled to disk and streamed back as a Ray Data source.

Why a spool: reading must stay in one process (line numbers, rejected lines and the first-wins
duplicate check need one reader, in file order), yet the pool of actors must not wait for the
driver to hold the whole corpus in memory. The driver reads the corpus once, exactly as the
single-process loop does (`CorpusReader`), and appends each batch as one JSON line to a scratch
file, keeping only the byte offset where each batch starts (8 bytes a batch: 2.5 MB for ten
million documents in batches of 32). `SpoolDatasource` then hands Ray Data read tasks that each
cover a run of batches and yield one block per batch, so Ray's streaming executor reads the spool
lazily, with its own backpressure, and every batch is still one task on one actor.

The spool costs disk (about the corpus's own size, in the system temp folder or `spool_dir`),
not memory, and is deleted when the run ends.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterable, Iterator
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


def _read_batches(path: str, bounds: np.ndarray) -> Iterator[Any]:
    """One single-row block (`{"batch": <json>}`) per spooled batch between the bounds."""
    import pyarrow as pa

    with open(path, "rb") as fh:
        fh.seek(int(bounds[0]))
        for start, end in zip(bounds[:-1], bounds[1:], strict=True):
            payload = fh.read(int(end - start)).rstrip(b"\n").decode("utf-8")
            yield pa.table({"batch": [payload]})


def spool_datasource(path: str | Path, bounds: np.ndarray) -> Any:
    """A Ray Data `Datasource` over a finished spool (`bounds` from `BatchSpool.finish`)."""
    import pyarrow as pa
    from ray.data.block import BlockMetadata
    from ray.data.datasource import Datasource, ReadTask

    class SpoolDatasource(Datasource):
        """Read tasks over runs of spooled batches, one block per batch."""

        def __init__(self) -> None:
            super().__init__()
            self.path, self.bounds = str(path), bounds

        def estimate_inmemory_data_size(self) -> int:
            return int(self.bounds[-1] - self.bounds[0])

        def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None,
                           data_context: Any = None) -> list[ReadTask]:
            n = len(self.bounds) - 1
            if n <= 0:
                return []
            cuts = np.linspace(0, n, min(max(parallelism, 1), n) + 1).astype(int)
            tasks = []
            for lo, hi in zip(cuts[:-1], cuts[1:], strict=True):
                bounds = self.bounds[lo:hi + 1].copy()
                meta = BlockMetadata(num_rows=int(hi - lo),
                                     size_bytes=int(bounds[-1] - bounds[0]),
                                     input_files=(self.path,), exec_stats=None)
                tasks.append(ReadTask(lambda p=self.path, b=bounds: _read_batches(p, b), meta,
                                      schema=pa.schema([("batch", pa.string())])))
            return tasks

    return SpoolDatasource()
