"""Product quantization: M sub-spaces x 2^nbits centroids, trained with faiss k-means.

Codes are uint8 [n, M] (one centroid id per sub-space). Codebooks are float32 [M, ksub, dsub]:
sub-space `j` covers dimensions `j * dsub ... (j + 1) * dsub - 1` of the vector,
the same layout as `faiss.ProductQuantizer.centroids`, so faiss can reload them.

Encoding runs through a `faiss.ProductQuantizer` loaded with our codebooks (about 3x faster than
a numpy argmin on 384-d vectors). faiss packs codes of fewer than 8 bits, so `nbits < 8` takes the
numpy path, which is also the reference the tests hold faiss to.

No OPQ rotation: `faiss.OPQMatrix` was measured on MiniLM-like data (unit vectors, decaying
spectrum in a random basis) and raised the reconstruction error (M=16: 0.814 vs 0.776;
`bench/codecs.py` repeats the comparison), so the codebooks stay in the original space and the
`maxsim_pq` kernel can read them directly.
"""

from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import faiss
import numpy as np

from osneural.codecs.serialization import (
    array_to_b64,
    as_matrix,
    as_vector,
    b64_to_array,
    check_header,
    header,
)

KIND = "pq"
#: training points k-means uses per centroid at most (faiss subsamples, seeded, beyond that):
#: faiss's own default, 256 x 256 = 65,536 points per sub-space, so ingestion's token sample
#: (50,000) is used whole, as before. 64 would train about 1.3-1.6x faster again on top of the
#: thread pool, but its token codes reconstruct with 5.3% more squared error
#: (`python bench/pq_training.py --docs 300 --subspaces 12 --points-per-centroid 64`), and what
#: that does to MaxSim nDCG@10 was not measured.
MAX_POINTS_PER_CENTROID = 256


