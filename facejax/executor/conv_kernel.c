/* Direct convolution (NHWC) for the graph executor's dense convs.
 *
 * im2col + BLAS copies every input value kh*kw times into a scratch
 * matrix and then hands a GEMM to OpenBLAS, whose kernel set follows
 * OPENBLAS_CORETYPE rather than the machine. Here each output pixel reads
 * its windows straight from the zero-bordered input and the kernel is
 * compiled for the machine it runs on (native.py, -march=native): a block
 * of MR output pixels by NR output channels is held in registers while the
 * whole reduction (kh, kw, C) runs, the input value of each pixel
 * broadcast against NR weights. Bias (with dlib's affine folded in at
 * load), the residual add (over its first add_c channels: dlib's
 * zero-extending add where only channels differ) and ReLU are applied to
 * the registers before the one store.
 *
 * Registers: MR pixels by NR channels (kernel_simd.h).
 *
 * Weights are packed at load (graph_steps.py) as (K/NR, kh, kw, C, NR),
 * output channels padded with zeros to a multiple of NR, bias padded
 * likewise; float32, or float16 for an fp16 blob (P_HALF: its stored
 * values, widened as they are loaded, so stage 4's 256-channel convs fit
 * the 2 MB L2 at 1.2 MB). An affine scale that fp16 weights cannot absorb
 * without a second rounding is applied per channel (P_SCALE) to the sums.
 *
 * One call does output pixels [p0, p1) of the flattened (image, row,
 * column) range and channel blocks [kb0, kb1): Python worker threads
 * split either, and ctypes releases the GIL for the call.
 */
#include <string.h>

#include "kernel_simd.h"

int64_t conv_block_channels(void) { return FJ_NR; }
int64_t conv_block_pixels(void) { return FJ_MR; }

/* The fields of one call, an int64 array prepared once per batch size. */
enum {
  P_X, P_XN, P_XH, P_XW, /* input at the window origin; strides */
  P_C, P_KH, P_KW, P_SH, P_SW,
  P_OH, P_OW, P_P0, P_P1, /* output rows, columns; pixel range */
  P_W, P_K, P_KB0, P_KB1, P_BIAS,
  P_ADD, P_AN, P_AH, P_AW, P_ADDC, /* residual (0: none), channels */
  P_RELU, P_Y, P_YN, P_YH, P_YW,
  P_HALF, P_SCALE, /* fp16 weights; per-channel scale (0: none) */
  P_VECTORS, /* block width in vectors: 2 (NR channels) or 1 (LANES) */
  P_USED, /* fields up to here; zeros follow */
  P_OP = FJ_JOB_OP, /* FJ_OP_CONV; the team also runs winograd_kernel.c's */
  P_FIELDS = FJ_JOB_FIELDS
};
int64_t conv_fields(void) { return P_FIELDS; }
int64_t conv_used_fields(void) { return P_USED; }

/* One output vector (LANES channels from k0) of one pixel: epilogue. */
static inline __attribute__((always_inline)) void finish(
    vf v, const float *restrict scale, const float *restrict bias,
    int64_t k0, const float *add, int64_t add_c, int64_t relu,
    float *restrict y, int64_t k) {
  if (scale) v *= load(scale + k0);
  v += load(bias + k0);
  if (add && k0 < add_c) {
    if (k0 + FJ_LANES <= add_c) {
      v += load(add + k0);
    } else {
      float t[FJ_LANES];
      store(t, v);
      for (int64_t q = k0; q < add_c; ++q) t[q - k0] += add[q];
      v = load(t);
    }
  }
  if (relu) v = relu_v(v);
  if (k0 + FJ_LANES <= k) {
    store(y + k0, v);
  } else if (k0 < k) {
    float t[FJ_LANES];
    store(t, v);
    memcpy(y + k0, t, (size_t)(k - k0) * sizeof(float));
  }
}

/* MR pixels (a[i]: their window origins) x NV vectors of channels, all
 * taps; one instance per weight type (load_f32, load_f16: kernel_simd.h)
 * and block width: NV = 2 (NR channels), or 1 (LANES) for layers whose
 * channels would leave half of a 2-vector block idle (the student's
 * 16-channel squeezes). */
