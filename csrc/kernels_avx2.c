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
 * One kernel per lane type (leaky.h, SimdOp); float16 shares the float32
 * lanes.  AVX2 has no masked 16-bit stores; for every format alike, the
 * portable loop finishes the ragged end and writes the head before
 * streaming stores reach a 32-byte boundary.
 */

/* ---- float32 lanes: float32, and float16 widened on load (exact) ---- */

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
load_ps(const char *p, int half)
{
    if (half) {
        return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)p));
    }
    return _mm256_loadu_ps((const void *)p);
}

/* float16 results are rounded once, to nearest even.  stream: a
   non-temporal store, to an aligned p. */
TARGET_AVX2 static ALWAYS_INLINE void
store_ps(char *p, __m256 v, int half, int stream)
{
    if (half) {
        __m128i narrowed = _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
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

/* One unit-stride run of float32 (or float16) elements; anything else goes
   to the portable loop, which computes the same bits. */
TARGET_AVX2 static ALWAYS_INLINE void
kernel_ps(SimdOp op, int half, InnerLoop whole, InnerLoop portable, char *const *ptrs,
          const Py_ssize_t *steps, Py_ssize_t n, const LoopContext *ctx)
{
    const Py_ssize_t size = half ? 2 : 4;  /* bytes per element in memory */
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
            __m256 xv = load_ps(x + i * size, half);
            __m256 zv = binary ? load_ps(z + i * size, half) : xv;
            store_ps(out + i * size, apply_ps(op, xv, zv, alpha), half, 1);
        }
        _mm_sfence();
    }
    for (; i + 8 <= n; i += 8) {
        __m256 xv = load_ps(x + i * size, half);
        __m256 zv = binary ? load_ps(z + i * size, half) : xv;
        store_ps(out + i * size, apply_ps(op, xv, zv, alpha), half, 0);
    }
    portable_part(portable, binary, ptrs, steps, i, n - i, size, ctx);
}

/* ---- bfloat16: 16 lanes of 16 bits, as two vectors of float32 lanes ---- */

/*
 * The bfloat16 kernel works on 16 elements a step, the float32 work on two
 * vectors of 8, because its widening and narrowing cost as much as the
 * operation itself: unpacking against zero widens (a bfloat16 is the top
 * half of its float32), and packing, within 128-bit lanes like the unpack,
 * puts the elements back in their order.
 */

/* bf16_is_positive on 16 lanes: 0x0001..0x7f80 as int16. */
TARGET_AVX2 static ALWAYS_INLINE __m256i
positive_bf16(__m256i h)
{
    return _mm256_and_si256(_mm256_cmpgt_epi16(h, _mm256_setzero_si256()),
                            _mm256_cmpgt_epi16(_mm256_set1_epi16(0x7f81), h));
}

/*
 * float32 to bfloat16 as float_to_bf16 rounds it: + 0x7fff + the lowest
 * kept bit, keep the top half (in the low half here, for the pack).  No NaN
 * case is needed: in these kernels every float32 comes from a multiply of a
 * widened bfloat16 by 1 or a non-NaN float32(alpha) (NaN slopes never get
 * here), so a NaN result is quiet and its low 16 bits are zero (the NaN
 * operand's, quieted, or the default NaN of inf * 0), where the rounding
 * adds at most 0x8000 and so only truncates.
 */
TARGET_AVX2 static ALWAYS_INLINE __m256i
round_bf16(__m256 v)
{
    const __m256i bits = _mm256_castps_si256(v);
    const __m256i lowest_kept = _mm256_and_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(1));
    const __m256i bias = _mm256_add_epi32(lowest_kept, _mm256_set1_epi32(0x7fff));
    return _mm256_srli_epi32(_mm256_add_epi32(bits, bias), 16);
}

/* The operation on 16 elements, from their bits to the result's bits.  Every
   z > 0 is a test of bits, as in the portable loops (so the paths agree even
   if a float compare would treat subnormals as zero, under DAZ). */
TARGET_AVX2 static ALWAYS_INLINE __m256i
apply_bf16(SimdOp op, __m256i x, __m256i z, __m256 alpha, __m256i alpha_bf16)
{
    const __m256i zero = _mm256_setzero_si256();
    if (op == SIMD_GRAD) {  /* a select on bits: nothing to round */
        return _mm256_blendv_epi8(alpha_bf16, _mm256_set1_epi16(0x3f80), positive_bf16(x));
    }
    __m256 low = _mm256_castsi256_ps(_mm256_unpacklo_epi16(zero, x));
    __m256 high = _mm256_castsi256_ps(_mm256_unpackhi_epi16(zero, x));
    if (op == SIMD_FORWARD) {
        __m256i scaled = _mm256_packus_epi32(round_bf16(_mm256_mul_ps(low, alpha)),
                                             round_bf16(_mm256_mul_ps(high, alpha)));
        return _mm256_blendv_epi8(scaled, x, positive_bf16(x));
    }
    /* backward: the factor, 1 or alpha, chosen on z's bits, with the 16-bit
       lane masks unpacked as x was into float32 lane masks */
    const __m256 one = _mm256_set1_ps(1.0f);
    const __m256i positive = positive_bf16(z);
    __m256 low_factor = _mm256_blendv_ps(
        alpha, one, _mm256_castsi256_ps(_mm256_unpacklo_epi16(positive, positive)));
    __m256 high_factor = _mm256_blendv_ps(
        alpha, one, _mm256_castsi256_ps(_mm256_unpackhi_epi16(positive, positive)));
    return _mm256_packus_epi32(round_bf16(_mm256_mul_ps(low, low_factor)),
                               round_bf16(_mm256_mul_ps(high, high_factor)));
}

