"""Compiled rescoring kernels: MaxSim (float32, float16, int8, PQ), PQ asymmetric distance,
Hamming distance and top-k.

These wrappers are the only supported entry points. They check shapes, dtypes, offsets and
codes once, so the compiled loops can trust their input and run without the GIL. Conventions:

* Arrays that are not C-contiguous (or have the wrong byte order) are copied, never refused.
* A query of floating dtype is cast to float32 (it is small); document storage must already be
  float32, float16, int8 or uint8 codes, because silently casting a large candidate batch would
  cost more than the rescoring itself.
* A document with zero tokens scores 0.0 in every MaxSim variant: it has no token to match, and
  0.0 keeps the score finite so it can still be ranked (below any document with a positive score).
* NaN or inf in any input is a ValueError naming the array (and the document, for tokens).
* `n_threads=None` uses every core OpenMP sees; `n_threads=1` runs serially.
* A build without OpenMP (`openmp_enabled()` is False) runs every kernel on one core; importing
  this module then warns once (a RuntimeWarning), since rescoring latency grows with the cores.
"""

from __future__ import annotations

import warnings
from typing import Literal

import numpy as np
from osneural.cython_ext import _kernels

__all__ = [
    "hamming_distances",
    "max_threads",
    "maxsim",
    "maxsim_bits",
    "maxsim_pq",
    "openmp_enabled",
    "pq_adc",
    "pq_lookup_tables",
    "project",
    "topk",
]

max_threads = _kernels.max_threads
openmp_enabled = _kernels.openmp_enabled

if not openmp_enabled():
    warnings.warn(
        "osneural.cython_ext was built without OpenMP: rescoring kernels run on one core "
        "(rebuild with an OpenMP-capable compiler and without OSNEURAL_NO_OPENMP)",
        RuntimeWarning,
        stacklevel=2,
    )

#: Largest set of PQ lookup tables (bytes) `maxsim_pq(method="auto")` scores by table lookups;
#: beyond it the tables fall out of L2 and decoding to float32 is faster (bench/rescoring.py).
LUT_CACHE_BYTES = 256 * 1024


def _threads(n_threads: int | None) -> int:
    if n_threads is None:
        return _kernels.max_threads()
    if int(n_threads) != n_threads or n_threads < 1:
        raise ValueError(f"n_threads must be a positive integer or None, got {n_threads!r}")
    return int(n_threads)


def _array(name: str, value: object, ndim: int, dtypes: tuple[type, ...]) -> np.ndarray:
    arr = np.asarray(value)
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {arr.shape}")
    if arr.dtype.type not in dtypes:
        allowed = ", ".join(np.dtype(d).name for d in dtypes)
        raise ValueError(f"{name} must have dtype {allowed}; got {arr.dtype}")
    return np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("="))


def _small_float(name: str, value: object, ndim: int) -> np.ndarray:
    """Query, codebooks and tables are small next to the candidates: any float dtype is cast."""
    arr = np.asarray(value)
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"{name} must be a floating array, got dtype {arr.dtype}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    _require_finite(name, arr)
    return arr


def _float_query(query: object) -> np.ndarray:
    return _small_float("query", query, 2)


def _require_finite(name: str, arr: np.ndarray) -> None:
    if arr.size and not np.isfinite(arr).all():
        where = np.argwhere(~np.isfinite(arr))[0]
        raise ValueError(f"{name} contains NaN or inf (first at index {tuple(int(i) for i in where)})")


