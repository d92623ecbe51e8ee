"""The k-NN query shared by the vector first stages (`dense`, `fde`).

The filter goes inside `knn.filter`: Lucene's efficient filtering returns k filtered neighbours
instead of post-filtering them away, which keeps the stage's `k` meaningful.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def vector(vec: Any, name: str) -> list[float]:
    arr = np.asarray(vec, dtype=np.float32)
    if arr.ndim != 1 or arr.size == 0 or not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: query vector must be a finite 1-D array, got shape {arr.shape}")
    return arr.tolist()


def knn_query(
    field: str, vec: Any, k: int, num_candidates: int | None, filter_clause: dict | None
) -> dict:
    knn: dict[str, Any] = {"vector": vector(vec, field), "k": k}
    if num_candidates is not None:
        # The knn query has no num_candidates; the HNSW beam width is ef_search (k-NN >= 2.16).
        knn["method_parameters"] = {"ef_search": num_candidates}
    if filter_clause is not None:
        knn["filter"] = filter_clause
    return {"knn": {field: knn}}


def candidates_cover_k(stage: Any) -> Any:
    """A spec validator: the HNSW beam (`num_candidates`) cannot return k neighbours if < k."""
    if stage.num_candidates is not None and stage.num_candidates < stage.k:
        raise ValueError(f"num_candidates ({stage.num_candidates}) must be >= k ({stage.k})")
    return stage
