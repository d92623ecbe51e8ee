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

cdef extern from *:
    """
    #include <stdint.h>
    #include <stdlib.h>
    #include <string.h>
    #ifdef _OPENMP
    #include <omp.h>
    static int osn_max_threads(void) { return omp_get_max_threads(); }
    #else
    static int osn_max_threads(void) { return 1; }
    #endif

    /* 64-byte aligned allocation without posix_memalign so it also builds on Windows. */
    static void* osn_amalloc(size_t n) {
        unsigned char* raw = (unsigned char*)malloc(n + 64 + sizeof(void*));
        if (!raw) return NULL;
        uintptr_t p = ((uintptr_t)(raw + sizeof(void*)) + 63) & ~(uintptr_t)63;
        ((void**)p)[-1] = raw;
        return (void*)p;
    }
    static void osn_afree(void* p) { if (p) free(((void**)p)[-1]); }

    /* ---- half -> float ------------------------------------------------------------------ */
    static inline float osn_half_bits_to_float(uint16_t h) {
        uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
        uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu, bits;
        if (exp == 0) {
            if (man == 0) { bits = sign; }
            else { /* subnormal: renormalise */
                int e = -1;
                do { e++; man <<= 1; } while (!(man & 0x400u));
                bits = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3ffu) << 13);
            }
        } else if (exp == 31) { bits = sign | 0x7f800000u | (man << 13); }
        else { bits = sign | ((exp + 112u) << 23) | (man << 13); }
        float f; memcpy(&f, &bits, 4); return f;
    }
    static void osn_f16_to_f32(const uint16_t* src, float* dst, int64_t n) {
    #if defined(__FLT16_MAX__) && !defined(__cplusplus)
        const _Float16* s = (const _Float16*)src;
        for (int64_t i = 0; i < n; i++) dst[i] = (float)s[i];
    #else
        for (int64_t i = 0; i < n; i++) dst[i] = osn_half_bits_to_float(src[i]);
    #endif
    }
    /* int8 rows times a per-row scale: the scale commutes with the dot product. */
    static void osn_i8_to_f32(const int8_t* src, const float* scale, float* dst, int64_t rows, int64_t D) {
        for (int64_t r = 0; r < rows; r++) {
            const float s = scale[r];
            const int8_t* a = src + r * D; float* o = dst + r * D;
            for (int64_t d = 0; d < D; d++) o[d] = s * (float)a[d];
        }
    }
    static void osn_pq_decode(const uint8_t* codes, const float* cb, int64_t rows, int64_t M,
                              int64_t K, int64_t dsub, float* dst) {
        for (int64_t r = 0; r < rows; r++)
            for (int64_t m = 0; m < M; m++)
                memcpy(dst + (r * M + m) * dsub, cb + (m * K + codes[r * M + m]) * dsub,
                       (size_t)dsub * sizeof(float));
    }

    /* ---- MaxSim microkernel --------------------------------------------------------------
       qT: one query chunk, transposed and padded, [D][16*nv] floats, 64-byte aligned.
       vmax: [16*nv] running max per query lane; bad: set when a dot product is not finite. */
    #if (defined(__GNUC__) || defined(__clang__)) && !defined(OSN_NO_VECTOR_EXT)
    typedef float osn_vf __attribute__((vector_size(64)));
    typedef int32_t osn_vi __attribute__((vector_size(64)));
    #if defined(__AVX512F__)
    #define OSN_TB 8   /* 8 doc tokens x 2 query vectors = 16 of the 32 zmm registers */
    #else
    #define OSN_TB 3   /* 6 accumulators of 2 ymm each fit the 16 ymm registers */
    #endif
    #define OSN_INLINE static inline __attribute__((always_inline))

    OSN_INLINE osn_vf osn_vmax(osn_vf a, osn_vf b) {
        osn_vi m = a > b;
        return (osn_vf)((m & (osn_vi)a) | (~m & (osn_vi)b));
    }

    OSN_INLINE void osn_tile(const float* __restrict qT, int64_t D, const float* __restrict t,
                             const int tb, const int nv, osn_vf* __restrict vmax, osn_vi* bad) {
        osn_vf acc[OSN_TB][2];
        const osn_vf zero = {0};
    #pragma GCC unroll 8
        for (int u = 0; u < tb; u++) { acc[u][0] = zero; acc[u][1] = zero; }
        for (int64_t d = 0; d < D; d++) {
            const osn_vf* qd = (const osn_vf*)(qT + d * 16 * nv);
            const osn_vf q0 = qd[0];
            const osn_vf q1 = nv > 1 ? qd[1] : zero;
    #pragma GCC unroll 8
            for (int u = 0; u < tb; u++) {
                const float b = t[u * D + d];
                acc[u][0] += b * q0;
                if (nv > 1) acc[u][1] += b * q1;
            }
        }
    #pragma GCC unroll 8
        for (int u = 0; u < tb; u++) {
            for (int v = 0; v < nv; v++) {
                vmax[v] = osn_vmax(vmax[v], acc[u][v]);
                *bad |= ((acc[u][v] - acc[u][v]) != zero);  /* inf - inf and NaN are NaN */
            }
        }
    }

    /* Score tokens t[0..L) against one query chunk; vmax (16*nv floats, aligned) is updated. */
    static void osn_maxsim_chunk(const float* qT, int64_t D, int nv, const float* t, int64_t L,
                                 float* vmax_f, int* bad_out) {
        osn_vf vmax[2];
        osn_vi bad = {0};
        vmax[0] = ((osn_vf*)vmax_f)[0];
        vmax[1] = nv > 1 ? ((osn_vf*)vmax_f)[1] : vmax[0];
        int64_t j = 0;
        if (nv == 2) {
            for (; j + OSN_TB <= L; j += OSN_TB) osn_tile(qT, D, t + j * D, OSN_TB, 2, vmax, &bad);
            for (; j < L; j++) osn_tile(qT, D, t + j * D, 1, 2, vmax, &bad);
        } else {
            for (; j + OSN_TB <= L; j += OSN_TB) osn_tile(qT, D, t + j * D, OSN_TB, 1, vmax, &bad);
            for (; j < L; j++) osn_tile(qT, D, t + j * D, 1, 1, vmax, &bad);
        }
        ((osn_vf*)vmax_f)[0] = vmax[0];
        if (nv > 1) ((osn_vf*)vmax_f)[1] = vmax[1];
        for (int i = 0; i < 16; i++) if (bad[i]) { *bad_out = 1; break; }
    }

    /* PQ MaxSim by lookup: lutT is [M][K][16*nv]; one token costs M*nv vector adds. */
    OSN_INLINE void osn_pq_tile(const float* __restrict lutT, int64_t M, int64_t K,
                                const uint8_t* __restrict c, const int tb, const int nv,
                                osn_vf* __restrict vmax, osn_vi* bad) {
        osn_vf acc[4][2];
        const osn_vf zero = {0};
        const int64_t W = 16 * nv;
    #pragma GCC unroll 4
        for (int u = 0; u < tb; u++) { acc[u][0] = zero; acc[u][1] = zero; }
        for (int64_t m = 0; m < M; m++) {
            const float* lm = lutT + m * K * W;
    #pragma GCC unroll 4
            for (int u = 0; u < tb; u++) {
                const osn_vf* row = (const osn_vf*)(lm + (int64_t)c[u * M + m] * W);
                acc[u][0] += row[0];
                if (nv > 1) acc[u][1] += row[1];
            }
        }
    #pragma GCC unroll 4
        for (int u = 0; u < tb; u++)
            for (int v = 0; v < nv; v++) {
                vmax[v] = osn_vmax(vmax[v], acc[u][v]);
                *bad |= ((acc[u][v] - acc[u][v]) != zero);
            }
    }

    static void osn_pq_lut_chunk(const float* lutT, int64_t M, int64_t K, int nv,
                                 const uint8_t* codes, int64_t L, float* vmax_f, int* bad_out) {
        osn_vf vmax[2];
        osn_vi bad = {0};
        vmax[0] = ((osn_vf*)vmax_f)[0];
        vmax[1] = nv > 1 ? ((osn_vf*)vmax_f)[1] : vmax[0];
        int64_t j = 0;
        if (nv == 2) {
            for (; j + 4 <= L; j += 4) osn_pq_tile(lutT, M, K, codes + j * M, 4, 2, vmax, &bad);
            for (; j < L; j++) osn_pq_tile(lutT, M, K, codes + j * M, 1, 2, vmax, &bad);
        } else {
            for (; j + 4 <= L; j += 4) osn_pq_tile(lutT, M, K, codes + j * M, 4, 1, vmax, &bad);
            for (; j < L; j++) osn_pq_tile(lutT, M, K, codes + j * M, 1, 1, vmax, &bad);
        }
        ((osn_vf*)vmax_f)[0] = vmax[0];
        if (nv > 1) ((osn_vf*)vmax_f)[1] = vmax[1];
        for (int i = 0; i < 16; i++) if (bad[i]) { *bad_out = 1; break; }
    }
    #else
    /* Portable scalar fallback with the same contract (compilers without vector extensions). */
    static void osn_maxsim_chunk(const float* qT, int64_t D, int nv, const float* t, int64_t L,
                                 float* vmax, int* bad_out) {
        const int W = 16 * nv;
        for (int64_t j = 0; j < L; j++) {
            float acc[32] = {0};
            for (int64_t d = 0; d < D; d++)
                for (int i = 0; i < W; i++) acc[i] += t[j * D + d] * qT[d * W + i];
            for (int i = 0; i < W; i++) {
                if (acc[i] - acc[i] != 0.0f) *bad_out = 1;
                if (acc[i] > vmax[i]) vmax[i] = acc[i];
            }
        }
    }
    static void osn_pq_lut_chunk(const float* lutT, int64_t M, int64_t K, int nv,
                                 const uint8_t* codes, int64_t L, float* vmax, int* bad_out) {
        const int W = 16 * nv;
        for (int64_t j = 0; j < L; j++) {
            float acc[32] = {0};
            for (int64_t m = 0; m < M; m++) {
                const float* row = lutT + (m * K + codes[j * M + m]) * W;
                for (int i = 0; i < W; i++) acc[i] += row[i];
            }
            for (int i = 0; i < W; i++) {
                if (acc[i] - acc[i] != 0.0f) *bad_out = 1;
                if (acc[i] > vmax[i]) vmax[i] = acc[i];
            }
        }
    }
    #endif

    /* ---- PQ asymmetric distance ---------------------------------------------------------- */
    static void osn_pq_adc(const uint8_t* __restrict codes, const float* __restrict lut,
                           int64_t n0, int64_t n1, int64_t M, int64_t K, float* __restrict out) {
        for (int64_t n = n0; n < n1; n++) {
            const uint8_t* c = codes + n * M;
            float s0 = 0.f, s1 = 0.f, s2 = 0.f, s3 = 0.f;
            int64_t m = 0;
            for (; m + 4 <= M; m += 4) {
                s0 += lut[m * K + c[m]];
                s1 += lut[(m + 1) * K + c[m + 1]];
                s2 += lut[(m + 2) * K + c[m + 2]];
                s3 += lut[(m + 3) * K + c[m + 3]];
            }
            for (; m < M; m++) s0 += lut[m * K + c[m]];
            out[n] = (s0 + s1) + (s2 + s3);
        }
    }

    /* ---- Hamming -------------------------------------------------------------------------- */
    static void osn_hamming_words(const uint8_t* __restrict q, const uint8_t* __restrict codes,
                                  int64_t n0, int64_t n1, int64_t nb, int32_t* __restrict out) {
        const int64_t W = nb / 8;
        uint64_t qw[64];
        if (W <= 64) {
            memcpy(qw, q, (size_t)nb);
            if (W == 4) {  /* 256-bit codes: fully unrolled */
                for (int64_t n = n0; n < n1; n++) {
                    uint64_t c[4]; memcpy(c, codes + n * 32, 32);
                    out[n] = __builtin_popcountll(c[0] ^ qw[0]) + __builtin_popcountll(c[1] ^ qw[1])
                           + __builtin_popcountll(c[2] ^ qw[2]) + __builtin_popcountll(c[3] ^ qw[3]);
                }
                return;
            }
            for (int64_t n = n0; n < n1; n++) {
                const uint8_t* row = codes + n * nb;
                int32_t acc = 0;
                for (int64_t w = 0; w < W; w++) {
                    uint64_t c; memcpy(&c, row + 8 * w, 8);
                    acc += __builtin_popcountll(c ^ qw[w]);
                }
                out[n] = acc;
            }
            return;
        }
        for (int64_t n = n0; n < n1; n++) {
            const uint8_t* row = codes + n * nb;
            int32_t acc = 0;
            for (int64_t w = 0; w < W; w++) {
                uint64_t c, a; memcpy(&c, row + 8 * w, 8); memcpy(&a, q + 8 * w, 8);
                acc += __builtin_popcountll(c ^ a);
            }
            out[n] = acc;
        }
    }
    static void osn_hamming_bytes(const uint8_t* __restrict q, const uint8_t* __restrict codes,
                                  int64_t n0, int64_t n1, int64_t nb, int32_t* __restrict out) {
        for (int64_t n = n0; n < n1; n++) {
            const uint8_t* row = codes + n * nb;
            int32_t acc = 0;
            for (int64_t j = 0; j < nb; j++) acc += __builtin_popcount((unsigned)(row[j] ^ q[j]));
            out[n] = acc;
        }
    }
    """
    int osn_max_threads() nogil
    void* osn_amalloc(size_t n) nogil
    void osn_afree(void* p) nogil
    void osn_f16_to_f32(const uint16_t* src, float* dst, int64_t n) nogil
    void osn_i8_to_f32(const int8_t* src, const float* scale, float* dst, int64_t rows, int64_t D) nogil
    void osn_pq_decode(const uint8_t* codes, const float* cb, int64_t rows, int64_t M,
                       int64_t K, int64_t dsub, float* dst) nogil
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


def max_threads() -> int:
    """Threads a parallel kernel uses when `n_threads` is None (OpenMP's default, 1 if serial build)."""
    return osn_max_threads()


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
                      float* out, int nthreads) noexcept nogil:
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
                    else:
                        osn_pq_decode((<const uint8_t*>docs) + (start + p) * M, codebooks, take,
                                      M, K, dsub, buf)
                    src = buf
                for c in range(nch):
                    nv = _chunk_nv(Q, c)
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
                      int64_t dsub, int nthreads):
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
                               &o[0], nthreads)
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
