/* Winograd convolution of 3x3 layers on the direct kernel's register block.
 *
 * Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks" (2016):
 * an m x m block of outputs is A^T [(G g G^T) . (B^T d B)] A for the
 * (m+2) x (m+2) input patch d around it. With F(4x4, 3x3) the 144
 * multiply-adds per input and output channel of a direct 3x3 on 16 outputs
 * become 36, with F(2x2, 3x3) the 36 of 4 outputs become 16: the
 * elementwise product summed over input channels is one GEMM per point of
 * the transformed patch ("plane", P = 36 or 16 of them), (tiles, C) x
 * (C, K), done here with the register block of conv_kernel.c (MR tiles by
 * NR channels, the whole C reduction in registers).
 *
 * Two kinds of team job (conv_kernel.c runs them; kernel_simd.h):
 *   wino_input: tiles [t0, t1) of a band: B^T d B of every channel into
 *     u (P, T, C), T the band's tiles, t counted from the band's first.
 *   wino_output: tiles [t0, t1) x channel blocks [kb0, kb1): per block,
 *     G g G^T of its weights into a buffer of the thread, then per chunk
 *     of 2 MR tiles the P GEMMs into s (P, chunk, NR) on the stack, then
 *     A^T s A with bias, and VGG's 2x2 max-pool (with F(4x4) the pool
 *     windows tile the output block) or the ResNet's residual add, and
 *     ReLU fused, into y; outputs past (oh, ow) are dropped.
 * Weights stay 3x3, packed as the direct kernel packs them (K/NR, 9, C,
 * NR), float32 or float16, and are transformed a channel block at a time
 * as a job reaches it: the transformed kernel is P/9 of the dense one (4x
 * for F(4x4)), which held whole would be read from DRAM on every forward
 * at batch 1 (172 MB for VGG-16, against 43 MB of 3x3 taps); the
 * transform costs (P + 3m + 6) / (2 P T) of a block's GEMMs for T tiles,
 * ~5 % on VGG's conv4 at batch 1.
 * The channel loops run over whole vectors: C is a multiple of LANES and K
 * of NR (winograd.py keeps other layers on the direct kernel).
 *
 * Tiles are numbered t = (b * tiles_h + i) * tiles_w + j over the layer;
 * the patch of tile (b, i, j) starts at row m*i, column m*j of the
 * zero-bordered input.
 */
#include <stdio.h>
#include <stdlib.h>

#include "kernel_simd.h"

enum {
  W_X, W_XN, W_XH, W_XW, /* zero-bordered input origin; element strides */
  W_C, W_TH, W_TW, W_M,  /* channels; tiles per column and row; m */
  W_BAND, W_T, W_T0, W_T1, /* band's first tile, its tile count; range */
  W_U,                     /* (P, T, C) transformed input of the band */
  W_V, W_HALF, W_K, W_KB0, W_KB1, /* packed 3x3 weights (fp16 if W_HALF),
                                     K, channel blocks */
  W_BIAS, W_SCALE, W_RELU, W_POOL, /* W_SCALE: per channel, or 0 */
  W_Y, W_YN, W_YH, W_YW, /* output origin (pooled if W_POOL) */
  W_IH, W_IW, W_OH, W_OW, /* input rows, columns there; outputs kept */
  W_ADD, W_AN, W_AH, W_AW, W_ADDC, /* residual (0: none), its channels */
  W_END
};
_Static_assert(W_END <= FJ_JOB_OP, "Winograd jobs are team jobs");

/* Tiles of one pass of GEMMs under a plane's weights (two register
 * blocks), and of a group whose GEMM outputs (all planes) are held until
 * the output transform: 4 chunks, 516 KB with F(4x4), beside the
 * transformed weights of up to CHANNELS_F4 (F(4x4)) or CHANNELS_F2 input
 * channels (576 KB): both stay in a 2 MB L2 while the group's tiles pass.
 * Wider layers are summed over channel slices (VGG's 512-channel conv4
 * and conv5; writing their 2.25 MB blocks out to L3 cost 7 of 44 ms). */
#define CHUNK (2 * FJ_MR)
#define GROUP_CHUNKS 4
#define PLANE_PAD 16 /* floats: one 64-byte line (TRANSFORM_BLOCK) */
#define CHANNELS_F4 128
#define CHANNELS_F2 256

