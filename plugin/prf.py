"""Pseudo-relevance feedback as a pipeline stage: `{"type": "prf", "mode": "dense" | "multivector"}`.

It sits in the spec's `rescore` list and acts on the ranking so far, like the other stages, but it
may bring in documents no first stage found:

* `dense` (Rocchio): the query vector moves toward the mean of the top `fb_docs` documents' stored
  dense vectors (`alpha * q + beta * mean(d)`, re-normalised), a second kNN runs with it, and its
  run is fused with the ranking so far (`fusion`, the PRF run's share `weight`). The vectors come
  from `_source` or the vector index (wherever the index keeps `dense`), or else are decoded
  from `dense_pq`.
* `multivector` (ColBERT-PRF, Wang et al. 2021): the top `fb_docs` documents' PQ-coded tokens are
  decoded with the index's codebooks and clustered (k-means, `clusters`); each centroid gets an
  IDF-like weight from how much better the feedback documents match it than the rest of the top
  `window` do (a centroid every candidate matches says nothing about relevance), the `expansion`
  best are kept, scaled by `beta * weight`, and appended to the query tokens that the following
  `maxsim` stage scores.
  Scaling a token scales its max-similarity, so the kernel computes ColBERT-PRF's
  `sum_q max_t q.t + sum_e w_e max_t e.t` unchanged.

Model-free and index-free: everything needed is already stored per document.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

DEFAULT_FIELDS = {"dense": "dense", "multivector": "mv_codes"}


class PRFStage(BaseModel):
    """The `prf` stage's parameters (validated like every spec part; unknown keys are errors)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["prf"] = "prf"
    mode: Literal["dense", "multivector"] = "dense"
    fb_docs: int = Field(5, ge=1, le=100)
    # dense (Rocchio)
    alpha: float = Field(1.0, ge=0.0)
    beta: float = Field(0.5, ge=0.0)
    k: int = Field(100, ge=1, le=10_000)
    num_candidates: int | None = Field(None, ge=1, le=10_000)
    fusion: Literal["rrf", "linear"] = "linear"
    weight: float = Field(0.5, ge=0.0, le=1.0)
    rank_constant: int = Field(60, ge=1)
    # multivector (ColBERT-PRF)
    clusters: int = Field(24, ge=1, le=256)
    expansion: int = Field(10, ge=1, le=128)
    window: int = Field(50, ge=1, le=10_000)
    field: str = ""

    @model_validator(mode="after")
    def _defaults(self) -> PRFStage:
        if not self.field:
            object.__setattr__(self, "field", DEFAULT_FIELDS[self.mode])
        if self.num_candidates is not None and self.num_candidates < self.k:
            raise ValueError(f"num_candidates ({self.num_candidates}) must be >= k ({self.k})")
        if self.mode == "dense" and self.alpha == 0 and self.beta == 0:
            raise ValueError("alpha and beta cannot both be 0")
        return self


# ---------------------------------------------------------------- the numerics (pure numpy)


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.where(n > 0, n, 1.0)).astype(np.float32)


