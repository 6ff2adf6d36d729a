/*
 * loops_portable.c: the inner loops in plain C, for every element kind and
 * any stride (numpy-ufunc style: one run of n elements per call).  They are
 * the definition every other kernel path must match bit for bit, the only
 * path for integer and bool inputs, and the SIMD loops' fallback for strided
 * runs and ragged ends.
 */
#include "leaky.h"

/*
 * The forward and float16 backward loops come in three parts: the loop for
 * ordinary slopes (*_ordinary_*, what the SIMD kernels fall back to for
 * strided runs and ragged ends once they know the slope is not NaN, and
 * inline through LTO as before), the loop for NaN slopes (out of line and
 * cold), and the kernel-table entry that picks one (*_loop_*).
 */
#if defined(_MSC_VER) && !defined(__clang__)
#define NAN_SLOPE_LOOP static __declspec(noinline) void
#else
#define NAN_SLOPE_LOOP static __attribute__((noinline, cold)) void
#endif

/* Typed unaligned loads, for the code outside the UNARY/BINARY loops. */
#define DEFINE_LOAD(NAME, TYPE)                                                \
    static inline TYPE load_##NAME(const char *p)                              \
    {                                                                          \
        TYPE value;                                                            \
        memcpy(&value, p, sizeof value);                                       \
        return value;                                                          \
    }
DEFINE_LOAD(u8, uint8_t)
DEFINE_LOAD(u16, uint16_t)
DEFINE_LOAD(u32, uint32_t)
DEFINE_LOAD(u64, uint64_t)
DEFINE_LOAD(i8, int8_t)
DEFINE_LOAD(i16, int16_t)
DEFINE_LOAD(i32, int32_t)
DEFINE_LOAD(i64, int64_t)
DEFINE_LOAD(f32, float)
DEFINE_LOAD(f64, double)

/*
 * Expands BODY twice: once with compile-time unit steps, which the compiler
 * vectorizes, and once with the runtime steps for strided views.
 */
#define UNARY_LOOP(IN_T, OUT_T, BODY)                                          \
    do {                                                                       \
        const char *src_ = ptrs[0];                                            \
        char *dst_ = ptrs[1];                                                  \
        if (steps[0] == (Py_ssize_t)sizeof(IN_T) &&                            \
            steps[1] == (Py_ssize_t)sizeof(OUT_T)) {                           \
            for (Py_ssize_t i_ = 0; i_ < n; i_++) {                            \
                IN_T x;                                                        \
                memcpy(&x, src_ + i_ * (Py_ssize_t)sizeof(IN_T), sizeof x);    \
                OUT_T r_ = (BODY);                                             \
                memcpy(dst_ + i_ * (Py_ssize_t)sizeof(OUT_T), &r_, sizeof r_); \
            }                                                                  \
        }                                                                      \
        else {                                                                 \
            for (Py_ssize_t i_ = 0; i_ < n; i_++) {                            \
                IN_T x;                                                        \
                memcpy(&x, src_ + i_ * steps[0], sizeof x);                    \
                OUT_T r_ = (BODY);                                             \
                memcpy(dst_ + i_ * steps[1], &r_, sizeof r_);                  \
            }                                                                  \
        }                                                                      \
    } while (0)

#define BINARY_LOOP(G_T, Z_T, OUT_T, BODY)                                     \
    do {                                                                       \
        const char *g_ = ptrs[0];                                              \
        const char *z_ = ptrs[1];                                              \
        char *dst_ = ptrs[2];                                                  \
        if (steps[0] == (Py_ssize_t)sizeof(G_T) &&                             \
            steps[1] == (Py_ssize_t)sizeof(Z_T) &&                             \
            steps[2] == (Py_ssize_t)sizeof(OUT_T)) {                           \
            for (Py_ssize_t i_ = 0; i_ < n; i_++) {                            \
                G_T g;                                                         \
                Z_T z;                                                         \
                memcpy(&g, g_ + i_ * (Py_ssize_t)sizeof(G_T), sizeof g);       \
                memcpy(&z, z_ + i_ * (Py_ssize_t)sizeof(Z_T), sizeof z);       \
                OUT_T r_ = (BODY);                                             \
                memcpy(dst_ + i_ * (Py_ssize_t)sizeof(OUT_T), &r_, sizeof r_); \
            }                                                                  \
        }                                                                      \
        else {                                                                 \
            for (Py_ssize_t i_ = 0; i_ < n; i_++) {                            \
                G_T g;                                                         \
                Z_T z;                                                         \
                memcpy(&g, g_ + i_ * steps[0], sizeof g);                      \
                memcpy(&z, z_ + i_ * steps[1], sizeof z);                      \
                OUT_T r_ = (BODY);                                             \
                memcpy(dst_ + i_ * steps[2], &r_, sizeof r_);                  \
            }                                                                  \
        }                                                                      \
    } while (0)

