/* CSR products for the executor's pruned FC layers (thesis eq. 2.19-2.23).
 *
 * Compiled on the machine that runs it by native.py (cc -O3 -march=native),
 * loaded with ctypes, which releases the GIL during the call, so Python
 * worker threads run disjoint row ranges in parallel.
 *
 * The matrix A (rows = output neurons) keeps the dtypes the blob stores:
 * fp16 or fp32 values, uint16 or int32 column indices. Reading 4 bytes per
 * non-zero instead of SciPy's 8 (fp32 + int32) halves the memory traffic of
 * a batch-1 FC layer. Sums are fp32 (STYLE.md, Numerics: fp16 storage,
 * fp32 accumulation).
 *
 * x is stored transposed, xt[column * m + j] for image j of m, and so is
 * the result, yt[row * m + j]: for every non-zero the m inputs it touches
 * are contiguous.
 *
 * Speed (measured on the 2-core x86 box, a 4096 x 25088 matrix at 5 %):
 * a scalar loop spends ~1.3 ns per non-zero, most of it converting one fp16
 * at a time; SciPy's single-accumulator loop ~1.5 ns. Eight lanes at once
 * (F16C conversion, AVX2 gather, two FMA chains) take ~0.4 ns. Without
 * AVX2/F16C (the Jetson's ARM cores convert fp16 in one instruction) the
 * portable loop below is used, with four chains to hide the FMA latency.
 */
#include <stdint.h>

#if defined(__AVX2__) && defined(__F16C__) && defined(__FMA__)
#include <immintrin.h>
#define FJ_AVX2 1
#endif

typedef _Float16 half;

#ifdef FJ_AVX2
static inline __m256 load8_half(const half *p) {
  return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
}
static inline __m256 load8_float(const float *p) { return _mm256_loadu_ps(p); }
static inline __m256i load8_uint16_t(const uint16_t *p) {
  return _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
}
static inline __m256i load8_int32_t(const int32_t *p) {
  return _mm256_loadu_si256((const __m256i *)p);
}
static inline float sum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
/* Dot product of one row with x: 16 non-zeros per step in two chains. */
#define ROW_DOT(VALUE, INDEX)                                                 \
  __m256 c0 = _mm256_setzero_ps(), c1 = _mm256_setzero_ps();                 \
  for (; k + 16 <= end; k += 16) {                                           \
    c0 = _mm256_fmadd_ps(load8_##VALUE(data + k),                            \
                         _mm256_i32gather_ps(xt, load8_##INDEX(indices + k), \
                                             4), c0);                        \
    c1 = _mm256_fmadd_ps(load8_##VALUE(data + k + 8),                        \
                         _mm256_i32gather_ps(                                \
                             xt, load8_##INDEX(indices + k + 8), 4), c1);    \
  }                                                                          \
  float acc = sum8(_mm256_add_ps(c0, c1));
#else
#define ROW_DOT(VALUE, INDEX)                                                 \
  float a1 = 0.0f, a2 = 0.0f, a3 = 0.0f, acc = 0.0f;                         \
  for (; k + 4 <= end; k += 4) {                                             \
    acc += (float)data[k] * xt[indices[k]];                                  \
    a1 += (float)data[k + 1] * xt[indices[k + 1]];                           \
    a2 += (float)data[k + 2] * xt[indices[k + 2]];                           \
    a3 += (float)data[k + 3] * xt[indices[k + 3]];                           \
  }                                                                          \
  acc += (a1 + a2) + a3;
#endif

/* Values to fp32, a chunk at a time, for the batched loop. */
static inline void widen_half(const half *src, float *dst, int64_t n) {
  int64_t i = 0;
#ifdef FJ_AVX2
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, load8_half(src + i));
#endif
  for (; i < n; ++i) dst[i] = (float)src[i];
}
static inline void widen_float(const float *src, float *dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = src[i];
}

#define CHUNK 64 /* Non-zeros widened at once (a 256-byte stack buffer). */
#define LANES 8  /* Images per register block; the caller pads m to it. */

/* NAME(indptr, indices, data, row0, row1, xt, m, yt): rows [row0, row1).
 * m == 1: one dot product per row. m > 1: m must be a multiple of LANES;
 * each row keeps LANES sums in registers while it walks its non-zeros. */
#define CSR_KERNEL(NAME, VALUE, INDEX)                                       \
  void NAME(const int64_t *indptr, const INDEX *indices, const VALUE *data,  \
            int64_t row0, int64_t row1, const float *xt, int64_t m,          \
            float *yt) {                                                     \
    if (m == 1) {                                                            \
      for (int64_t r = row0; r < row1; ++r) {                                \
        int64_t k = indptr[r];                                               \
        const int64_t end = indptr[r + 1];                                   \
        ROW_DOT(VALUE, INDEX)                                                \
        for (; k < end; ++k) acc += (float)data[k] * xt[indices[k]];         \
        yt[r] = acc;                                                         \
      }                                                                      \
      return;                                                                \
    }                                                                        \
    float v[CHUNK];                                                          \
    for (int64_t r = row0; r < row1; ++r) {                                  \
      const int64_t start = indptr[r], end = indptr[r + 1];                  \
      for (int64_t j0 = 0; j0 < m; j0 += LANES) {                            \
        float acc[LANES] = {0.0f};                                           \
        for (int64_t k0 = start; k0 < end; k0 += CHUNK) {                    \
          const int64_t n = end - k0 < CHUNK ? end - k0 : CHUNK;             \
          widen_##VALUE(data + k0, v, n);                                    \
          for (int64_t i = 0; i < n; ++i) {                                  \
            const float *x = xt + (int64_t)indices[k0 + i] * m + j0;         \
            for (int j = 0; j < LANES; ++j) acc[j] += v[i] * x[j];           \
          }                                                                  \
        }                                                                    \
        for (int j = 0; j < LANES; ++j) yt[r * m + j0 + j] = acc[j];         \
      }                                                                      \
    }                                                                        \
  }

CSR_KERNEL(csr_f16_u16, half, uint16_t)
CSR_KERNEL(csr_f16_i32, half, int32_t)
CSR_KERNEL(csr_f32_u16, float, uint16_t)
CSR_KERNEL(csr_f32_i32, float, int32_t)
