# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False, nonecheck=False
"""Compiled rescoring kernels. Call them through `osneural.cython_ext`, which validates inputs.

Every entry point here trusts its arguments (C-contiguous, shapes consistent, offsets monotone,
codes in range): the checks live once in the Python wrappers so the loops below stay free of
Python objects and can release the GIL.

MaxSim is computed as an outer product with the *query* on the vector side: a SIMD register holds
16 query tokens, the document token's component is broadcast, so the running max over document
tokens is a plain element-wise max and no transpose or horizontal reduction sits in the hot loop.
The document side needs no packing, which is why this beats "GEMM then reduceat": that path writes
and re-reads the whole [Q, T] score matrix, we never materialise it.
"""

import numpy as np

cimport numpy as cnp
from cython.parallel cimport parallel, prange
from libc.stdint cimport int8_t, int32_t, int64_t, uint8_t, uint16_t

cnp.import_array()

cdef extern from "_kernels_impl.h":
    int osn_max_threads() nogil
    int osn_openmp_enabled() nogil
    void* osn_amalloc(size_t n) nogil
    void osn_afree(void* p) nogil
    void osn_f16_to_f32(const uint16_t* src, float* dst, int64_t n) nogil
    void osn_i8_to_f32(const int8_t* src, const float* scale, float* dst, int64_t rows, int64_t D) nogil
    void osn_pq_decode(const uint8_t* codes, const float* cb, int64_t rows, int64_t M,
                       int64_t K, int64_t dsub, float* dst) nogil
    void osn_bits_decode(const uint8_t* bits, int64_t nb, const float* byte_lut, int per_byte,
                         const float* cents, const int32_t* cids, const float* scales,
                         int64_t rows, int64_t D, float* dst) nogil
    void osn_maxsim_chunk(const float* qT, int64_t D, int nv, const float* t, int64_t L,
                          float* vmax, int* bad) nogil
    void osn_pq_lut_chunk(const float* lutT, int64_t M, int64_t K, int nv, const uint8_t* codes,
                          int64_t L, float* vmax, int* bad) nogil
    void osn_pq_adc(const uint8_t* codes, const float* lut, int64_t n0, int64_t n1, int64_t M,
                    int64_t K, float* out) nogil
    void osn_hamming_words(const uint8_t* q, const uint8_t* codes, int64_t n0, int64_t n1,
                           int64_t nb, int32_t* out) nogil
    void osn_hamming_bytes(const uint8_t* q, const uint8_t* codes, int64_t n0, int64_t n1,
                           int64_t nb, int32_t* out) nogil


cdef enum:
    # Documents are converted (f16, int8, PQ decode) in pieces of this many tokens, so the
    # float32 scratch stays in L1/L2 whatever the document length.
    PIECE = 64
    # Rows per parallel work item for the flat scans (PQ ADC, Hamming): large enough to amortise
    # scheduling, small enough to balance two cores.
    BLOCK = 4096

cdef enum DocKind:
    KIND_F32 = 0
    KIND_F16 = 1
    KIND_I8 = 2
    KIND_PQ_DECODE = 3
    KIND_BITS = 4


cdef struct BitsSpec:
    # Bit-coded tokens (KIND_BITS): nb bytes per token, per_byte dimensions per byte, the bucket
    # weights of every byte value, and optional centroids (cents [C][D], cids [T]).
    int64_t nb
    int per_byte
    const float* byte_lut
    const float* cents
    const int32_t* cids


def max_threads() -> int:
    """Threads a parallel kernel uses when `n_threads` is None (OpenMP's default, 1 if serial build)."""
    return osn_max_threads()


def openmp_enabled() -> bool:
    """Whether this build was compiled with OpenMP (False: every kernel runs on one core)."""
    return bool(osn_openmp_enabled())


cdef int _threads(object n_threads) except -1:
    if n_threads is None:
        return osn_max_threads()
    cdef int n = n_threads
    if n < 1:
        raise ValueError(f"n_threads must be >= 1, got {n}")
    return n


