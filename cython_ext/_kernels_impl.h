/* Raw C behind cython_ext/_kernels.pyx: aligned scratch, float16/int8/PQ decoding, the MaxSim
   microkernels (GCC/Clang vector extensions, scalar fallback), PQ ADC and Hamming scans.
   Kept in a header, as scikit-learn keeps its raw C, so editors, compilers and reviewers read it
   as C; every function is static and trusts its input (the Python wrappers validate). */
#ifndef OSN_KERNELS_IMPL_H
#define OSN_KERNELS_IMPL_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
static int osn_max_threads(void) { return omp_get_max_threads(); }
static int osn_openmp_enabled(void) { return 1; }
#else
static int osn_max_threads(void) { return 1; }
static int osn_openmp_enabled(void) { return 0; }
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
#if defined(__FLT16_MAX__) && !defined(__cplusplus)
#define OSN_DEFINE_F16(NAME, ATTR)                                                               \
ATTR static void NAME(const uint16_t* src, float* dst, int64_t n) {                              \
    const _Float16* s = (const _Float16*)src;                                                    \
    for (int64_t i = 0; i < n; i++) dst[i] = (float)s[i];                                        \
}
#else
#define OSN_DEFINE_F16(NAME, ATTR)                                                               \
ATTR static void NAME(const uint16_t* src, float* dst, int64_t n) {                              \
    for (int64_t i = 0; i < n; i++) dst[i] = osn_half_bits_to_float(src[i]);                     \
}
#endif
#if defined(__x86_64__) && !defined(__F16C__) && (defined(__GNUC__) || defined(__clang__)) \
    && !defined(OSN_NO_DISPATCH)
/* Without F16C each half is widened in software; with it, 8 per instruction. */
OSN_DEFINE_F16(osn_f16_to_f32_base, )
OSN_DEFINE_F16(osn_f16_to_f32_f16c, __attribute__((target("avx2,f16c"))))
static void osn_f16_to_f32(const uint16_t* src, float* dst, int64_t n) {
    static volatile int f16c = -1;
    if (f16c < 0) {
        __builtin_cpu_init();
        f16c = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c");
    }
    if (f16c) osn_f16_to_f32_f16c(src, dst, n); else osn_f16_to_f32_base(src, dst, n);
}
#else
OSN_DEFINE_F16(osn_f16_to_f32, )
#endif
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
    /* Constant-size copies for the common sub-space widths (see osn_bits_decode). */
#define OSN_PQ_ROWS(W)                                                                     \
    for (int64_t r = 0; r < rows; r++)                                                     \
        for (int64_t m = 0; m < M; m++)                                                    \
            memcpy(dst + (r * M + m) * (W), cb + (m * K + codes[r * M + m]) * (W),          \
                   (size_t)(W) * sizeof(float));
    if (dsub == 2) { OSN_PQ_ROWS(2) }
    else if (dsub == 4) { OSN_PQ_ROWS(4) }
    else if (dsub == 8) { OSN_PQ_ROWS(8) }
    else { OSN_PQ_ROWS(dsub) }
#undef OSN_PQ_ROWS
}

/* Bit-coded tokens (1, 2 or 4 bits per dimension, little-endian within a byte: dimension d sits
   at bits (d*b)%8.. of byte d*b/8) -> float32. byte_lut [256][8/b] holds the bucket weights of
   every byte value; a token is centroid[cid] (when cents) + scale (when scales) * weights. */
