/*
 * kernels_neon.c: the arm64 NEON loops for float16, bfloat16, float32 and
 * float64, and their kernel table.
 */
#include "leaky.h"

/*
 * ---- arm64: NEON is part of the base instruction set, so no detection ----
 * The compiler leaves the portable loops scalar (x > 0 ? x : a * x may not
 * multiply lanes it would not have multiplied, under the default
 * -ftrapping-math; GCC 12 at -O3 emits scalar code), so the float loops are
 * written here with the same compare, select and IEEE multiply.  The float16
 * gradient stays portable: it is a select on bits, which the compiler does
 * vectorize.  The base ISA converts half <-> single in hardware
 * (FCVTL/FCVTN: round-to-nearest-even, NaNs quieted with their payload kept,
 * as float_to_half does).  Loads and stores go through bytes: buffers may be
 * offset byte views.
 */
#ifdef LEAKY_NEON
#include <arm_neon.h>

/* Lanes whose half is > 0: the bits, as int16, are in 0x0001..0x7c00. */
static inline uint16x8_t
neon_half_positive(uint16x8_t h)
{
    int16x8_t s = vreinterpretq_s16_u16(h);
    return vandq_u16(vcgtq_s16(s, vdupq_n_s16(0)), vcleq_s16(s, vdupq_n_s16(0x7c00)));
}

static inline float32x4_t
neon_half_low(uint16x8_t h)
{
    return vcvt_f32_f16(vreinterpret_f16_u16(vget_low_u16(h)));
}

static inline float32x4_t
neon_half_high(uint16x8_t h)
{
    return vcvt_f32_f16(vreinterpret_f16_u16(vget_high_u16(h)));
}

static inline uint16x8_t
neon_to_half(float32x4_t lo, float32x4_t hi)
{
    return vreinterpretq_u16_f16(vcombine_f16(vcvt_f16_f32(lo), vcvt_f16_f32(hi)));
}

/*
 * float32 (4 lanes) and float64 (2 lanes): one kernel per lane type
 * (leaky.h, SimdOp).  The portable loop takes strided runs and the ragged
 * end.
 */

/* x > 0 ? a : b, lane by lane; a NaN x is not > 0, so it takes b. */
static ALWAYS_INLINE float32x4_t
select_f32(float32x4_t x, float32x4_t a, float32x4_t b)
{
    return vbslq_f32(vcgtq_f32(x, vdupq_n_f32(0.0f)), a, b);  /* a where the mask is set */
}

/* The operation on 4 lanes.  Backward reads x as grad_output and z as z;
   the others ignore z. */
static ALWAYS_INLINE float32x4_t
apply_f32(SimdOp op, float32x4_t x, float32x4_t z, float32x4_t alpha)
{
    const float32x4_t one = vdupq_n_f32(1.0f);
    switch (op) {
    case SIMD_FORWARD: return select_f32(x, x, vmulq_f32(x, alpha));
    case SIMD_GRAD: return select_f32(x, one, alpha);
    default: return vmulq_f32(x, select_f32(z, one, alpha));
    }
}

static ALWAYS_INLINE void
kernel_f32(SimdOp op, InnerLoop whole, InnerLoop portable, char *const *ptrs,
          const Py_ssize_t *steps, Py_ssize_t n, const LoopContext *ctx)
{
    const int binary = op == SIMD_BACKWARD;
    if (op != SIMD_GRAD && slope_is_nan(ctx)) {
        whole(ptrs, steps, n, ctx);  /* the portable loop applies the NaN rule (leaky.h) */
        return;
    }
    if (steps[0] != 4 || steps[1] != 4 || (binary && steps[2] != 4)) {
        portable(ptrs, steps, n, ctx);
        return;
    }
    const float32x4_t alpha = vdupq_n_f32(ctx->alpha32);
    const uint8_t *x = (const uint8_t *)ptrs[0], *z = (const uint8_t *)ptrs[1];
    uint8_t *out = (uint8_t *)ptrs[binary ? 2 : 1];
    Py_ssize_t i = 0;
    for (; i + 4 <= n; i += 4) {
        float32x4_t xv = vreinterpretq_f32_u8(vld1q_u8(x + i * 4));
        float32x4_t zv = binary ? vreinterpretq_f32_u8(vld1q_u8(z + i * 4)) : xv;
        vst1q_u8(out + i * 4, vreinterpretq_u8_f32(apply_f32(op, xv, zv, alpha)));
    }
    portable_part(portable, binary, ptrs, steps, i, n - i, 4, ctx);
}