cdef inline int _chunk_nv(int64_t Q, int64_t c) noexcept nogil:
    """Query vectors (of 16 tokens) in chunk c; chunks hold 32 query tokens, the last maybe 16."""
    return 2 if Q - 32 * c > 16 else 1


cdef inline int _tile_mode(int64_t Q, int64_t c) noexcept nogil:
    """How the float32 microkernel runs chunk c: 1 (16 lanes), 2 (32) or 3 (16 + 8 lanes for a
    chunk of 17-24 tokens, in the same 32-lane layout: no multiply-adds on 8 padding lanes)."""
    cdef int nv = _chunk_nv(Q, c)
    return 3 if nv == 2 and Q - 32 * c <= 24 else nv


def pack_query(const float[:, ::1] query):
    """Query chunks transposed and zero-padded: chunk c is [D][16*nv] at offset c*D*32.

    Returned as a flat float32 array; the kernels copy it into an aligned buffer once per call.
    """
    cdef int64_t Q = query.shape[0], D = query.shape[1]
    cdef int64_t nch = (Q + 31) // 32, c, i, d, W, base
    out = np.zeros(max(nch, 1) * D * 32, dtype=np.float32)
    cdef float[::1] o = out
    for c in range(nch):
        W = 16 * _chunk_nv(Q, c)
        base = c * D * 32
        for i in range(32 * c, min(Q, 32 * c + W)):
            for d in range(D):
                o[base + d * W + (i - 32 * c)] = query[i, d]
    return out


cdef void _finish_score(const float* vmax, int64_t Q, int64_t nch, float* score) noexcept nogil:
    cdef int64_t c, i, lanes
    cdef float s = 0
    for c in range(nch):
        lanes = min(Q - 32 * c, 32)
        for i in range(lanes):
            s = s + vmax[c * 32 + i]
    score[0] = s


cdef int _maxsim_impl(const float* qT, int64_t Q, int64_t D, int kind, const void* docs,
                      const float* scales, const int64_t* offsets, int64_t N,
                      const float* codebooks, int64_t M, int64_t K, int64_t dsub,
                      const BitsSpec* bits, float* out, int nthreads) noexcept nogil:
    """Returns the index of a document with a non-finite dot product, -2 when scratch allocation
    failed, or -1."""
    cdef int64_t nch = (Q + 31) // 32
    cdef int64_t n, p, L, start, c, i, take
    cdef int64_t first_bad[1]
    cdef float* vmax
    cdef float* buf
    cdef const float* src
    cdef int bad
    cdef int nv
    first_bad[0] = -1
    with parallel(num_threads=nthreads):
        vmax = <float*>osn_amalloc(nch * 32 * sizeof(float))
        buf = <float*>osn_amalloc(PIECE * (D if kind != KIND_PQ_DECODE else M * dsub) * sizeof(float) + 64)
        for n in prange(N, schedule="dynamic", chunksize=8):
            if vmax == NULL or buf == NULL:
                first_bad[0] = -2  # out of memory: reported as MemoryError by the caller
                continue
            start = offsets[n]
            L = offsets[n + 1] - start
            if L == 0:
                out[n] = 0
                continue
            for i in range(nch * 32):
                vmax[i] = -3.4028234663852886e38
            bad = 0
            p = 0
            while p < L:
                if kind == KIND_F32:
                    take = L
                    src = (<const float*>docs) + (start + p) * D
                else:
                    take = min(PIECE, L - p)
                    if kind == KIND_F16:
                        osn_f16_to_f32((<const uint16_t*>docs) + (start + p) * D, buf, take * D)
                    elif kind == KIND_I8:
                        osn_i8_to_f32((<const int8_t*>docs) + (start + p) * D, scales + start + p,
                                      buf, take, D)
                    elif kind == KIND_BITS:
                        osn_bits_decode((<const uint8_t*>docs) + (start + p) * bits.nb, bits.nb,
                                        bits.byte_lut, bits.per_byte, bits.cents,
                                        bits.cids + start + p if bits.cids != NULL else NULL,
                                        scales + start + p if scales != NULL else NULL,
                                        take, D, buf)
                    else:
                        osn_pq_decode((<const uint8_t*>docs) + (start + p) * M, codebooks, take,
                                      M, K, dsub, buf)
                    src = buf
                for c in range(nch):
                    nv = _tile_mode(Q, c)
                    osn_maxsim_chunk(qT + c * D * 32, D, nv, src, take, vmax + c * 32, &bad)
                p = p + take
            if bad:
                first_bad[0] = n
            _finish_score(vmax, Q, nch, out + n)
        osn_afree(vmax)
        osn_afree(buf)
    return first_bad[0]


