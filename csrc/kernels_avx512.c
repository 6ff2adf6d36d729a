/*
 * kernels_avx512.c: the AVX-512 (F, BW, VL, DQ) loops for float16, bfloat16,
 * float32 and float64, and their kernel table.  Compiled for the baseline
 * ISA with a per-function target attribute; cpu_dispatch.c picks the table
 * only on a CPU (and OS) that runs it.
 */
#include "leaky.h"

#ifdef LEAKY_X86_64
#include <immintrin.h>
#if defined(_MSC_VER) && !defined(__clang__)
#define TARGET_AVX512
#else
#define TARGET_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,f16c")))
#endif

/*
 * One kernel per lane type (leaky.h, SimdOp); float16 shares the float32
 * lanes.  Masked loads and stores handle the ragged end, and the head before
 * streaming stores reach a 64-byte line.
 */

/* ---- float32 lanes: float32, and float16 widened on load (exact) ---- */

/* x > 0 ? a : b, lane by lane; a NaN x is not > 0, so it takes b. */
TARGET_AVX512 static ALWAYS_INLINE __m512
select_ps(__m512 x, __m512 a, __m512 b)
{
    __mmask16 positive = _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_GT_OQ);
    return _mm512_mask_blend_ps(positive, b, a);  /* a where the mask is set */
}

/* The operation on 16 lanes.  Backward reads x as grad_output and z as z;
   the others ignore z. */
TARGET_AVX512 static ALWAYS_INLINE __m512
apply_ps(SimdOp op, __m512 x, __m512 z, __m512 alpha)
{
    const __m512 one = _mm512_set1_ps(1.0f);
    switch (op) {
    case SIMD_FORWARD: return select_ps(x, x, _mm512_mul_ps(x, alpha));
    case SIMD_GRAD: return select_ps(x, one, alpha);
    default: return _mm512_mul_ps(x, select_ps(z, one, alpha));
    }
}

TARGET_AVX512 static ALWAYS_INLINE __m512
load_ps(const char *p, int half)
{
    if (half) {
        return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(const void *)p));
    }
    return _mm512_loadu_ps((const void *)p);
}

/* The lanes in mask; the others read as 0 and touch no memory. */
TARGET_AVX512 static ALWAYS_INLINE __m512
load_some_ps(const char *p, uint64_t mask, int half)
{
    if (half) {
        return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16((__mmask16)mask, (const void *)p));
    }
    return _mm512_maskz_loadu_ps((__mmask16)mask, (const void *)p);
}

/* float16 results are rounded once, to nearest even. */
TARGET_AVX512 static ALWAYS_INLINE __m256i
narrow_ps(__m512 v)
{
    return _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}

/* stream: a non-temporal store, to a 64-byte aligned p. */
TARGET_AVX512 static ALWAYS_INLINE void
store_ps(char *p, __m512 v, int half, int stream)
{
    if (half && stream) {
        _mm256_stream_si256((__m256i *)(void *)p, narrow_ps(v));
    }
    else if (half) {
        _mm256_storeu_si256((__m256i *)(void *)p, narrow_ps(v));
    }
    else if (stream) {
        _mm512_stream_ps((void *)p, v);
    }
    else {
        _mm512_storeu_ps((void *)p, v);
    }
}

TARGET_AVX512 static ALWAYS_INLINE void
store_some_ps(char *p, uint64_t mask, __m512 v, int half)
{
    if (half) {
        _mm256_mask_storeu_epi16((void *)p, (__mmask16)mask, narrow_ps(v));
    }
    else {
        _mm512_mask_storeu_ps((void *)p, (__mmask16)mask, v);
    }
}

/* One unit-stride run of float32 (or float16) elements; anything else goes
   to the portable loop, which computes the same bits. */