/*
 * The element-wise definitions, once per precision.  With an ordinary slope a
 * product has at most one NaN operand and the hardware's multiply is the
 * definition; with a NaN slope (slope_is_nan) the float loops take their
 * NaN-slope versions, where product16/32/64 apply leaky's NaN rule by hand
 * (leaky.h, "The NaN rule").  The SIMD kernels send NaN slopes here whole.
 */
static inline double forward64(double x, double a) { return x > 0 ? x : a * x; }
static inline float forward32(float x, float a) { return x > 0 ? x : a * x; }
static inline uint16_t
forward16(uint16_t h, float a)
{
    return half_is_positive(h) ? h : float_to_half(half_to_float(h) * a);
}

NAN_SLOPE_LOOP
forward_nan_slope_f16(char *const *ptrs, const Py_ssize_t *steps, Py_ssize_t n,
                       const LoopContext *ctx)
{
    const float a = ctx->alpha32;
    UNARY_LOOP(uint16_t, uint16_t, half_is_positive(x) ? x : product16(x, a));
}

void
forward_ordinary_f16(char *const *ptrs, const Py_ssize_t *steps, Py_ssize_t n,
                      const LoopContext *ctx)
{
    const float a = ctx->alpha32;
    UNARY_LOOP(uint16_t, uint16_t, forward16(x, a));
}

void
forward_loop_f16(char *const *ptrs, const Py_ssize_t *steps, Py_ssize_t n, const LoopContext *ctx)
{
    (slope_is_nan(ctx) ? forward_nan_slope_f16 : forward_ordinary_f16)(ptrs, steps, n, ctx);
}

NAN_SLOPE_LOOP
forward_nan_slope_f32(char *const *ptrs, const Py_ssize_t *steps, Py_ssize_t n,
                       const LoopContext *ctx)
{
    const float a = ctx->alpha32;
    UNARY_LOOP(float, float, x > 0 ? x : product32(x, a));
}

void
forward_ordinary_f32(char *const *ptrs, const Py_ssize_t *steps, Py_ssize_t n,
                      const LoopContext *ctx)
{
    const float a = ctx->alpha32;
    UNARY_LOOP(float, float, forward32(x, a));
}

void
forward_loop_f32(char *const *ptrs, const Py_ssize_t *steps, Py_ssize_t n, const LoopContext *ctx)
{
    (slope_is_nan(ctx) ? forward_nan_slope_f32 : forward_ordinary_f32)(ptrs, steps, n, ctx);
}

NAN_SLOPE_LOOP
forward_nan_slope_f64(char *const *ptrs, const Py_ssize_t *steps, Py_ssize_t n,
                       const LoopContext *ctx)
{
    const double a = ctx->alpha;
    UNARY_LOOP(double, double, x > 0 ? x : product64(x, a));
}

void
forward_ordinary_f64(char *const *ptrs, const Py_ssize_t *steps, Py_ssize_t n,
                      const LoopContext *ctx)
{
    const double a = ctx->alpha;
    UNARY_LOOP(double, double, forward64(x, a));
}

void
forward_loop_f64(char *const *ptrs, const Py_ssize_t *steps, Py_ssize_t n, const LoopContext *ctx)
{
    (slope_is_nan(ctx) ? forward_nan_slope_f64 : forward_ordinary_f64)(ptrs, steps, n, ctx);
}

/*
 * float_to_bf16 with its NaN test as a select rather than a branch, and
 * forward_bf16 with its multiply done for every element: the same bits,
 * but loops the compiler vectorizes, so that the portable bfloat16 loops
 * are as fast per element as the float32 ones.  (The float32 forward loop's
 * multiply stays behind its test, so -ftrapping-math keeps it scalar; an
 * extra multiply here can only raise a floating-point flag, which leaky
 * never reads.)
 */
static inline uint16_t
narrow_bf16(float f)
{
    uint32_t bits = bits_from_f32(f);
    uint32_t rounded = bits + 0x7fffu + ((bits >> 16) & 1u);
    uint32_t quieted = bits | 0x00400000u;  /* a NaN: truncated, quiet bit set */
    return (uint16_t)(((bits & 0x7fffffffu) > 0x7f800000u ? quieted : rounded) >> 16);
}

