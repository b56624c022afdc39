/* Issue 12, goal 2: does a 16-lane AVX-512 gather beat the 8-lane AVX2
 * gather in the CSR dot product (csr_kernel.c's ROW_DOT)?
 *
 *   gcc -O3 -march=native -o /tmp/csr_gather_width benchmarks/csr_gather_width.c
 *   /tmp/csr_gather_width
 *
 * One thread, fc6's shape (4,096 rows × 25,088 columns) at 5 % density,
 * fp16 values and uint16 column indices (4 bytes per non-zero, as the
 * executor stores them), half the inputs zero as after ReLU. Each variant
 * runs 20 times; the best is printed, warm (back to back) and cold (96 MB
 * of other memory read first, so the matrix is not in L3). The three
 * variants compute the same sums; the program checks them against each
 * other in double precision before timing.
 */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

typedef _Float16 half;
typedef void (*kernel)(const int64_t *, const uint16_t *, const half *,
                       int64_t, const float *, float *);

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

static inline float sum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

/* What csr_kernel.c does: 8-lane gathers, two chains. */
static void gather8(const int64_t *indptr, const uint16_t *indices,
                    const half *data, int64_t rows, const float *x,
                    float *y) {
  for (int64_t r = 0; r < rows; ++r) {
    int64_t k = indptr[r];
    const int64_t end = indptr[r + 1];
    __m256 c0 = _mm256_setzero_ps(), c1 = _mm256_setzero_ps();
    for (; k + 16 <= end; k += 16) {
      __m256i i0 = _mm256_cvtepu16_epi32(
          _mm_loadu_si128((const __m128i *)(indices + k)));
      __m256i i1 = _mm256_cvtepu16_epi32(
          _mm_loadu_si128((const __m128i *)(indices + k + 8)));
      c0 = _mm256_fmadd_ps(
          _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(data + k))),
          _mm256_i32gather_ps(x, i0, 4), c0);
      c1 = _mm256_fmadd_ps(
          _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(data + k + 8))),
          _mm256_i32gather_ps(x, i1, 4), c1);
    }
    float acc = sum8(_mm256_add_ps(c0, c1));
    for (; k < end; ++k) acc += (float)data[k] * x[indices[k]];
    y[r] = acc;
  }
}

/* The candidate: 16-lane gathers, two chains. */
static void gather16(const int64_t *indptr, const uint16_t *indices,
                     const half *data, int64_t rows, const float *x,
                     float *y) {
  for (int64_t r = 0; r < rows; ++r) {
    int64_t k = indptr[r];
    const int64_t end = indptr[r + 1];
    __m512 c0 = _mm512_setzero_ps(), c1 = _mm512_setzero_ps();
    for (; k + 32 <= end; k += 32) {
      __m512i i0 = _mm512_cvtepu16_epi32(
          _mm256_loadu_si256((const __m256i *)(indices + k)));
      __m512i i1 = _mm512_cvtepu16_epi32(
          _mm256_loadu_si256((const __m256i *)(indices + k + 16)));
      c0 = _mm512_fmadd_ps(
          _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(data + k))),
          _mm512_i32gather_ps(i0, x, 4), c0);
      c1 = _mm512_fmadd_ps(
          _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(data + k + 16))),
          _mm512_i32gather_ps(i1, x, 4), c1);
    }
    float acc = _mm512_reduce_add_ps(_mm512_add_ps(c0, c1));
    for (; k < end; ++k) acc += (float)data[k] * x[indices[k]];
    y[r] = acc;
  }
}

/* Scalar loads, four chains: what the gathers replace. */
static void scalar4(const int64_t *indptr, const uint16_t *indices,
                    const half *data, int64_t rows, const float *x,
                    float *y) {
  for (int64_t r = 0; r < rows; ++r) {
    float a0 = 0, a1 = 0, a2 = 0, a3 = 0;
    int64_t k = indptr[r];
    const int64_t end = indptr[r + 1];
    for (; k + 4 <= end; k += 4) {
      a0 += (float)data[k] * x[indices[k]];
      a1 += (float)data[k + 1] * x[indices[k + 1]];
      a2 += (float)data[k + 2] * x[indices[k + 2]];
      a3 += (float)data[k + 3] * x[indices[k + 3]];
    }
    for (; k < end; ++k) a0 += (float)data[k] * x[indices[k]];
    y[r] = (a0 + a1) + (a2 + a3);
  }
}

int main(void) {
  const int64_t rows = 4096, columns = 25088;
  const int64_t per_row = columns / 20; /* 5 % */
  const int64_t nnz = rows * per_row;
  int64_t *indptr = malloc((rows + 1) * sizeof(int64_t));
  uint16_t *indices = malloc(nnz * sizeof(uint16_t));
  half *data = malloc(nnz * sizeof(half));
  float *x = malloc(columns * sizeof(float));
  float *y = malloc(rows * sizeof(float));
  double *reference = calloc(rows, sizeof(double));
  srand(1);
  for (int64_t c = 0; c < columns; ++c)
    x[c] = rand() % 2 ? rand() / (float)RAND_MAX : 0.0f;
  for (int64_t r = 0; r <= rows; ++r) indptr[r] = r * per_row;
  for (int64_t r = 0; r < rows; ++r) {
    int64_t c = 0; /* Ascending columns, random gaps of mean 20. */
    for (int64_t k = r * per_row; k < (r + 1) * per_row; ++k) {
      c += 1 + rand() % 39;
      indices[k] = (uint16_t)(c < columns ? c : columns - 1);
      data[k] = (half)(rand() / (float)RAND_MAX - 0.5f);
      reference[r] += (double)(float)data[k] * x[indices[k]];
    }
  }
  const size_t junk_bytes = (size_t)96 << 20;
  char *junk = malloc(junk_bytes);
  for (size_t i = 0; i < junk_bytes; ++i) junk[i] = (char)i;
  const kernel kernels[3] = {gather8, gather16, scalar4};
  const char *names[3] = {"gather8 (kept)", "gather16", "scalar4"};
  for (int f = 0; f < 3; ++f) {
    kernels[f](indptr, indices, data, rows, x, y);
    double worst = 0;
    for (int64_t r = 0; r < rows; ++r)
      worst = fmax(worst, fabs(y[r] - reference[r]));
    if (worst > 1e-3) {
      printf("%s differs from the double-precision sums by %g\n", names[f],
             worst);
      return 1;
    }
  }
  double best[2][3];
  for (int cold = 0; cold < 2; ++cold)
    for (int f = 0; f < 3; ++f) {
      best[cold][f] = 1e9;
      for (int rep = 0; rep < 20; ++rep) {
        if (cold) {
          volatile char sink = 0;
          for (size_t i = 0; i < junk_bytes; i += 64) sink += junk[i];
        }
        const double start = now();
        kernels[f](indptr, indices, data, rows, x, y);
        const double t = now() - start;
        if (t < best[cold][f]) best[cold][f] = t;
      }
      printf("%s %-15s %.3f ms  %.3f ns per non-zero  %.1f GB/s\n",
             cold ? "cold" : "warm", names[f], 1e3 * best[cold][f],
             1e9 * best[cold][f] / nnz, 4.0 * nnz / best[cold][f] / 1e9);
    }
  printf("gather16 / gather8: warm %.2f, cold %.2f\n", best[0][1] / best[0][0],
         best[1][1] / best[1][0]);
  return 0;
}