cdef float* _aligned_copy(const float[::1] src) except NULL:
    cdef float* p = <float*>osn_amalloc(max(src.shape[0], 1) * sizeof(float))
    if p == NULL:
        raise MemoryError()
    cdef int64_t i
    for i in range(src.shape[0]):
        p[i] = src[i]
    return p


cdef _maxsim_dispatch(const float[:, ::1] query, int kind, const void* docs, const float* scales,
                      const int64_t[::1] offsets, const float* codebooks, int64_t M, int64_t K,
                      int64_t dsub, int nthreads, const BitsSpec* bits=NULL):
    cdef int64_t Q = query.shape[0], D = query.shape[1], N = offsets.shape[0] - 1
    out = np.zeros(N, dtype=np.float32)
    if N == 0 or Q == 0:
        return out, -1
    cdef float[::1] o = out
    cdef float* qT = _aligned_copy(pack_query(query))
    cdef int64_t bad
    try:
        with nogil:
            bad = _maxsim_impl(qT, Q, D, kind, docs, scales, &offsets[0], N, codebooks, M, K, dsub,
                               bits, &o[0], nthreads)
    finally:
        osn_afree(qT)
    return out, bad


def maxsim_f32(const float[:, ::1] query, const float[:, ::1] docs, const int64_t[::1] offsets,
               int nthreads):
    """Trusting kernel; returns (scores, index of a non-finite document or -1)."""
    return _maxsim_dispatch(query, KIND_F32, &docs[0, 0] if docs.shape[0] else NULL, NULL,
                            offsets, NULL, 0, 0, 0, nthreads)


def maxsim_f16(const float[:, ::1] query, const uint16_t[:, ::1] docs, const int64_t[::1] offsets,
               int nthreads):
    return _maxsim_dispatch(query, KIND_F16, &docs[0, 0] if docs.shape[0] else NULL, NULL,
                            offsets, NULL, 0, 0, 0, nthreads)


def maxsim_i8(const float[:, ::1] query, const int8_t[:, ::1] docs, const float[::1] scales,
              const int64_t[::1] offsets, int nthreads):
    return _maxsim_dispatch(query, KIND_I8, &docs[0, 0] if docs.shape[0] else NULL,
                            &scales[0] if scales.shape[0] else NULL, offsets, NULL, 0, 0, 0,
                            nthreads)


def maxsim_pq_decode(const float[:, ::1] query, const uint8_t[:, ::1] codes,
                     const int64_t[::1] offsets, const float[:, :, ::1] codebooks, int nthreads):
    """PQ MaxSim by decoding each piece of tokens to float32, then the float32 microkernel."""
    return _maxsim_dispatch(query, KIND_PQ_DECODE, &codes[0, 0] if codes.shape[0] else NULL, NULL,
                            offsets, &codebooks[0, 0, 0], codebooks.shape[0], codebooks.shape[1],
                            codebooks.shape[2], nthreads)


