"""What every token codec offers the query side, and MaxSim over stored blobs with any of them.

A token codec (`ProductQuantizer`, `ResidualCodec`) turns a document's pooled token vectors into
one byte string (`mv_codes`) and back; the index's codec description says which one wrote them,
so an index built with PQ codes keeps answering after the default changes. The query side needs
only `parse` (bytes -> the codec's rows), `maxsim` (float query tokens against rows, by the
codec's compiled kernel) and `decode` (rows -> float32 tokens, for feedback that re-clusters
them).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np


class TokenCodec(Protocol):
    def parse(self, blob: bytes, what: str = ...) -> np.ndarray: ...

    def maxsim(self, query: Any, rows: np.ndarray, offsets: Any, *,
               n_threads: int | None = None) -> np.ndarray: ...

    def decode(self, rows: np.ndarray) -> np.ndarray: ...

    def describe(self) -> dict[str, Any]: ...


def maxsim_blobs(codec: TokenCodec, query: Any, blobs: Sequence[bytes],
                 names: Sequence[str] | Callable[[int], str] | None = None, *,
                 n_threads: int | None = None) -> np.ndarray:
    """MaxSim of the query tokens against each stored blob (b"": no tokens, score 0.0).

    `names` label the blobs in errors (e.g. "mv_codes of document 'd7'"), as a sequence or as a
    function of the blob's position (called only for a bad blob); a blob that is not whole token
    rows of this codec is a ValueError naming it. The blobs are joined and parsed once: per-blob
    parsing cost more than the kernel's own time at 100 candidates."""
    empty = codec.parse(b"")
    row = empty.dtype.itemsize * int(np.prod(empty.shape[1:], dtype=np.int64))
    lengths = np.fromiter(map(len, blobs), dtype=np.int64, count=len(blobs))
    bad = np.flatnonzero(lengths % row)
    if bad.size:
        i = int(bad[0])
        name = (names(i) if callable(names) else names[i]) if names is not None else f"document {i}"
        codec.parse(blobs[i], name)  # raises, naming the blob
    offsets = np.zeros(len(blobs) + 1, dtype=np.int64)
    np.cumsum(lengths // row, out=offsets[1:])
    rows = codec.parse(b"".join(blobs), "token rows") if len(blobs) else empty
    return codec.maxsim(query, rows, offsets, n_threads=n_threads)
