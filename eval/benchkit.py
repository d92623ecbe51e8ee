"""Shared helpers of bench/ scripts. Where the benchmarks find BEIR data: `OSNEURAL_BEIR_DIR`, else `shared/data/beir` beside the
checkout (where CI and every session put it)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

REPO = Path(__file__).resolve().parents[1]  # the checkout (eval/ sits at its top level)


def beir_root() -> Path:
    env = os.environ.get("OSNEURAL_BEIR_DIR")
    return Path(env) if env else REPO.parent / "shared" / "data" / "beir"


def beir_dir(name: str) -> Path:
    return beir_root() / name


def classic_root() -> Path:
    """The small classic collections (MEDLINE, ADI, LISA) in BEIR layout: `OSNEURAL_CLASSIC_DIR`,
    else `shared/data/classic` beside the checkout."""
    env = os.environ.get("OSNEURAL_CLASSIC_DIR")
    return Path(env) if env else REPO.parent / "shared" / "data" / "classic"


def dataset_dir(name_or_path: str | Path) -> Path:
    """A collection named in either shared folder (`scifact`, `lisa`) or any BEIR-layout folder
    given by path, so benchmarks run on a user's own judged collection as well."""
    from osneural.eval.beir import resolve_collection

    return resolve_collection(name_or_path, [beir_root(), classic_root()])


def sparse_dot_scores(queries: Sequence[Mapping[str, float]],
                      docs: Sequence[Mapping[str, float]]) -> np.ndarray:
    """Exact sparse dot products, [query, document], through postings built once (what the
    `rank_features` stage computes, without OpenSearch's ~9-bit feature rounding)."""
    import numpy as np

    postings: dict[str, tuple[list[int], list[float]]] = {}
    for i, w in enumerate(docs):
        for t, x in w.items():
            entry = postings.setdefault(t, ([], []))
            entry[0].append(i)
            entry[1].append(x)
    arrays = {t: (np.asarray(a), np.asarray(b, np.float64)) for t, (a, b) in postings.items()}
    out = np.zeros((len(queries), len(docs)))
    for n, w in enumerate(queries):
        for t, x in w.items():
            if t in arrays:
                idx, val = arrays[t]
                out[n, idx] += x * val
    return out
