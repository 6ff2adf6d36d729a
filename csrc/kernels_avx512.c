/*
 * kernels_avx512.c: the AVX-512 (F, BW, VL, DQ) loops for float16, bfloat16,
 * float32 and float64, and their kernel table.  Compiled for the baseline ISA with a
 * per-function target attribute; cpu_dispatch.c picks the table only on a
 * CPU (and OS) that runs it.
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
 * One kernel per lane type (leaky.h, SimdOp); float16 and bfloat16 share
 * the float32 lanes (LaneFormat).  Masked loads and stores handle the ragged
 * end, and the head before streaming stores reach a 64-byte line.
 */

/* ---- float32 lanes: float32, and float16 or bfloat16 widened on load (exact) ---- */

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

/* 16 16-bit floats to float32, exactly.  A bfloat16 is the top half of its
   float32, so a positive one stays itself through widen and narrow. */
TARGET_AVX512 static ALWAYS_INLINE __m512
widen_ps(__m256i h, LaneFormat mem)
{
    if (mem == LANES_BF16) {
        return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    }
    return _mm512_cvtph_ps(h);
}

/* float32 to float16 or bfloat16, rounded once, to nearest even.  bfloat16
   as float_to_bf16 does it: add 0x7fff plus the lowest kept bit and keep the
   top half; a NaN is truncated with its quiet bit set. */
TARGET_AVX512 static ALWAYS_INLINE __m256i
narrow_ps(__m512 v, LaneFormat mem)
{
    if (mem == LANES_BF16) {
        const __m512i bits = _mm512_castps_si512(v);
        const __m512i one = _mm512_set1_epi32(1), below_half = _mm512_set1_epi32(0x7fff);
        const __m512i lowest_kept = _mm512_and_si512(_mm512_srli_epi32(bits, 16), one);
        __m512i rounded = _mm512_add_epi32(bits, _mm512_add_epi32(lowest_kept, below_half));
        const __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
        rounded = _mm512_mask_or_epi32(rounded, nan, bits, _mm512_set1_epi32(0x00400000));
        return _mm512_cvtepi32_epi16(_mm512_srli_epi32(rounded, 16));
    }
    return _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}

TARGET_AVX512 static ALWAYS_INLINE __m512
load_ps(const char *p, LaneFormat mem)
{
    if (mem != LANES_F32) {
        return widen_ps(_mm256_loadu_si256((const __m256i *)(const void *)p), mem);
    }
    return _mm512_loadu_ps((const void *)p);
}

/* The lanes in mask; the others read as 0 and touch no memory. */
TARGET_AVX512 static ALWAYS_INLINE __m512
load_some_ps(const char *p, uint64_t mask, LaneFormat mem)
{
    if (mem != LANES_F32) {
        return widen_ps(_mm256_maskz_loadu_epi16((__mmask16)mask, (const void *)p), mem);
    }
    return _mm512_maskz_loadu_ps((__mmask16)mask, (const void *)p);
}

/* stream: a non-temporal store, to a 64-byte aligned p. */
TARGET_AVX512 static ALWAYS_INLINE void
store_ps(char *p, __m512 v, LaneFormat mem, int stream)
{
    if (mem != LANES_F32 && stream) {
        _mm256_stream_si256((__m256i *)(void *)p, narrow_ps(v, mem));
    }
    else if (mem != LANES_F32) {
        _mm256_storeu_si256((__m256i *)(void *)p, narrow_ps(v, mem));
    }
    else if (stream) {
        _mm512_stream_ps((void *)p, v);
    }
    else {
        _mm512_storeu_ps((void *)p, v);
    }
}

TARGET_AVX512 static ALWAYS_INLINE void
store_some_ps(char *p, uint64_t mask, __m512 v, LaneFormat mem)
{
    if (mem != LANES_F32) {
        _mm256_mask_storeu_epi16((void *)p, (__mmask16)mask, narrow_ps(v, mem));
    }
    else {
        _mm512_mask_storeu_ps((void *)p, (__mmask16)mask, v);
    }
}

/* One unit-stride run of float32 (or float16, or bfloat16) elements;
   anything else goes to the portable loop, which computes the same bits. */