TARGET_AVX512 static ALWAYS_INLINE void
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
    const __m512 alpha = _mm512_set1_ps(ctx->alpha32);
    const char *x = ptrs[0], *z = ptrs[1];  /* z: backward's second input */
    char *out = ptrs[binary ? 2 : 1];
    Py_ssize_t i = 0;
    const Py_ssize_t head = ctx->streaming ? stream_head(out, n, size, 16 * size) : -1;
    if (head >= 0) {
        if (head > 0) {
            uint64_t mask = (1ull << head) - 1;
            __m512 xv = load_some_ps(x, mask, half);
            __m512 zv = binary ? load_some_ps(z, mask, half) : xv;
            store_some_ps(out, mask, apply_ps(op, xv, zv, alpha), half);
            i = head;
        }
        for (; i + 16 <= n; i += 16) {
            __m512 xv = load_ps(x + i * size, half);
            __m512 zv = binary ? load_ps(z + i * size, half) : xv;
            store_ps(out + i * size, apply_ps(op, xv, zv, alpha), half, 1);
        }
        _mm_sfence();
    }
    for (; i + 16 <= n; i += 16) {
        __m512 xv = load_ps(x + i * size, half);
        __m512 zv = binary ? load_ps(z + i * size, half) : xv;
        store_ps(out + i * size, apply_ps(op, xv, zv, alpha), half, 0);
    }
    if (i < n) {
        uint64_t mask = (1ull << (n - i)) - 1;
        __m512 xv = load_some_ps(x + i * size, mask, half);
        __m512 zv = binary ? load_some_ps(z + i * size, mask, half) : xv;
        store_some_ps(out + i * size, mask, apply_ps(op, xv, zv, alpha), half);
    }
}

/* ---- bfloat16: 32 lanes of 16 bits, as two vectors of float32 lanes ---- */

/*
 * The bfloat16 kernel works on 32 elements a step, the float32 work on two
 * vectors of 16, because its widening and narrowing cost as much as the
 * operation itself: unpacking against zero widens (a bfloat16 is the top
 * half of its float32), and one two-source word permute (VPERMT2W) gathers
 * the rounded top halves back in the elements' order.
 *
 * Rounding is float_to_bf16's integer arithmetic.  AVX512_BF16's
 * VCVTNEPS2BF16 would narrow 16 lanes in one instruction with the same NaN
 * rule, but it flushes float32 subnormals to zero (so the Intel SDM says,
 * and a run over all 2^32 float32 patterns on an AMD EPYC found every
 * difference from float_to_bf16 at a subnormal input) where PyTorch rounds
 * them: it got 2,390 of tests/data/bfloat16_pytorch.npz's forward results
 * wrong.
 */

/* bf16_is_positive on 32 lanes: 0x0001..0x7f80 as int16. */
TARGET_AVX512 static ALWAYS_INLINE __mmask32
positive_bf16(__m512i h)
{
    __mmask32 above_zero = _mm512_cmpgt_epi16_mask(h, _mm512_setzero_si512());
    return _mm512_mask_cmplt_epi16_mask(above_zero, h, _mm512_set1_epi16(0x7f81));
}

/*
 * float32 to bfloat16 as float_to_bf16 rounds it: + 0x7fff, + 1 more where
 * the lowest kept bit is set; the top half is the result.  No NaN case is
 * needed: in these kernels every float32 comes from a multiply of a widened
 * bfloat16 by 1 or a non-NaN float32(alpha) (NaN slopes never get here), so
 * a NaN result is quiet and its low 16 bits are zero (the NaN operand's,
 * quieted, or the default NaN of inf * 0), where the rounding adds at most
 * 0x8000 and so only truncates.
 */
TARGET_AVX512 static ALWAYS_INLINE __m512i
round_bf16(__m512 v)
{
    const __m512i bits = _mm512_castps_si512(v);
    const __mmask16 odd = _mm512_test_epi32_mask(bits, _mm512_set1_epi32(0x10000));
    const __m512i below_half = _mm512_add_epi32(bits, _mm512_set1_epi32(0x7fff));
    return _mm512_mask_add_epi32(below_half, odd, below_half, _mm512_set1_epi32(1));
}

/* The top halves of a's and b's 32-bit lanes, in the order that unpacking
   (lo into a, hi into b, within each 128-bit block) took them from. */
