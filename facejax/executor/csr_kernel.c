/* Sparse products for the executor's pruned FC layers (thesis eq. 2.19-2.23).
 *
 * Compiled on the machine that runs it by native.py (cc -O3 -march=native),
 * loaded with ctypes, which releases the GIL during the call, so Python
 * worker threads run disjoint row ranges in parallel.
 *
 * The matrix A (rows = output neurons) keeps the dtypes the blob stores:
 * fp16 or fp32 values, uint16 or int32 indices. Reading 4 bytes per
 * non-zero instead of SciPy's 8 (fp32 + int32) halves the memory traffic of
 * a batch-1 FC layer. Sums are fp32 (STYLE.md, Numerics: fp16 storage,
 * fp32 accumulation).
 *
 * x is stored transposed, xt[column * m + j] for image j of m, and so is
 * the result, yt[row * m + j]: for every non-zero the m inputs it touches
 * are contiguous.
 *
 * Two layouts of A:
 *
 * CSR (csr_*): one dot product per row, gathering x. Measured on the 2-core
 * x86 box, a 4096 x 25088 matrix at 5 %: a scalar loop spends ~1.3 ns per
 * non-zero, most of it converting one fp16 at a time; eight lanes at once
 * (F16C conversion, AVX2 gather, two FMA chains) take ~0.4 ns.
 *
 * CSC (csc_*, the default): the columns of one row range [row0, row1), so
 * each thread owns its outputs; the row indices are relative to row0. At
 * batch 1 only the columns whose input is non-zero are read (EIE, Han et
 * al. 2016): ReLU leaves 39 %, 49 % and 50 % zeros in the pool5, fc6 and
 * fc7 outputs of the seeded full VGG-16 on real faces (benchmarks/
 * fc_floor.py), so 62 % of the bytes are read. The column's non-zeros are
 * scatter-added into y, which lives in L1/L2. Per non-zero read this costs
 * ~1.6x the CSR gather loop, so CSC wins above ~40 % zero inputs: 1.26x
 * (median) faster on the FC block there, but slower on inputs without
 * zeros.
 *
 * Without AVX2/F16C (the Jetson's ARM cores convert fp16 in one
 * instruction) portable loops are used.
 */
#include <stdint.h>
#include <string.h>

#if defined(__AVX2__) && defined(__F16C__) && defined(__FMA__)
#include <immintrin.h>
#define FJ_AVX2 1
#endif
#if defined(FJ_AVX2) && defined(__AVX512F__) && defined(__AVX512BW__) && \
    defined(__AVX512VL__) && !defined(FJ_NO_AVX512)
#define FJ_AVX512 1
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

/* ---- CSC: the columns of one row range, built at load ------------------ */

/* NAME(indptr, indices, data, row0, row1, columns, colptr, rows, values):
 * rows [row0, row1) of the CSR matrix as CSC, by counting sort (no
 * temporaries: the load's peak memory is the CSC copy itself). Within a
 * column the rows ascend. Values are copied bit for bit. Returns 0, or -1
 * if a column index is out of range (nothing else is then meaningful). */
#define CSC_FROM_CSR(NAME, VALUE, INDEX)                                      \
  int64_t NAME(const int64_t *indptr, const INDEX *indices,                  \
               const VALUE *data, int64_t row0, int64_t row1,                \
               int64_t columns, int64_t *colptr, INDEX *rows,                \
               VALUE *values) {                                              \
    const int64_t start = indptr[row0], end = indptr[row1];                  \
    memset(colptr, 0, (size_t)(columns + 1) * sizeof(int64_t));             \
    for (int64_t k = start; k < end; ++k) {                                  \
      const int64_t c = (int64_t)indices[k];                                 \
      if (c < 0 || c >= columns) return -1;                                  \
      ++colptr[c + 1];                                                       \
    }                                                                        \
    for (int64_t c = 0; c < columns; ++c) colptr[c + 1] += colptr[c];        \
    for (int64_t r = row0; r < row1; ++r)                                    \
      for (int64_t k = indptr[r]; k < indptr[r + 1]; ++k) {                  \
        const int64_t p = colptr[indices[k]]++;                              \
        rows[p] = (INDEX)(r - row0);                                         \
        values[p] = data[k];                                                 \
      }                                                                      \
    for (int64_t c = columns; c > 0; --c) colptr[c] = colptr[c - 1];         \
    colptr[0] = 0;                                                           \
    return 0;                                                                \
  }

CSC_FROM_CSR(csc_from_csr_2_u16, uint16_t, uint16_t)
CSC_FROM_CSR(csc_from_csr_2_i32, uint16_t, int32_t)
CSC_FROM_CSR(csc_from_csr_4_u16, uint32_t, uint16_t)
CSC_FROM_CSR(csc_from_csr_4_i32, uint32_t, int32_t)

/* The columns with a non-zero input (any of the m images), in order;
 * `active` holds columns + 16 entries. */