#define PTR(T, i) ((T)(intptr_t)p[i])

/* B^T of F(4x4, 3x3) on a column (or row) of six, points 0, +-1, +-2. */
#define BT6(d, r)                                                           \
  do {                                                                      \
    r[0] = 4.0f * d[0] - 5.0f * d[2] + d[4];                                \
    r[1] = -4.0f * (d[1] + d[2]) + d[3] + d[4];                             \
    r[2] = 4.0f * (d[1] - d[2]) - d[3] + d[4];                              \
    r[3] = 2.0f * (d[3] - d[1]) - d[2] + d[4];                              \
    r[4] = 2.0f * (d[1] - d[3]) - d[2] + d[4];                              \
    r[5] = 4.0f * d[1] - 5.0f * d[3] + d[5];                                \
  } while (0)
/* A^T of F(4x4, 3x3): six -> four. */
#define AT6(s, o)                                                           \
  do {                                                                      \
    const vf a12 = s[1] + s[2], d12 = s[1] - s[2];                          \
    const vf a34 = s[3] + s[4], d34 = s[3] - s[4];                          \
    o[0] = s[0] + a12 + a34;                                                \
    o[1] = d12 + 2.0f * d34;                                                \
    o[2] = a12 + 4.0f * a34;                                                \
    o[3] = d12 + 8.0f * d34 + s[5];                                         \
  } while (0)
/* F(2x2, 3x3): B^T on four, A^T four -> two. */
#define BT4(d, r)                                                           \
  do {                                                                      \
    r[0] = d[0] - d[2];                                                     \
    r[1] = d[1] + d[2];                                                     \
    r[2] = d[2] - d[1];                                                     \
    r[3] = d[1] - d[3];                                                     \
  } while (0)
#define AT4(s, o)                                                           \
  do {                                                                      \
    o[0] = s[0] + s[1] + s[2];                                              \
    o[1] = s[1] - s[2] - s[3];                                              \
  } while (0)

/* B^T d B of one tile's (m+2)^2 patch at ``x``, LANES channels at a time,
 * plane q of the result to u + q * plane. Rows and columns past the input
 * (rows, cols < m + 2 in the last tiles of an output that m does not
 * divide) read as zeros: they feed only outputs that are not kept. */
#define INPUT_TILE(N, BT)                                                   \
  for (int64_t ch = 0; ch < c; ch += FJ_LANES) {                            \
    vf e[N][N], col[N], r[N];                                               \
    for (int q = 0; q < N; ++q) { /* B^T d, column q */                     \
      for (int i = 0; i < N; ++i)                                           \
        col[i] = i < rows && q < cols ? load(x + i * xh + q * xw + ch)      \
                                      : (vf){0};                            \
      BT(col, r);                                                           \
      for (int i = 0; i < N; ++i) e[i][q] = r[i];                           \
    }                                                                       \
    for (int i = 0; i < N; ++i) { /* (B^T d) B, row i */                    \
      BT(e[i], r);                                                          \
      for (int q = 0; q < N; ++q) store(u + (i * N + q) * plane + ch, r[q]); \
    }                                                                       \
  }

void wino_input(const int64_t *p) {
  const int64_t c = p[W_C], th = p[W_TH], tw = p[W_TW], m = p[W_M];
  const int64_t xh = p[W_XH], xw = p[W_XW], band = p[W_BAND];
  const int64_t plane = p[W_T] * c;
  for (int64_t t = p[W_T0]; t < p[W_T1]; ++t) {
    const int64_t b = t / (th * tw), i = t / tw % th, j = t % tw;
    const float *x = PTR(const float *, W_X) + b * p[W_XN] + m * i * xh +
                     m * j * xw;
    float *u = PTR(float *, W_U) + (t - band) * c;
    const int64_t rows = p[W_IH] - m * i, cols = p[W_IW] - m * j;
    if (m == 4) {
      INPUT_TILE(6, BT6)
    } else {
      INPUT_TILE(4, BT4)
    }
  }
}

#define GEMM_CASE(M)                                                        \
  case M:                                                                   \
    gemm_block(M, a, lda, cc, w, s, sum);                                   \
    break;
#define GEMM_CASES_6                                                        \
  GEMM_CASE(1) GEMM_CASE(2) GEMM_CASE(3) GEMM_CASE(4) GEMM_CASE(5) GEMM_CASE(6)