TARGET_AVX512 static ALWAYS_INLINE __m512i
pack_bf16(__m512i a, __m512i b)
{
    /* element k = 8c + p (128-bit block c): for p < 4 the top word of a's
       32-bit lane 4c + p, else of b's lane 4c + p - 4 (b's words from 32) */
    static const uint16_t top_words[32] = {
        1, 3, 5, 7, 33, 35, 37, 39, 9, 11, 13, 15, 41, 43, 45, 47,
        17, 19, 21, 23, 49, 51, 53, 55, 25, 27, 29, 31, 57, 59, 61, 63};
    return _mm512_permutex2var_epi16(a, _mm512_loadu_si512((const void *)top_words), b);
}

/* The slope, every way the bfloat16 kernel uses it. */
typedef struct {
    __m512 alpha;           /* float32(alpha) */
    __m512i alpha_bf16;     /* bfloat16(float32(alpha)), grad's result, in 16-bit lanes */
    __m512i alpha_low;      /* float32(alpha)'s low and high 16 bits, in 16-bit lanes */
    __m512i alpha_high;
} SlopeBf16;

/* The operation on 32 elements, from their bits to the result's bits.  Every
   z > 0 is a test of bits, as in the portable loops (so the paths agree even
   if a float compare would treat subnormals as zero, under DAZ). */
TARGET_AVX512 static ALWAYS_INLINE __m512i
apply_bf16(SimdOp op, __m512i x, __m512i z, const SlopeBf16 *slope)
{
    const __m512i zero = _mm512_setzero_si512();
    if (op == SIMD_GRAD) {  /* a select on bits: nothing to round */
        return _mm512_mask_blend_epi16(positive_bf16(x), slope->alpha_bf16,
                                       _mm512_set1_epi16(0x3f80));
    }
    __m512 low = _mm512_castsi512_ps(_mm512_unpacklo_epi16(zero, x));
    __m512 high = _mm512_castsi512_ps(_mm512_unpackhi_epi16(zero, x));
    if (op == SIMD_FORWARD) {
        __m512i scaled = pack_bf16(round_bf16(_mm512_mul_ps(low, slope->alpha)),
                                   round_bf16(_mm512_mul_ps(high, slope->alpha)));
        return _mm512_mask_blend_epi16(positive_bf16(x), scaled, x);
    }
    /* backward: the factor, 1.0f or float32(alpha), chosen per 16-bit lane
       and put together from its halves by the unpack that widened x */
    const __mmask32 positive = positive_bf16(z);
    __m512i factor_low = _mm512_mask_blend_epi16(positive, slope->alpha_low, zero);
    __m512i factor_high =
        _mm512_mask_blend_epi16(positive, slope->alpha_high, _mm512_set1_epi16(0x3f80));
    __m512 low_factor = _mm512_castsi512_ps(_mm512_unpacklo_epi16(factor_low, factor_high));
    __m512 high_factor = _mm512_castsi512_ps(_mm512_unpackhi_epi16(factor_low, factor_high));
    return pack_bf16(round_bf16(_mm512_mul_ps(low, low_factor)),
                     round_bf16(_mm512_mul_ps(high, high_factor)));
}

/* One unit-stride run of bfloat16 elements; anything else goes to the
   portable loop, which computes the same bits. */
