"""Encoder and codec outputs -> OpenSearch documents (bulk actions).

This module is pure data shaping, kept apart from the encoders and the cluster so the exact wire
format of every field can be tested without either. Field layout (see mappings/):

* `dense`, `dense_<d>`, `fde`: JSON float lists, rounded to 7 decimals (below float32 resolution
  for unit vectors, and about half the bytes of a full double repr).
* `sparse`: `{sparse_feature_name(token): weight}`, weights > 0 only (rank_features rejects others),
  each written with the fewest digits that `rank_features` indexes as the same value
  (`feature_decimals`).
* `bin_tokens`: list of MIH substring terms; `bin_code`, `dense_pq`, `mv_codes`: base64 of the raw
  uint8 bytes, row-major (`mv_codes` is [t, M], so t = len / M) -- not `.npy`, because the query
  side reads them back from doc values with no header to parse. `mv_f16` is the same for the
  float16 tokens ([t, dim] little-endian, so t = len / (2 dim)).
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from osneural.ingest.corpus import CorpusDocument

_FLOAT_DECIMALS = 7

#: rank_feature values must be positive *normal* float32 values (OpenSearch rejects 1e-40 with
#: "featureValue must be a positive normal float"); smaller weights are dropped, they score ~0.
MIN_SPARSE_WEIGHT = float(np.finfo(np.float32).tiny)


def sparse_feature_name(token: str) -> str:
    """The rank_features key for a vocabulary token; the query side must use the same function.

    rank_features keys may not contain '.', and must be non-empty. Percent-escaping '%' and '.'
    keeps the mapping injective (no two tokens share a key) and leaves ordinary WordPiece tokens
    (`"##ing"`, `"the"`) unchanged, so keys stay readable in `_source`.
    """
    if not isinstance(token, str) or not token:
        raise ValueError(f"sparse token must be a non-empty string, got {token!r}")
    return token.replace("%", "%25").replace(".", "%2E")


def sparse_token_from_feature(name: str) -> str:
    """Inverse of `sparse_feature_name` (for inspection and tests)."""
    return name.replace("%2E", ".").replace("%25", "%")


def sparse_features(weights: Mapping[str, float], *, doc_id: str = "?") -> dict[str, float]:
    """A SPLADE weight dict as a rank_features value: sanitized keys, positive finite weights.

    Weights below `MIN_SPARSE_WEIGHT` (zero, negative, subnormal) are dropped: they carry no
    score and rank_features refuses them. Kept weights are shortened by `feature_decimals`.
    NaN or infinite weights are an encoder bug, so they raise with the document id.
    """
    keys: list[str] = []
    kept: list[float] = []
    for token, weight in weights.items():
        w = float(weight)
        if not math.isfinite(w):
            raise ValueError(f"document {doc_id}: sparse weight for {token!r} is {w}")
        if w >= MIN_SPARSE_WEIGHT:
            keys.append(sparse_feature_name(token))
            kept.append(w)
    return dict(zip(keys, feature_decimals(kept), strict=True))


#: Lucene's FeatureField (under `rank_features`) indexes a weight as its float32 bits shifted
#: right by 15: 8 bits of mantissa, a relative step of 2^-8.
FEATURE_SHIFT = 15


def feature_decimals(weights: Sequence[float]) -> list[float]:
    """Each weight as the shortest decimal (3 to 9 significant digits) that `rank_features`
    indexes exactly as it indexes the weight itself.

    The index keeps 8 bits of mantissa, but a float32 written from Python carries 16-17 digits
    ("0.44123983383178711"): the `_source` copy of a document's 256 SPLADE weights was most of
    its stored bytes, for digits no score ever reads. The shortened value ("0.441") parses to a
    float32 in the same 2^-8 step, so every score is unchanged to the bit. 9 digits always
    round-trip a float32, so the loop always settles."""
    if not len(weights):
        return []
    w32 = np.asarray(weights, dtype=np.float32)
    target = w32.view(np.uint32) >> FEATURE_SHIFT
    exact = w32.astype(np.float64)
    out = exact.copy()
    todo = np.ones(len(out), dtype=bool)
    exponent = np.floor(np.log10(exact))
    for digits in range(3, 10):
        k = digits - 1 - exponent  # decimals to keep (negative: round to tens, hundreds, ...)
        # n / 10^k with both exact is the double nearest the decimal, which is what parsing
        # the decimal gives, so repr() writes it back with `digits` digits at most
        # (10^22 is the largest exact power of ten in a double: past it, Python's own parse)
        scale = 10.0 ** np.minimum(np.abs(k), 22)
        n = np.where(k >= 0, np.round(exact * scale), np.round(exact / scale))
        r = np.where(k >= 0, n / scale, n * scale)
        for i in np.flatnonzero(todo & (np.abs(k) > 22)):
            r[i] = float(f"{exact[i]:.{digits - 1}e}")
        same = todo & ((r.astype(np.float32).view(np.uint32) >> FEATURE_SHIFT) == target)
        out[same] = r[same]
        todo &= ~same
        if not todo.any():
            break
    out[todo] = exact[todo]
    return out.tolist()


def b64(codes: np.ndarray) -> str:
    """Base64 of a uint8 array's raw C-order bytes."""
    arr = np.ascontiguousarray(codes)
    if arr.dtype != np.uint8:
        raise TypeError(f"codes must be uint8, got {arr.dtype}")
    return base64.b64encode(arr.tobytes()).decode("ascii")


