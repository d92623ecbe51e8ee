"""Token codes of 1 or 2 bits per dimension: binarized tokens and ColBERTv2-style residuals.

A token is stored as (each part only when the codec has it):

* a coarse centroid id (uint16): the nearest of `n_centroids` k-means centroids, as ColBERTv2 /
  PLAID keep one per token; the bits then code the residual `token - centroid`;
* a per-token scale (float16): the mean absolute value of what the bits code, so a binarized
  token keeps its magnitude (what Vespa's and Elasticsearch's bit tokens lose);
* `nbits` bits per dimension: the bucket of each (scaled) value, packed little-endian within a
  byte (dimension d at bits (d * nbits) % 8 of byte d * nbits // 8).

With `dims` set, tokens are first projected on their `dims` principal directions (the leading
eigenvectors of the training tokens' second-moment matrix, uncentered because MaxSim is an inner
product): the bits then code `dims` decorrelated values instead of `D` correlated ones. Half of
MiniLM's 384 directions keep about 87% of the tokens' energy; MaxSim over 224 projected
dimensions at 2 bits (56 B) stays within the quality bar that 384 at 2 bits (96 B) meets
(docs/results.md). The query is projected by the same matrix, so the kernel sees `dims`-wide
tokens; `decode` maps back.

Buckets are trained once: cut-offs at the quantiles of the training values (the sign, 0.0, for
binarized tokens at 1 bit) and each bucket's weight the mean of the values that fall in it (the
least-squares value for those cut-offs). With 384-d tokens that is 48 bytes per token at 1 bit
and 96 at 2, plus 2 for the centroid id and 2 for the scale, against 192 for PQ M=192 and 768
for float16.

MaxSim runs asymmetric (float query tokens against decoded document tokens) in the compiled
`maxsim_bits` kernel; documents are stored as one byte string of fixed-width token rows
(`row_bytes` each), so a blob from OpenSearch's binary doc values parses with one `frombuffer`.
"""

from __future__ import annotations

import functools
from typing import Any

import faiss
import numpy as np

from osneural.codecs.serialization import (
    array_to_b64,
    as_matrix,
    check_header,
    header,
    load_array,
)

KIND = "residual"
MAX_CENTROIDS = 1 << 16  # ids are stored as uint16
#: training values used to place the bucket cut-offs (quantiles need no more)
_QUANTILE_SAMPLE = 4_000_000