TARGET_AVX512 static ALWAYS_INLINE void
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
    const uint32_t alpha_bits = bits_from_f32(ctx->alpha32);
    const SlopeBf16 slope = {
        .alpha = _mm512_set1_ps(ctx->alpha32),
        .alpha_bf16 = _mm512_set1_epi16((short)ctx->alpha_bf16),
        .alpha_low = _mm512_set1_epi16((short)(alpha_bits & 0xffffu)),
        .alpha_high = _mm512_set1_epi16((short)(alpha_bits >> 16)),
    };
    const char *x = ptrs[0], *z = ptrs[1];  /* z: backward's second input */
    char *out = ptrs[binary ? 2 : 1];
    Py_ssize_t i = 0;
    const Py_ssize_t head = ctx->streaming ? stream_head(out, n, 2, 64) : -1;
    if (head >= 0) {
        if (head > 0) {
            __mmask32 mask = (__mmask32)((1ull << head) - 1);
            __m512i xv = _mm512_maskz_loadu_epi16(mask, (const void *)x);
            __m512i zv = binary ? _mm512_maskz_loadu_epi16(mask, (const void *)z) : xv;
            _mm512_mask_storeu_epi16((void *)out, mask, apply_bf16(op, xv, zv, &slope));
            i = head;
        }
        for (; i + 32 <= n; i += 32) {
            __m512i xv = _mm512_loadu_si512((const void *)(x + i * 2));
            __m512i zv = binary ? _mm512_loadu_si512((const void *)(z + i * 2)) : xv;
            _mm512_stream_si512((void *)(out + i * 2), apply_bf16(op, xv, zv, &slope));
        }
        _mm_sfence();
    }
    for (; i + 32 <= n; i += 32) {
        __m512i xv = _mm512_loadu_si512((const void *)(x + i * 2));
        __m512i zv = binary ? _mm512_loadu_si512((const void *)(z + i * 2)) : xv;
        _mm512_storeu_si512((void *)(out + i * 2), apply_bf16(op, xv, zv, &slope));
    }
    if (i < n) {
        __mmask32 mask = (__mmask32)((1ull << (n - i)) - 1);
        __m512i xv = _mm512_maskz_loadu_epi16(mask, (const void *)(x + i * 2));
        __m512i zv = binary ? _mm512_maskz_loadu_epi16(mask, (const void *)(z + i * 2)) : xv;
        _mm512_mask_storeu_epi16((void *)(out + i * 2), mask,
                                 apply_bf16(op, xv, zv, &slope));
    }
}

/* ---- float64 lanes ---- */

TARGET_AVX512 static ALWAYS_INLINE __m512d
select_pd(__m512d x, __m512d a, __m512d b)
{
    __mmask8 positive = _mm512_cmp_pd_mask(x, _mm512_setzero_pd(), _CMP_GT_OQ);
    return _mm512_mask_blend_pd(positive, b, a);  /* a where the mask is set */
}

TARGET_AVX512 static ALWAYS_INLINE __m512d
apply_pd(SimdOp op, __m512d x, __m512d z, __m512d alpha)
{
    const __m512d one = _mm512_set1_pd(1.0);
    switch (op) {
    case SIMD_FORWARD: return select_pd(x, x, _mm512_mul_pd(x, alpha));
    case SIMD_GRAD: return select_pd(x, one, alpha);
    default: return _mm512_mul_pd(x, select_pd(z, one, alpha));
    }
}

/* The float32 kernel's loop on 8 float64 lanes (no float16 here). */
TARGET_AVX512 static ALWAYS_INLINE void
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
    const __m512d alpha = _mm512_set1_pd(ctx->alpha);
    const char *x = ptrs[0], *z = ptrs[1];
    char *out = ptrs[binary ? 2 : 1];
    Py_ssize_t i = 0;
    const Py_ssize_t head = ctx->streaming ? stream_head(out, n, 8, 64) : -1;
    if (head >= 0) {
        if (head > 0) {
            __mmask8 mask = (__mmask8)((1ull << head) - 1);
            __m512d xv = _mm512_maskz_loadu_pd(mask, (const void *)x);
            __m512d zv = binary ? _mm512_maskz_loadu_pd(mask, (const void *)z) : xv;
            _mm512_mask_storeu_pd((void *)out, mask, apply_pd(op, xv, zv, alpha));
            i = head;
        }
        for (; i + 8 <= n; i += 8) {
            __m512d xv = _mm512_loadu_pd((const void *)(x + i * 8));
            __m512d zv = binary ? _mm512_loadu_pd((const void *)(z + i * 8)) : xv;
            _mm512_stream_pd((void *)(out + i * 8), apply_pd(op, xv, zv, alpha));
        }
        _mm_sfence();
    }
    for (; i + 8 <= n; i += 8) {
        __m512d xv = _mm512_loadu_pd((const void *)(x + i * 8));
        __m512d zv = binary ? _mm512_loadu_pd((const void *)(z + i * 8)) : xv;
        _mm512_storeu_pd((void *)(out + i * 8), apply_pd(op, xv, zv, alpha));
    }
    if (i < n) {
        __mmask8 mask = (__mmask8)((1ull << (n - i)) - 1);
        __m512d xv = _mm512_maskz_loadu_pd(mask, (const void *)(x + i * 8));
        __m512d zv = binary ? _mm512_maskz_loadu_pd(mask, (const void *)(z + i * 8)) : xv;
        _mm512_mask_storeu_pd((void *)(out + i * 8), mask, apply_pd(op, xv, zv, alpha));
    }
}