def unb64(text: str, width: int | None = None) -> np.ndarray:
    """Decode a base64 code field to uint8; with `width`, reshape to rows of that many bytes.

    Accepts unpadded base64 too: OpenSearch returns binary doc values through `docvalue_fields`
    without the trailing '=' padding (checked against 3.6), while `_source` keeps what we wrote.
    """
    raw = np.frombuffer(base64.b64decode(text + "=" * (-len(text) % 4)), dtype=np.uint8)
    if width is None:
        return raw
    if raw.size % width:
        raise ValueError(f"{raw.size} bytes do not split into rows of {width}")
    return raw.reshape(-1, width)


def float_list(vec: np.ndarray) -> list[float]:
    """A float vector as a short JSON-able list."""
    return np.round(np.asarray(vec, dtype=np.float64), _FLOAT_DECIMALS).tolist()


def matryoshka(dense: np.ndarray, dim: int) -> np.ndarray:
    """The first `dim` coordinates, re-normalised (a Matryoshka prefix is scored by cosine/IP)."""
    head = np.asarray(dense, dtype=np.float32)[:, :dim]
    norms = np.linalg.norm(head, axis=1, keepdims=True)
    return head / np.maximum(norms, np.float32(1e-12))


@dataclass
class EncodedBatch:
    """Every representation computed for one batch; a field left None is not written."""

    dense: np.ndarray | None = None  # float32 [n, dim]
    matryoshka: dict[int, np.ndarray] = field(default_factory=dict)  # dim -> float32 [n, dim]
    sparse: Sequence[Mapping[str, float]] | None = None
    bin_code: np.ndarray | None = None  # uint8 [n, bits/8]
    bin_tokens: Sequence[Sequence[str]] | None = None
    dense_pq: np.ndarray | None = None  # uint8 [n, M]
    mv_codes: Sequence[np.ndarray] | None = None  # uint8 [t_i, M] each
    mv_f16: Sequence[np.ndarray] | None = None  # float16 [t_i, dim] each (little-endian bytes)
    fde: np.ndarray | None = None  # float32 [n, fde_dim]


def _check_len(name: str, value: Any, n: int) -> None:
    if value is not None and len(value) != n:
        raise ValueError(f"{name}: {len(value)} rows for a batch of {n} documents")


def build_documents(
    docs: Sequence[CorpusDocument], enc: EncodedBatch, index: str | None = None,
    *, in_place: bool = False,
) -> list[dict[str, Any]]:
    """Bulk `index` actions, one per document: the app's fields at the top level, osneural's
    `title` / `text` and every representation in `enc`.

    An `index` action replaces the whole document, so re-ingesting a changed document leaves
    no stale representation or removed field behind. With `in_place`, the actions are partial
    `update`s carrying osneural's fields only: the document already lives in the index with its
    own fields, which an app may be writing meanwhile."""
    n = len(docs)
    for name in ("dense", "sparse", "bin_code", "bin_tokens", "dense_pq", "mv_codes", "mv_f16", "fde"):
        _check_len(name, getattr(enc, name), n)
    for dim, arr in enc.matryoshka.items():
        _check_len(f"dense_{dim}", arr, n)
    actions: list[dict[str, Any]] = []
    for i, doc in enumerate(docs):
        src: dict[str, Any] = {} if in_place else dict(doc.fields)
        # the id again, as doc values: first stages read their hits' ids from it
        # (osneural.plugin.stages.request.ID_FIELD says why)
        src["osneural_id"] = doc.id
        src["title"] = doc.title
        src["text"] = doc.text
        if enc.dense is not None:
            src["dense"] = float_list(enc.dense[i])
        for dim, arr in sorted(enc.matryoshka.items()):
            src[f"dense_{dim}"] = float_list(arr[i])
        if enc.sparse is not None:
            src["sparse"] = sparse_features(enc.sparse[i], doc_id=doc.id)
        if enc.bin_tokens is not None:
            src["bin_tokens"] = list(enc.bin_tokens[i])
        if enc.bin_code is not None:
            src["bin_code"] = b64(enc.bin_code[i])
        if enc.dense_pq is not None:
            src["dense_pq"] = b64(enc.dense_pq[i])
        if enc.mv_codes is not None:
            src["mv_codes"] = b64(enc.mv_codes[i])
        if enc.mv_f16 is not None:
            src["mv_f16"] = b64(np.asarray(enc.mv_f16[i], dtype="<f2").view(np.uint8))
        if enc.fde is not None:
            src["fde"] = float_list(enc.fde[i])
        action: dict[str, Any] = (
            {"_op_type": "update", "_id": doc.id, "doc": src} if in_place
            else {"_op_type": "index", "_id": doc.id, "_source": src})
        if index is not None:
            action["_index"] = index
        actions.append(action)
    return actions