#define DEFINE_BLOCK(SUFFIX, WT, NV)                                         \
  static inline __attribute__((always_inline)) void block_##SUFFIX##_##NV(   \
      const int mr, const float *const *a, const int64_t *p,                 \
      const WT *restrict w, int64_t kb, float *const *y,                     \
      const float *const *add) {                                             \
    const int64_t c = p[P_C], kh = p[P_KH], kw = p[P_KW];                    \
    const int64_t xh = p[P_XH], xw = p[P_XW];                                \
    enum { WIDTH = NV * FJ_LANES };                                          \
    vf acc0[FJ_MR], acc1[FJ_MR];                                             \
    _Pragma("GCC unroll 16") for (int i = 0; i < mr; ++i) acc0[i] =          \
        acc1[i] = (vf){0};                                                   \
    if (mr == 1) { /* One pixel (fc at batch 1): 2 sums would wait on the */ \
      vf s0[4] = {0}, s1[4] = {0}; /* FMA latency; 4 interleaved each. */    \
      for (int64_t r = 0; r < kh; ++r)                                       \
        for (int64_t s = 0; s < kw; ++s) {                                   \
          const float *restrict a0 = a[0] + r * xh + s * xw;                 \
          const WT *restrict wp = w + (r * kw + s) * c * WIDTH;              \
          int64_t ch = 0;                                                    \
          for (; ch + 4 <= c; ch += 4)                                       \
            _Pragma("GCC unroll 4") for (int u = 0; u < 4; ++u) {            \
              const float v = a0[ch + u];                                    \
              s0[u] += v * load_##SUFFIX(wp + (ch + u) * WIDTH);             \
              if (NV > 1)                                                    \
                s1[u] += v * load_##SUFFIX(wp + (ch + u) * WIDTH + FJ_LANES); \
            }                                                                \
          for (; ch < c; ++ch) {                                             \
            const float v = a0[ch];                                          \
            s0[0] += v * load_##SUFFIX(wp + ch * WIDTH);                     \
            if (NV > 1)                                                      \
              s1[0] += v * load_##SUFFIX(wp + ch * WIDTH + FJ_LANES);        \
          }                                                                  \
        }                                                                    \
      acc0[0] = (s0[0] + s0[1]) + (s0[2] + s0[3]);                           \
      acc1[0] = (s1[0] + s1[1]) + (s1[2] + s1[3]);                           \
    } else                                                                   \
    for (int64_t r = 0; r < kh; ++r)                                         \
      for (int64_t s = 0; s < kw; ++s) {                                     \
        const int64_t tap = r * xh + s * xw;                                 \
        const WT *restrict wp = w + (r * kw + s) * c * WIDTH;                \
        const float *ai[FJ_MR];                                              \
        _Pragma("GCC unroll 16") for (int i = 0; i < mr; ++i) ai[i] =        \
            a[i] + tap;                                                      \
        for (int64_t ch = 0; ch < c; ++ch) {                                 \
          const vf w0 = load_##SUFFIX(wp + ch * WIDTH);                      \
          const vf w1 = NV > 1 ? load_##SUFFIX(wp + ch * WIDTH + FJ_LANES)   \
                               : (vf){0};                                    \
          _Pragma("GCC unroll 16") for (int i = 0; i < mr; ++i) {            \
            const float v = ai[i][ch];                                       \
            acc0[i] += v * w0;                                               \
            if (NV > 1) acc1[i] += v * w1;                                   \
          }                                                                  \
        }                                                                    \
      }                                                                      \
    const int64_t k0 = kb * WIDTH, k = p[P_K], add_c = p[P_ADDC];            \
    const float *bias = (const float *)(intptr_t)p[P_BIAS];                  \
    const float *scale = (const float *)(intptr_t)p[P_SCALE];                \
    const int64_t relu = p[P_RELU];                                          \
    _Pragma("GCC unroll 16") for (int i = 0; i < mr; ++i) {                  \
      finish(acc0[i], scale, bias, k0, add[i], add_c, relu, y[i], k);        \
      if (NV > 1)                                                            \
        finish(acc1[i], scale, bias, k0 + FJ_LANES, add[i], add_c, relu,     \
               y[i], k);                                                     \
    }                                                                        \
  }