static void osn_bits_decode(const uint8_t* bits, int64_t nb, const float* byte_lut, int per_byte,
                            const float* cents, const int32_t* cids, const float* scales,
                            int64_t rows, int64_t D, float* dst) {
    const int64_t full = D / per_byte, rest = D - full * per_byte;
    for (int64_t r = 0; r < rows; r++) {
        const uint8_t* b = bits + r * nb;
        float* o = dst + r * D;
        /* A copy of constant size compiles to one vector move; with the size a variable it is a
           call to memcpy per byte of codes, which was most of the bit kernels' time. */
#define OSN_BITS_ROW(W)                                                                    \
        for (int64_t j = 0; j < full; j++)                                                 \
            memcpy(o + j * (W), byte_lut + (int64_t)b[j] * (W), (size_t)(W) * sizeof(float));
        if (per_byte == 4) { OSN_BITS_ROW(4) }
        else if (per_byte == 8) { OSN_BITS_ROW(8) }
        else if (per_byte == 2) { OSN_BITS_ROW(2) }
        else { OSN_BITS_ROW(per_byte) }
#undef OSN_BITS_ROW
        if (rest) memcpy(o + full * per_byte, byte_lut + (int64_t)b[full] * per_byte, (size_t)rest * sizeof(float));
        if (scales) {
            const float s = scales[r];
            for (int64_t d = 0; d < D; d++) o[d] *= s;
        }
        if (cents) {
            const float* c = cents + (int64_t)cids[r] * D;
            for (int64_t d = 0; d < D; d++) o[d] += c[d];
        }
    }
}

/* ---- MaxSim microkernel --------------------------------------------------------------
   qT: one query chunk, transposed and padded, [D][16*nv] floats, 64-byte aligned.
   vmax: [16*nv] running max per query lane; bad: set when a dot product is not finite. */
#if (defined(__GNUC__) || defined(__clang__)) && !defined(OSN_NO_VECTOR_EXT)
typedef float osn_vf __attribute__((vector_size(64)));
typedef int32_t osn_vi __attribute__((vector_size(64)));
#define OSN_TB_MAX 8  /* AVX-512: 8 doc tokens x 2 query vectors = 16 of the 32 zmm registers */
#define OSN_TB_AVX2 3 /* 6 accumulators of 2 ymm each fit the 16 ymm registers */
#if defined(__AVX512F__)
#define OSN_TB OSN_TB_MAX
#else
#define OSN_TB OSN_TB_AVX2
#endif
#define OSN_INLINE static inline __attribute__((always_inline))

OSN_INLINE osn_vf osn_vmax(osn_vf a, osn_vf b) {
    osn_vi m = a > b;
    return (osn_vf)((m & (osn_vi)a) | (~m & (osn_vi)b));
}

