/*
 * kernels_avx2.c: the AVX2 + F16C loops for float16, bfloat16, float32 and
 * float64, and their kernel table.  Compiled for the baseline ISA with a per-function
 * target attribute; cpu_dispatch.c picks the table only on a CPU (and OS)
 * that runs it.
 */
#include "leaky.h"

#ifdef LEAKY_X86_64
#include <immintrin.h>
#if defined(_MSC_VER) && !defined(__clang__)
#define TARGET_AVX2
#else
#define TARGET_AVX2 __attribute__((target("avx2,f16c")))
#endif

/*
 * One kernel per lane type (leaky.h, SimdOp); float16 and bfloat16 share
 * the float32 lanes (LaneFormat).  AVX2 has no masked 16-bit stores; for every format alike, the
 * portable loop finishes the ragged end and writes the head before
 * streaming stores reach a 32-byte boundary.
 */

/* ---- float32 lanes: float32, and float16 or bfloat16 widened on load (exact) ---- */

/* x > 0 ? a : b, lane by lane; a NaN x is not > 0, so it takes b. */
TARGET_AVX2 static ALWAYS_INLINE __m256
select_ps(__m256 x, __m256 a, __m256 b)
{
    __m256 positive = _mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_GT_OQ);
    return _mm256_blendv_ps(b, a, positive);  /* a where the mask is set */
}

/* The operation on 8 lanes.  Backward reads x as grad_output and z as z;
   the others ignore z. */
TARGET_AVX2 static ALWAYS_INLINE __m256
apply_ps(SimdOp op, __m256 x, __m256 z, __m256 alpha)
{
    const __m256 one = _mm256_set1_ps(1.0f);
    switch (op) {
    case SIMD_FORWARD: return select_ps(x, x, _mm256_mul_ps(x, alpha));
    case SIMD_GRAD: return select_ps(x, one, alpha);
    default: return _mm256_mul_ps(x, select_ps(z, one, alpha));
    }
}

TARGET_AVX2 static ALWAYS_INLINE __m256
load_ps(const char *p, LaneFormat mem)
{
    if (mem == LANES_BF16) {  /* the top half of a float32: widening is a shift */
        __m128i h = _mm_loadu_si128((const __m128i *)(const void *)p);
        return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    }
    if (mem == LANES_F16) {
        return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)p));
    }
    return _mm256_loadu_ps((const void *)p);
}

/* float32 to float16 or bfloat16, rounded once, to nearest even.  bfloat16
   as float_to_bf16 does it: add 0x7fff plus the lowest kept bit and keep the
   top half; a NaN is truncated with its quiet bit set. */
TARGET_AVX2 static ALWAYS_INLINE __m128i
narrow_ps(__m256 v, LaneFormat mem)
{
    if (mem == LANES_BF16) {
        const __m256i bits = _mm256_castps_si256(v);
        const __m256i one = _mm256_set1_epi32(1), below_half = _mm256_set1_epi32(0x7fff);
        const __m256i lowest_kept = _mm256_and_si256(_mm256_srli_epi32(bits, 16), one);
        const __m256i rounded = _mm256_add_epi32(bits, _mm256_add_epi32(lowest_kept, below_half));
        const __m256i quieted = _mm256_or_si256(bits, _mm256_set1_epi32(0x00400000));
        const __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q));
        const __m256i top = _mm256_srli_epi32(_mm256_blendv_epi8(rounded, quieted, nan), 16);
        /* each lane is now 0..0xffff, which unsigned saturation keeps as it is */
        return _mm_packus_epi32(_mm256_castsi256_si128(top), _mm256_extracti128_si256(top, 1));
    }
    return _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}

/* stream: a non-temporal store, to an aligned p. */
TARGET_AVX2 static ALWAYS_INLINE void
store_ps(char *p, __m256 v, LaneFormat mem, int stream)
{
    if (mem != LANES_F32) {
        __m128i narrowed = narrow_ps(v, mem);
        if (stream) {
            _mm_stream_si128((__m128i *)(void *)p, narrowed);
        }
        else {
            _mm_storeu_si128((__m128i *)(void *)p, narrowed);
        }
    }
    else if (stream) {
        _mm256_stream_ps((void *)p, v);
    }
    else {
        _mm256_storeu_ps((void *)p, v);
    }
}

/* One unit-stride run of float32 (or float16, or bfloat16) elements;
   anything else goes to the portable loop, which computes the same bits. */