DEFINE_BLOCK(f32, float, 2)
DEFINE_BLOCK(f16, _Float16, 2)
DEFINE_BLOCK(f32, float, 1)
DEFINE_BLOCK(f16, _Float16, 1)

/* The pixel blocks of one call, for weights of type WT: one function per
 * type, each the size of one set of MR cases (the two in one function
 * left GCC's register allocation with the accumulators on the stack). */
#define CASE(SUFFIX, M)                                                      \
  case M:                                                                    \
    block_##SUFFIX(M, a, p, w, kb, y, add);                                  \
    break;
#if FJ_MR > 12
#define CASES(S)                                                             \
  CASE(S, 1) CASE(S, 2) CASE(S, 3) CASE(S, 4) CASE(S, 5) CASE(S, 6)          \
  CASE(S, 7) CASE(S, 8) CASE(S, 9) CASE(S, 10) CASE(S, 11) CASE(S, 12)       \
  CASE(S, 13) CASE(S, 14)
#elif FJ_MR > 6
#define CASES(S)                                                             \
  CASE(S, 1) CASE(S, 2) CASE(S, 3) CASE(S, 4) CASE(S, 5) CASE(S, 6)          \
  CASE(S, 7) CASE(S, 8) CASE(S, 9) CASE(S, 10) CASE(S, 11) CASE(S, 12)
#else
#define CASES(S)                                                             \
  CASE(S, 1) CASE(S, 2) CASE(S, 3) CASE(S, 4) CASE(S, 5) CASE(S, 6)
#endif

#define DEFINE_CONV(SUFFIX, WT, NV)                                          \
  static void conv_direct_##SUFFIX##_##NV(const int64_t *p) {                \
    const float *x = (const float *)(intptr_t)p[P_X];                        \
    const WT *w0 = (const WT *)(intptr_t)p[P_W];                             \
    const float *addp = (const float *)(intptr_t)p[P_ADD];                   \
    float *yp = (float *)(intptr_t)p[P_Y];                                   \
    const int64_t oh = p[P_OH], ow = p[P_OW], p0 = p[P_P0], p1 = p[P_P1];    \
    const int64_t c = p[P_C], kh = p[P_KH], kw = p[P_KW];                    \
    const int64_t wblock = kh * kw * c * NV * FJ_LANES;                      \
    for (int64_t kb = p[P_KB0]; kb < p[P_KB1]; ++kb) {                       \
      const WT *w = w0 + kb * wblock;                                        \
      /* Pixels in nearly equal blocks of at most MR: 16 pixels are 8 + 8,   \
       * not 14 + 2 (a 2-pixel block loads the weights for 4 FMAs). */       \
      const int64_t blocks = (p1 - p0 + FJ_MR - 1) / FJ_MR;                  \
      const int64_t base = blocks ? (p1 - p0) / blocks : 0;                  \
      const int64_t extra = blocks ? (p1 - p0) % blocks : 0;                 \
      /* (image, row, column) of pixel p0, then stepped: no division per \
       * pixel (on a 1x1 conv of 16 channels they cost about as much as its \
       * multiply-adds). */                                                  \
      int64_t b = p0 / (oh * ow), row = p0 % (oh * ow) / ow, col = p0 % ow;  \
      for (int64_t g = 0; g < blocks; ++g) {                                 \
        const int64_t mr = base + (g < extra);                               \
        const float *a[FJ_MR];                                               \
        float *y[FJ_MR];                                                     \
        const float *add[FJ_MR];                                             \
        for (int64_t i = 0; i < mr; ++i) {                                   \
          a[i] = x + b * p[P_XN] + row * p[P_SH] * p[P_XH] +                 \
                 col * p[P_SW] * p[P_XW];                                    \
          y[i] = yp + b * p[P_YN] + row * p[P_YH] + col * p[P_YW];           \
          add[i] = addp ? addp + b * p[P_AN] + row * p[P_AH] + col * p[P_AW] \
                        : 0;                                                 \
          if (++col == ow) {                                                 \
            col = 0;                                                         \
            if (++row == oh) row = 0, ++b;                                   \
          }                                                                  \
        }                                                                    \
        switch (mr) {                                                        \
          CASES(SUFFIX##_##NV)                                               \
          default: break;                                                    \
        }                                                                    \
      }                                                                      \
    }                                                                        \
  }