static int64_t active_columns(const float *xt, int64_t columns, int64_t m,
                              int32_t *active) {
  int64_t n = 0, j = 0;
  if (m == 1) {
#ifdef FJ_AVX512
    __m512i ids = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11,
                                    12, 13, 14, 15);
    const __m512i step = _mm512_set1_epi32(16);
    for (; j + 16 <= columns; j += 16) {
      /* NEQ_UQ keeps NaN inputs, so they propagate as in a dense product. */
      const __mmask16 nz = _mm512_cmp_ps_mask(
          _mm512_loadu_ps(xt + j), _mm512_setzero_ps(), _CMP_NEQ_UQ);
      _mm512_storeu_si512((void *)(active + n),
                          _mm512_maskz_compress_epi32(nz, ids));
      n += __builtin_popcount((unsigned)nz);
      ids = _mm512_add_epi32(ids, step);
    }
#endif
    for (; j < columns; ++j) {  /* Branch-free: zeros are unpredictable. */
      active[n] = (int32_t)j;
      n += !(xt[j] == 0.0f);
    }
    return n;
  }
  for (; j < columns; ++j) {
    int any = 0;
    for (int64_t i = 0; i < m; ++i) any |= !(xt[j * m + i] == 0.0f);
    active[n] = (int32_t)j;
    n += any;
  }
  return n;
}

#ifdef FJ_AVX2
/* y[rows] += v * x_j: eight products at once, added one by one. An AVX-512
 * gather-FMA-scatter (the rows of a column are distinct, so its lanes do
 * not conflict) was 1.5-1.8x slower on Zen 5: the scatter is microcoded. */
#define COLUMN_AXPY(VALUE, INDEX)                                            \
  const __m256 xv = _mm256_set1_ps(xj);                                      \
  float p[8];                                                                \
  for (; k + 8 <= end; k += 8) {                                             \
    _mm256_storeu_ps(p, _mm256_mul_ps(load8_##VALUE(data + k), xv));         \
    for (int i = 0; i < 8; ++i) yt[rows[k + i]] += p[i];                     \
  }
#else
#define COLUMN_AXPY(VALUE, INDEX)
#endif

#ifndef FJ_PREFETCH
/* Active columns ahead whose non-zeros are fetched; without it the batch-1
 * CSC product is 1.4x slower (16 ahead: no better than 8). */
#define FJ_PREFETCH 8
#endif

/* Asks for the cache lines of [p, p + bytes). */
static inline void prefetch_range(const void *p, int64_t bytes) {
  const char *c = (const char *)p;
  for (int64_t b = 0; b < bytes; b += 64) __builtin_prefetch(c + b, 0, 0);
}

/* NAME(colptr, rows, data, columns, nrows, xt, m, yt, active): yt (nrows
 * rows of m, this range's outputs) = A_range xt, with A_range in CSC.
 * m == 1: the active columns' non-zeros are scatter-added; the next
 * columns' bytes are prefetched, since the skipped columns break the
 * stream the hardware prefetcher follows. m > 1: each non-zero adds m
 * products to its row (m a multiple of LANES). */
#define CSC_KERNEL(NAME, VALUE, INDEX)                                       \
  void NAME(const int64_t *colptr, const INDEX *rows, const VALUE *data,     \
            int64_t columns, int64_t nrows, const float *xt, int64_t m,      \
            float *yt, int32_t *active) {                                    \
    const int64_t n = active_columns(xt, columns, m, active);                \
    memset(yt, 0, (size_t)(nrows * m) * sizeof(float));                      \
    if (m == 1) {                                                            \
      for (int64_t a = 0; a < n; ++a) {                                      \
        if (FJ_PREFETCH > 0 && a + FJ_PREFETCH < n) {                         \
          const int64_t c = active[a + FJ_PREFETCH];                         \
          const int64_t s = colptr[c], e = colptr[c + 1];                    \
          prefetch_range(data + s, (e - s) * (int64_t)sizeof(VALUE));        \
          prefetch_range(rows + s, (e - s) * (int64_t)sizeof(INDEX));        \
        }                                                                    \
        const int64_t j = active[a];                                         \
        const float xj = xt[j];                                              \
        int64_t k = colptr[j];                                               \
        const int64_t end = colptr[j + 1];                                   \
        COLUMN_AXPY(VALUE, INDEX)                                            \
        for (; k < end; ++k) yt[rows[k]] += (float)data[k] * xj;             \
      }                                                                      \
      return;                                                                \
    }                                                                        \
    for (int64_t a = 0; a < n; ++a) {                                        \
      const float *x = xt + (int64_t)active[a] * m;                          \
      for (int64_t k = colptr[active[a]]; k < colptr[active[a] + 1]; ++k) {  \
        const float v = (float)data[k];                                      \
        float *y = yt + (int64_t)rows[k] * m;                                \
        for (int64_t j0 = 0; j0 < m; j0 += LANES)                            \
          for (int j = 0; j < LANES; ++j) y[j0 + j] += v * x[j0 + j];        \
      }                                                                      \
    }                                                                        \
  }

CSC_KERNEL(csc_f16_u16, half, uint16_t)
CSC_KERNEL(csc_f16_i32, half, int32_t)
CSC_KERNEL(csc_f32_u16, float, uint16_t)
CSC_KERNEL(csc_f32_i32, float, int32_t)

/* The vector width the kernels were built with, in bits (0: portable). */
int64_t sparse_vector_bits(void) {
#if defined(FJ_AVX512)
  return 512;
#elif defined(FJ_AVX2)
  return 256;
#else
  return 0;
#endif
}