/* ---- the instances in the kernel table ---- */

TARGET_AVX512 static void
avx512_forward_f32(char *const *ptrs, const Py_ssize_t *steps, Py_ssize_t n, const LoopContext *ctx)
{
    kernel_ps(SIMD_FORWARD, 0, forward_loop_f32, forward_ordinary_f32, ptrs, steps, n, ctx);
}

TARGET_AVX512 static void
avx512_grad_f32(char *const *ptrs, const Py_ssize_t *steps, Py_ssize_t n, const LoopContext *ctx)
{
    kernel_ps(SIMD_GRAD, 0, grad_loop_f32, grad_loop_f32, ptrs, steps, n, ctx);
}

TARGET_AVX512 static void
avx512_backward_f32(char *const *ptrs, const Py_ssize_t *steps, Py_ssize_t n, const LoopContext *ctx)
{
    kernel_ps(SIMD_BACKWARD, 0, backward_loop_f32, backward_ordinary_f32, ptrs, steps, n, ctx);
}

TARGET_AVX512 static void
avx512_forward_f16(char *const *ptrs, const Py_ssize_t *steps, Py_ssize_t n, const LoopContext *ctx)
{
    kernel_ps(SIMD_FORWARD, 1, forward_loop_f16, forward_ordinary_f16, ptrs, steps, n, ctx);
}

TARGET_AVX512 static void
avx512_grad_f16(char *const *ptrs, const Py_ssize_t *steps, Py_ssize_t n, const LoopContext *ctx)
{
    kernel_ps(SIMD_GRAD, 1, grad_loop_f16, grad_loop_f16, ptrs, steps, n, ctx);
}

TARGET_AVX512 static void
avx512_backward_f16(char *const *ptrs, const Py_ssize_t *steps, Py_ssize_t n, const LoopContext *ctx)
{
    kernel_ps(SIMD_BACKWARD, 1, backward_loop_f16, backward_ordinary_f16, ptrs, steps, n, ctx);
}

TARGET_AVX512 static void
avx512_forward_f64(char *const *ptrs, const Py_ssize_t *steps, Py_ssize_t n, const LoopContext *ctx)
{
    kernel_pd(SIMD_FORWARD, forward_loop_f64, forward_ordinary_f64, ptrs, steps, n, ctx);
}

TARGET_AVX512 static void
avx512_grad_f64(char *const *ptrs, const Py_ssize_t *steps, Py_ssize_t n, const LoopContext *ctx)
{
    kernel_pd(SIMD_GRAD, grad_loop_f64, grad_loop_f64, ptrs, steps, n, ctx);
}

TARGET_AVX512 static void
avx512_backward_f64(char *const *ptrs, const Py_ssize_t *steps, Py_ssize_t n, const LoopContext *ctx)
{
    kernel_pd(SIMD_BACKWARD, backward_loop_f64, backward_ordinary_f64, ptrs, steps, n, ctx);
}

TARGET_AVX512 static void
avx512_forward_bf16(char *const *ptrs, const Py_ssize_t *steps, Py_ssize_t n, const LoopContext *ctx)
{
    kernel_bf16(SIMD_FORWARD, forward_loop_bf16, forward_ordinary_bf16, ptrs, steps, n, ctx);
}

TARGET_AVX512 static void
avx512_grad_bf16(char *const *ptrs, const Py_ssize_t *steps, Py_ssize_t n, const LoopContext *ctx)
{
    kernel_bf16(SIMD_GRAD, grad_loop_bf16, grad_loop_bf16, ptrs, steps, n, ctx);
}

TARGET_AVX512 static void
avx512_backward_bf16(char *const *ptrs, const Py_ssize_t *steps, Py_ssize_t n, const LoopContext *ctx)
{
    kernel_bf16(SIMD_BACKWARD, backward_loop_bf16, backward_ordinary_bf16, ptrs, steps, n, ctx);
}

SIMD_TABLE(AVX512_KERNELS, avx512)
#endif /* LEAKY_X86_64 */