DEFINE_CONV(f32, float, 2)
DEFINE_CONV(f16, _Float16, 2)
DEFINE_CONV(f32, float, 1)
DEFINE_CONV(f16, _Float16, 1)

void conv_direct(const int64_t *p) {
  if (p[P_VECTORS] == 1) {
    if (p[P_HALF])
      conv_direct_f16_1(p);
    else
      conv_direct_f32_1(p);
  } else if (p[P_HALF]) {
    conv_direct_f16_2(p);
  } else {
    conv_direct_f32_2(p);
  }
}

/* ---- A team of threads for one step's jobs ----------------------------
 *
 * A Python thread pool costs ~20-50 µs per hand-off on the shared 2-core
 * box, while a ResNet conv at batch 1 is 40-120 µs of work: the hand-off
 * would eat the second core. conv_run hands a step's jobs (conv_direct
 * parameter blocks) to helpers started once in C, which take the next job
 * off one atomic ticket, the calling thread among them. Between steps a
 * helper spins for up to SPIN_NS (the Python between two steps of a
 * forward pass is a few µs), then sleeps on a condition variable, so an
 * idle executor takes no CPU.
 *
 * The ticket packs (generation, job count, next job) into 64 bits: a
 * helper that wakes late for an old generation fails its compare-and-swap
 * instead of running a job of the next one.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <sched.h>
#include <time.h>

#define FJ_MAX_HELPERS 63
#define FJ_SPIN_NS 300000

static pthread_mutex_t team_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t team_wake = PTHREAD_COND_INITIALIZER;
static _Atomic uint64_t team_ticket; /* gen << 32 | njobs << 16 | next */
static _Atomic int64_t team_done;
static _Atomic int team_sleepers;
static _Atomic uint64_t team_wakes; /* conv_team_wake calls */
static const int64_t *_Atomic team_jobs;
static int team_helpers;

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
}

static int64_t now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

void pool_direct(const float *x, int64_t xn, int64_t xh, int64_t xw,
                 int64_t n, int64_t oh, int64_t ow, int64_t c, int64_t kh,
                 int64_t kw, int64_t sh, int64_t sw, int64_t is_max,
                 float *y, int64_t yn, int64_t yh, int64_t yw);

/* A pool as a job: pool_direct's 17 arguments, in order. */
static void pool_job(const int64_t *p) {
  pool_direct((const float *)p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7],
              p[8], p[9], p[10], p[11], p[12], (float *)p[13], p[14], p[15],
              p[16]);
}

/* Zeros a float (n, h, w, c) region, channels contiguous, element strides
 * (n, h, w): x, n, h, w, c, sn, sh, sw. */
static void fill_job(const int64_t *p) {
  float *x = (float *)p[0];
  for (int64_t b = 0; b < p[1]; ++b)
    for (int64_t i = 0; i < p[2]; ++i)
      for (int64_t j = 0; j < p[3]; ++j)
        memset(x + b * p[5] + i * p[6] + j * p[7], 0,
               (size_t)p[4] * sizeof(float));
}

/* y = a + b [-> ReLU] over y's (n, h, w, c), each of a and b zero-extended
 * at the high end of every axis from its own (h, w, c): dlib's add_prev
 * where the branch and the shortcut differ. y, n, h, w, c, yn, yh, yw;
 * then per operand x, h, w, c, xn, xh, xw; then relu. Element strides. */