def _offsets(offsets: object, n_rows: int, rows_name: str) -> np.ndarray:
    arr = np.asarray(offsets)
    if arr.ndim != 1 or arr.shape[0] < 1:
        raise ValueError(f"offsets must be 1-D with N + 1 >= 1 entries, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"offsets must be integers, got dtype {arr.dtype}")
    arr = np.ascontiguousarray(arr, dtype=np.int64)
    if arr[0] != 0:
        raise ValueError(f"offsets[0] must be 0, got {arr[0]}")
    steps = np.diff(arr)
    if steps.size and steps.min() < 0:
        n = int(np.argmax(steps < 0))
        raise ValueError(
            f"offsets must be non-decreasing: document {n} has offsets[{n}]={arr[n]} > "
            f"offsets[{n + 1}]={arr[n + 1]}"
        )
    if arr[-1] != n_rows:
        raise ValueError(f"offsets[-1] must equal the {rows_name} row count {n_rows}, got {arr[-1]}")
    return arr


def _check_codes(codes: np.ndarray, k: int, name: str = "codes") -> None:
    """Codes index a codebook of k centroids; with k == 256 every uint8 is valid."""
    if k < 256 and codes.size:
        over = codes >= k
        if over.any():
            row, col = (int(i) for i in np.argwhere(over)[0])
            raise ValueError(
                f"{name}[{row}, {col}] = {codes[row, col]} is out of range for a codebook of "
                f"{k} centroids"
            )


def _raise_non_finite(doc: int, offsets: np.ndarray, tokens: np.ndarray | None) -> None:
    if doc == -2:
        raise MemoryError("could not allocate the per-thread scratch buffers")
    lo, hi = int(offsets[doc]), int(offsets[doc + 1])
    if tokens is not None and not np.isfinite(tokens[lo:hi].astype(np.float32)).all():
        why = "contains NaN or inf"
    else:
        why = "gives a non-finite similarity (overflow)"
    raise ValueError(f"doc_tokens of document {doc} (rows {lo}:{hi}) {why}")


def maxsim(
    query: np.ndarray,
    doc_tokens: np.ndarray,
    offsets: np.ndarray,
    scales: np.ndarray | None = None,
    *,
    n_threads: int | None = None,
) -> np.ndarray:
    """Late-interaction score of each candidate: sum over query tokens of the best dot product
    with any of the document's tokens.

    query [Q, D] float; doc_tokens [T, D] float32, float16 or int8 (then `scales` [T] float32 is
    the per-token dequantisation scale, default 1.0); offsets [N + 1] int64, document n owning rows
    offsets[n]:offsets[n+1]. Returns float32 [N]; empty documents score 0.0, Q = 0 gives zeros.
    """
    q = _float_query(query)
    docs = _array("doc_tokens", doc_tokens, 2, (np.float32, np.float16, np.int8))
    if docs.shape[1] != q.shape[1]:
        raise ValueError(f"dimension mismatch: query has D={q.shape[1]}, doc_tokens has D={docs.shape[1]}")
    off = _offsets(offsets, docs.shape[0], "doc_tokens")
    nt = _threads(n_threads)
    if docs.dtype == np.int8:
        if scales is None:
            sc = np.ones(docs.shape[0], dtype=np.float32)
        else:
            sc = _array("scales", scales, 1, (np.float32, np.float64, np.float16))
            sc = np.ascontiguousarray(sc, dtype=np.float32)
            if sc.shape[0] != docs.shape[0]:
                raise ValueError(f"scales has {sc.shape[0]} entries for {docs.shape[0]} doc_tokens rows")
            _require_finite("scales", sc)
        scores, bad = _kernels.maxsim_i8(q, docs, sc, off, nt)
    else:
        if scales is not None:
            raise ValueError(f"scales apply to int8 doc_tokens only, got dtype {docs.dtype}")
        if docs.dtype == np.float16:
            scores, bad = _kernels.maxsim_f16(q, docs.view(np.uint16), off, nt)
        else:
            scores, bad = _kernels.maxsim_f32(q, docs, off, nt)
    if bad != -1:
        _raise_non_finite(bad, off, docs if docs.dtype != np.int8 else None)
    return scores


def bits_byte_table(weights: np.ndarray, nbits: int) -> np.ndarray:
    """[256, 8 / nbits] float32: the bucket weights of the dimensions one code byte holds
    (dimension j of a byte in bits j*nbits.., little-endian), so decoding is one copy per byte."""
    if nbits not in (1, 2, 4):
        raise ValueError(f"nbits must be 1, 2 or 4, got {nbits!r}")
    w = _small_float("weights", weights, 1)
    if w.shape[0] != 1 << nbits:
        raise ValueError(f"weights must have 2**nbits = {1 << nbits} entries, got {w.shape[0]}")
    per_byte = 8 // nbits
    values = np.arange(256, dtype=np.int64)[:, None]
    shifts = nbits * np.arange(per_byte, dtype=np.int64)[None, :]
    return np.ascontiguousarray(w[(values >> shifts) & ((1 << nbits) - 1)])


def maxsim_bits(
    query: np.ndarray,
    codes: np.ndarray,
    offsets: np.ndarray,
    weights: np.ndarray,
    nbits: int,
    *,
    scales: np.ndarray | None = None,
    centroids: np.ndarray | None = None,
    centroid_ids: np.ndarray | None = None,
    n_threads: int | None = None,
) -> np.ndarray:
    """MaxSim over tokens coded with `nbits` (1, 2 or 4) bits per dimension.

    codes [T, nb] uint8 with nb = ceil(D * nbits / 8), dimension d in bits (d*nbits) % 8.. of
    byte d*nbits // 8 (little-endian; the last byte's spare bits are ignored); weights [2**nbits]
    the value of each bucket. A token decodes to centroids[centroid_ids[t]] + scales[t] *
    weights[code] (each part only when given): `scales` [T] alone is a binarized token with its
    own magnitude, centroids [C, D] with centroid_ids [T] the ColBERTv2 residual layout. The
    float query meets decoded tokens (asymmetric), so no query precision is lost.
    """
    q = _float_query(query)
    dim = q.shape[1]
    table = bits_byte_table(weights, nbits)
    c = _array("codes", codes, 2, (np.uint8,))
    nb = -(-dim * nbits // 8)
    if c.shape[1] != nb:
        raise ValueError(f"codes have {c.shape[1]} bytes per token; D={dim} at {nbits} bit(s) "
                         f"needs {nb}")
    off = _offsets(offsets, c.shape[0], "codes")
    sc = np.zeros(0, dtype=np.float32)
    if scales is not None:
        sc = _small_float("scales", scales, 1)
        if sc.shape[0] != c.shape[0]:
            raise ValueError(f"scales has {sc.shape[0]} entries for {c.shape[0]} codes rows")
    cents = np.zeros((0, dim), dtype=np.float32)
    ids = np.zeros(0, dtype=np.int32)
    if (centroids is None) != (centroid_ids is None):
        raise ValueError("centroids and centroid_ids go together: give both or neither")
    if centroids is not None:
        cents = _small_float("centroids", centroids, 2)
        if cents.shape[1] != dim or cents.shape[0] == 0:
            raise ValueError(f"centroids must be [C >= 1, D={dim}], got {cents.shape}")
        raw_ids = np.asarray(centroid_ids)
        if raw_ids.ndim != 1 or not np.issubdtype(raw_ids.dtype, np.integer):
            raise ValueError(f"centroid_ids must be 1-D integers, got {raw_ids.dtype} {raw_ids.shape}")
        if raw_ids.shape[0] != c.shape[0]:
            raise ValueError(f"centroid_ids has {raw_ids.shape[0]} entries for {c.shape[0]} codes rows")
        if raw_ids.size and (raw_ids.min() < 0 or raw_ids.max() >= cents.shape[0]):
            bad = int(np.argmax((raw_ids < 0) | (raw_ids >= cents.shape[0])))
            raise ValueError(f"centroid_ids[{bad}] = {raw_ids[bad]} is out of range for "
                             f"{cents.shape[0]} centroids")
        ids = np.ascontiguousarray(raw_ids, dtype=np.int32)
    scores, bad = _kernels.maxsim_bits(q, c, table, off, sc, cents, ids, _threads(n_threads))
    if bad != -1:
        _raise_non_finite(bad, off, None)
    return scores


def project(x: np.ndarray, basis_t: np.ndarray) -> np.ndarray:
    """float32 [n, K] = x [n, D] @ basis_t [D, K], on the calling thread.

    A projected token code (`ResidualCodec` with `dims`) projects each query before MaxSim; doing
    that in BLAS would wake BLAS's thread pool, whose spinning threads slow the OpenMP kernel
    that runs next (osneural.cython_ext._kernels.project)."""
    xs = _small_float("x", x, 2)
    bt = _small_float("basis_t", basis_t, 2)
    if xs.shape[1] != bt.shape[0]:
        raise ValueError(f"x has {xs.shape[1]} columns; basis_t [D, K] has D={bt.shape[0]}")
    return _kernels.project(xs, bt)


def pq_lookup_tables(query: np.ndarray, codebooks: np.ndarray) -> np.ndarray:
    """[Q, M, K] inner products of every query token's sub-vectors with every centroid."""
    q = _float_query(query)
    cb = _small_float("codebooks", codebooks, 3)
    m, k, dsub = cb.shape
    if q.shape[1] != m * dsub:
        raise ValueError(f"dimension mismatch: query has D={q.shape[1]}, codebooks give M*dsub={m * dsub}")
    sub = q.reshape(q.shape[0], m, dsub).transpose(1, 0, 2)  # [M, Q, dsub]
    return np.ascontiguousarray((sub @ cb.transpose(0, 2, 1)).transpose(1, 0, 2))


def maxsim_pq(
    query: np.ndarray,
    codes: np.ndarray,
    offsets: np.ndarray,
    codebooks: np.ndarray,
    *,
    method: Literal["auto", "lut", "decode"] = "auto",
    n_threads: int | None = None,
) -> np.ndarray:
    """MaxSim over PQ-coded document tokens: codes [T, M] uint8, codebooks [M, K, dsub] float32
    (any float dtype, cast; K <= 256 centroids; codes must be < K), D = M * dsub.

    "lut" builds a [M, K] table per query token and scores a token with M table additions per
    16 query tokens; "decode" rebuilds float32 tokens piece by piece and uses the float32
    kernel. The table needs D / M times fewer operations but reads it at random, so it wins only
    while the tables stay in cache: "auto" takes "lut" while they fit in `LUT_CACHE_BYTES`
    (M=16 with 32 query tokens: 512 KiB, equal speed; M=96: 3 MiB, "lut" 3.5x slower).
    """
    q = _float_query(query)
    c = _array("codes", codes, 2, (np.uint8,))
    cb = _small_float("codebooks", codebooks, 3)
    m, k, dsub = cb.shape
    if m == 0 or k == 0 or k > 256:
        raise ValueError(f"codebooks must be [M >= 1, 1 <= K <= 256, dsub], got {cb.shape}")
    if c.shape[1] != m:
        raise ValueError(f"codes have M={c.shape[1]} sub-quantizers, codebooks have M={m}")
    if q.shape[1] != m * dsub:
        raise ValueError(f"dimension mismatch: query has D={q.shape[1]}, codebooks give M*dsub={m * dsub}")
    _check_codes(c, k)
    off = _offsets(offsets, c.shape[0], "codes")
    nt = _threads(n_threads)
    if method == "auto":
        lut_bytes = m * k * (-(-q.shape[0] // 16) * 16) * 4
        method = "lut" if lut_bytes <= LUT_CACHE_BYTES else "decode"
    if method == "lut":
        scores, bad = _kernels.maxsim_pq_lut(pq_lookup_tables(q, cb), c, off, nt)
    elif method == "decode":
        scores, bad = _kernels.maxsim_pq_decode(q, c, off, cb, nt)
    else:
        raise ValueError(f"method must be 'auto', 'lut' or 'decode', got {method!r}")
    if bad != -1:
        _raise_non_finite(bad, off, None)
    return scores


def pq_adc(codes: np.ndarray, lut: np.ndarray, *, n_threads: int | None = None) -> np.ndarray:
    """Asymmetric distance of each PQ-coded candidate: sum over m of lut[m, codes[n, m]].

    codes [N, M] uint8, lut [M, K] float (cast to float32; K <= 256). The metric lives in the table: inner-product
    tables give similarities (higher is better), squared-L2 tables give distances (lower is better;
    negate before `topk`).
    """
    c = _array("codes", codes, 2, (np.uint8,))
    table = _small_float("lut", lut, 2)
    if table.shape[0] != c.shape[1]:
        raise ValueError(f"lut has M={table.shape[0]} rows, codes have M={c.shape[1]} columns")
    if table.shape[1] == 0 or table.shape[1] > 256:
        raise ValueError(f"lut must have 1..256 columns (centroids), got {table.shape[1]}")
    _check_codes(c, table.shape[1])
    return _kernels.pq_adc(c, table, _threads(n_threads))


def hamming_distances(query: np.ndarray, codes: np.ndarray, *, n_threads: int | None = None) -> np.ndarray:
    """Bits that differ between packed query [nb] uint8 and each packed row of codes [N, nb]."""
    q = _array("query", query, 1, (np.uint8,))
    c = _array("codes", codes, 2, (np.uint8,))
    if c.shape[1] != q.shape[0]:
        raise ValueError(f"code width mismatch: query has {q.shape[0]} bytes, codes have {c.shape[1]}")
    return _kernels.hamming_distances(q, c, _threads(n_threads))


def topk(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k highest scores, best first, ties broken by lower index; k > N gives N.

    Scores are compared as float32 (the dtype every kernel returns).
    """
    s = np.asarray(scores)
    if s.ndim != 1:
        raise ValueError(f"scores must be 1-D, got shape {s.shape}")
    if not (np.issubdtype(s.dtype, np.floating) or np.issubdtype(s.dtype, np.integer)):
        raise ValueError(f"scores must be numeric, got dtype {s.dtype}")
    if int(k) != k or k < 0:
        raise ValueError(f"k must be a non-negative integer, got {k!r}")
    s = np.ascontiguousarray(s, dtype=np.float32)
    if s.size and np.isnan(s).any():
        raise ValueError(f"scores contain NaN (first at index {int(np.argmax(np.isnan(s)))})")
    return _kernels.topk(s, min(int(k), s.shape[0]))