static inline uint16_t
forward_bf16(uint16_t b, float a)
{
    uint16_t scaled = narrow_bf16(bf16_to_float(b) * a);
    return bf16_is_positive(b) ? b : scaled;
}

NAN_SLOPE_LOOP
forward_nan_slope_bf16(char *const *ptrs, const Py_ssize_t *steps, Py_ssize_t n,
                       const LoopContext *ctx)
{
    const float a = ctx->alpha32;
    UNARY_LOOP(uint16_t, uint16_t, bf16_is_positive(x) ? x : product_bf16(x, a));
}

void
forward_ordinary_bf16(char *const *ptrs, const Py_ssize_t *steps, Py_ssize_t n,
                      const LoopContext *ctx)
{
    const float a = ctx->alpha32;
    UNARY_LOOP(uint16_t, uint16_t, forward_bf16(x, a));
}

void
forward_loop_bf16(char *const *ptrs, const Py_ssize_t *steps, Py_ssize_t n, const LoopContext *ctx)
{
    (slope_is_nan(ctx) ? forward_nan_slope_bf16 : forward_ordinary_bf16)(ptrs, steps, n, ctx);
}

void
grad_loop_f16(char *const *ptrs, const Py_ssize_t *steps, Py_ssize_t n, const LoopContext *ctx)
{
    const uint16_t a = ctx->alpha16;
    UNARY_LOOP(uint16_t, uint16_t, half_is_positive(x) ? (uint16_t)0x3c00u : a);
}

void
grad_loop_f32(char *const *ptrs, const Py_ssize_t *steps, Py_ssize_t n, const LoopContext *ctx)
{
    const float a = ctx->alpha32;
    UNARY_LOOP(float, float, x > 0 ? 1.0f : a);
}

void
grad_loop_f64(char *const *ptrs, const Py_ssize_t *steps, Py_ssize_t n, const LoopContext *ctx)
{
    const double a = ctx->alpha;
    UNARY_LOOP(double, double, x > 0 ? 1.0 : a);
}

void
grad_loop_bf16(char *const *ptrs, const Py_ssize_t *steps, Py_ssize_t n, const LoopContext *ctx)
{
    const uint16_t a = ctx->alpha_bf16;
    UNARY_LOOP(uint16_t, uint16_t, bf16_is_positive(x) ? (uint16_t)0x3f80u : a);
}

/* Integer and bool inputs: the float64 result of the same values converted. */
#define INTEGER_LOOPS(SUFFIX, CTYPE, TO_DOUBLE)                                \
    void                                                                       \
    forward_loop_##SUFFIX(char *const *ptrs, const Py_ssize_t *steps,          \
                          Py_ssize_t n, const LoopContext *ctx)                \
    {                                                                          \
        const double a = ctx->alpha;                                           \
        UNARY_LOOP(CTYPE, double, forward64(TO_DOUBLE(x), a));                 \
    }                                                                          \
    void                                                                       \
    grad_loop_##SUFFIX(char *const *ptrs, const Py_ssize_t *steps,             \
                       Py_ssize_t n, const LoopContext *ctx)                   \
    {                                                                          \
        const double a = ctx->alpha;                                           \
        UNARY_LOOP(CTYPE, double, TO_DOUBLE(x) > 0 ? 1.0 : a);                 \
    }

#define AS_DOUBLE(x) ((double)(x))
#define BOOL_AS_DOUBLE(x) ((x) != 0 ? 1.0 : 0.0)
INTEGER_LOOPS(bool, uint8_t, BOOL_AS_DOUBLE)
INTEGER_LOOPS(i8, int8_t, AS_DOUBLE)
INTEGER_LOOPS(i16, int16_t, AS_DOUBLE)
INTEGER_LOOPS(i32, int32_t, AS_DOUBLE)
INTEGER_LOOPS(i64, int64_t, AS_DOUBLE)
INTEGER_LOOPS(u8, uint8_t, AS_DOUBLE)
INTEGER_LOOPS(u16, uint16_t, AS_DOUBLE)
INTEGER_LOOPS(u32, uint32_t, AS_DOUBLE)
INTEGER_LOOPS(u64, uint64_t, AS_DOUBLE)

/*
 * backward = grad_output * (1 if z > 0 else alpha), rounded once to the result.
 * Where z > 0 a compiler may turn g * 1.0 into g (GCC does, in the scalar
 * code for strided runs, single elements and the SIMD loops' tails), which
 * would hand back a signalling NaN unquieted where the SIMD loops quiet it:
 * float32 and float64 multiply by a 1.0 read through a volatile, which no
 * compiler may assume is 1.  float16 is safe without: float_to_half quiets
 * any NaN.
 */