static void add_job(const int64_t *p) {
  float *y = (float *)p[0];
  const int64_t *a = p + 8, *b = p + 15;
  for (int64_t n = 0; n < p[1]; ++n)
    for (int64_t i = 0; i < p[2]; ++i)
      for (int64_t j = 0; j < p[3]; ++j) {
        float *restrict d = y + n * p[5] + i * p[6] + j * p[7];
        const float *src[2];
        int64_t count[2];
        for (int q = 0; q < 2; ++q) {
          const int64_t *o = q ? b : a;
          const int inside = i < o[1] && j < o[2];
          src[q] = (const float *)o[0] + n * o[4] + i * o[5] + j * o[6];
          count[q] = inside ? o[3] : 0;
        }
        for (int64_t ch = 0; ch < p[4]; ++ch) {
          float v = (ch < count[0] ? src[0][ch] : 0.0f) +
                    (ch < count[1] ? src[1][ch] : 0.0f);
          d[ch] = p[22] && v < 0.0f ? 0.0f : v; /* NaN kept, as np.maximum */
        }
      }
}

static void run_job(const int64_t *p) {
  switch (p[P_OP]) {
    case FJ_OP_WINO_INPUT: wino_input(p); break;
    case FJ_OP_WINO_OUTPUT: wino_output(p); break;
    case FJ_OP_POOL: pool_job(p); break;
    case FJ_OP_FILL: fill_job(p); break;
    case FJ_OP_ADD: add_job(p); break;
    default: conv_direct(p); break;
  }
}

/* Runs jobs of generation ``gen`` until none is left. */
static void drain(uint64_t gen) {
  uint64_t t = atomic_load(&team_ticket);
  for (;;) {
    const uint64_t njobs = (t >> 16) & 0xffff, next = t & 0xffff;
    if ((t >> 32) != gen || next >= njobs) return;
    if (!atomic_compare_exchange_weak(&team_ticket, &t, t + 1)) continue;
    run_job(atomic_load(&team_jobs) + next * P_FIELDS);
    atomic_fetch_add(&team_done, 1);
    t = atomic_load(&team_ticket);
  }
}

static void *helper(void *unused) {
  (void)unused;
  uint64_t seen = atomic_load(&team_ticket) >> 32;
  for (;;) {
    int64_t since = 0;
    for (int spins = 0; (atomic_load(&team_ticket) >> 32) == seen;) {
      cpu_relax();
      if (++spins % 256) continue;
      const int64_t t = now_ns();
      if (!since) {
        since = t;
      } else if (t - since > FJ_SPIN_NS) {
        pthread_mutex_lock(&team_lock);
        const uint64_t wakes = atomic_load(&team_wakes);
        atomic_fetch_add(&team_sleepers, 1);
        while ((atomic_load(&team_ticket) >> 32) == seen &&
               atomic_load(&team_wakes) == wakes)
          pthread_cond_wait(&team_wake, &team_lock);
        atomic_fetch_sub(&team_sleepers, 1);
        pthread_mutex_unlock(&team_lock);
        since = 0; /* Woken early (conv_team_wake): spin again. */
      }
    }
    seen = atomic_load(&team_ticket) >> 32;
    drain(seen);
  }
  return 0;
}

/* Starts helpers until there are ``threads`` - 1; returns their count. */
int64_t conv_team(int64_t threads) {
  pthread_mutex_lock(&team_lock);
  while (team_helpers < threads - 1 && team_helpers < FJ_MAX_HELPERS) {
    pthread_t thread;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    /* The conv jobs' register blocks and transforms keep their vectors
     * on the stack: not left to a small RLIMIT_STACK default. */
    pthread_attr_setstacksize(&attr, 4 << 20);
    const int failed = pthread_create(&thread, &attr, helper, 0);
    pthread_attr_destroy(&attr);
    if (failed) break;
    ++team_helpers;
  }
  const int64_t helpers = team_helpers;
  pthread_mutex_unlock(&team_lock);
  return helpers;
}

/* Wakes sleeping helpers ahead of work (a forward pass about to start),
 * so the futex wake-up overlaps the caller's own preparation; they spin
 * for up to FJ_SPIN_NS again. */
void conv_team_wake(void) {
  if (!atomic_load(&team_sleepers)) return;
  pthread_mutex_lock(&team_lock);
  atomic_fetch_add(&team_wakes, 1);
  pthread_cond_broadcast(&team_wake);
  pthread_mutex_unlock(&team_lock);
}