static ALWAYS_INLINE float64x2_t
select_f64(float64x2_t x, float64x2_t a, float64x2_t b)
{
    return vbslq_f64(vcgtq_f64(x, vdupq_n_f64(0.0)), a, b);  /* a where the mask is set */
}

static ALWAYS_INLINE float64x2_t
apply_f64(SimdOp op, float64x2_t x, float64x2_t z, float64x2_t alpha)
{
    const float64x2_t one = vdupq_n_f64(1.0);
    switch (op) {
    case SIMD_FORWARD: return select_f64(x, x, vmulq_f64(x, alpha));
    case SIMD_GRAD: return select_f64(x, one, alpha);
    default: return vmulq_f64(x, select_f64(z, one, alpha));
    }
}

static ALWAYS_INLINE void
kernel_f64(SimdOp op, InnerLoop whole, InnerLoop portable, char *const *ptrs,
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
    const float64x2_t alpha = vdupq_n_f64(ctx->alpha);
    const uint8_t *x = (const uint8_t *)ptrs[0], *z = (const uint8_t *)ptrs[1];
    uint8_t *out = (uint8_t *)ptrs[binary ? 2 : 1];
    Py_ssize_t i = 0;
    for (; i + 2 <= n; i += 2) {
        float64x2_t xv = vreinterpretq_f64_u8(vld1q_u8(x + i * 8));
        float64x2_t zv = binary ? vreinterpretq_f64_u8(vld1q_u8(z + i * 8)) : xv;
        vst1q_u8(out + i * 8, vreinterpretq_u8_f64(apply_f64(op, xv, zv, alpha)));
    }
    portable_part(portable, binary, ptrs, steps, i, n - i, 8, ctx);
}

static void
neon_forward_f32(char *const *ptrs, const Py_ssize_t *steps, Py_ssize_t n, const LoopContext *ctx)
{
    kernel_f32(SIMD_FORWARD, forward_loop_f32, forward_ordinary_f32, ptrs, steps, n, ctx);
}

static void
neon_grad_f32(char *const *ptrs, const Py_ssize_t *steps, Py_ssize_t n, const LoopContext *ctx)
{
    kernel_f32(SIMD_GRAD, grad_loop_f32, grad_loop_f32, ptrs, steps, n, ctx);
}

static void
neon_backward_f32(char *const *ptrs, const Py_ssize_t *steps, Py_ssize_t n, const LoopContext *ctx)
{
    kernel_f32(SIMD_BACKWARD, backward_loop_f32, backward_ordinary_f32, ptrs, steps, n, ctx);
}

static void
neon_forward_f64(char *const *ptrs, const Py_ssize_t *steps, Py_ssize_t n, const LoopContext *ctx)
{
    kernel_f64(SIMD_FORWARD, forward_loop_f64, forward_ordinary_f64, ptrs, steps, n, ctx);
}

static void
neon_grad_f64(char *const *ptrs, const Py_ssize_t *steps, Py_ssize_t n, const LoopContext *ctx)
{
    kernel_f64(SIMD_GRAD, grad_loop_f64, grad_loop_f64, ptrs, steps, n, ctx);
}

static void
neon_backward_f64(char *const *ptrs, const Py_ssize_t *steps, Py_ssize_t n, const LoopContext *ctx)
{
    kernel_f64(SIMD_BACKWARD, backward_loop_f64, backward_ordinary_f64, ptrs, steps, n, ctx);
}

/* float16: the float32 lanes in two halves, converted in hardware. */
static void
neon_forward_f16(char *const *ptrs, const Py_ssize_t *steps, Py_ssize_t n, const LoopContext *ctx)
{
    if (slope_is_nan(ctx) || steps[0] != 2 || steps[1] != 2) {
        forward_loop_f16(ptrs, steps, n, ctx);  /* a NaN slope (leaky.h), or strided */
        return;
    }
    const float32x4_t va = vdupq_n_f32(ctx->alpha32);
    const uint8_t *src = (const uint8_t *)ptrs[0];
    uint8_t *dst = (uint8_t *)ptrs[1];
    Py_ssize_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint16x8_t h = vreinterpretq_u16_u8(vld1q_u8(src + 2 * i));
        uint16x8_t scaled =
            neon_to_half(vmulq_f32(neon_half_low(h), va), vmulq_f32(neon_half_high(h), va));
        vst1q_u8(dst + 2 * i,
                 vreinterpretq_u8_u16(vbslq_u16(neon_half_positive(h), h, scaled)));
    }
    char *tail[2] = {(char *)src + 2 * i, (char *)dst + 2 * i};
    forward_ordinary_f16(tail, steps, n - i, ctx);
}

