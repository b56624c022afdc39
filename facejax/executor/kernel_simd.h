/* What the executor's conv kernels share: the vector width of the machine
 * they are compiled on, the register block, and the job format of the
 * thread team in conv_kernel.c.
 *
 * Registers: 2 vectors of output channels (NR = 2 * lanes) by MR pixels,
 * MR = 14 with AVX-512 (28 of 32 zmm accumulate), 6 with AVX2 (12 of 16
 * ymm), 12 with NEON (24 of 32 q). The vector type is GCC's generic
 * vector, so the same source is AVX-512, AVX2 or NEON code.
 */
#ifndef FACEJAX_KERNEL_SIMD_H_
#define FACEJAX_KERNEL_SIMD_H_

#include <stdint.h>

#if defined(__AVX512F__)
#define FJ_VBYTES 64
#define FJ_MR 14
#elif defined(__AVX__)
#define FJ_VBYTES 32
#define FJ_MR 6
#elif defined(__ARM_NEON) || defined(__aarch64__)
#define FJ_VBYTES 16
#define FJ_MR 12
#else
#define FJ_VBYTES 16
#define FJ_MR 6
#endif
#define FJ_LANES (FJ_VBYTES / 4)
#define FJ_NR (2 * FJ_LANES)

typedef float vf __attribute__((vector_size(FJ_VBYTES)));
typedef float vfu __attribute__((vector_size(FJ_VBYTES), aligned(4)));
typedef int32_t vi __attribute__((vector_size(FJ_VBYTES)));

static inline vf load(const float *p) { return *(const vfu *)p; }
static inline void store(float *p, vf v) { *(vfu *)p = v; }

/* fp16 weights (an fp16 blob's layers): half the resident bytes, widened
 * exactly to fp32 as they are loaded, LANES at a time; products and sums
 * stay fp32, so the error is that of fp32 on the stored values. */
static inline vf load_f32(const float *p) { return load(p); }
#if defined(__AVX512F__)
#include <immintrin.h>
static inline vf load_f16(const _Float16 *p) { /* GCC 12 would scalarise */
  return (vf)_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
}
#elif defined(__AVX__) && defined(__F16C__)
#include <immintrin.h>
static inline vf load_f16(const _Float16 *p) {
  return (vf)_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
}
#else /* NEON converts a vector in one instruction; else element-wise. */
typedef _Float16 vh __attribute__((vector_size(FJ_VBYTES / 2), aligned(2)));
static inline vf load_f16(const _Float16 *p) {
  return __builtin_convertvector(*(const vh *)p, vf);
}
#endif

static inline vf relu_v(vf v) {
  const vf zero = {0};
  return (vf)((vi)v & (vi)(v > zero));
}

/* A team job is FJ_JOB_FIELDS int64; the last one says what it is. */
#define FJ_JOB_FIELDS 40
#define FJ_JOB_OP (FJ_JOB_FIELDS - 1)
enum { FJ_OP_CONV, FJ_OP_WINO_INPUT, FJ_OP_WINO_OUTPUT, FJ_OP_POOL,
       FJ_OP_FILL, FJ_OP_ADD };

void conv_direct(const int64_t *p);
void wino_input(const int64_t *p);
void wino_output(const int64_t *p);

#endif /* FACEJAX_KERNEL_SIMD_H_ */