/* Runs ``njobs`` parameter blocks (njobs < 65536) on the team and the
 * calling thread; one caller at a time (the executor's forward holds it). */
void conv_run(const int64_t *jobs, int64_t njobs) {
  if (njobs == 1 || !team_helpers) {
    for (int64_t j = 0; j < njobs; ++j) run_job(jobs + j * P_FIELDS);
    return;
  }
  const uint64_t gen = (atomic_load(&team_ticket) >> 32) + 1;
  atomic_store(&team_jobs, jobs);
  atomic_store(&team_done, 0);
  atomic_store(&team_ticket, (gen << 32) | ((uint64_t)njobs << 16));
  if (atomic_load(&team_sleepers)) {
    pthread_mutex_lock(&team_lock);
    pthread_cond_broadcast(&team_wake);
    pthread_mutex_unlock(&team_lock);
  }
  drain(gen);
  for (int spins = 0; atomic_load(&team_done) < njobs;)
    if (++spins % 1024) cpu_relax(); else sched_yield();
}

/* Runs a program: ``nsteps`` team calls in order, step i being the
 * ``steps[2i + 1]`` jobs at address ``steps[2i]``. One C call for a run of
 * the executor's steps, so no Python runs between them. */
void conv_program(const int64_t *steps, int64_t nsteps) {
  for (int64_t i = 0; i < nsteps; ++i)
    conv_run((const int64_t *)steps[2 * i], steps[2 * i + 1]);
}

/* ---- Max and average pooling without padding --------------------------
 * (NHWC, channels contiguous; the executor's NumPy PoolStep makes one
 * pass over the output per window tap, 9 for the stem's 3x3 max pool.)
 * Element strides; x at the first window's origin.
 */
#if defined(__AVX__)
#include <immintrin.h>
#endif
static inline vf max_v(vf a, vf t) { /* t > a ? t : a, as the tail */
#if defined(__AVX512F__)
  return (vf)_mm512_max_ps((__m512)t, (__m512)a);  /* t > a ? t : a */
#elif defined(__AVX__)
  return (vf)_mm256_max_ps((__m256)t, (__m256)a);
#else
  const vi take = (vi)(t > a);
  return (vf)(((vi)t & take) | ((vi)a & ~take));
#endif
}

void pool_direct(const float *x, int64_t xn, int64_t xh, int64_t xw,
                 int64_t n, int64_t oh, int64_t ow, int64_t c, int64_t kh,
                 int64_t kw, int64_t sh, int64_t sw, int64_t is_max,
                 float *y, int64_t yn, int64_t yh, int64_t yw) {
  const float inv = 1.0f / (float)(kh * kw);
  for (int64_t b = 0; b < n; ++b)
    for (int64_t i = 0; i < oh; ++i)
      for (int64_t j = 0; j < ow; ++j) {
        const float *src = x + b * xn + i * sh * xh + j * sw * xw;
        float *restrict dst = y + b * yn + i * yh + j * yw;
        int64_t ch = 0;
        /* A vector of channels stays in a register over the window's taps
         * and is stored once (the old loop stored it after every tap). */
        for (; ch + FJ_LANES <= c; ch += FJ_LANES) {
          vf acc = load(src + ch);
          for (int64_t r = 0; r < kh; ++r)
            for (int64_t s = 0; s < kw; ++s) {
              if (!r && !s) continue;
              const vf t = load(src + r * xh + s * xw + ch);
              acc = is_max ? max_v(acc, t) : acc + t;
            }
          store(dst + ch, is_max ? acc : acc * inv);
        }
        for (; ch < c; ++ch) {
          float acc = src[ch];
          for (int64_t r = 0; r < kh; ++r)
            for (int64_t s = 0; s < kw; ++s) {
              if (!r && !s) continue;
              const float t = src[r * xh + s * xw + ch];
              acc = is_max ? (t > acc ? t : acc) : acc + t;
            }
          dst[ch] = is_max ? acc : acc * inv;
        }
      }
}
