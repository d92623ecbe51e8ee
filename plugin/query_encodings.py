"""`QueryEncodings`: the representations of one query that its stages read.

Each is computed at most once per query and shared between stages (a hybrid's dense stage, its
binary stage and its PQ rescoring all read one dense vector); concurrent stages asking for the
same one wait for the first computation instead of repeating it. Every encoder is checked against
what the index was built with (`EncoderCache.checked`), and each computation's time is recorded
under `encode.<name>` in the answer's timings.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from osneural.plugin.resources import IndexResources, ResourceCache

from osneural.errors import StageError


class QueryEncodings:
    """The query's representations, each computed at most once and shared between stages."""

    def __init__(self, text: str, res: IndexResources, cache: ResourceCache) -> None:
        self.text = text
        self.res = res
        self.cache = cache
        self.timings_ms: dict[str, float] = {}
        self._values: dict[str, Any] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def _memo(self, key: str, compute: Callable[[], Any]) -> Any:
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            if key not in self._values:
                t0 = time.perf_counter()
                self._values[key] = compute()
                self.timings_ms[f"encode.{key}"] = (time.perf_counter() - t0) * 1e3
            return self._values[key]

    def _shared_pass(self, stage: str) -> tuple[np.ndarray, np.ndarray | None] | None:
        """Token rows and the dense query vector from one pass of the multivector graph, when
        this query needs tokens (its encoder is loaded: the spec has a token stage) and the
        index's dense vectors are that graph's pooled output; None otherwise. Saves one of the
        two model passes of a dense + MaxSim pipeline, with the same vectors (to ~1e-7)."""
        if "multivector" not in self.cache.encoders.loaded():
            return None
        if not (self.res.expected_encoder("dense") and self.res.expected_encoder("multivector")):
            return None

        def compute() -> tuple[np.ndarray, np.ndarray | None] | None:
            mv = self.cache.encoders.checked("multivector", self.res, stage)
            dense = self.cache.encoders.checked("dense", self.res, stage)
            if not hasattr(mv, "encode_queries_and_pooled") or not mv.shares_query_pass(dense):
                return None
            tokens, pooled = mv.encode_queries_and_pooled([self.text], dense)
            return np.asarray(tokens[0], dtype=np.float32), pooled[0]

        return self._memo("shared", compute)

    def dense(self, stage: str = "dense") -> np.ndarray:
        def compute() -> np.ndarray:
            shared = self._shared_pass(stage)
            if shared is not None and shared[1] is not None:
                return np.asarray(shared[1], dtype=np.float32)
            enc = self.cache.encoders.checked("dense", self.res, stage)
            return np.asarray(enc.encode_queries([self.text]), dtype=np.float32)[0]

        return self._memo("dense", compute)

    def sparse(self, mode: str, stage: str = "sparse") -> dict[str, float]:
        def compute() -> dict[str, float]:
            enc = self.cache.encoders.checked("sparse", self.res, stage)
            if mode == "inference_free":
                idf = (self.res.codecs.params or {}).get("idf")
                if idf is None:
                    raise StageError(f"{stage}: the index stores no IDF table for inference-free "
                                     "queries; re-ingest it with the sparse representation")
                return dict(enc.encode_queries([self.text], idf=idf)[0])
            return dict(enc.encode_queries([self.text])[0])

        return self._memo(f"sparse.{mode}", compute)

    def tokens(self, stage: str = "multivector") -> np.ndarray:
        def compute() -> np.ndarray:
            shared = self._shared_pass(stage)
            if shared is not None:
                return shared[0]
            enc = self.cache.encoders.checked("multivector", self.res, stage)
            return np.asarray(enc.encode_queries([self.text])[0], dtype=np.float32)

        return self._memo("tokens", compute)

    def set_tokens(self, tokens: np.ndarray) -> None:
        """Replace the query tokens later stages score with (PRF expansion tokens appended)."""
        self.tokens()
        with self._guard:
            self._values["tokens"] = tokens

    def binary_code(self, stage: str = "binary") -> np.ndarray:
        def compute() -> np.ndarray:
            bq = self.res.codec("binary", stage)
            return np.asarray(bq.encode(self.dense(stage)[None, :]), dtype=np.uint8)[0]

        return self._memo("binary", compute)

    def fde(self, stage: str = "fde") -> np.ndarray:
        def compute() -> np.ndarray:
            return np.asarray(self.res.codec("fde", stage).encode_query(self.tokens(stage)))

        return self._memo("fde", compute)