def maxsim_bits(const float[:, ::1] query, const uint8_t[:, ::1] codes, const float[:, ::1] byte_lut,
                const int64_t[::1] offsets, const float[::1] scales, const float[:, ::1] centroids,
                const int32_t[::1] cids, int nthreads):
    """MaxSim over bit-coded tokens (codes [T, nb], byte_lut [256, 8 / nbits]); empty `scales`,
    `centroids` or `cids` mean none. Decodes pieces of tokens, then the float32 microkernel."""
    cdef BitsSpec spec
    spec.nb = codes.shape[1]
    spec.per_byte = byte_lut.shape[1]
    spec.byte_lut = &byte_lut[0, 0]
    spec.cents = &centroids[0, 0] if centroids.shape[0] else NULL
    spec.cids = &cids[0] if cids.shape[0] else NULL
    return _maxsim_dispatch(query, KIND_BITS, &codes[0, 0] if codes.shape[0] else NULL,
                            &scales[0] if scales.shape[0] else NULL, offsets, NULL, 0, 0, 0,
                            nthreads, &spec)


def project(const float[:, ::1] x, const float[:, ::1] basis_t):
    """x [n, D] @ basis_t [D, K] -> float32 [n, K] on the calling thread.

    For a query's few tokens before a projected MaxSim: a BLAS call this small still wakes the
    BLAS library's thread pool, whose spinning threads then compete with the kernel's OpenMP
    threads for the cores (8 ms instead of 0.8 ms per window on two cores). The inner loop is an
    axpy over K, which the compiler vectorizes."""
    cdef int64_t n = x.shape[0], D = x.shape[1], K = basis_t.shape[1], i, d, k
    out = np.zeros((n, K), dtype=np.float32)
    if n == 0 or K == 0:
        return out
    cdef float[:, ::1] o = out
    cdef float* row
    cdef const float* b
    cdef float v
    with nogil:
        for i in range(n):
            row = &o[i, 0]
            for d in range(D):
                v = x[i, d]
                b = &basis_t[d, 0]
                for k in range(K):
                    row[k] += v * b[k]
    return out


def pack_lut(const float[:, :, ::1] lut):
    """[Q, M, K] per-query-token tables to chunked [c][M][K][16*nv] layout (query innermost)."""
    cdef int64_t Q = lut.shape[0], M = lut.shape[1], K = lut.shape[2]
    cdef int64_t nch = (Q + 31) // 32, c, i, m, k, W, base
    out = np.zeros(max(nch, 1) * M * K * 32, dtype=np.float32)
    cdef float[::1] o = out
    for c in range(nch):
        W = 16 * _chunk_nv(Q, c)
        base = c * M * K * 32
        for i in range(32 * c, min(Q, 32 * c + W)):
            for m in range(M):
                for k in range(K):
                    o[base + (m * K + k) * W + (i - 32 * c)] = lut[i, m, k]
    return out


def maxsim_pq_lut(const float[:, :, ::1] lut, const uint8_t[:, ::1] codes,
                  const int64_t[::1] offsets, int nthreads):
    """PQ MaxSim from per-query-token lookup tables lut [Q, M, K]: M table adds per token."""
    cdef int64_t Q = lut.shape[0], M = lut.shape[1], K = lut.shape[2], N = offsets.shape[0] - 1
    cdef int64_t nch = (Q + 31) // 32
    out = np.zeros(N, dtype=np.float32)
    if N == 0 or Q == 0:
        return out, -1
    cdef float[::1] o = out
    cdef float* lutT = _aligned_copy(pack_lut(lut))
    cdef const uint8_t* cp = &codes[0, 0] if codes.shape[0] else NULL
    cdef const int64_t* off = &offsets[0]
    cdef int64_t n, c, i, start, L
    cdef int64_t first_bad[1]
    cdef float* vmax
    cdef int bad
    first_bad[0] = -1
    try:
        with nogil, parallel(num_threads=nthreads):
            vmax = <float*>osn_amalloc(nch * 32 * sizeof(float))
            for n in prange(N, schedule="dynamic", chunksize=8):
                if vmax == NULL:
                    first_bad[0] = -2
                    continue
                start = off[n]
                L = off[n + 1] - start
                if L == 0:
                    o[n] = 0
                    continue
                for i in range(nch * 32):
                    vmax[i] = -3.4028234663852886e38
                bad = 0
                for c in range(nch):
                    osn_pq_lut_chunk(lutT + c * M * K * 32, M, K, _chunk_nv(Q, c), cp + start * M,
                                     L, vmax + c * 32, &bad)
                if bad:
                    first_bad[0] = n
                _finish_score(vmax, Q, nch, &o[n])
            osn_afree(vmax)
    finally:
        osn_afree(lutT)
    return out, first_bad[0]