NAN_SLOPE_LOOP
backward_nan_slope_f16(char *const *ptrs, const Py_ssize_t *steps, Py_ssize_t n,
                       const LoopContext *ctx)
{
    const float a = ctx->alpha32;
    BINARY_LOOP(uint16_t, uint16_t, uint16_t, product16(g, half_is_positive(z) ? 1.0f : a));
}

void
backward_ordinary_f16(char *const *ptrs, const Py_ssize_t *steps, Py_ssize_t n,
                      const LoopContext *ctx)
{
    const float a = ctx->alpha32;
    BINARY_LOOP(uint16_t, uint16_t, uint16_t,
                float_to_half(half_to_float(g) * (half_is_positive(z) ? 1.0f : a)));
}

void
backward_loop_f16(char *const *ptrs, const Py_ssize_t *steps, Py_ssize_t n, const LoopContext *ctx)
{
    (slope_is_nan(ctx) ? backward_nan_slope_f16 : backward_ordinary_f16)(ptrs, steps, n, ctx);
}

/* 1.0, read through a volatile once per run: a value the compiler cannot
   see, so g * one is never folded to g, and the loops still vectorize. */
static inline float
opaque_one32(void)
{
    volatile float one = 1.0f;
    return one;
}

static inline double
opaque_one64(void)
{
    volatile double one = 1.0;
    return one;
}

void
backward_ordinary_f32(char *const *ptrs, const Py_ssize_t *steps, Py_ssize_t n,
                      const LoopContext *ctx)
{
    const float a = ctx->alpha32, one = opaque_one32();
    BINARY_LOOP(float, float, float, g * (z > 0 ? one : a));
}

NAN_SLOPE_LOOP
backward_nan_slope_f32(char *const *ptrs, const Py_ssize_t *steps, Py_ssize_t n,
                       const LoopContext *ctx)
{
    const float a = ctx->alpha32;
    BINARY_LOOP(float, float, float, product32(g, z > 0 ? 1.0f : a));
}

void
backward_loop_f32(char *const *ptrs, const Py_ssize_t *steps, Py_ssize_t n, const LoopContext *ctx)
{
    (slope_is_nan(ctx) ? backward_nan_slope_f32 : backward_ordinary_f32)(ptrs, steps, n, ctx);
}

void
backward_ordinary_f64(char *const *ptrs, const Py_ssize_t *steps, Py_ssize_t n,
                      const LoopContext *ctx)
{
    const double a = ctx->alpha, one = opaque_one64();
    BINARY_LOOP(double, double, double, g * (z > 0 ? one : a));
}

NAN_SLOPE_LOOP
backward_nan_slope_f64(char *const *ptrs, const Py_ssize_t *steps, Py_ssize_t n,
                       const LoopContext *ctx)
{
    const double a = ctx->alpha;
    BINARY_LOOP(double, double, double, product64(g, z > 0 ? 1.0 : a));
}

void
backward_loop_f64(char *const *ptrs, const Py_ssize_t *steps, Py_ssize_t n, const LoopContext *ctx)
{
    (slope_is_nan(ctx) ? backward_nan_slope_f64 : backward_ordinary_f64)(ptrs, steps, n, ctx);
}

/* bfloat16 like float16: narrowing quiets any NaN, so g * 1.0 folded to g
   would give the same bits; the ordinary loop multiplies by the opaque one
   all the same, because the fold leaves a multiply behind a test, which
   keeps the loop from vectorizing (as in forward_bf16). */
NAN_SLOPE_LOOP
backward_nan_slope_bf16(char *const *ptrs, const Py_ssize_t *steps, Py_ssize_t n,
                        const LoopContext *ctx)
{
    const float a = ctx->alpha32;
    BINARY_LOOP(uint16_t, uint16_t, uint16_t, product_bf16(g, bf16_is_positive(z) ? 1.0f : a));
}

void
backward_ordinary_bf16(char *const *ptrs, const Py_ssize_t *steps, Py_ssize_t n,
                       const LoopContext *ctx)
{
    const float a = ctx->alpha32, one = opaque_one32();
    BINARY_LOOP(uint16_t, uint16_t, uint16_t,
                narrow_bf16(bf16_to_float(g) * (bf16_is_positive(z) ? one : a)));
}