def rocchio(query: np.ndarray, feedback: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    """`alpha * q + beta * mean(feedback)`, L2-normalised (the index's vectors are)."""
    q = np.asarray(query, dtype=np.float64).reshape(-1)
    fb = np.asarray(feedback, dtype=np.float64).reshape(-1, q.size)
    moved = alpha * q + (beta * fb.mean(axis=0) if len(fb) else 0.0)
    return _unit(moved)


def kmeans(x: np.ndarray, k: int, iters: int = 20, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Spherical k-means (cosine) with k-means++ seeding: centroids [k', D] and labels [n].

    Deterministic for a seed, so one query always gets the same expansion. k' = min(k, n).
    """
    x = _unit(x)
    n = len(x)
    k = min(k, n)
    rng = np.random.default_rng(seed)
    centers = [x[rng.integers(n)]]
    for _ in range(1, k):
        d = 1.0 - np.max(x @ np.stack(centers).T, axis=1)
        d = np.clip(d, 0.0, None) ** 2
        total = d.sum()
        centers.append(x[rng.choice(n, p=d / total)] if total > 0 else x[rng.integers(n)])
    c = np.stack(centers)
    labels = np.zeros(n, dtype=np.int64)
    for _ in range(iters):
        labels = np.argmax(x @ c.T, axis=1)
        new = np.stack([x[labels == j].sum(axis=0) if np.any(labels == j) else c[j]
                        for j in range(k)])
        new = _unit(new)
        if np.allclose(new, c):
            break
        c = new
    return c.astype(np.float32), labels


def expansion_tokens(
    feedback_docs: Sequence[np.ndarray],
    background: Sequence[np.ndarray],
    clusters: int,
    expansion: int,
    beta: float,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """ColBERT-PRF expansion: k-means centroids of the feedback documents' tokens, each weighted
    by how much better the feedback documents match it than the rest of the window does
    (`mean_fb max_t cos(c, t) - mean_bg max_t cos(c, t)`): an IDF-like discriminativeness that
    needs no token vocabulary (stored tokens have none). A centroid every candidate matches
    (a stop-word-like direction) weighs ~0; the `expansion` heaviest positive ones are kept,
    scaled by `beta * w / max w`.

    Returns the scaled expansion vectors [E, D] and their weights [E].
    """
    fb_docs = [np.asarray(d, np.float32) for d in feedback_docs if len(d)]
    if not fb_docs:
        return np.zeros((0, 0), np.float32), np.zeros(0)
    centroids, _ = kmeans(np.concatenate(fb_docs), clusters, seed=seed)

    def best(docs: Sequence[np.ndarray]) -> np.ndarray:
        rows = [np.max(_unit(d) @ centroids.T, axis=0) for d in docs if len(d)]
        return np.mean(rows, axis=0) if rows else np.zeros(len(centroids))

    weight = best(fb_docs) - best(background)
    order = np.argsort(-weight, kind="stable")[:expansion]
    chosen = order[weight[order] > 0]
    if len(chosen) == 0:
        return np.zeros((0, centroids.shape[1]), np.float32), np.zeros(0)
    weights = beta * weight[chosen] / weight[chosen].max()
    return (centroids[chosen] * weights[:, None]).astype(np.float32), weights


# ---------------------------------------------------------------- the stage in a Searcher


def _dense_vectors(searcher: Any, enc: Any, ids: list[str], field: str, timeout_s: float) -> np.ndarray:
    """The stored dense vectors of `ids`, in order: from `_source`, or from the vector index
    where the index keeps them out of `_source` (`osneural.mappings.stored_vectors`: the default
    layout), or else decoded from `dense_pq` (read through the code cache, as rescoring reads it)."""
    from osneural.mappings.stored_vectors import VectorField, read_vector, request_parts

    res = enc.res
    # Read from where the index keeps the field; a field that is no `knn_vector` is asked of
    # `_source` (finding nothing there, the `dense_pq` decode below answers).
    vector = res.vectors.get(field) or VectorField(field, byte=False, in_source=True)
    source, scripts = request_parts({field: vector}, [field])
    body: dict[str, Any] = {"size": len(ids), "query": {"ids": {"values": ids}},
                            "_source": source or False, "script_fields": scripts,
                            "track_total_hits": False}
    resp = searcher.client.search(index=searcher.index, body=body,
                                  request_timeout=max(timeout_s, 0.001))
    found = {h["_id"]: read_vector(h, vector) for h in resp["hits"]["hits"]}
    if all(found.get(i) is not None for i in ids):
        return np.asarray([found[i] for i in ids], dtype=np.float32)
    if res.has_field("dense_pq"):
        pq = res.codec("pq_dense", "prf")
        raw = searcher.stage_context(enc, "prf").fetch_codes(ids, "dense_pq", timeout_s)
        rows = [i for i in ids if i in raw]
        return pq.decode(np.stack([np.frombuffer(raw[i], np.uint8) for i in rows])) if rows else \
            np.zeros((0, 0), np.float32)
    from osneural.plugin.resources import StageError

    raise StageError(f"prf: index {searcher.index!r} keeps no {field!r} vectors in _source and "
                     "has no dense_pq codes to decode")


def _dense_feedback(searcher, stage, enc, candidates, spec, timeout_s) -> list[tuple[str, float]]:
    from osneural.plugin import fusion as fusion_mod
    from osneural.plugin import stages
    from osneural.plugin.spec import DenseStage

    ids = [d for d, _ in candidates[: stage.fb_docs]]
    fb = _dense_vectors(searcher, enc, ids, stage.field, timeout_s)
    q = rocchio(enc.dense("prf"), fb, stage.alpha, stage.beta)
    knn = DenseStage(k=stage.k, num_candidates=stage.num_candidates, field=stage.field)
    body = stages.search_body(stages.dense_query(knn, q, spec.filter), stage.k)
    second = stages.run_query(searcher.client, searcher.index, body, timeout_s, enc.res.id_field)
    return fusion_mod.fuse(
        [list(candidates), second], stage.fusion, weights=[1.0 - stage.weight, stage.weight],
        rank_constant=stage.rank_constant, normalization="minmax")


def _multivector_feedback(searcher, stage, enc, candidates, timeout_s) -> np.ndarray:
    codec = enc.res.codecs.token_codec
    if codec is None:
        from osneural.plugin.resources import StageError

        raise StageError(f"prf: index {searcher.index!r} has no token codec")
    ids = [d for d, _ in candidates[: max(stage.window, stage.fb_docs)]]
    raw = searcher.stage_context(enc, "prf").fetch_codes(ids, stage.field, timeout_s)
    docs = [codec.decode(codec.parse(raw.get(i, b""), f"{stage.field} of document {i!r}"))
            for i in ids]
    extra, _ = expansion_tokens(docs[: stage.fb_docs], docs[stage.fb_docs:], stage.clusters,
                                stage.expansion, stage.beta)
    return extra


def run_stage(
    searcher: Any, stage: PRFStage, where: str, enc: Any, candidates: list[tuple[str, float]],
    spec: Any, timeout_s: float, warnings: list[str], timings: dict[str, float],
) -> list[tuple[str, float]]:
    """Apply one `prf` stage; like other stages, a failure degrades (a warning), never fails.

    Dense mode returns the re-fused ranking. Multivector mode returns the ranking unchanged and
    hands the expanded query tokens to the following `maxsim` stage.
    """
    from osneural.plugin.resources import StageError
    from osneural.plugin.spec import SpecError

    if not candidates:
        return candidates
    if stage.mode == "multivector":
        index = list(spec.rescore).index(stage)
        if not any(r.type == "maxsim" for r in spec.rescore[index + 1:]):
            raise SpecError(f"{where}: multivector prf expands the query tokens of a later "
                            "maxsim stage, and none follows it")
    t0 = time.perf_counter()
    try:
        if stage.mode == "dense":
            out = _dense_feedback(searcher, stage, enc, candidates, spec, timeout_s)
        else:
            extra = _multivector_feedback(searcher, stage, enc, candidates, timeout_s)
            if len(extra):
                enc.set_tokens(np.concatenate([enc.tokens("prf"), extra]).astype(np.float32))
            out = candidates
    except (SpecError, StageError):
        raise
    except Exception as exc:  # noqa: BLE001 - feedback is an improvement, never a requirement
        warnings.append(f"{where} failed: {type(exc).__name__}: {exc}; skipped")
        return candidates
    timings[f"prf.{stage.mode}"] = (time.perf_counter() - t0) * 1e3
    return out