#if FJ_MR > 12
#define GEMM_CASES                                                          \
  GEMM_CASES_6 GEMM_CASE(7) GEMM_CASE(8) GEMM_CASE(9) GEMM_CASE(10)         \
  GEMM_CASE(11) GEMM_CASE(12) GEMM_CASE(13) GEMM_CASE(14)
#elif FJ_MR > 6
#define GEMM_CASES                                                          \
  GEMM_CASES_6 GEMM_CASE(7) GEMM_CASE(8) GEMM_CASE(9) GEMM_CASE(10)         \
  GEMM_CASE(11) GEMM_CASE(12)
#else
#define GEMM_CASES GEMM_CASES_6
#endif

/* G of F(4x4, 3x3) (rows 1/4 0 0; -1/6 -1/6 -1/6; -1/6 1/6 -1/6;
 * 1/24 1/12 1/6; 1/24 -1/12 1/6; 0 0 1) on a column (or row) of three. */
#define G6(g, r)                                                            \
  do {                                                                      \
    const vf even = g[0] + g[2];                                            \
    const vf outer = g[0] * (1.0f / 24) + g[2] * (1.0f / 6);                \
    const vf mid = g[1] * (1.0f / 12);                                      \
    r[0] = g[0] * 0.25f;                                                    \
    r[1] = (even + g[1]) * (-1.0f / 6);                                     \
    r[2] = (even - g[1]) * (-1.0f / 6);                                     \
    r[3] = outer + mid;                                                     \
    r[4] = outer - mid;                                                     \
    r[5] = g[2];                                                            \
  } while (0)
/* G of F(2x2, 3x3) (1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1). */
#define G4(g, r)                                                            \
  do {                                                                      \
    const vf even = g[0] + g[2];                                            \
    r[0] = g[0];                                                            \
    r[1] = (even + g[1]) * 0.5f;                                            \
    r[2] = (even - g[1]) * 0.5f;                                            \
    r[3] = g[2];                                                            \
  } while (0)

/* V = G g G^T of cc input channels of one channel block: w (9, C, NR)
 * taps (tap stride wc = C * NR) -> v (P, cc, NR), planes PLANE_PAD floats
 * apart past their end: at a power-of-two stride the 36 store streams
 * would share one L1 set (measured: the transform took 6x its
 * arithmetic). */
#define TRANSFORM_BLOCK(N, G, SUFFIX)                                       \
  for (int64_t at = 0; at < cc * FJ_NR; at += FJ_LANES) {                   \
    vf col[3], r[N], e[N][3];                                               \
    for (int j = 0; j < 3; ++j) { /* G g, column j */                       \
      for (int i = 0; i < 3; ++i)                                           \
        col[i] = load_##SUFFIX(w + (i * 3 + j) * wc + at);                  \
      G(col, r);                                                            \
      for (int i = 0; i < N; ++i) e[i][j] = r[i];                           \
    }                                                                       \
    for (int i = 0; i < N; ++i) { /* (G g) G^T, row i */                    \
      G(e[i], r);                                                           \
      for (int q = 0; q < N; ++q)                                           \
        store(v + (i * N + q) * (cc * FJ_NR + PLANE_PAD) + at, r[q]);       \
    }                                                                       \
  }

#define DEFINE_TRANSFORM(SUFFIX, WT)                                        \
  static void transform_##SUFFIX(const WT *restrict w, int64_t wc,          \
                                 int64_t cc, int64_t m, float *restrict v) { \
    if (m == 4) {                                                           \
      TRANSFORM_BLOCK(6, G6, SUFFIX)                                        \
    } else {                                                                \
      TRANSFORM_BLOCK(4, G4, SUFFIX)                                        \
    }                                                                       \
  }
DEFINE_TRANSFORM(f32, float)
DEFINE_TRANSFORM(f16, _Float16)

/* Per thread: the transformed weights of one channel slice of a block,
 * then the GEMM outputs of one group of tiles (sizes above); allocated on
 * first use, kept for the thread's life. */
#define SLICE_FLOATS (36 * (CHANNELS_F4 * FJ_NR + PLANE_PAD))
#define GROUP_FLOATS (36 * GROUP_CHUNKS * CHUNK * FJ_NR)
static __thread float *thread_buffer;