class ResidualCodec:
    """Binarized (`n_centroids=0`) or centroid + residual token codes at `nbits` per dimension.

    `fit` takes a token sample [n, D] (float); ColBERTv2 trains its centroids on hundreds of
    thousands of tokens drawn across documents, and so should callers.
    """

    def __init__(
        self,
        nbits: int = 1,
        n_centroids: int = 0,
        *,
        scale: bool = True,
        seed: int = 0,
        niter: int = 20,
        dims: int | None = None,
    ) -> None:
        if nbits not in (1, 2, 4):
            raise ValueError(f"nbits must be 1, 2 or 4, got {nbits!r}")
        if not 0 <= n_centroids <= MAX_CENTROIDS:
            raise ValueError(f"n_centroids must be between 0 and {MAX_CENTROIDS}, got {n_centroids}")
        if dims is not None and (not isinstance(dims, int) or dims < 1):
            raise ValueError(f"dims must be a positive number of principal directions, got {dims!r}")
        self.nbits = int(nbits)
        self.n_centroids = int(n_centroids)
        self.scale = bool(scale)
        self.seed = int(seed)
        self.niter = int(niter)
        self.dims = dims  # principal directions kept (None: tokens coded as they are)
        self.dim: int | None = None  # the tokens' dimension D
        #: [K, D] float32 orthonormal rows (K = min(dims, D)) or None: what the bits code is
        #: `token @ rotation.T`
        self.rotation: np.ndarray | None = None
        self._rotation_t: np.ndarray | None = None  # [D, K] contiguous, for the query kernel
        self.centroids: np.ndarray | None = None  # [C, K] float32 (C = 0: no coarse quantizer)
        self.cutoffs: np.ndarray | None = None  # [2**nbits - 1] float32
        self.weights: np.ndarray | None = None  # [2**nbits] float32
        self._index: faiss.IndexFlatL2 | None = None

    # -- layout ---------------------------------------------------------------------------------
    @property
    def code_dim(self) -> int:
        """Values the bits code per token: the kept principal directions, or D."""
        if self.dim is None:
            self._require_fitted()
        return self.dim if self.rotation is None else self.rotation.shape[0]

    @property
    def code_bytes(self) -> int:
        """Bytes of packed bits per token."""
        return -(-self.code_dim * self.nbits // 8)

    @property
    def row_dtype(self) -> np.dtype:
        """One stored token: [cid <u2][scale <f2][bits u1 x code_bytes], packed, no padding."""
        return _row_dtype(self.n_centroids > 0, self.scale, self.code_bytes)

    @property
    def row_bytes(self) -> int:
        return self.row_dtype.itemsize

    def describe(self) -> dict[str, Any]:
        """What the stored bytes mean, for an index's `_meta` (no trained arrays)."""
        self._require_fitted()
        described = {"kind": KIND, "nbits": self.nbits, "n_centroids": self.n_centroids,
                     "scale": self.scale, "dim": self.dim, "row_bytes": self.row_bytes}
        if self.rotation is not None:
            described["projected_dims"] = self.code_dim
        return described

    # -- training -------------------------------------------------------------------------------
    def fit(self, x: Any, centroids: Any = None) -> ResidualCodec:
        """Train on tokens `x`; `centroids` [n_centroids, D] reuses a coarse quantizer trained
        before (the 1- and 2-bit codes of one corpus can share it) instead of running k-means."""
        x = as_matrix(x, "ResidualCodec.fit")
        n, self.dim = x.shape
        self._index = None
        self._rotation_t = None
        self.rotation = None if self.dims is None else principal_directions(x, self.dims)
        x = self._project(x)
        dim = x.shape[1]
        if centroids is not None:
            centroids = as_matrix(centroids, "ResidualCodec.fit centroids", dim=dim)
            if centroids.shape[0] != self.n_centroids:
                raise ValueError(f"ResidualCodec: {centroids.shape[0]} centroids given for "
                                 f"n_centroids={self.n_centroids}")
            self.centroids = centroids
        elif self.n_centroids and n < self.n_centroids:
            raise ValueError(f"ResidualCodec: {n} training tokens for {self.n_centroids} "
                             "centroids; need at least as many tokens as centroids")
        elif self.n_centroids:
            kmeans = faiss.Kmeans(dim, self.n_centroids, niter=self.niter, seed=self.seed,
                                  verbose=False)
            kmeans.train(x)
            self.centroids = np.ascontiguousarray(kmeans.centroids, dtype=np.float32)
        else:
            self.centroids = np.zeros((0, dim), dtype=np.float32)
        values = self._scaled_residuals(x)[0].ravel()
        if values.size > _QUANTILE_SAMPLE:
            rng = np.random.default_rng(self.seed)
            values = values[rng.choice(values.size, _QUANTILE_SAMPLE, replace=False)]
        k = 1 << self.nbits
        if self.nbits == 1 and not self.n_centroids:
            cutoffs = np.zeros(1, dtype=np.float32)  # binarized: the sign bit
        else:
            cutoffs = np.quantile(values, np.arange(1, k) / k).astype(np.float32)
        bucket = np.searchsorted(cutoffs, values, side="right")
        sums = np.bincount(bucket, weights=values, minlength=k)
        counts = np.bincount(bucket, minlength=k)
        # An empty bucket (constant training data) gets its cut-off as weight.
        edges = np.concatenate([cutoffs[:1], cutoffs, cutoffs[-1:]])
        fallback = (edges[:-1] + edges[1:]) / 2
        self.cutoffs = cutoffs
        self.weights = np.where(counts > 0, sums / np.maximum(counts, 1), fallback).astype(np.float32)
        return self

    # -- encode / decode ------------------------------------------------------------------------
    def _project(self, x: np.ndarray) -> np.ndarray:
        """Tokens [n, D] as the bits code them: [n, code_dim] (BLAS: documents come in batches)."""
        if self.rotation is None:
            return x
        return np.ascontiguousarray(x @ self.rotation.T, dtype=np.float32)

    def project_query(self, query: np.ndarray) -> np.ndarray:
        """Query tokens [Q, D] as the kernel scores them, projected on the calling thread (see
        `osneural.cython_ext.project`)."""
        from osneural.cython_ext import project

        if self.rotation is None:
            return query
        if self._rotation_t is None:
            self._rotation_t = np.ascontiguousarray(self.rotation.T)
        return project(as_matrix(query, "ResidualCodec.maxsim query", dim=self.dim, min_rows=0),
                       self._rotation_t)

    def _assign(self, x: np.ndarray) -> np.ndarray:
        if self._index is None:
            self._index = faiss.IndexFlatL2(self.code_dim)
            self._index.add(self.centroids)
        return self._index.search(x, 1)[1][:, 0].astype(np.int64)

    def _scaled_residuals(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None,
                                                         np.ndarray | None]:
        """(values the bits code, per-token scale as stored, centroid ids)."""
        cids = None
        if self.n_centroids:
            cids = self._assign(x)
            x = x - self.centroids[cids]
        scales = None
        if self.scale:
            mean_abs = np.abs(x).mean(axis=1)
            # Stored as float16; an all-zero residual keeps scale 1 so nothing divides by zero.
            scales = np.where(mean_abs > 0, mean_abs, 1.0).astype(np.float16)
            x = x / scales.astype(np.float32)[:, None]
        return x, scales, cids

    def encode(self, x: Any) -> np.ndarray:
        """Token rows [n] of `row_dtype` (`.tobytes()` is the stored blob of a document)."""
        self._require_fitted()
        x = as_matrix(x, "ResidualCodec.encode", dim=self.dim, min_rows=0)
        values, scales, cids = self._scaled_residuals(self._project(x))
        buckets = np.searchsorted(self.cutoffs, values, side="right").astype(np.uint8)
        rows = np.zeros(x.shape[0], dtype=self.row_dtype)
        rows["bits"] = pack_bits(buckets, self.nbits)
        if cids is not None:
            rows["cid"] = cids
        if scales is not None:
            rows["scale"] = scales
        return rows

    def parse(self, blob: bytes, what: str = "codes") -> np.ndarray:
        """A stored blob back to token rows; a length that is not whole rows is a ValueError."""
        self._require_fitted()
        blob = bytes(blob)
        if len(blob) % self.row_bytes:
            raise ValueError(f"{what}: {len(blob)} bytes is not a multiple of the "
                             f"{self.row_bytes}-byte token rows of this codec")
        return np.frombuffer(blob, dtype=self.row_dtype)

    def decode(self, rows: np.ndarray) -> np.ndarray:
        """float32 [n, D] tokens: what the kernel sees, mapped back to the tokens' space when the
        codec projects (MaxSim of a query against them equals the kernel's)."""
        from osneural.cython_ext.reference import bits_decode

        self._require_fitted()
        coded = bits_decode(np.ascontiguousarray(rows["bits"]), self.nbits, self.code_dim,
                            self.weights, self._field(rows, "scale"), self._centroids_or_none(),
                            self._field(rows, "cid"))
        if self.rotation is None:
            return coded
        return np.ascontiguousarray(coded @ self.rotation, dtype=np.float32)

    def _field(self, rows: np.ndarray, name: str) -> np.ndarray | None:
        if name not in rows.dtype.names:
            return None
        return rows[name].astype(np.float32 if name == "scale" else np.int32)

    def _centroids_or_none(self) -> np.ndarray | None:
        return self.centroids if self.n_centroids else None

    # -- scoring --------------------------------------------------------------------------------
    def maxsim(self, query: Any, rows: np.ndarray, offsets: Any, *,
               n_threads: int | None = None) -> np.ndarray:
        """MaxSim of float query tokens [Q, D] against documents' token rows (offsets [N + 1])."""
        from osneural.cython_ext import maxsim_bits

        self._require_fitted()
        return maxsim_bits(self.project_query(query), np.ascontiguousarray(rows["bits"]), offsets,
                           self.weights, self.nbits, scales=self._field(rows, "scale"),
                           centroids=self._centroids_or_none(),
                           centroid_ids=self._field(rows, "cid"), n_threads=n_threads)

    def reconstruction_error(self, x: Any) -> float:
        """Mean squared L2 error of decode(encode(x)) per token."""
        x = as_matrix(x, "reconstruction_error", dim=self.dim)
        return float(((self.decode(self.encode(x)) - x) ** 2).sum(axis=1).mean())

    # -- serialization --------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        self._require_fitted()
        data = header(KIND)
        data.update(nbits=self.nbits, n_centroids=self.n_centroids, scale=self.scale,
                    seed=self.seed, niter=self.niter, dim=self.dim,
                    centroids=array_to_b64(self.centroids), cutoffs=array_to_b64(self.cutoffs),
                    weights=array_to_b64(self.weights))
        if self.rotation is not None:
            data.update(dims=self.dims, rotation=array_to_b64(self.rotation))
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ResidualCodec:
        check_header(data, KIND)
        codec = cls(data["nbits"], data["n_centroids"], scale=data["scale"], seed=data["seed"],
                    niter=data["niter"], dims=data.get("dims"))  # no dims: an unprojected code
        dim, k = int(data["dim"]), 1 << codec.nbits
        codec.dim = dim
        if codec.dims is not None:
            kept = min(codec.dims, dim)
            codec.rotation = load_array(data.get("rotation"), (kept, dim), "rotation", KIND)
        codec.centroids = load_array(data.get("centroids"), (codec.n_centroids, codec.code_dim),
                                     "centroids", KIND)
        codec.cutoffs = load_array(data.get("cutoffs"), (k - 1,), "cutoffs", KIND)
        codec.weights = load_array(data.get("weights"), (k,), "weights", KIND)
        return codec

    def _require_fitted(self) -> None:
        if self.weights is None:
            raise ValueError("ResidualCodec is not fitted: call fit(sample) first")


def principal_directions(x: np.ndarray, dims: int) -> np.ndarray:
    """[min(dims, D), D] float32: the leading eigenvectors of x's uncentered second moment, each
    signed so its largest component is positive (the same sample gives the same matrix)."""
    x64 = np.asarray(x, dtype=np.float64)
    moment = x64.T @ x64 / max(len(x64), 1)
    values, vectors = np.linalg.eigh(moment)
    top = vectors[:, np.argsort(-values, kind="stable")[:min(dims, x64.shape[1])]].T
    signs = np.sign(top[np.arange(len(top)), np.abs(top).argmax(axis=1)])
    return np.ascontiguousarray(top * signs[:, None], dtype=np.float32)


def pack_bits(buckets: np.ndarray, nbits: int) -> np.ndarray:
    """[n, D] bucket ids (< 2**nbits) -> [n, ceil(D * nbits / 8)] uint8, little-endian in a byte."""
    buckets = np.asarray(buckets, dtype=np.uint8)
    n, dim = buckets.shape
    per_byte = 8 // nbits
    padded = np.zeros((n, -(-dim // per_byte) * per_byte), dtype=np.uint8)
    padded[:, :dim] = buckets
    parts = padded.reshape(n, padded.shape[1] // per_byte, per_byte).astype(np.uint16)
    shifts = (nbits * np.arange(per_byte, dtype=np.uint16))[None, None, :]
    return (parts << shifts).sum(axis=2).astype(np.uint8)


@functools.lru_cache(maxsize=64)
def _row_dtype(centroid_ids: bool, scale: bool, code_bytes: int) -> np.dtype:
    """The packed row dtype, built once per layout (the query side parses every fetched blob)."""
    fields: list[tuple[Any, ...]] = []
    if centroid_ids:
        fields.append(("cid", "<u2"))
    if scale:
        fields.append(("scale", "<f2"))
    fields.append(("bits", "u1", (code_bytes,)))
    return np.dtype(fields)