def pq_adc(const uint8_t[:, ::1] codes, const float[:, ::1] lut, int nthreads):
    """Sum of M table lookups per code row."""
    cdef int64_t N = codes.shape[0], M = codes.shape[1], K = lut.shape[1]
    out = np.empty(N, dtype=np.float32)
    if N == 0:
        return out
    if M == 0:
        out[:] = 0
        return out
    cdef float[::1] o = out
    cdef int64_t b, nblocks = (N + BLOCK - 1) // BLOCK
    cdef const uint8_t* cp = &codes[0, 0]
    cdef const float* lp = &lut[0, 0]
    for b in prange(nblocks, nogil=True, num_threads=nthreads, schedule="static"):
        osn_pq_adc(cp, lp, b * BLOCK, min(N, (b + 1) * BLOCK), M, K, &o[0])
    return out


def hamming_distances(const uint8_t[::1] query, const uint8_t[:, ::1] codes, int nthreads):
    """Popcount of XOR per row: 64-bit words when the width is a multiple of 8 bytes."""
    cdef int64_t N = codes.shape[0], nb = codes.shape[1]
    out = np.zeros(N, dtype=np.int32)
    if N == 0 or nb == 0:
        return out
    cdef int32_t[::1] o = out
    cdef int64_t b, nblocks = (N + BLOCK - 1) // BLOCK
    cdef const uint8_t* cp = &codes[0, 0]
    cdef const uint8_t* qp = &query[0]
    cdef bint words = nb % 8 == 0
    for b in prange(nblocks, nogil=True, num_threads=nthreads, schedule="static"):
        if words:
            osn_hamming_words(qp, cp, b * BLOCK, min(N, (b + 1) * BLOCK), nb, &o[0])
        else:
            osn_hamming_bytes(qp, cp, b * BLOCK, min(N, (b + 1) * BLOCK), nb, &o[0])
    return out


# ---- top-k ---------------------------------------------------------------------------------
# A min-heap of the k best seen so far, ordered so that the root is the *worst* kept entry:
# lower score is worse, and at equal score the higher index is worse (ties go to lower index).

cdef inline bint _worse(const float* s, int64_t a, int64_t b) noexcept nogil:
    return s[a] < s[b] or (s[a] == s[b] and a > b)


cdef void _sift_down(int64_t* heap, int64_t size, int64_t pos, const float* s) noexcept nogil:
    cdef int64_t child, item = heap[pos]
    while True:
        child = 2 * pos + 1
        if child >= size:
            break
        if child + 1 < size and _worse(s, heap[child + 1], heap[child]):
            child += 1
        if not _worse(s, heap[child], item):
            break
        heap[pos] = heap[child]
        pos = child
    heap[pos] = item


def topk(const float[::1] scores, int64_t k):
    """Indices of the k highest scores, best first, ties by lower index (k <= N assumed)."""
    cdef int64_t N = scores.shape[0], i, size, tmp
    out = np.empty(k, dtype=np.int64)
    if k == 0:
        return out
    cdef int64_t[::1] heap = out
    cdef const float* s = &scores[0]
    with nogil:
        for i in range(k):
            heap[i] = i
        i = k // 2
        while i > 0:
            i -= 1
            _sift_down(&heap[0], k, i, s)
        for i in range(k, N):
            # Scanning in index order, an equal score never beats the root (it has a higher index).
            if s[i] > s[heap[0]]:
                heap[0] = i
                _sift_down(&heap[0], k, 0, s)
        # Heap-sort in place: repeatedly move the worst to the end, so the array ends best first.
        size = k
        while size > 1:
            size -= 1
            tmp = heap[0]
            heap[0] = heap[size]
            heap[size] = tmp
            _sift_down(&heap[0], size, 0, s)
    return out