OSN_INLINE void osn_tile(const float* __restrict qT, int64_t D, const float* __restrict t,
                         const int tb, const int nv, osn_vf* __restrict vmax, osn_vi* bad) {
    osn_vf acc[OSN_TB_MAX][2];
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

/* The same tile for a chunk of 17-24 query tokens: 16 lanes plus 8, where two full vectors
   would spend a quarter of their multiply-adds on padding (a MiniLM query has about 20 tokens).
   The chunk keeps the 32-lane layout (qT rows of 32 floats, vmax of 32); lanes 24-31 are
   neither computed nor read. */
typedef float osn_vh __attribute__((vector_size(32)));
typedef int32_t osn_vhi __attribute__((vector_size(32)));

OSN_INLINE osn_vh osn_vmaxh(osn_vh a, osn_vh b) {
    osn_vhi m = a > b;
    return (osn_vh)((m & (osn_vhi)a) | (~m & (osn_vhi)b));
}

OSN_INLINE void osn_tile_h(const float* __restrict qT, int64_t D, const float* __restrict t,
                           const int tb, osn_vf* __restrict vmax, osn_vh* __restrict vmaxh,
                           osn_vi* bad, osn_vhi* badh) {
    osn_vf acc[OSN_TB_MAX];
    osn_vh acch[OSN_TB_MAX];
    const osn_vf zero = {0};
    const osn_vh zeroh = {0};
#pragma GCC unroll 8
    for (int u = 0; u < tb; u++) { acc[u] = zero; acch[u] = zeroh; }
    for (int64_t d = 0; d < D; d++) {
        const float* row = qT + d * 32;
        const osn_vf q0 = *(const osn_vf*)row;
        const osn_vh qh = *(const osn_vh*)(row + 16);
#pragma GCC unroll 8
        for (int u = 0; u < tb; u++) {
            const float b = t[u * D + d];
            acc[u] += b * q0;
            acch[u] += b * qh;
        }
    }
#pragma GCC unroll 8
    for (int u = 0; u < tb; u++) {
        *vmax = osn_vmax(*vmax, acc[u]);
        *bad |= ((acc[u] - acc[u]) != zero);
        *vmaxh = osn_vmaxh(*vmaxh, acch[u]);
        *badh |= ((acch[u] - acch[u]) != zeroh);
    }
}

/* Score tokens t[0..L) against one query chunk; vmax (32 floats, aligned) is updated. nv is 1
   (16 lanes), 2 (32) or 3 (16 + 8, osn_tile_h). Defined by a macro so a portable build can
   compile it once per instruction set (below). */
#define OSN_DEFINE_MAXSIM_CHUNK(NAME, ATTR, TB)                                                  \
ATTR static void NAME(const float* qT, int64_t D, int nv, const float* t, int64_t L,            \
                      float* vmax_f, int* bad_out) {                                             \
    osn_vf vmax[2];                                                                              \
    osn_vi bad = {0};                                                                            \
    vmax[0] = ((osn_vf*)vmax_f)[0];                                                              \
    vmax[1] = nv > 1 ? ((osn_vf*)vmax_f)[1] : vmax[0];                                           \
    int64_t j = 0;                                                                               \
    if (nv == 3) {                                                                               \
        osn_vh vmaxh = ((osn_vh*)vmax_f)[2];                                                     \
        osn_vhi badh = {0};                                                                      \
        for (; j + TB <= L; j += TB) osn_tile_h(qT, D, t + j * D, TB, vmax, &vmaxh, &bad, &badh);\
        for (; j < L; j++) osn_tile_h(qT, D, t + j * D, 1, vmax, &vmaxh, &bad, &badh);           \
        ((osn_vf*)vmax_f)[0] = vmax[0];                                                          \
        ((osn_vh*)vmax_f)[2] = vmaxh;                                                            \
        for (int i = 0; i < 8; i++) if (badh[i]) { *bad_out = 1; break; }                        \
        for (int i = 0; i < 16; i++) if (bad[i]) { *bad_out = 1; break; }                        \
        return;                                                                                  \
    }                                                                                            \
    if (nv == 2) {                                                                               \
        for (; j + TB <= L; j += TB) osn_tile(qT, D, t + j * D, TB, 2, vmax, &bad);              \
        for (; j < L; j++) osn_tile(qT, D, t + j * D, 1, 2, vmax, &bad);                         \
    } else {                                                                                     \
        for (; j + TB <= L; j += TB) osn_tile(qT, D, t + j * D, TB, 1, vmax, &bad);              \
        for (; j < L; j++) osn_tile(qT, D, t + j * D, 1, 1, vmax, &bad);                         \
    }                                                                                            \
    ((osn_vf*)vmax_f)[0] = vmax[0];                                                              \
    if (nv > 1) ((osn_vf*)vmax_f)[1] = vmax[1];                                                  \
    for (int i = 0; i < 16; i++) if (bad[i]) { *bad_out = 1; break; }                            \
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

#define OSN_DEFINE_PQ_LUT_CHUNK(NAME, ATTR)                                                      \
ATTR static void NAME(const float* lutT, int64_t M, int64_t K, int nv, const uint8_t* codes,     \
                      int64_t L, float* vmax_f, int* bad_out) {                                  \
    osn_vf vmax[2];                                                                              \
    osn_vi bad = {0};                                                                            \
    vmax[0] = ((osn_vf*)vmax_f)[0];                                                              \
    vmax[1] = nv > 1 ? ((osn_vf*)vmax_f)[1] : vmax[0];                                           \
    int64_t j = 0;                                                                               \
    if (nv == 2) {                                                                               \
        for (; j + 4 <= L; j += 4) osn_pq_tile(lutT, M, K, codes + j * M, 4, 2, vmax, &bad);     \
        for (; j < L; j++) osn_pq_tile(lutT, M, K, codes + j * M, 1, 2, vmax, &bad);             \
    } else {                                                                                     \
        for (; j + 4 <= L; j += 4) osn_pq_tile(lutT, M, K, codes + j * M, 4, 1, vmax, &bad);     \
        for (; j < L; j++) osn_pq_tile(lutT, M, K, codes + j * M, 1, 1, vmax, &bad);             \
    }                                                                                            \
    ((osn_vf*)vmax_f)[0] = vmax[0];                                                              \
    if (nv > 1) ((osn_vf*)vmax_f)[1] = vmax[1];                                                  \
    for (int i = 0; i < 16; i++) if (bad[i]) { *bad_out = 1; break; }                            \
}

#if defined(__x86_64__) && !defined(__AVX2__) && !defined(OSN_NO_DISPATCH)
/* A portable x86-64 build targets SSE2 only, where these loops run about 20x slower than with
   AVX2 + FMA. So the hot loops are compiled three times (baseline, AVX2 + FMA + F16C, AVX-512)
   and the first call picks the best the running CPU supports: one wheel, native speed. */
#define OSN_X86_DISPATCH 1
#define OSN_T_AVX2 __attribute__((target("avx2,fma,f16c")))
#define OSN_T_AVX512 __attribute__((target("avx512f,avx2,fma,f16c")))
OSN_DEFINE_MAXSIM_CHUNK(osn_maxsim_chunk_base, , OSN_TB_AVX2)
OSN_DEFINE_MAXSIM_CHUNK(osn_maxsim_chunk_avx2, OSN_T_AVX2, OSN_TB_AVX2)
OSN_DEFINE_MAXSIM_CHUNK(osn_maxsim_chunk_avx512, OSN_T_AVX512, OSN_TB_MAX)
OSN_DEFINE_PQ_LUT_CHUNK(osn_pq_lut_chunk_base, )
OSN_DEFINE_PQ_LUT_CHUNK(osn_pq_lut_chunk_avx2, OSN_T_AVX2)
OSN_DEFINE_PQ_LUT_CHUNK(osn_pq_lut_chunk_avx512, OSN_T_AVX512)

/* 0 baseline, 1 AVX2 + FMA + F16C, 2 AVX-512F as well. Racing first calls store the same value. */
static int osn_cpu_level(void) {
    static volatile int level = -1;
    if (level < 0) {
        __builtin_cpu_init();
        int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")
                   && __builtin_cpu_supports("f16c");
        level = avx2 ? (__builtin_cpu_supports("avx512f") ? 2 : 1) : 0;
    }
    return level;
}
static void osn_maxsim_chunk(const float* qT, int64_t D, int nv, const float* t, int64_t L,
                             float* vmax_f, int* bad_out) {
    switch (osn_cpu_level()) {
    case 2: osn_maxsim_chunk_avx512(qT, D, nv, t, L, vmax_f, bad_out); break;
    case 1: osn_maxsim_chunk_avx2(qT, D, nv, t, L, vmax_f, bad_out); break;
    default: osn_maxsim_chunk_base(qT, D, nv, t, L, vmax_f, bad_out);
    }
}
static void osn_pq_lut_chunk(const float* lutT, int64_t M, int64_t K, int nv,
                             const uint8_t* codes, int64_t L, float* vmax_f, int* bad_out) {
    switch (osn_cpu_level()) {
    case 2: osn_pq_lut_chunk_avx512(lutT, M, K, nv, codes, L, vmax_f, bad_out); break;
    case 1: osn_pq_lut_chunk_avx2(lutT, M, K, nv, codes, L, vmax_f, bad_out); break;
    default: osn_pq_lut_chunk_base(lutT, M, K, nv, codes, L, vmax_f, bad_out);
    }
}
#else
OSN_DEFINE_MAXSIM_CHUNK(osn_maxsim_chunk, , OSN_TB)
OSN_DEFINE_PQ_LUT_CHUNK(osn_pq_lut_chunk, )
#endif
#else
/* Portable scalar fallback with the same contract (compilers without vector extensions). */
static void osn_maxsim_chunk(const float* qT, int64_t D, int nv, const float* t, int64_t L,
                             float* vmax, int* bad_out) {
    const int W = nv == 1 ? 16 : 32;  /* nv 3 (16 + 8 lanes) keeps the 32-lane layout */
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

#endif /* OSN_KERNELS_IMPL_H */
