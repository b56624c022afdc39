/* Winograd F(2x2, 3x3) transforms for the executor's 3x3 convolutions.
 *
 * Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks" (2016):
 * a 2x2 block of outputs is A^T [(G g G^T) . (B^T d B)] A for the 4x4
 * input patch d around it, so the 36 multiply-adds per input channel and
 * output channel of a direct 3x3 (or im2col) become 16, done as 16 GEMMs
 * of (tiles, C) x (C, K) by NumPy's BLAS. These two functions are the
 * cheap parts around them: B^T d B for every tile (wino_input) and
 * A^T m A with bias, ReLU and the 2x2 max-pool of VGG fused (wino_output;
 * the pool window is exactly one output block).
 *
 * Layouts (element strides, channels innermost and contiguous):
 *   x: the zero-bordered input at the tile's first padded row, s_n/s_h/s_w.
 *   u: (16, T, C) with T = n * tiles_h * tiles_w tiles, t = (b, i, j).
 *   m: (16, T, K), the GEMM results.
 *   y: the output view at the tile's first output (or pooled) row.
 */
#include <stdint.h>

/* Straight-line bodies with the channel loop innermost, so the compiler
 * vectorises across channels (nested 4x4 loops inside it defeat GCC). */
#define AT(ROW, Q) ROW[(Q) * s_w + ch]

void wino_input(const float *x, int64_t n, int64_t tiles_h, int64_t tiles_w,
                int64_t s_n, int64_t s_h, int64_t s_w, int64_t c,
                float *restrict u) {
  const int64_t tiles = n * tiles_h * tiles_w, plane = tiles * c;
  for (int64_t b = 0; b < n; ++b)
    for (int64_t i = 0; i < tiles_h; ++i)
      for (int64_t j = 0; j < tiles_w; ++j) {
        const int64_t t = (b * tiles_h + i) * tiles_w + j;
        const float *restrict d0 = x + b * s_n + 2 * i * s_h + 2 * j * s_w;
        const float *restrict d1 = d0 + s_h, *restrict d2 = d0 + 2 * s_h,
                    *restrict d3 = d0 + 3 * s_h;
        float *restrict o = u + t * c;
#pragma GCC ivdep
        for (int64_t ch = 0; ch < c; ++ch) {
          float e[4][4]; /* B^T d, one column q at a time. */
#define COLUMN(Q)                                                            \
  e[0][Q] = AT(d0, Q) - AT(d2, Q);                                           \
  e[1][Q] = AT(d1, Q) + AT(d2, Q);                                           \
  e[2][Q] = AT(d2, Q) - AT(d1, Q);                                           \
  e[3][Q] = AT(d1, Q) - AT(d3, Q);
          COLUMN(0) COLUMN(1) COLUMN(2) COLUMN(3)
#undef COLUMN
#define ROW(R) /* (B^T d) B */                                               \
  o[(R * 4 + 0) * plane + ch] = e[R][0] - e[R][2];                           \
  o[(R * 4 + 1) * plane + ch] = e[R][1] + e[R][2];                           \
  o[(R * 4 + 2) * plane + ch] = e[R][2] - e[R][1];                           \
  o[(R * 4 + 3) * plane + ch] = e[R][1] - e[R][3];
          ROW(0) ROW(1) ROW(2) ROW(3)
#undef ROW
        }
      }
}

static inline float relu_if(float v, int64_t relu) {
  return relu && v < 0.0f ? 0.0f : v;
}

void wino_output(const float *m, const float *bias, int64_t n,
                 int64_t tiles_h, int64_t tiles_w, int64_t k, int64_t relu,
                 int64_t pool, float *restrict y, int64_t s_n, int64_t s_h,
                 int64_t s_w) {
  const int64_t tiles = n * tiles_h * tiles_w, plane = tiles * k;
  for (int64_t b = 0; b < n; ++b)
    for (int64_t i = 0; i < tiles_h; ++i)
      for (int64_t j = 0; j < tiles_w; ++j) {
        const int64_t t = (b * tiles_h + i) * tiles_w + j;
        const float *restrict src = m + t * k;
        float *restrict dst = pool ? y + b * s_n + i * s_h + j * s_w
                                   : y + b * s_n + 2 * i * s_h + 2 * j * s_w;
#pragma GCC ivdep
        for (int64_t ch = 0; ch < k; ++ch) {
#define A(R, Q) src[(R * 4 + Q) * plane + ch]
          float s[2][4]; /* A^T a */
#define COLUMN(Q)                                                            \
  s[0][Q] = A(0, Q) + A(1, Q) + A(2, Q);                                     \
  s[1][Q] = A(1, Q) - A(2, Q) - A(3, Q);
          COLUMN(0) COLUMN(1) COLUMN(2) COLUMN(3)
#undef COLUMN
#undef A
          const float o00 = s[0][0] + s[0][1] + s[0][2]; /* (A^T a) A */
          const float o01 = s[0][1] - s[0][2] - s[0][3];
          const float o10 = s[1][0] + s[1][1] + s[1][2];
          const float o11 = s[1][1] - s[1][2] - s[1][3];
          if (pool) {
            const float top = o00 > o01 ? o00 : o01;
            const float bottom = o10 > o11 ? o10 : o11;
            dst[ch] = relu_if((top > bottom ? top : bottom) + bias[ch], relu);
          } else {
            dst[ch] = relu_if(o00 + bias[ch], relu);
            dst[s_w + ch] = relu_if(o01 + bias[ch], relu);
            dst[s_h + ch] = relu_if(o10 + bias[ch], relu);
            dst[s_h + s_w + ch] = relu_if(o11 + bias[ch], relu);
          }
        }
      }
}