def _cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class ProductQuantizer:
    """Per-sub-space k-means codebooks, encode/decode, and asymmetric-distance lookup tables.

    `lookup_table` is [M, ksub] (ksub = 256 for the default nbits=8).
    """

    def __init__(
        self,
        M: int,
        nbits: int = 8,
        seed: int = 0,
        niter: int = 25,
        max_points_per_centroid: int = MAX_POINTS_PER_CENTROID,
    ) -> None:
        if M < 1:
            raise ValueError(f"M must be at least 1, got {M}")
        if not 1 <= nbits <= 8:
            raise ValueError(f"nbits must be between 1 and 8 (codes are uint8), got {nbits}")
        self.M = int(M)
        self.nbits = int(nbits)
        self.seed = int(seed)
        self.niter = int(niter)
        self.max_points_per_centroid = int(max_points_per_centroid)
        self.codebooks: np.ndarray | None = None  # [M, ksub, dsub]
        self._faiss: faiss.ProductQuantizer | None = None

    @property
    def ksub(self) -> int:
        return 1 << self.nbits

    @property
    def dim(self) -> int:
        self._require_fitted()
        return self.M * self.codebooks.shape[2]

    @property
    def dsub(self) -> int:
        self._require_fitted()
        return int(self.codebooks.shape[2])

    # -- training -------------------------------------------------------------------------------
    def fit(self, x: Any) -> ProductQuantizer:
        x = as_matrix(x, "ProductQuantizer.fit")
        n, dim = x.shape
        if dim % self.M:
            raise ValueError(
                f"ProductQuantizer: dimension {dim} is not divisible by M={self.M} "
                f"(choose M among the divisors of {dim})"
            )
        if n < self.ksub:
            raise ValueError(
                f"ProductQuantizer: {n} training vectors for {self.ksub} centroids per sub-space; "
                f"need at least {self.ksub} (faiss recommends {39 * self.ksub})"
            )
        if n < 39 * self.ksub:
            warnings.warn(
                f"ProductQuantizer: {n} training vectors for {self.ksub} centroids; "
                f"k-means is reliable from about {39 * self.ksub}",
                stacklevel=2,
            )
        dsub = dim // self.M
        codebooks = np.empty((self.M, self.ksub, dsub), dtype=np.float32)

        def train(j: int) -> None:
            faiss.omp_set_num_threads(1)  # parallel across sub-spaces instead, see below
            kmeans = faiss.Kmeans(
                dsub,
                self.ksub,
                niter=self.niter,
                seed=self.seed + j,
                verbose=False,
                min_points_per_centroid=1,
                max_points_per_centroid=self.max_points_per_centroid,
            )
            kmeans.train(np.ascontiguousarray(x[:, j * dsub : (j + 1) * dsub]))
            codebooks[j] = kmeans.centroids

        # One single-threaded k-means per sub-space, sub-spaces on a thread pool (faiss releases
        # the GIL): a k-means of 256 centroids in 2 to 8 dimensions is too small to split over
        # OpenMP threads, whose barriers spin and collapse on a busy machine. Each sub-space's
        # result depends only on its seed, so the codebooks do not depend on the thread count.
        previous = faiss.omp_get_max_threads()
        try:
            with ThreadPoolExecutor(max_workers=min(self.M, _cores())) as pool:
                list(pool.map(train, range(self.M)))
        finally:
            faiss.omp_set_num_threads(previous)
        self.codebooks = codebooks
        self._faiss = None
        return self

    # -- encode / decode ------------------------------------------------------------------------
    def encode(self, x: Any) -> np.ndarray:
        """Nearest centroid per sub-space (squared L2), uint8 [n, M]."""
        self._require_fitted()
        x = as_matrix(x, "ProductQuantizer.encode", dim=self.dim, min_rows=0)
        if self.nbits != 8:
            return self.encode_numpy(x)
        if self._faiss is None:
            self._faiss = self.to_faiss()
        return self._faiss.compute_codes(x).reshape(x.shape[0], self.M)

    def encode_numpy(self, x: Any) -> np.ndarray:
        """The same assignment in plain numpy (reference, and the path for nbits < 8)."""
        self._require_fitted()
        x = as_matrix(x, "ProductQuantizer.encode", dim=self.dim, min_rows=0)
        n, dsub = x.shape[0], self.dsub
        codes = np.empty((n, self.M), dtype=np.uint8)
        norms = np.einsum("mkd,mkd->mk", self.codebooks, self.codebooks)  # [M, ksub]
        for start in range(0, n, 16384):
            block = x[start : start + 16384]
            for j in range(self.M):
                sub = block[:, j * dsub : (j + 1) * dsub]
                # ||c||^2 - 2 x.c ranks centroids like ||x - c||^2 (||x||^2 is common).
                scores = norms[j][None, :] - 2.0 * (sub @ self.codebooks[j].T)
                codes[start : start + len(block), j] = np.argmin(scores, axis=1)
        return codes

    def decode(self, codes: Any) -> np.ndarray:
        """Reconstructed vectors float32 [n, D] in the original (unrotated) space."""
        codes = self._check_codes(codes)
        parts = self.codebooks[np.arange(self.M)[None, :], codes.astype(np.intp)]  # [n, M, dsub]
        return parts.reshape(codes.shape[0], -1)

    # -- asymmetric distances -------------------------------------------------------------------
    def lookup_table(self, q: Any, metric: str = "ip") -> np.ndarray:
        """Per-sub-space scores of the query against every centroid, float32 [M, ksub].

        `metric="ip"`: inner products (sum over sub-spaces = q . decode(code)).
        `metric="l2"`: squared L2 distances (sum = ||q - decode(code)||^2).
        """
        self._require_fitted()
        if metric not in ("ip", "l2"):
            raise ValueError(f"lookup_table: metric must be 'ip' or 'l2', got {metric!r}")
        q = as_vector(q, "lookup_table query", dim=self.dim)
        sub = q.reshape(self.M, 1, self.dsub)
        if metric == "ip":
            lut = np.einsum("mkd,mod->mk", self.codebooks, sub)
        else:
            lut = ((self.codebooks - sub) ** 2).sum(axis=2)
        return np.ascontiguousarray(lut, dtype=np.float32)

    def adc(self, codes: Any, lut: Any) -> np.ndarray:
        """Asymmetric distance/score of every code from a lookup table, float32 [n]."""
        codes = self._check_codes(codes)
        lut = np.asarray(lut, dtype=np.float32)
        if lut.shape != (self.M, self.ksub):
            raise ValueError(f"adc: lut shape {lut.shape}, expected {(self.M, self.ksub)}")
        return lut[np.arange(self.M)[None, :], codes.astype(np.intp)].sum(axis=1, dtype=np.float32)

    # -- token codes (MaxSim) ---------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """What the stored bytes mean, for an index's `_meta` (no trained arrays)."""
        return {"kind": KIND, "M": self.M, "nbits": self.nbits, "dim": self.dim}

    def parse(self, blob: bytes, what: str = "codes") -> np.ndarray:
        """A document's stored token codes (M bytes per token) back to uint8 [t, M]."""
        self._require_fitted()
        if len(blob) % self.M:
            raise ValueError(f"{what}: {len(blob)} bytes is not a multiple of {self.M} "
                             f"(PQ codes with M={self.M})")
        return np.frombuffer(bytes(blob), dtype=np.uint8).reshape(-1, self.M)

    def maxsim(self, query: Any, codes: np.ndarray, offsets: Any, *,
               n_threads: int | None = None) -> np.ndarray:
        """MaxSim of float query tokens [Q, D] against PQ-coded document tokens (offsets [N + 1])."""
        from osneural.cython_ext import maxsim_pq

        self._require_fitted()
        return maxsim_pq(query, codes, offsets, self.codebooks, n_threads=n_threads)

    def reconstruction_error(self, x: Any) -> float:
        """Mean squared L2 error of decode(encode(x)) per vector."""
        x = as_matrix(x, "reconstruction_error", dim=self.dim)
        return float(((self.decode(self.encode(x)) - x) ** 2).sum(axis=1).mean())

    def to_faiss(self) -> faiss.ProductQuantizer:
        """A `faiss.ProductQuantizer` holding the same codebooks."""
        self._require_fitted()
        pq = faiss.ProductQuantizer(self.dim, self.M, self.nbits)
        faiss.copy_array_to_vector(self.codebooks.ravel(), pq.centroids)
        return pq

    # -- serialization --------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        self._require_fitted()
        data = header(KIND)
        data.update(
            M=self.M,
            nbits=self.nbits,
            seed=self.seed,
            niter=self.niter,
            dim=self.dim,
            codebooks=array_to_b64(self.codebooks),
        )
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProductQuantizer:
        check_header(data, KIND)
        codec = cls(data["M"], data["nbits"], data["seed"], data["niter"])
        codebooks = b64_to_array(data["codebooks"]).astype(np.float32)
        if codebooks.ndim != 3 or codebooks.shape[:2] != (codec.M, codec.ksub):
            raise ValueError(f"pq: codebooks shape {codebooks.shape} does not match M and nbits")
        codec.codebooks = codebooks
        if codec.dim != data["dim"]:
            raise ValueError(f"pq: codebooks give dimension {codec.dim}, dict says {data['dim']}")
        return codec

    def _check_codes(self, codes: Any) -> np.ndarray:
        self._require_fitted()
        codes = np.asarray(codes)
        if codes.dtype != np.uint8 or codes.ndim != 2 or codes.shape[1] != self.M:
            raise ValueError(f"codes must be uint8 [n, {self.M}], got {codes.dtype} {codes.shape}")
        if self.ksub < 256 and codes.size and int(codes.max()) >= self.ksub:
            raise ValueError(f"codes hold ids >= {self.ksub} (nbits={self.nbits})")
        return codes

    def _require_fitted(self) -> None:
        if self.codebooks is None:
            raise ValueError("ProductQuantizer is not fitted: call fit(sample) first")
