"""What every token codec offers the query side, and MaxSim over stored blobs with any of them.

A token codec (`ProductQuantizer`, `ResidualCodec`) turns a document's pooled token vectors into
one byte string (`mv_codes`) and back; the index's codec description says which one wrote them,
so an index built with PQ codes keeps answering after the default changes. The query side needs
only `parse` (bytes -> the codec's rows), `maxsim` (float query tokens against rows, by the
codec's compiled kernel) and `decode` (rows -> float32 tokens, for feedback that re-clusters
them).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np


class TokenCodec(Protocol):
    def parse(self, blob: bytes, what: str = ...) -> np.ndarray: ...

    def maxsim(self, query: Any, rows: np.ndarray, offsets: Any, *,
               n_threads: int | None = None) -> np.ndarray: ...

    def decode(self, rows: np.ndarray) -> np.ndarray: ...

    def describe(self) -> dict[str, Any]: ...


def maxsim_blobs(codec: TokenCodec, query: Any, blobs: Sequence[bytes],
                 names: Sequence[str] | None = None, *,
                 n_threads: int | None = None) -> np.ndarray:
    """MaxSim of the query tokens against each stored blob (b"": no tokens, score 0.0).

    `names` label the blobs in errors (e.g. "mv_codes of document 'd7'"); a blob that is not
    whole token rows of this codec is a ValueError naming it."""
    names = names if names is not None else [f"document {i}" for i in range(len(blobs))]
    parts = [codec.parse(blob, name) for blob, name in zip(blobs, names, strict=True)]
    offsets = np.zeros(len(parts) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(p) for p in parts])
    rows = np.concatenate(parts) if parts else codec.parse(b"")
    return codec.maxsim(query, rows, offsets, n_threads=n_threads)