void
backward_loop_bf16(char *const *ptrs, const Py_ssize_t *steps, Py_ssize_t n, const LoopContext *ctx)
{
    (slope_is_nan(ctx) ? backward_nan_slope_bf16 : backward_ordinary_bf16)(ptrs, steps, n, ctx);
}

/* Element readers for the mixed-kind backward loop, which is not a hot path:
   it applies the NaN rule on every element, whatever the slope. */
static double
load_as_double(ElemKind kind, const char *p)
{
    switch (kind) {
    case KIND_F16: return half_to_float(load_u16(p));
    case KIND_F32: return load_f32(p);
    case KIND_F64: return load_f64(p);
    case KIND_BF16: return bf16_to_float(load_u16(p));
    case KIND_BOOL: return load_u8(p) != 0 ? 1.0 : 0.0;
    case KIND_I8: return load_i8(p);
    case KIND_I16: return load_i16(p);
    case KIND_I32: return load_i32(p);
    case KIND_I64: return (double)load_i64(p);
    case KIND_U8: return load_u8(p);
    case KIND_U16: return load_u16(p);
    case KIND_U32: return load_u32(p);
    case KIND_U64: return (double)load_u64(p);
    default: return 0.0;
    }
}

static int
element_is_positive(ElemKind kind, const char *p)
{
    switch (kind) {
    case KIND_F16: return half_is_positive(load_u16(p));
    case KIND_BF16: return bf16_is_positive(load_u16(p));
    case KIND_I64: return load_i64(p) > 0;  /* exact, no rounding through double */
    case KIND_U64: return load_u64(p) != 0;
    default: return load_as_double(kind, p) > 0;
    }
}

void
backward_loop_mixed(char *const *ptrs, const Py_ssize_t *steps, Py_ssize_t n, const LoopContext *ctx)
{
    const ElemKind gk = ctx->grad_kind, zk = ctx->z_kind;
    const char *g = ptrs[0], *z = ptrs[1];
    char *dst = ptrs[2];
    for (Py_ssize_t i = 0; i < n; i++, g += steps[0], z += steps[1], dst += steps[2]) {
        int positive = element_is_positive(zk, z);
        switch (result_kind_of(gk)) {
        case KIND_F16: {
            uint16_t r = product16(load_u16(g), positive ? 1.0f : ctx->alpha32);
            memcpy(dst, &r, sizeof r);
            break;
        }
        case KIND_F32: {
            float r = product32(load_f32(g), positive ? 1.0f : ctx->alpha32);
            memcpy(dst, &r, sizeof r);
            break;
        }
        case KIND_BF16: {
            uint16_t r = product_bf16(load_u16(g), positive ? 1.0f : ctx->alpha32);
            memcpy(dst, &r, sizeof r);
            break;
        }
        default: {
            double r = product64(load_as_double(gk, g), positive ? 1.0 : ctx->alpha);
            memcpy(dst, &r, sizeof r);
            break;
        }
        }
    }
}

void
copy_loop(char *const *ptrs, const Py_ssize_t *steps, Py_ssize_t n, const LoopContext *ctx)
{
    const char *src = ptrs[0];
    char *dst = ptrs[1];
    for (Py_ssize_t i = 0; i < n; i++) {
        memcpy(dst + i * steps[1], src + i * steps[0], (size_t)ctx->itemsize);
    }
}
#define PORTABLE_UNARY_TABLE(PREFIX)                                            \
    {                                                                           \
        [KIND_F16] = PREFIX##_loop_f16, [KIND_F32] = PREFIX##_loop_f32,         \
        [KIND_F64] = PREFIX##_loop_f64, [KIND_BF16] = PREFIX##_loop_bf16,       \
        [KIND_BOOL] = PREFIX##_loop_bool,                                       \
        [KIND_I8] = PREFIX##_loop_i8,   [KIND_I16] = PREFIX##_loop_i16,         \
        [KIND_I32] = PREFIX##_loop_i32, [KIND_I64] = PREFIX##_loop_i64,         \
        [KIND_U8] = PREFIX##_loop_u8,   [KIND_U16] = PREFIX##_loop_u16,         \
        [KIND_U32] = PREFIX##_loop_u32, [KIND_U64] = PREFIX##_loop_u64,         \
    }

const KernelTable PORTABLE_KERNELS = {
    .name = "portable",
    .forward = PORTABLE_UNARY_TABLE(forward),
    .grad = PORTABLE_UNARY_TABLE(grad),
    .backward_same = {backward_loop_f16, backward_loop_f32, backward_loop_f64, backward_loop_bf16},
};