static void
neon_backward_f16(char *const *ptrs, const Py_ssize_t *steps, Py_ssize_t n, const LoopContext *ctx)
{
    if (slope_is_nan(ctx) || steps[0] != 2 || steps[1] != 2 || steps[2] != 2) {
        backward_loop_f16(ptrs, steps, n, ctx);  /* a NaN slope (leaky.h), or strided */
        return;
    }
    const float32x4_t va = vdupq_n_f32(ctx->alpha32), vone = vdupq_n_f32(1.0f);
    const uint8_t *gp = (const uint8_t *)ptrs[0], *zp = (const uint8_t *)ptrs[1];
    uint8_t *dst = (uint8_t *)ptrs[2];
    Py_ssize_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint16x8_t g = vreinterpretq_u16_u8(vld1q_u8(gp + 2 * i));
        uint16x8_t positive =
            neon_half_positive(vreinterpretq_u16_u8(vld1q_u8(zp + 2 * i)));
        /* widen the 16-bit lane masks to 32 bits: all ones stay all ones */
        uint32x4_t pos_lo = vreinterpretq_u32_s32(vmovl_s16(vreinterpret_s16_u16(vget_low_u16(positive))));
        uint32x4_t pos_hi = vreinterpretq_u32_s32(vmovl_s16(vreinterpret_s16_u16(vget_high_u16(positive))));
        float32x4_t lo = vmulq_f32(neon_half_low(g), vbslq_f32(pos_lo, vone, va));
        float32x4_t hi = vmulq_f32(neon_half_high(g), vbslq_f32(pos_hi, vone, va));
        vst1q_u8(dst + 2 * i, vreinterpretq_u8_u16(neon_to_half(lo, hi)));
    }
    char *tail[3] = {(char *)gp + 2 * i, (char *)zp + 2 * i, (char *)dst + 2 * i};
    backward_ordinary_f16(tail, steps, n - i, ctx);
}

/*
 * bfloat16: the float32 lanes in two halves.  Widening is a shift (a
 * bfloat16 is the top half of its float32); narrowing is float_to_bf16's
 * integer rounding, since the base ISA has no bfloat16 conversion (BFCVTN
 * is the optional FEAT_BF16).  The portable loop takes strided runs and the
 * ragged end.
 */

/* bf16_is_positive on 8 lanes: 0x0001..0x7f80 as int16.  z > 0 is a test
   of bits, as in the portable loops, so the paths agree even under FPCR.FZ,
   where a float compare would see subnormals as zero. */
static ALWAYS_INLINE uint16x8_t
positive_bf16(uint16x8_t h)
{
    int16x8_t s = vreinterpretq_s16_u16(h);
    return vandq_u16(vcgtq_s16(s, vdupq_n_s16(0)), vcleq_s16(s, vdupq_n_s16(0x7f80)));
}

static ALWAYS_INLINE float32x4_t
bf16_low(uint16x8_t h)
{
    return vreinterpretq_f32_u32(vshll_n_u16(vget_low_u16(h), 16));
}

static ALWAYS_INLINE float32x4_t
bf16_high(uint16x8_t h)
{
    return vreinterpretq_f32_u32(vshll_high_n_u16(h, 16));
}

/* Rounded once, to nearest even: the top half of bits + 0x7fff + the lowest
   kept bit (ADDHN adds and keeps the top halves in one step).  A NaN is
   truncated with its quiet bit set: no rounding added, 0x00400000 or'ed in. */
static ALWAYS_INLINE uint16x4_t
narrow_bf16(float32x4_t v)
{
    const uint32x4_t bits = vreinterpretq_u32_f32(v);
    const uint32x4_t nan = vmvnq_u32(vceqq_f32(v, v));
    const uint32x4_t lowest_kept = vandq_u32(vshrq_n_u32(bits, 16), vdupq_n_u32(1));
    const uint32x4_t rounding = vbicq_u32(vaddq_u32(lowest_kept, vdupq_n_u32(0x7fff)), nan);
    const uint32x4_t quieted = vorrq_u32(bits, vandq_u32(nan, vdupq_n_u32(0x00400000)));
    return vaddhn_u32(quieted, rounding);
}

