"""Plain numpy references for every kernel in `osneural.cython_ext`.

They are deliberately the obvious formulation (decode to float32, one matmul, segment max), so the
property tests compare the compiled kernels against code whose correctness is evident, and the
benchmark compares against the best that numpy alone can do.
"""

from __future__ import annotations

import numpy as np


def decode_tokens(doc_tokens: np.ndarray, scales: np.ndarray | None = None) -> np.ndarray:
    """float32 view of stored tokens: float16 widened, int8 multiplied by its per-token scale."""
    out = np.asarray(doc_tokens).astype(np.float32)
    if scales is not None:
        out *= np.asarray(scales, dtype=np.float32)[:, None]
    return out


def pq_decode(codes: np.ndarray, codebooks: np.ndarray) -> np.ndarray:
    """Concatenate each sub-quantizer's centroid: [T, M] codes -> [T, M * dsub] float32."""
    codes = np.asarray(codes)
    m, _, dsub = codebooks.shape
    m_idx = np.arange(codes.shape[1])[None, :]
    return codebooks[m_idx, codes].reshape(codes.shape[0], m * dsub).astype(np.float32)


def segment_maxsim(sim: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Sum over query tokens of the max over each document's columns of sim [Q, T].

    `np.maximum.reduceat` mis-handles empty segments (it returns the next element), so empty
    documents are masked to the documented score 0.0 afterwards.
    """
    offsets = np.asarray(offsets, dtype=np.int64)
    n = offsets.shape[0] - 1
    out = np.zeros(n, dtype=np.float32)
    if n == 0 or sim.shape[0] == 0 or sim.shape[1] == 0:
        return out
    nonempty = offsets[1:] > offsets[:-1]
    starts = offsets[:-1][nonempty]
    out[nonempty] = np.maximum.reduceat(sim, starts, axis=1).sum(axis=0)
    return out


def maxsim(query: np.ndarray, doc_tokens: np.ndarray, offsets: np.ndarray,
           scales: np.ndarray | None = None) -> np.ndarray:
    """MaxSim by one matmul over all candidate tokens, then a segment max."""
    tokens = decode_tokens(doc_tokens, scales)
    return segment_maxsim(np.asarray(query, dtype=np.float32) @ tokens.T, offsets)


def maxsim_pq(query: np.ndarray, codes: np.ndarray, offsets: np.ndarray,
              codebooks: np.ndarray) -> np.ndarray:
    """MaxSim over PQ-coded tokens: decode to float32, then `maxsim`."""
    return maxsim(query, pq_decode(codes, codebooks), offsets)


def unpack_bits(codes: np.ndarray, nbits: int, dim: int) -> np.ndarray:
    """[T, nb] packed codes -> [T, dim] bucket ids (dimension d at bits (d*nbits) % 8 of byte
    d*nbits // 8, little-endian)."""
    codes = np.asarray(codes, dtype=np.uint8)
    d = np.arange(dim)
    return (codes[:, (d * nbits) // 8] >> ((d * nbits) % 8)) & ((1 << nbits) - 1)


def bits_decode(codes: np.ndarray, nbits: int, dim: int, weights: np.ndarray,
                scales: np.ndarray | None = None, centroids: np.ndarray | None = None,
                centroid_ids: np.ndarray | None = None) -> np.ndarray:
    """centroids[centroid_ids] + scales * weights[bucket], each part only when given."""
    out = np.asarray(weights, dtype=np.float32)[unpack_bits(codes, nbits, dim)]
    if scales is not None:
        out = out * np.asarray(scales, dtype=np.float32)[:, None]
    if centroids is not None:
        out = out + np.asarray(centroids, dtype=np.float32)[np.asarray(centroid_ids)]
    return out.astype(np.float32)


def maxsim_bits(query: np.ndarray, codes: np.ndarray, offsets: np.ndarray, weights: np.ndarray,
                nbits: int, scales: np.ndarray | None = None, centroids: np.ndarray | None = None,
                centroid_ids: np.ndarray | None = None) -> np.ndarray:
    """MaxSim over bit-coded tokens: decode to float32, then `maxsim`."""
    dim = np.asarray(query).shape[1]
    return maxsim(query, bits_decode(codes, nbits, dim, weights, scales, centroids, centroid_ids),
                  offsets)


def pq_lookup_table(query: np.ndarray, codebooks: np.ndarray, metric: str = "ip") -> np.ndarray:
    """[M, K] table: inner product (or squared L2) of each query sub-vector with each centroid."""
    m, k, dsub = codebooks.shape
    sub = np.asarray(query, dtype=np.float32).reshape(m, 1, dsub)
    if metric == "ip":
        return (codebooks * sub).sum(axis=2).astype(np.float32)
    if metric == "l2":
        return ((codebooks - sub) ** 2).sum(axis=2).astype(np.float32)
    raise ValueError(f"metric must be 'ip' or 'l2', got {metric!r}")


def pq_adc(codes: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """Sum over sub-quantizers of lut[m, codes[n, m]]."""
    codes = np.asarray(codes)
    if codes.shape[1] == 0:
        return np.zeros(codes.shape[0], dtype=np.float32)
    return lut[np.arange(codes.shape[1])[None, :], codes].sum(axis=1).astype(np.float32)


def hamming_distances(query: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Bits that differ between the packed query and each packed row."""
    return np.bitwise_count(np.bitwise_xor(codes, query[None, :])).sum(axis=1, dtype=np.int32)


def topk(scores: np.ndarray, k: int) -> np.ndarray:
    """Highest first, ties by lower index."""
    scores = np.asarray(scores)
    order = np.lexsort((np.arange(scores.shape[0]), -scores))
    return order[: min(k, scores.shape[0])].astype(np.int64)