static float *scratch_of_thread(void) {
  if (!thread_buffer) {
    thread_buffer = aligned_alloc(64, (SLICE_FLOATS + GROUP_FLOATS) * 4);
    if (!thread_buffer) {
      fprintf(stderr, "facejax executor: out of memory for Winograd's "
                      "%d KB per thread\n",
              (int)((SLICE_FLOATS + GROUP_FLOATS) * 4 / 1024));
      abort();
    }
  }
  return thread_buffer;
}

/* s[i] (+)= a[i] (cc channels of one tile, row stride lda) x w (cc x NR)
 * for mr tiles (``sum``: added to what s holds, the previous channel
 * slices), and the plane's GEMM for tiles [0, n) of a chunk: a (n, lda),
 * s (n, NR), in nearly equal blocks of at most MR tiles, as conv_direct
 * does. */
static inline __attribute__((always_inline)) void gemm_block(
    const int mr, const float *a, int64_t lda, int64_t cc,
    const float *restrict w, float *restrict s, int sum) {
  vf acc0[FJ_MR], acc1[FJ_MR];
  if (sum) {
    _Pragma("GCC unroll 16") for (int i = 0; i < mr; ++i) {
      acc0[i] = load(s + i * FJ_NR);
      acc1[i] = load(s + i * FJ_NR + FJ_LANES);
    }
  } else {
    _Pragma("GCC unroll 16") for (int i = 0; i < mr; ++i)
        acc0[i] = acc1[i] = (vf){0};
  }
  for (int64_t ch = 0; ch < cc; ++ch) {
    const vf w0 = load(w + ch * FJ_NR);
    const vf w1 = load(w + ch * FJ_NR + FJ_LANES);
    _Pragma("GCC unroll 16") for (int i = 0; i < mr; ++i) {
      const float v = a[i * lda + ch];
      acc0[i] += v * w0;
      acc1[i] += v * w1;
    }
  }
  _Pragma("GCC unroll 16") for (int i = 0; i < mr; ++i) {
    store(s + i * FJ_NR, acc0[i]);
    store(s + i * FJ_NR + FJ_LANES, acc1[i]);
  }
}

static void gemm_plane(const float *a, int64_t n, int64_t lda, int64_t cc,
                       const float *restrict w, float *restrict s, int sum) {
  const int64_t blocks = (n + FJ_MR - 1) / FJ_MR;
  const int64_t base = blocks ? n / blocks : 0;
  const int64_t extra = blocks ? n % blocks : 0;
  for (int64_t g = 0; g < blocks; ++g) {
    const int64_t mr = base + (g < extra);
    switch (mr) {
      GEMM_CASES
      default: break;
    }
    a += mr * lda;
    s += mr * FJ_NR;
  }
}


static inline vf vmax(vf a, vf b) {
  const vi take_a = (vi)(a > b);
  return (vf)((take_a & (vi)a) | (~take_a & (vi)b));
}

/* A^T s A of one tile, LANES channels at v (of NR), then the epilogue. */
#define OUTPUT_TILE(N, M, AT)                                               \
  do {                                                                      \
    vf e[M][N], row[N], o[M];                                               \
    for (int q = 0; q < N; ++q) { /* A^T s, column q */                     \
      for (int i = 0; i < N; ++i) row[i] = load(src + (i * N + q) * stride); \
      AT(row, o);                                                           \
      for (int i = 0; i < M; ++i) e[i][q] = o[i];                           \
    }                                                                       \
    vf out[M][M];                                                           \
    for (int i = 0; i < M; ++i) { /* (A^T s) A, row i */                    \
      AT(e[i], o);                                                          \
      for (int q = 0; q < M; ++q) out[i][q] = scale ? o[q] * sc : o[q];     \
    }                                                                       \
    if (pool) {                                                             \
      for (int i = 0; i < M / 2; ++i)                                       \
        for (int q = 0; q < M / 2; ++q) {                                   \
          vf v = vmax(vmax(out[2 * i][2 * q], out[2 * i][2 * q + 1]),       \
                      vmax(out[2 * i + 1][2 * q], out[2 * i + 1][2 * q + 1])); \
          v += bias;                                                        \
          store(dst + i * yh + q * yw, relu ? relu_v(v) : v);               \
        }                                                                   \
    } else {                                                                \
      for (int i = 0; i < M && i < rows; ++i)                               \
        for (int q = 0; q < M && q < cols; ++q) {                           \
          vf v = out[i][q] + bias;                                          \
          if (add) v += load(add + i * ah + q * aw);                        \
          store(dst + i * yh + q * yw, relu ? relu_v(v) : v);               \
        }                                                                   \
    }                                                                       \
  } while (0)

