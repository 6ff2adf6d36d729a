/*
 * kernels_neon.c: the arm64 NEON loops for float16, float32 and float64,
 * and their kernel table.
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

/* float32 (4 lanes) and float64 (2 lanes): one template, the portable loop
   takes strided runs and the ragged end. */
#define NEON_UNARY(NAME, VT, W, ES, LOAD, STORE, SETUP, BODY, FALLBACK)          \
    static void                                                                 \
    NAME(char *const *ptrs, const Py_ssize_t *steps, Py_ssize_t n, const LoopContext *ctx) \
    {                                                                           \
        if (steps[0] != ES || steps[1] != ES) {                                 \
            FALLBACK(ptrs, steps, n, ctx);                                      \
            return;                                                             \
        }                                                                       \
        SETUP                                                                   \
        const uint8_t *src = (const uint8_t *)ptrs[0];                          \
        uint8_t *dst = (uint8_t *)ptrs[1];                                      \
        Py_ssize_t i = 0;                                                       \
        for (; i + W <= n; i += W) {                                            \
            VT x = LOAD(src + i * ES);                                          \
            STORE(dst + i * ES, BODY);                                          \
        }                                                                       \
        char *tail[2] = {(char *)src + i * ES, (char *)dst + i * ES};           \
        FALLBACK(tail, steps, n - i, ctx);                                      \
    }

#define NEON_BINARY(NAME, VT, W, ES, LOAD, STORE, SETUP, FALLBACK)               \
    static void                                                                 \
    NAME(char *const *ptrs, const Py_ssize_t *steps, Py_ssize_t n, const LoopContext *ctx) \
    {                                                                           \
        if (steps[0] != ES || steps[1] != ES || steps[2] != ES) {               \
            FALLBACK(ptrs, steps, n, ctx);                                      \
            return;                                                             \
        }                                                                       \
        SETUP                                                                   \
        const uint8_t *gp = (const uint8_t *)ptrs[0], *zp = (const uint8_t *)ptrs[1]; \
        uint8_t *dst = (uint8_t *)ptrs[2];                                      \
        Py_ssize_t i = 0;                                                       \
        for (; i + W <= n; i += W) {                                            \
            VT g = LOAD(gp + i * ES), z = LOAD(zp + i * ES);                    \
            STORE(dst + i * ES, BACKWARD_BODY(g, z));                           \
        }                                                                       \
        char *tail[3] = {(char *)gp + i * ES, (char *)zp + i * ES, (char *)dst + i * ES}; \
        FALLBACK(tail, steps, n - i, ctx);                                      \
    }

#define SEL(x, a, b) vbslq_f32(vcgtq_f32((x), vzero), (a), (b))
#define MUL vmulq_f32
#define SETUP_NEON_F32                                                          \
    const float32x4_t va = vdupq_n_f32(ctx->alpha32), vone = vdupq_n_f32(1.0f), \
                      vzero = vdupq_n_f32(0.0f);                                \
    (void)vone; /* the forward loops need no 1.0 */
#define F32X4_LOAD(p) vreinterpretq_f32_u8(vld1q_u8(p))
#define F32X4_STORE(p, v) vst1q_u8((p), vreinterpretq_u8_f32(v))
NEON_UNARY(neon_forward_f32, float32x4_t, 4, 4, F32X4_LOAD, F32X4_STORE, SETUP_NEON_F32,
           FORWARD_BODY(x), forward_loop_f32)
NEON_UNARY(neon_grad_f32, float32x4_t, 4, 4, F32X4_LOAD, F32X4_STORE, SETUP_NEON_F32,
           GRAD_BODY(x), grad_loop_f32)
NEON_BINARY(neon_backward_f32, float32x4_t, 4, 4, F32X4_LOAD, F32X4_STORE, SETUP_NEON_F32,
            backward_loop_f32)
#undef SEL
#undef MUL

#define SEL(x, a, b) vbslq_f64(vcgtq_f64((x), vzero), (a), (b))
#define MUL vmulq_f64
#define SETUP_NEON_F64                                                          \
    const float64x2_t va = vdupq_n_f64(ctx->alpha), vone = vdupq_n_f64(1.0),    \
                      vzero = vdupq_n_f64(0.0);                                 \
    (void)vone; /* the forward loops need no 1.0 */
#define F64X2_LOAD(p) vreinterpretq_f64_u8(vld1q_u8(p))
#define F64X2_STORE(p, v) vst1q_u8((p), vreinterpretq_u8_f64(v))
NEON_UNARY(neon_forward_f64, float64x2_t, 2, 8, F64X2_LOAD, F64X2_STORE, SETUP_NEON_F64,
           FORWARD_BODY(x), forward_loop_f64)
NEON_UNARY(neon_grad_f64, float64x2_t, 2, 8, F64X2_LOAD, F64X2_STORE, SETUP_NEON_F64,
           GRAD_BODY(x), grad_loop_f64)
NEON_BINARY(neon_backward_f64, float64x2_t, 2, 8, F64X2_LOAD, F64X2_STORE, SETUP_NEON_F64,
            backward_loop_f64)
#undef SEL
#undef MUL

static void
neon_forward_f16(char *const *ptrs, const Py_ssize_t *steps, Py_ssize_t n, const LoopContext *ctx)
{
    if (steps[0] != 2 || steps[1] != 2) {
        forward_loop_f16(ptrs, steps, n, ctx);
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
    forward_loop_f16(tail, steps, n - i, ctx);
}

static void
neon_backward_f16(char *const *ptrs, const Py_ssize_t *steps, Py_ssize_t n, const LoopContext *ctx)
{
    if (steps[0] != 2 || steps[1] != 2 || steps[2] != 2) {
        backward_loop_f16(ptrs, steps, n, ctx);
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
    backward_loop_f16(tail, steps, n - i, ctx);
}

const KernelTable NEON_KERNELS = {
    .name = "neon",
    .forward = {[KIND_F16] = neon_forward_f16, [KIND_F32] = neon_forward_f32,
                [KIND_F64] = neon_forward_f64, [KIND_BOOL] = forward_loop_bool,
                [KIND_I8] = forward_loop_i8,   [KIND_I16] = forward_loop_i16,
                [KIND_I32] = forward_loop_i32, [KIND_I64] = forward_loop_i64,
                [KIND_U8] = forward_loop_u8,   [KIND_U16] = forward_loop_u16,
                [KIND_U32] = forward_loop_u32, [KIND_U64] = forward_loop_u64},
    .grad = {[KIND_F16] = grad_loop_f16,   [KIND_F32] = neon_grad_f32,
             [KIND_F64] = neon_grad_f64,   [KIND_BOOL] = grad_loop_bool,
             [KIND_I8] = grad_loop_i8,     [KIND_I16] = grad_loop_i16,
             [KIND_I32] = grad_loop_i32,   [KIND_I64] = grad_loop_i64,
             [KIND_U8] = grad_loop_u8,     [KIND_U16] = grad_loop_u16,
             [KIND_U32] = grad_loop_u32,   [KIND_U64] = grad_loop_u64},
    .backward_same = {neon_backward_f16, neon_backward_f32, neon_backward_f64},
};
#endif /* arm64 */