static ALWAYS_INLINE void
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
    const float32x4_t alpha = vdupq_n_f32(ctx->alpha32), one = vdupq_n_f32(1.0f);
    const uint16x8_t alpha_bf16 = vdupq_n_u16(ctx->alpha_bf16), one_bf16 = vdupq_n_u16(0x3f80);
    const uint8_t *x = (const uint8_t *)ptrs[0], *z = (const uint8_t *)ptrs[1];
    uint8_t *out = (uint8_t *)ptrs[binary ? 2 : 1];
    Py_ssize_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint16x8_t xh = vreinterpretq_u16_u8(vld1q_u8(x + i * 2));
        uint16x8_t r;
        if (op == SIMD_GRAD) {  /* a select on bits: nothing to round */
            r = vbslq_u16(positive_bf16(xh), one_bf16, alpha_bf16);
        }
        else if (op == SIMD_FORWARD) {
            uint16x8_t scaled = vcombine_u16(narrow_bf16(vmulq_f32(bf16_low(xh), alpha)),
                                             narrow_bf16(vmulq_f32(bf16_high(xh), alpha)));
            r = vbslq_u16(positive_bf16(xh), xh, scaled);
        }
        else {  /* the 16-bit lane masks widened to 32 bits: all ones stay all ones */
            uint16x8_t positive = positive_bf16(vreinterpretq_u16_u8(vld1q_u8(z + i * 2)));
            int16x8_t mask = vreinterpretq_s16_u16(positive);
            float32x4_t low_factor =
                vbslq_f32(vreinterpretq_u32_s32(vmovl_s16(vget_low_s16(mask))), one, alpha);
            float32x4_t high_factor =
                vbslq_f32(vreinterpretq_u32_s32(vmovl_high_s16(mask)), one, alpha);
            r = vcombine_u16(narrow_bf16(vmulq_f32(bf16_low(xh), low_factor)),
                             narrow_bf16(vmulq_f32(bf16_high(xh), high_factor)));
        }
        vst1q_u8(out + i * 2, vreinterpretq_u8_u16(r));
    }
    portable_part(portable, binary, ptrs, steps, i, n - i, 2, ctx);
}

static void
neon_forward_bf16(char *const *ptrs, const Py_ssize_t *steps, Py_ssize_t n, const LoopContext *ctx)
{
    kernel_bf16(SIMD_FORWARD, forward_loop_bf16, forward_ordinary_bf16, ptrs, steps, n, ctx);
}

static void
neon_grad_bf16(char *const *ptrs, const Py_ssize_t *steps, Py_ssize_t n, const LoopContext *ctx)
{
    kernel_bf16(SIMD_GRAD, grad_loop_bf16, grad_loop_bf16, ptrs, steps, n, ctx);
}

static void
neon_backward_bf16(char *const *ptrs, const Py_ssize_t *steps, Py_ssize_t n, const LoopContext *ctx)
{
    kernel_bf16(SIMD_BACKWARD, backward_loop_bf16, backward_ordinary_bf16, ptrs, steps, n, ctx);
}

const KernelTable NEON_KERNELS = {
    .name = "neon",
    .forward = {[KIND_F16] = neon_forward_f16, [KIND_F32] = neon_forward_f32,
                [KIND_F64] = neon_forward_f64, [KIND_BF16] = neon_forward_bf16,
                [KIND_BOOL] = forward_loop_bool,
                [KIND_I8] = forward_loop_i8,   [KIND_I16] = forward_loop_i16,
                [KIND_I32] = forward_loop_i32, [KIND_I64] = forward_loop_i64,
                [KIND_U8] = forward_loop_u8,   [KIND_U16] = forward_loop_u16,
                [KIND_U32] = forward_loop_u32, [KIND_U64] = forward_loop_u64},
    .grad = {[KIND_F16] = grad_loop_f16,   [KIND_F32] = neon_grad_f32,
             [KIND_F64] = neon_grad_f64,   [KIND_BF16] = neon_grad_bf16,
             [KIND_BOOL] = grad_loop_bool,
             [KIND_I8] = grad_loop_i8,     [KIND_I16] = grad_loop_i16,
             [KIND_I32] = grad_loop_i32,   [KIND_I64] = grad_loop_i64,
             [KIND_U8] = grad_loop_u8,     [KIND_U16] = grad_loop_u16,
             [KIND_U32] = grad_loop_u32,   [KIND_U64] = grad_loop_u64},
    .backward_same = {neon_backward_f16, neon_backward_f32, neon_backward_f64, neon_backward_bf16},
};
#endif /* arm64 */
