"""Rescoring stages: re-rank the top `window` candidates with a finer (costlier) score.

Each stage makes one OpenSearch round trip over the window: binary doc values (`bin_code`,
`dense_pq`, `mv_codes`, returned base64 by `docvalue_fields`) are fetched with an `ids` query and
scored here by the compiled kernels; exact dense scores are computed inside OpenSearch with the
k-NN `knn_score` script, which avoids shipping float vectors over the wire. Candidates beyond the
window keep their order below the rescored ones (OpenSearch's own `rescore` semantics). A
candidate with no value for the field sinks to the bottom of the window rather than failing the
query, and is reported in the stage's `missing` list.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import numpy as np
import pybase64
from osneural.plugin.stages.request import MissingIdError, complete, hit_id, ids_from, with_ids


def decode_doc_value(text: str) -> bytes:
    """Binary doc values come back as base64 *without* `=` padding (checked on OpenSearch 3.6),
    which a base64 decoder rejects, so the padding is restored first. pybase64 (SIMD) decodes
    the ~1.4 MB of a 100-candidate MaxSim fetch in 0.4 ms, the standard library in 2.8."""
    return pybase64.b64decode(text + "=" * (-len(text) % 4))


def codes_body(ids: Sequence[str], field: str, versions: bool = False,
               id_field: str | None = None) -> dict[str, Any]:
    """The search that reads one binary doc-values field of `ids` (and, with `versions`, each
    document's `_seq_no` / `_primary_term`, which `osneural.plugin.code_cache` keys on), the
    hits' ids from `id_field`'s doc values when given (`request.with_ids`)."""
    body: dict[str, Any] = {
        "size": len(ids),
        "query": {"ids": {"values": list(ids)}},
        "_source": False,
        "docvalue_fields": [field],
        "track_total_hits": False,
    }
    if versions:
        body["seq_no_primary_term"] = True
    return with_ids(body, id_field)


def coded_hits(
    resp: dict[str, Any], field: str, id_field: str | None = None,
    asked: Collection[str] = (),
) -> list[tuple[str, dict[str, Any], bytes]]:
    """(id, hit, raw bytes of `field`) for each hit of a `codes_body` search that has the field.

    `MissingIdError` when a hit has no id in `id_field`, or one that is not among the `asked`
    ids (an id field that does not hold the document's id)."""
    out = []
    for hit in resp["hits"]["hits"]:
        doc_id = hit_id(hit, id_field)
        if id_field is not None and doc_id not in asked:
            raise MissingIdError(f"{id_field!r} {doc_id!r} is not a requested id")
        values = (hit.get("fields") or {}).get(field)
        if values:
            out.append((doc_id, hit, decode_doc_value(values[0])))
    return out


def fetch_codes(
    client: Any, index: str, ids: Sequence[str], field: str, timeout_s: float | None = None,
    id_field: str | None = None,
) -> dict[str, bytes]:
    """Raw bytes of one binary doc-values field for each id that has it (the hits' ids read
    from `id_field` when given, from `_id` should a hit lack it)."""
    if not ids:
        return {}
    params = {"request_timeout": max(timeout_s, 0.001)} if timeout_s is not None else {}

    asked = set(ids)

    def read(ids_from: str | None) -> dict[str, bytes]:
        resp = complete(client.search(index=index, body=codes_body(ids, field, id_field=ids_from),
                                      **params), f"fetch of {field!r}")
        return {doc_id: blob for doc_id, _, blob in coded_hits(resp, field, ids_from, asked)}

    return ids_from(read, id_field)


def _rows(raw: dict[str, bytes], ids: Sequence[str], width: int, field: str) -> np.ndarray:
    mat = np.zeros((len(ids), width), dtype=np.uint8)
    for i, doc_id in enumerate(ids):
        blob = raw.get(doc_id)
        if blob is None:
            continue
        if len(blob) != width:
            raise ValueError(f"{field} of document {doc_id!r} has {len(blob)} bytes, expected {width}")
        mat[i] = np.frombuffer(blob, dtype=np.uint8)
    return mat


def hamming_scores(
    query_code: np.ndarray, raw: dict[str, bytes], ids: Sequence[str], n_bits: int, field: str
) -> np.ndarray:
    """Similarity `n_bits - hamming` per id (NaN where the document has no code)."""
    from osneural.cython_ext import hamming_distances

    q = np.ascontiguousarray(query_code, dtype=np.uint8).reshape(-1)
    codes = _rows(raw, ids, q.size, field)
    return _nan_where_missing(n_bits - hamming_distances(q, codes), raw, ids)


def pq_scores(
    lut: np.ndarray, raw: dict[str, bytes], ids: Sequence[str], field: str
) -> np.ndarray:
    """Asymmetric (ADC) inner product of the float query with each PQ-coded vector."""
    from osneural.cython_ext import pq_adc

    lut = np.ascontiguousarray(lut, dtype=np.float32)
    codes = _rows(raw, ids, lut.shape[0], field)
    return _nan_where_missing(pq_adc(codes, lut), raw, ids)


def _ragged(
    raw: dict[str, bytes], ids: Sequence[str], dtype: str, cols: int, field: str, what: str
) -> tuple[np.ndarray, np.ndarray]:
    """Every id's token rows stacked ([T, cols] of `dtype`) plus [N + 1] offsets; a missing
    document contributes no rows."""
    row_bytes = np.dtype(dtype).itemsize * cols
    blocks: list[np.ndarray] = []
    offsets = np.zeros(len(ids) + 1, dtype=np.int64)
    for i, doc_id in enumerate(ids):
        blob = raw.get(doc_id, b"")
        if len(blob) % row_bytes:
            raise ValueError(
                f"{field} of document {doc_id!r}: {len(blob)} bytes is not a multiple of "
                f"{row_bytes} ({what})"
            )
        blocks.append(np.frombuffer(blob, dtype=dtype).reshape(-1, cols))
        offsets[i + 1] = offsets[i] + blocks[-1].shape[0]
    rows = np.concatenate(blocks) if blocks else np.zeros((0, cols), dtype)
    return np.ascontiguousarray(rows), offsets


def _nan_where_missing(scores: Any, raw: dict[str, bytes], ids: Sequence[str]) -> np.ndarray:
    out = np.asarray(scores, dtype=np.float64)
    out[[doc_id not in raw or not raw[doc_id] for doc_id in ids]] = np.nan
    return out


def maxsim_scores(
    query_tokens: np.ndarray,
    raw: dict[str, bytes],
    ids: Sequence[str],
    codec: Any,
    field: str,
) -> np.ndarray:
    """Late-interaction MaxSim of the query tokens against each document's coded tokens.

    `codec` is the index's token codec (`CodecBundle.token_codec`: PQ or bit codes), which parses
    the stored bytes and scores them with its kernel; a bare [M, K, dsub] codebook array is read
    as PQ codebooks."""
    from osneural.codecs import maxsim_blobs

    if isinstance(codec, np.ndarray):
        from osneural.cython_ext import maxsim_pq

        m = codec.shape[0]
        codes, offsets = _ragged(raw, ids, "u1", m, field, f"PQ codes with M={m}")
        q = np.ascontiguousarray(query_tokens, dtype=np.float32)
        books = np.ascontiguousarray(codec, dtype=np.float32)
        return _nan_where_missing(maxsim_pq(q, codes, offsets, books), raw, ids)
    blobs = [raw.get(doc_id, b"") for doc_id in ids]
    return _nan_where_missing(maxsim_blobs(codec, query_tokens, blobs,
                                           lambda i: f"{field} of document {ids[i]!r}"), raw, ids)


def maxsim_float16_scores(
    query_tokens: np.ndarray, raw: dict[str, bytes], ids: Sequence[str], field: str
) -> np.ndarray:
    """Late-interaction MaxSim against each document's float16 tokens (exact up to float16)."""
    from osneural.cython_ext import maxsim

    q = np.ascontiguousarray(query_tokens, dtype=np.float32)
    dim = q.shape[1]
    tokens, offsets = _ragged(raw, ids, "<f2", dim, field, f"float16 tokens of dimension {dim}")
    return _nan_where_missing(maxsim(q, tokens, offsets), raw, ids)


def dense_exact_scores(
    client: Any,
    index: str,
    ids: Sequence[str],
    vector: np.ndarray,
    field: str,
    space_type: str,
    timeout_s: float | None = None,
    id_field: str | None = None,
) -> np.ndarray:
    """Exact vector scores from the k-NN score script (OpenSearch's score scale for the space),
    the hits' ids read from `id_field` when given (from `_id` should a hit lack it)."""
    if not ids:
        return np.zeros(0)
    body = {
        "size": len(ids),
        "_source": False,
        "track_total_hits": False,
        "query": {
            "script_score": {
                "query": {"ids": {"values": list(ids)}},
                "script": {
                    "lang": "knn",
                    "source": "knn_score",
                    "params": {
                        "field": field,
                        "query_value": np.asarray(vector, dtype=np.float32).tolist(),
                        "space_type": space_type,
                    },
                },
            }
        },
    }
    params = {"request_timeout": max(timeout_s, 0.001)} if timeout_s is not None else {}

    def read(ids_from: str | None) -> dict[str, float]:
        resp = complete(client.search(index=index, body=with_ids(body, ids_from), **params),
                        "exact dense scores")
        return {hit_id(hit, ids_from): float(hit["_score"]) for hit in resp["hits"]["hits"]}

    got = ids_from(read, id_field)
    return np.array([got.get(doc_id, np.nan) for doc_id in ids], dtype=np.float64)


def combine_scores(
    previous: Sequence[float], new: np.ndarray, how: str, weight: float = 0.5,
    rank_constant: int = 60,
) -> np.ndarray:
    """Blend a rescoring stage's scores with the window's incoming scores (best first).

    `replace` returns `new`. `rrf` adds (1 - weight) / (k + incoming rank) and
    weight / (k + new rank); `linear` mixes min-max normalised scores. A document the stage could
    not score (NaN) takes the stage's worst score, so it keeps its incoming evidence.
    """
    new = np.asarray(new, dtype=np.float64)
    if how == "replace" or len(new) == 0:
        return new
    if np.all(np.isnan(new)):
        return np.full(len(new), np.nan)
    filled = np.where(np.isnan(new), np.nanmin(new), new)
    prev = np.asarray(previous, dtype=np.float64)
    if how == "rrf":
        prev_rank = np.arange(1, len(prev) + 1)  # the window arrives sorted best first
        new_rank = np.empty(len(filled), dtype=np.int64)
        new_rank[np.argsort(-filled, kind="stable")] = np.arange(1, len(filled) + 1)
        return (1 - weight) / (rank_constant + prev_rank) + weight / (rank_constant + new_rank)
    if how == "linear":
        return (1 - weight) * _minmax(prev) + weight * _minmax(filled)
    raise ValueError(f"unknown combine mode {how!r}")


def _minmax(x: np.ndarray) -> np.ndarray:
    lo, hi = float(np.min(x)), float(np.max(x))
    return np.ones_like(x) if hi == lo else (x - lo) / (hi - lo)


def reorder(
    candidates: Sequence[tuple[str, float]], window: int, scores: np.ndarray
) -> list[tuple[str, float]]:
    """Sort the window by the new scores (NaN last, ties by previous rank); keep the tail."""
    head = list(candidates[:window])
    if len(scores) != len(head):
        raise ValueError(f"{len(scores)} scores for a window of {len(head)}")
    order = sorted(
        range(len(head)),
        key=lambda i: (np.isnan(scores[i]), -scores[i] if not np.isnan(scores[i]) else 0.0, i),
    )
    floor = np.nanmin(scores) if np.any(~np.isnan(scores)) else 0.0
    rescored = [
        (head[i][0], float(scores[i]) if not np.isnan(scores[i]) else float(floor)) for i in order
    ]
    return rescored + list(candidates[window:])