TARGET_AVX512 static ALWAYS_INLINE void
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
    const __m512 alpha = _mm512_set1_ps(ctx->alpha32);
    const char *x = ptrs[0], *z = ptrs[1];  /* z: backward's second input */
    char *out = ptrs[binary ? 2 : 1];
    Py_ssize_t i = 0;
    const Py_ssize_t head = ctx->streaming ? stream_head(out, n, size, 16 * size) : -1;
    if (head >= 0) {
        if (head > 0) {
            uint64_t mask = (1ull << head) - 1;
            __m512 xv = load_some_ps(x, mask, mem);
            __m512 zv = binary ? load_some_ps(z, mask, mem) : xv;
            store_some_ps(out, mask, apply_ps(op, xv, zv, alpha), mem);
            i = head;
        }
        for (; i + 16 <= n; i += 16) {
            __m512 xv = load_ps(x + i * size, mem);
            __m512 zv = binary ? load_ps(z + i * size, mem) : xv;
            store_ps(out + i * size, apply_ps(op, xv, zv, alpha), mem, 1);
        }
        _mm_sfence();
    }
    for (; i + 16 <= n; i += 16) {
        __m512 xv = load_ps(x + i * size, mem);
        __m512 zv = binary ? load_ps(z + i * size, mem) : xv;
        store_ps(out + i * size, apply_ps(op, xv, zv, alpha), mem, 0);
    }
    if (i < n) {
        uint64_t mask = (1ull << (n - i)) - 1;
        __m512 xv = load_some_ps(x + i * size, mask, mem);
        __m512 zv = binary ? load_some_ps(z + i * size, mask, mem) : xv;
        store_some_ps(out + i * size, mask, apply_ps(op, xv, zv, alpha), mem);
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
    kernel_ps(SIMD_FORWARD, LANES_F32, forward_loop_f32, forward_ordinary_f32, ptrs, steps, n, ctx);
}

TARGET_AVX512 static void
avx512_grad_f32(char *const *ptrs, const Py_ssize_t *steps, Py_ssize_t n, const LoopContext *ctx)
{
    kernel_ps(SIMD_GRAD, LANES_F32, grad_loop_f32, grad_loop_f32, ptrs, steps, n, ctx);
}

TARGET_AVX512 static void
avx512_backward_f32(char *const *ptrs, const Py_ssize_t *steps, Py_ssize_t n, const LoopContext *ctx)
{
    kernel_ps(SIMD_BACKWARD, LANES_F32, backward_loop_f32, backward_ordinary_f32, ptrs, steps, n,
              ctx);
}

TARGET_AVX512 static void
avx512_forward_f16(char *const *ptrs, const Py_ssize_t *steps, Py_ssize_t n, const LoopContext *ctx)
{
    kernel_ps(SIMD_FORWARD, LANES_F16, forward_loop_f16, forward_ordinary_f16, ptrs, steps, n, ctx);
}

TARGET_AVX512 static void
avx512_grad_f16(char *const *ptrs, const Py_ssize_t *steps, Py_ssize_t n, const LoopContext *ctx)
{
    kernel_ps(SIMD_GRAD, LANES_F16, grad_loop_f16, grad_loop_f16, ptrs, steps, n, ctx);
}

TARGET_AVX512 static void
avx512_backward_f16(char *const *ptrs, const Py_ssize_t *steps, Py_ssize_t n, const LoopContext *ctx)
{
    kernel_ps(SIMD_BACKWARD, LANES_F16, backward_loop_f16, backward_ordinary_f16, ptrs, steps, n,
              ctx);
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
    kernel_ps(SIMD_FORWARD, LANES_BF16, forward_loop_bf16, forward_ordinary_bf16, ptrs, steps, n,
              ctx);
}

TARGET_AVX512 static void
avx512_grad_bf16(char *const *ptrs, const Py_ssize_t *steps, Py_ssize_t n, const LoopContext *ctx)
{
    kernel_ps(SIMD_GRAD, LANES_BF16, grad_loop_bf16, grad_loop_bf16, ptrs, steps, n, ctx);
}

TARGET_AVX512 static void
avx512_backward_bf16(char *const *ptrs, const Py_ssize_t *steps, Py_ssize_t n, const LoopContext *ctx)
{
    kernel_ps(SIMD_BACKWARD, LANES_BF16, backward_loop_bf16, backward_ordinary_bf16, ptrs, steps, n,
              ctx);
}

SIMD_TABLE(AVX512_KERNELS, avx512)
#endif /* LEAKY_X86_64 */