TARGET_AVX2 static ALWAYS_INLINE void
kernel_ps(SimdOp op, LaneFormat mem, InnerLoop whole, InnerLoop portable, char *const *ptrs,
          const Py_ssize_t *steps, Py_ssize_t n, const LoopContext *ctx)
{
    const Py_ssize_t size = mem == LANES_F32 ? 4 : 2;  /* bytes per element in memory */
    const int binary = op == SIMD_BACKWARD;
    if (op != SIMD_GRAD && slope_is_nan(ctx)) {
        whole(ptrs, steps, n, ctx);  /* the portable loop applies the NaN rule (leaky.h) */
        return;
    }
    if (steps[0] != size || steps[1] != size || (binary && steps[2] != size)) {
        portable(ptrs, steps, n, ctx);
        return;
    }
    const __m256 alpha = _mm256_set1_ps(ctx->alpha32);
    const char *x = ptrs[0], *z = ptrs[1];  /* z: backward's second input */
    char *out = ptrs[binary ? 2 : 1];
    Py_ssize_t i = 0;
    const Py_ssize_t head = ctx->streaming ? stream_head(out, n, size, 8 * size) : -1;
    if (head >= 0) {
        portable_part(portable, binary, ptrs, steps, 0, head, size, ctx);
        for (i = head; i + 8 <= n; i += 8) {
            __m256 xv = load_ps(x + i * size, mem);
            __m256 zv = binary ? load_ps(z + i * size, mem) : xv;
            store_ps(out + i * size, apply_ps(op, xv, zv, alpha), mem, 1);
        }
        _mm_sfence();
    }
    for (; i + 8 <= n; i += 8) {
        __m256 xv = load_ps(x + i * size, mem);
        __m256 zv = binary ? load_ps(z + i * size, mem) : xv;
        store_ps(out + i * size, apply_ps(op, xv, zv, alpha), mem, 0);
    }
    portable_part(portable, binary, ptrs, steps, i, n - i, size, ctx);
}

/* ---- float64 lanes ---- */

TARGET_AVX2 static ALWAYS_INLINE __m256d
select_pd(__m256d x, __m256d a, __m256d b)
{
    __m256d positive = _mm256_cmp_pd(x, _mm256_setzero_pd(), _CMP_GT_OQ);
    return _mm256_blendv_pd(b, a, positive);  /* a where the mask is set */
}

TARGET_AVX2 static ALWAYS_INLINE __m256d
apply_pd(SimdOp op, __m256d x, __m256d z, __m256d alpha)
{
    const __m256d one = _mm256_set1_pd(1.0);
    switch (op) {
    case SIMD_FORWARD: return select_pd(x, x, _mm256_mul_pd(x, alpha));
    case SIMD_GRAD: return select_pd(x, one, alpha);
    default: return _mm256_mul_pd(x, select_pd(z, one, alpha));
    }
}

/* The float32 kernel's loop on 4 float64 lanes (no float16 here). */
TARGET_AVX2 static ALWAYS_INLINE void
kernel_pd(SimdOp op, InnerLoop whole, InnerLoop portable, char *const *ptrs,
          const Py_ssize_t *steps, Py_ssize_t n, const LoopContext *ctx)
{
    const int binary = op == SIMD_BACKWARD;
    if (op != SIMD_GRAD && slope_is_nan(ctx)) {
        whole(ptrs, steps, n, ctx);  /* the portable loop applies the NaN rule (leaky.h) */
        return;
    }
    if (steps[0] != 8 || steps[1] != 8 || (binary && steps[2] != 8)) {
        portable(ptrs, steps, n, ctx);
        return;
    }
    const __m256d alpha = _mm256_set1_pd(ctx->alpha);
    const char *x = ptrs[0], *z = ptrs[1];
    char *out = ptrs[binary ? 2 : 1];
    Py_ssize_t i = 0;
    const Py_ssize_t head = ctx->streaming ? stream_head(out, n, 8, 32) : -1;
    if (head >= 0) {
        portable_part(portable, binary, ptrs, steps, 0, head, 8, ctx);
        for (i = head; i + 4 <= n; i += 4) {
            __m256d xv = _mm256_loadu_pd((const void *)(x + i * 8));
            __m256d zv = binary ? _mm256_loadu_pd((const void *)(z + i * 8)) : xv;
            _mm256_stream_pd((void *)(out + i * 8), apply_pd(op, xv, zv, alpha));
        }
        _mm_sfence();
    }
    for (; i + 4 <= n; i += 4) {
        __m256d xv = _mm256_loadu_pd((const void *)(x + i * 8));
        __m256d zv = binary ? _mm256_loadu_pd((const void *)(z + i * 8)) : xv;
        _mm256_storeu_pd((void *)(out + i * 8), apply_pd(op, xv, zv, alpha));
    }
    portable_part(portable, binary, ptrs, steps, i, n - i, 8, ctx);
}