TARGET_AVX2 static ALWAYS_INLINE __m256i
load_bf16(const char *p)
{
    return _mm256_loadu_si256((const __m256i *)(const void *)p);
}

/* One unit-stride run of bfloat16 elements; anything else goes to the
   portable loop, which computes the same bits. */
TARGET_AVX2 static ALWAYS_INLINE void
kernel_bf16(SimdOp op, InnerLoop whole, InnerLoop portable, char *const *ptrs,
            const Py_ssize_t *steps, Py_ssize_t n, const LoopContext *ctx)
{
    const int binary = op == SIMD_BACKWARD;
    if (op != SIMD_GRAD && slope_is_nan(ctx)) {
        whole(ptrs, steps, n, ctx);  /* the portable loop applies the NaN rule (leaky.h) */
        return;
    }
    if (steps[0] != 2 || steps[1] != 2 || (binary && steps[2] != 2)) {
        portable(ptrs, steps, n, ctx);
        return;
    }
    const __m256 alpha = _mm256_set1_ps(ctx->alpha32);
    const __m256i alpha_bf16 = _mm256_set1_epi16((short)ctx->alpha_bf16);
    const char *x = ptrs[0], *z = ptrs[1];  /* z: backward's second input */
    char *out = ptrs[binary ? 2 : 1];
    Py_ssize_t i = 0;
    const Py_ssize_t head = ctx->streaming ? stream_head(out, n, 2, 32) : -1;
    if (head >= 0) {
        portable_part(portable, binary, ptrs, steps, 0, head, 2, ctx);
        for (i = head; i + 16 <= n; i += 16) {
            __m256i xv = load_bf16(x + i * 2);
            __m256i zv = binary ? load_bf16(z + i * 2) : xv;
            _mm256_stream_si256((__m256i *)(void *)(out + i * 2),
                                apply_bf16(op, xv, zv, alpha, alpha_bf16));
        }
        _mm_sfence();
    }
    for (; i + 16 <= n; i += 16) {
        __m256i xv = load_bf16(x + i * 2);
        __m256i zv = binary ? load_bf16(z + i * 2) : xv;
        _mm256_storeu_si256((__m256i *)(void *)(out + i * 2),
                            apply_bf16(op, xv, zv, alpha, alpha_bf16));
    }
    portable_part(portable, binary, ptrs, steps, i, n - i, 2, ctx);
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
    kernel_ps(SIMD_FORWARD, 0, forward_loop_f32, forward_ordinary_f32, ptrs, steps, n, ctx);
}

TARGET_AVX2 static void
avx2_grad_f32(char *const *ptrs, const Py_ssize_t *steps, Py_ssize_t n, const LoopContext *ctx)
{
    kernel_ps(SIMD_GRAD, 0, grad_loop_f32, grad_loop_f32, ptrs, steps, n, ctx);
}

TARGET_AVX2 static void
avx2_backward_f32(char *const *ptrs, const Py_ssize_t *steps, Py_ssize_t n, const LoopContext *ctx)
{
    kernel_ps(SIMD_BACKWARD, 0, backward_loop_f32, backward_ordinary_f32, ptrs, steps, n, ctx);
}

TARGET_AVX2 static void
avx2_forward_f16(char *const *ptrs, const Py_ssize_t *steps, Py_ssize_t n, const LoopContext *ctx)
{
    kernel_ps(SIMD_FORWARD, 1, forward_loop_f16, forward_ordinary_f16, ptrs, steps, n, ctx);
}

TARGET_AVX2 static void
avx2_grad_f16(char *const *ptrs, const Py_ssize_t *steps, Py_ssize_t n, const LoopContext *ctx)
{
    kernel_ps(SIMD_GRAD, 1, grad_loop_f16, grad_loop_f16, ptrs, steps, n, ctx);
}

TARGET_AVX2 static void
avx2_backward_f16(char *const *ptrs, const Py_ssize_t *steps, Py_ssize_t n, const LoopContext *ctx)
{
    kernel_ps(SIMD_BACKWARD, 1, backward_loop_f16, backward_ordinary_f16, ptrs, steps, n, ctx);
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
    kernel_bf16(SIMD_FORWARD, forward_loop_bf16, forward_ordinary_bf16, ptrs, steps, n, ctx);
}

TARGET_AVX2 static void
avx2_grad_bf16(char *const *ptrs, const Py_ssize_t *steps, Py_ssize_t n, const LoopContext *ctx)
{
    kernel_bf16(SIMD_GRAD, grad_loop_bf16, grad_loop_bf16, ptrs, steps, n, ctx);
}

TARGET_AVX2 static void
avx2_backward_bf16(char *const *ptrs, const Py_ssize_t *steps, Py_ssize_t n, const LoopContext *ctx)
{
    kernel_bf16(SIMD_BACKWARD, backward_loop_bf16, backward_ordinary_bf16, ptrs, steps, n, ctx);
}

SIMD_TABLE(AVX2_KERNELS, avx2)
#endif /* LEAKY_X86_64 */