void wino_output(const int64_t *p) {
  const int64_t c = p[W_C], th = p[W_TH], tw = p[W_TW], m = p[W_M];
  const int64_t band = p[W_BAND], planes = (m + 2) * (m + 2);
  const int64_t plane = p[W_T] * c;
  const int64_t relu = p[W_RELU], pool = p[W_POOL];
  const int64_t yh = p[W_YH], yw = p[W_YW], out_m = pool ? m / 2 : m;
  const int64_t ah = p[W_AH], aw = p[W_AW], add_c = p[W_ADDC];
  float *const vt = scratch_of_thread(), *const s = vt + SLICE_FLOATS;
  const int64_t slice = m == 4 ? CHANNELS_F4 : CHANNELS_F2;
  const int64_t group = GROUP_FLOATS / (planes * FJ_NR); /* tiles */
  for (int64_t kb = p[W_KB0]; kb < p[W_KB1]; ++kb) {
    const int64_t taps = kb * 9 * c * FJ_NR; /* this block's 3x3 weights */
    for (int64_t g0 = p[W_T0]; g0 < p[W_T1]; g0 += group) {
      const int64_t gn = p[W_T1] - g0 < group ? p[W_T1] - g0 : group;
      const int64_t stride = gn * FJ_NR; /* between planes of s */
      for (int64_t c0 = 0; c0 < c; c0 += slice) {
        const int64_t cc = c - c0 < slice ? c - c0 : slice;
        /* One slice covers C: its weights serve every group. */
        if (c0 || cc < c || g0 == p[W_T0]) {
          if (p[W_HALF])
            transform_f16(PTR(const _Float16 *, W_V) + taps + c0 * FJ_NR,
                          c * FJ_NR, cc, m, vt);
          else
            transform_f32(PTR(const float *, W_V) + taps + c0 * FJ_NR,
                          c * FJ_NR, cc, m, vt);
        }
        for (int64_t t0 = g0; t0 < g0 + gn; t0 += CHUNK) {
          const int64_t n = g0 + gn - t0 < CHUNK ? g0 + gn - t0 : CHUNK;
          const float *u = PTR(const float *, W_U) + (t0 - band) * c + c0;
          for (int64_t q = 0; q < planes; ++q)
            gemm_plane(u + q * plane, n, c, cc,
                       vt + q * (cc * FJ_NR + PLANE_PAD),
                       s + q * stride + (t0 - g0) * FJ_NR, c0 > 0);
        }
      }
      for (int64_t t = g0; t < g0 + gn; ++t) {
        const int64_t b = t / (th * tw), i = t / tw % th, j = t % tw;
        const int64_t rows = p[W_OH] - m * i, cols = p[W_OW] - m * j;
        for (int64_t half = 0; half < FJ_NR; half += FJ_LANES) {
          const int64_t k0 = kb * FJ_NR + half;
          const float *src = s + (t - g0) * FJ_NR + half;
          const vf bias = load(PTR(const float *, W_BIAS) + k0);
          /* dlib's affine scale, kept apart from fp16 weights (their
           * stored values), before the pool: it may be negative. */
          const float *scale = PTR(const float *, W_SCALE);
          const vf sc = scale ? load(scale + k0) : (vf){0};
          float *dst = PTR(float *, W_Y) + b * p[W_YN] + out_m * i * yh +
                       out_m * j * yw + k0;
          /* The residual's first add_c channels (dlib's zero extension;
           * add_c is a multiple of LANES, winograd.py). */
          const float *add =
              p[W_ADD] && k0 < add_c
                  ? PTR(const float *, W_ADD) + b * p[W_AN] + m * i * ah +
                        m * j * aw + k0
                  : 0;
          if (m == 4) {
            OUTPUT_TILE(6, 4, AT6);
          } else {
            OUTPUT_TILE(4, 2, AT4);
          }
        }
      }
    }
  }
}