/* ---- the instances in the kernel table ---- */

TARGET_AVX2 static void
avx2_forward_f32(char *const *ptrs, const Py_ssize_t *steps, Py_ssize_t n, const LoopContext *ctx)
{
    kernel_ps(SIMD_FORWARD, LANES_F32, forward_loop_f32, forward_ordinary_f32, ptrs, steps, n, ctx);
}

TARGET_AVX2 static void
avx2_grad_f32(char *const *ptrs, const Py_ssize_t *steps, Py_ssize_t n, const LoopContext *ctx)
{
    kernel_ps(SIMD_GRAD, LANES_F32, grad_loop_f32, grad_loop_f32, ptrs, steps, n, ctx);
}

TARGET_AVX2 static void
avx2_backward_f32(char *const *ptrs, const Py_ssize_t *steps, Py_ssize_t n, const LoopContext *ctx)
{
    kernel_ps(SIMD_BACKWARD, LANES_F32, backward_loop_f32, backward_ordinary_f32, ptrs, steps, n,
              ctx);
}

TARGET_AVX2 static void
avx2_forward_f16(char *const *ptrs, const Py_ssize_t *steps, Py_ssize_t n, const LoopContext *ctx)
{
    kernel_ps(SIMD_FORWARD, LANES_F16, forward_loop_f16, forward_ordinary_f16, ptrs, steps, n, ctx);
}

TARGET_AVX2 static void
avx2_grad_f16(char *const *ptrs, const Py_ssize_t *steps, Py_ssize_t n, const LoopContext *ctx)
{
    kernel_ps(SIMD_GRAD, LANES_F16, grad_loop_f16, grad_loop_f16, ptrs, steps, n, ctx);
}

TARGET_AVX2 static void
avx2_backward_f16(char *const *ptrs, const Py_ssize_t *steps, Py_ssize_t n, const LoopContext *ctx)
{
    kernel_ps(SIMD_BACKWARD, LANES_F16, backward_loop_f16, backward_ordinary_f16, ptrs, steps, n,
              ctx);
}

TARGET_AVX2 static void
avx2_forward_f64(char *const *ptrs, const Py_ssize_t *steps, Py_ssize_t n, const LoopContext *ctx)
{
    kernel_pd(SIMD_FORWARD, forward_loop_f64, forward_ordinary_f64, ptrs, steps, n, ctx);
}

TARGET_AVX2 static void
avx2_grad_f64(char *const *ptrs, const Py_ssize_t *steps, Py_ssize_t n, const LoopContext *ctx)
{
    kernel_pd(SIMD_GRAD, grad_loop_f64, grad_loop_f64, ptrs, steps, n, ctx);
}

TARGET_AVX2 static void
avx2_backward_f64(char *const *ptrs, const Py_ssize_t *steps, Py_ssize_t n, const LoopContext *ctx)
{
    kernel_pd(SIMD_BACKWARD, backward_loop_f64, backward_ordinary_f64, ptrs, steps, n, ctx);
}

TARGET_AVX2 static void
avx2_forward_bf16(char *const *ptrs, const Py_ssize_t *steps, Py_ssize_t n, const LoopContext *ctx)
{
    kernel_ps(SIMD_FORWARD, LANES_BF16, forward_loop_bf16, forward_ordinary_bf16, ptrs, steps, n,
              ctx);
}

TARGET_AVX2 static void
avx2_grad_bf16(char *const *ptrs, const Py_ssize_t *steps, Py_ssize_t n, const LoopContext *ctx)
{
    kernel_ps(SIMD_GRAD, LANES_BF16, grad_loop_bf16, grad_loop_bf16, ptrs, steps, n, ctx);
}

TARGET_AVX2 static void
avx2_backward_bf16(char *const *ptrs, const Py_ssize_t *steps, Py_ssize_t n, const LoopContext *ctx)
{
    kernel_ps(SIMD_BACKWARD, LANES_BF16, backward_loop_bf16, backward_ordinary_bf16, ptrs, steps,
              n, ctx);
}

SIMD_TABLE(AVX2_KERNELS, avx2)
#endif /* LEAKY_X86_64 */
