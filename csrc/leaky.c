/*
 * leaky._leaky: Leaky ReLU, its gradient and its fused backward pass for
 * Python numbers, sequences and anything that exports the buffer protocol.
 *
 * Layout of this file, top to bottom:
 *   1. element kinds and buffer-format parsing
 *   2. float16 <-> float32 conversion (portable, bit-exact, NaN payloads kept)
 *   3. inner loops (one contiguous run of elements, numpy-ufunc style)
 *   4. the n-d driver that feeds inner loops from arbitrary strides
 *   5. ResultBuffer, the exporter behind memoryview results
 *   6. argument parsing (METH_FASTCALL | METH_KEYWORDS, CPython wording)
 *   7. the number, sequence and buffer paths and the public functions
 *   8. module state and multi-phase init
 *
 * The public functions are the C functions themselves: a Python-level
 * wrapper would cost more than the whole computation on a float.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <assert.h>  /* checked in LEAKY_DEBUG=1 and LEAKY_SANITIZE=1 builds (setup.py) */
#include <math.h>
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>


#define LEAKY_DEFAULT_ALPHA 0.01
#define MAX_OPERANDS 3

/* ------------------------------------------------------------------ */
/* 1. Element kinds and buffer formats                                 */
/* ------------------------------------------------------------------ */

typedef enum {
    KIND_F16,
    KIND_F32,
    KIND_F64,
    KIND_BOOL,
    KIND_I8,
    KIND_I16,
    KIND_I32,
    KIND_I64,
    KIND_U8,
    KIND_U16,
    KIND_U32,
    KIND_U64,
    KIND_COUNT
} ElemKind;

/* Floating kinds keep their format; integers and bool compute in float64. */
static ElemKind
result_kind_of(ElemKind kind)
{
    return (kind == KIND_F16 || kind == KIND_F32) ? kind : KIND_F64;
}

static const char *
format_of_result(ElemKind kind)
{
    switch (kind) {
    case KIND_F16: return "e";
    case KIND_F32: return "f";
    default: return "d";
    }
}

static Py_ssize_t
itemsize_of_result(ElemKind kind)
{
    switch (kind) {
    case KIND_F16: return 2;
    case KIND_F32: return 4;
    default: return 8;
    }
}

static const char *
name_of_result(ElemKind kind)
{
    switch (kind) {
    case KIND_F16: return "float16";
    case KIND_F32: return "float32";
    default: return "float64";
    }
}

typedef enum { FORMAT_OK, FORMAT_UNSUPPORTED, FORMAT_FOREIGN_BYTE_ORDER } FormatStatus;

/*
 * Maps a struct-module format string to an element kind.  Integer widths are
 * taken from the itemsize the exporter reports, not from the letter: ctypes
 * says '<l' for its 8-byte c_long although '<l' is 4 bytes in struct's
 * standard sizes, and the itemsize is what is really in memory.
 */
static FormatStatus
parse_format(const char *format, Py_ssize_t itemsize, ElemKind *kind)
{
    if (format == NULL) {  /* the buffer protocol's way of saying 'B' */
        format = "B";
    }
    const char *code = format;
    switch (*code) {
    case '@': case '=':
        code++;
        break;
#if PY_BIG_ENDIAN
    case '>': case '!':
        code++;
        break;
    case '<':
        return FORMAT_FOREIGN_BYTE_ORDER;
#else
    case '<':
        code++;
        break;
    case '>': case '!':
        if (code[1] != '\0' && code[2] == '\0' && strchr("efd?bhilqnBHILQN", code[1])) {
            return FORMAT_FOREIGN_BYTE_ORDER;
        }
        return FORMAT_UNSUPPORTED;
#endif
    default:
        break;
    }
    if (code[0] == '\0' || code[1] != '\0') {
        return FORMAT_UNSUPPORTED;  /* empty, repeat counts, structs, 'Zd', ... */
    }
    char letter = code[0];
    switch (letter) {
    case 'e':
        if (itemsize != 2) return FORMAT_UNSUPPORTED;
        *kind = KIND_F16;
        return FORMAT_OK;
    case 'f':
        if (itemsize != 4) return FORMAT_UNSUPPORTED;
        *kind = KIND_F32;
        return FORMAT_OK;
    case 'd':
        if (itemsize != 8) return FORMAT_UNSUPPORTED;
        *kind = KIND_F64;
        return FORMAT_OK;
    case '?':
        if (itemsize != 1) return FORMAT_UNSUPPORTED;
        *kind = KIND_BOOL;
        return FORMAT_OK;
    default:
        break;
    }
    int is_signed;
    if (strchr("bhilqn", letter) != NULL) {
        is_signed = 1;
    }
    else if (strchr("BHILQN", letter) != NULL) {
        is_signed = 0;
    }
    else {
        return FORMAT_UNSUPPORTED;
    }
    switch (itemsize) {
    case 1: *kind = is_signed ? KIND_I8 : KIND_U8; return FORMAT_OK;
    case 2: *kind = is_signed ? KIND_I16 : KIND_U16; return FORMAT_OK;
    case 4: *kind = is_signed ? KIND_I32 : KIND_U32; return FORMAT_OK;
    case 8: *kind = is_signed ? KIND_I64 : KIND_U64; return FORMAT_OK;
    default: return FORMAT_UNSUPPORTED;
    }
}

/* ------------------------------------------------------------------ */
/* 2. float16                                                          */
/* ------------------------------------------------------------------ */

/*
 * Half precision is computed in float32 and rounded once, which is what
 * PyTorch's CPU kernels do.  These conversions are exact bit manipulations
 * (round-to-nearest-even on the way down) and keep NaN payloads the way the
 * hardware conversions (F16C, NEON) do, so that every kernel path gives the
 * same bits.
 */
static inline float
f32_from_bits(uint32_t bits)
{
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

static inline uint32_t
bits_from_f32(float f)
{
    uint32_t bits;
    memcpy(&bits, &f, sizeof bits);
    return bits;
}

static inline float
half_to_float(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exponent = (h >> 10) & 0x1fu;
    uint32_t mantissa = h & 0x3ffu;
    if (exponent == 0x1f) {  /* inf or NaN: payload moves up unchanged */
        return f32_from_bits(sign | 0x7f800000u | (mantissa << 13));
    }
    if (exponent != 0) {
        return f32_from_bits(sign | ((exponent + (127 - 15)) << 23) | (mantissa << 13));
    }
    /* zero or subnormal: mantissa * 2^-24 is exact in float32 */
    float magnitude = (float)mantissa * 0x1p-24f;
    return sign ? -magnitude : magnitude;
}

static inline uint16_t
float_to_half(float f)
{
    uint32_t bits = bits_from_f32(f);
    uint16_t sign = (uint16_t)((bits >> 16) & 0x8000u);
    uint32_t magnitude = bits & 0x7fffffffu;
    if (magnitude >= 0x7f800000u) {
        if (magnitude == 0x7f800000u) {
            return sign | 0x7c00u;
        }
        /* NaN: quiet it and keep the top of the payload */
        return (uint16_t)(sign | 0x7e00u | ((magnitude >> 13) & 0x3ffu));
    }
    if (magnitude >= 0x477ff000u) {  /* >= 65520 rounds to infinity */
        return sign | 0x7c00u;
    }
    if (magnitude < 0x38800000u) {  /* below 2^-14: half subnormal or zero */
        /* Adding 0.5 puts the value's 2^-24 units in the low mantissa bits,
           and the FPU's own round-to-nearest-even does the rounding. */
        float shifted = f32_from_bits(magnitude) + 0.5f;
        return (uint16_t)(sign | (uint16_t)(bits_from_f32(shifted) - 0x3f000000u));
    }
    /* normal: rebias the exponent and round the 13 dropped bits to even */
    uint32_t odd = (magnitude >> 13) & 1u;
    magnitude += ((uint32_t)(15 - 127) << 23) + 0xfffu + odd;
    return (uint16_t)(sign | (uint16_t)(magnitude >> 13));
}

/* z > 0 read straight off the bits: 0x0001..0x7c00 are the positive halves. */
static inline int
half_is_positive(uint16_t h)
{
    return (uint16_t)(h - 1u) < 0x7c00u;
}

/* ------------------------------------------------------------------ */
/* 3. Inner loops                                                      */
/* ------------------------------------------------------------------ */

typedef struct {
    double alpha;
    float alpha32;     /* float32(alpha): the slope of float32 and float16 */
    uint16_t alpha16;  /* float16(float32(alpha)): the float16 gradient */
    ElemKind grad_kind;  /* backward's generic loop: kinds of its inputs */
    ElemKind z_kind;
    Py_ssize_t itemsize;  /* copy loop */
    int streaming;        /* SIMD loops may write with non-temporal stores */
} LoopContext;

/*
 * One contiguous-in-index run of n elements: ptrs[0..k-1] are inputs and
 * ptrs[k] the output, each advancing by its own byte step.  Loads and stores
 * go through memcpy because buffers may be unaligned (offset byte views);
 * compilers turn them into plain moves.
 */
typedef void (*InnerLoop)(char *const *ptrs, const Py_ssize_t *steps, Py_ssize_t n,
                          const LoopContext *ctx);

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

/* The element-wise definitions, once per precision. */
static inline double forward64(double x, double a) { return x > 0 ? x : a * x; }
static inline float forward32(float x, float a) { return x > 0 ? x : a * x; }
static inline uint16_t
forward16(uint16_t h, float a)
{
    return half_is_positive(h) ? h : float_to_half(half_to_float(h) * a);
}

static void
forward_loop_f16(char *const *ptrs, const Py_ssize_t *steps, Py_ssize_t n, const LoopContext *ctx)
{
    const float a = ctx->alpha32;
    UNARY_LOOP(uint16_t, uint16_t, forward16(x, a));
}

static void
forward_loop_f32(char *const *ptrs, const Py_ssize_t *steps, Py_ssize_t n, const LoopContext *ctx)
{
    const float a = ctx->alpha32;
    UNARY_LOOP(float, float, forward32(x, a));
}

static void
forward_loop_f64(char *const *ptrs, const Py_ssize_t *steps, Py_ssize_t n, const LoopContext *ctx)
{
    const double a = ctx->alpha;
    UNARY_LOOP(double, double, forward64(x, a));
}

static void
grad_loop_f16(char *const *ptrs, const Py_ssize_t *steps, Py_ssize_t n, const LoopContext *ctx)
{
    const uint16_t a = ctx->alpha16;
    UNARY_LOOP(uint16_t, uint16_t, half_is_positive(x) ? (uint16_t)0x3c00u : a);
}

static void
grad_loop_f32(char *const *ptrs, const Py_ssize_t *steps, Py_ssize_t n, const LoopContext *ctx)
{
    const float a = ctx->alpha32;
    UNARY_LOOP(float, float, x > 0 ? 1.0f : a);
}

static void
grad_loop_f64(char *const *ptrs, const Py_ssize_t *steps, Py_ssize_t n, const LoopContext *ctx)
{
    const double a = ctx->alpha;
    UNARY_LOOP(double, double, x > 0 ? 1.0 : a);
}

/* Integer and bool inputs: the float64 result of the same values converted. */
#define INTEGER_LOOPS(SUFFIX, CTYPE, TO_DOUBLE)                                \
    static void                                                                \
    forward_loop_##SUFFIX(char *const *ptrs, const Py_ssize_t *steps,          \
                          Py_ssize_t n, const LoopContext *ctx)                \
    {                                                                          \
        const double a = ctx->alpha;                                           \
        UNARY_LOOP(CTYPE, double, forward64(TO_DOUBLE(x), a));                 \
    }                                                                          \
    static void                                                                \
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

/* backward = grad_output * (1 if z > 0 else alpha), rounded once to the result. */
static void
backward_loop_f16(char *const *ptrs, const Py_ssize_t *steps, Py_ssize_t n, const LoopContext *ctx)
{
    const float a = ctx->alpha32;
    BINARY_LOOP(uint16_t, uint16_t, uint16_t,
                float_to_half(half_to_float(g) * (half_is_positive(z) ? 1.0f : a)));
}

static void
backward_loop_f32(char *const *ptrs, const Py_ssize_t *steps, Py_ssize_t n, const LoopContext *ctx)
{
    const float a = ctx->alpha32;
    BINARY_LOOP(float, float, float, g * (z > 0 ? 1.0f : a));
}

static void
backward_loop_f64(char *const *ptrs, const Py_ssize_t *steps, Py_ssize_t n, const LoopContext *ctx)
{
    const double a = ctx->alpha;
    BINARY_LOOP(double, double, double, g * (z > 0 ? 1.0 : a));
}

/* Element readers for the mixed-kind backward loop, which is not a hot path. */
static double
load_as_double(ElemKind kind, const char *p)
{
    switch (kind) {
    case KIND_F16: return half_to_float(load_u16(p));
    case KIND_F32: return load_f32(p);
    case KIND_F64: return load_f64(p);
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
    case KIND_I64: return load_i64(p) > 0;  /* exact, no rounding through double */
    case KIND_U64: return load_u64(p) != 0;
    default: return load_as_double(kind, p) > 0;
    }
}

static void
backward_loop_mixed(char *const *ptrs, const Py_ssize_t *steps, Py_ssize_t n, const LoopContext *ctx)
{
    const ElemKind gk = ctx->grad_kind, zk = ctx->z_kind;
    const char *g = ptrs[0], *z = ptrs[1];
    char *dst = ptrs[2];
    for (Py_ssize_t i = 0; i < n; i++, g += steps[0], z += steps[1], dst += steps[2]) {
        int positive = element_is_positive(zk, z);
        switch (result_kind_of(gk)) {
        case KIND_F16: {
            uint16_t r = float_to_half(half_to_float(load_u16(g)) *
                                       (positive ? 1.0f : ctx->alpha32));
            memcpy(dst, &r, sizeof r);
            break;
        }
        case KIND_F32: {
            float r = load_f32(g) * (positive ? 1.0f : ctx->alpha32);
            memcpy(dst, &r, sizeof r);
            break;
        }
        default: {
            double r = load_as_double(gk, g) * (positive ? 1.0 : ctx->alpha);
            memcpy(dst, &r, sizeof r);
            break;
        }
        }
    }
}

static void
copy_loop(char *const *ptrs, const Py_ssize_t *steps, Py_ssize_t n, const LoopContext *ctx)
{
    const char *src = ptrs[0];
    char *dst = ptrs[1];
    for (Py_ssize_t i = 0; i < n; i++) {
        memcpy(dst + i * steps[1], src + i * steps[0], (size_t)ctx->itemsize);
    }
}

/* ------------------------------------------------------------------ */
/* 3b. SIMD inner loops and the kernel table chosen at import          */
/* ------------------------------------------------------------------ */

/*
 * One wheel is built for each platform's baseline instruction set; the
 * x86-64 AVX2 (+F16C) and AVX-512 loops are compiled through per-function
 * target attributes and chosen at import by CPU detection.  They handle
 * unit-stride runs and hand anything else to the portable loops above, and
 * they compute exactly what the portable loops compute (IEEE multiply and
 * compare, one float16 rounding), so every path gives the same bits.
 *
 * Large outputs into a caller's out= can be written with streaming stores
 * (ctx->streaming): they bypass the cache and save the read-for-ownership
 * of each output line.  The caller only asks for it when the output does
 * not overlap an input (see should_stream).
 */
typedef struct {
    const char *name;
    InnerLoop forward[KIND_COUNT];
    InnerLoop grad[KIND_COUNT];
    InnerLoop backward_same[3];  /* grad_output and z of one float kind */
} KernelTable;

#define PORTABLE_UNARY_TABLE(PREFIX)                                            \
    {                                                                           \
        [KIND_F16] = PREFIX##_loop_f16, [KIND_F32] = PREFIX##_loop_f32,         \
        [KIND_F64] = PREFIX##_loop_f64, [KIND_BOOL] = PREFIX##_loop_bool,       \
        [KIND_I8] = PREFIX##_loop_i8,   [KIND_I16] = PREFIX##_loop_i16,         \
        [KIND_I32] = PREFIX##_loop_i32, [KIND_I64] = PREFIX##_loop_i64,         \
        [KIND_U8] = PREFIX##_loop_u8,   [KIND_U16] = PREFIX##_loop_u16,         \
        [KIND_U32] = PREFIX##_loop_u32, [KIND_U64] = PREFIX##_loop_u64,         \
    }

static const KernelTable PORTABLE_KERNELS = {
    .name = "portable",
    .forward = PORTABLE_UNARY_TABLE(forward),
    .grad = PORTABLE_UNARY_TABLE(grad),
    .backward_same = {backward_loop_f16, backward_loop_f32, backward_loop_f64},
};

/* The SIMD templates' element-wise bodies, over each ISA's SEL(x, a, b) =
   (x > 0 ? a : b) lane by lane and MUL, with va = alpha and vone = 1. */
#define FORWARD_BODY(x) SEL(x, x, MUL(x, va))
#define GRAD_BODY(x) SEL(x, vone, va)
#define BACKWARD_BODY(g, z) MUL(g, SEL(z, vone, va))

#if defined(__x86_64__) || defined(_M_X64)
#define LEAKY_X86_64 1
#include <immintrin.h>
#if defined(_MSC_VER) && !defined(__clang__)
#include <intrin.h>
#define TARGET_AVX2
#define TARGET_AVX512
#else
#include <cpuid.h>
#define TARGET_AVX2 __attribute__((target("avx2,f16c")))
#define TARGET_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,f16c")))
#endif

/*
 * The templates below take, per ISA and element kind: the vector type VT,
 * lanes W, element size ES, loads and stores that convert to and from VT,
 * and SEL(x, a, b) = (x > 0 ? a : b) lane by lane.
 */
/*
 * Elements to write with plain stores before dst reaches a vector boundary,
 * where streaming stores can start; -1 if dst is not even element-aligned
 * (an offset byte view), in which case nothing is streamed.
 */
static inline Py_ssize_t
stream_head(const char *dst, Py_ssize_t n, Py_ssize_t itemsize, Py_ssize_t vector_bytes)
{
    uintptr_t address = (uintptr_t)dst;
    if (address % (uintptr_t)itemsize != 0) {
        return -1;
    }
    uintptr_t misalign = address % (uintptr_t)vector_bytes;
    Py_ssize_t head = misalign ? (Py_ssize_t)(((uintptr_t)vector_bytes - misalign) / (uintptr_t)itemsize) : 0;
    return head < n ? head : n;
}

/* ---- AVX-512: masked loads and stores handle the ragged ends ---- */

#define AVX512_UNARY(NAME, VT, W, ES, LOAD, MLOAD, STORE, MSTORE, STREAM, SETUP, BODY, FALLBACK) \
    TARGET_AVX512 static void                                                   \
    NAME(char *const *ptrs, const Py_ssize_t *steps, Py_ssize_t n, const LoopContext *ctx) \
    {                                                                           \
        if (steps[0] != ES || steps[1] != ES) {                                 \
            FALLBACK(ptrs, steps, n, ctx);                                      \
            return;                                                             \
        }                                                                       \
        SETUP                                                                   \
        const char *src = ptrs[0];                                              \
        char *dst = ptrs[1];                                                    \
        Py_ssize_t i = 0;                                                       \
        const Py_ssize_t head = ctx->streaming ? stream_head(dst, n, ES, W * ES) : -1; \
        if (head >= 0) {                                                        \
            if (head > 0) {                                                     \
                uint64_t m = (1ull << head) - 1;                                \
                VT x = MLOAD(src, m);                                           \
                MSTORE(dst, m, BODY);                                           \
                i = head;                                                       \
            }                                                                   \
            for (; i + W <= n; i += W) {                                        \
                VT x = LOAD(src + i * ES);                                      \
                STREAM(dst + i * ES, BODY);                                     \
            }                                                                   \
            _mm_sfence();                                                       \
        }                                                                       \
        for (; i + W <= n; i += W) {                                            \
            VT x = LOAD(src + i * ES);                                          \
            STORE(dst + i * ES, BODY);                                          \
        }                                                                       \
        if (i < n) {                                                            \
            uint64_t m = (1ull << (n - i)) - 1;                                 \
            VT x = MLOAD(src + i * ES, m);                                      \
            MSTORE(dst + i * ES, m, BODY);                                      \
        }                                                                       \
    }

#define AVX512_BINARY(NAME, VT, W, ES, LOAD, MLOAD, STORE, MSTORE, STREAM, SETUP, FALLBACK) \
    TARGET_AVX512 static void                                                   \
    NAME(char *const *ptrs, const Py_ssize_t *steps, Py_ssize_t n, const LoopContext *ctx) \
    {                                                                           \
        if (steps[0] != ES || steps[1] != ES || steps[2] != ES) {               \
            FALLBACK(ptrs, steps, n, ctx);                                      \
            return;                                                             \
        }                                                                       \
        SETUP                                                                   \
        const char *gp = ptrs[0], *zp = ptrs[1];                                \
        char *dst = ptrs[2];                                                    \
        Py_ssize_t i = 0;                                                       \
        const Py_ssize_t head = ctx->streaming ? stream_head(dst, n, ES, W * ES) : -1; \
        if (head >= 0) {                                                        \
            if (head > 0) {                                                     \
                uint64_t m = (1ull << head) - 1;                                \
                VT g = MLOAD(gp, m), z = MLOAD(zp, m);                          \
                MSTORE(dst, m, BACKWARD_BODY(g, z));                            \
                i = head;                                                       \
            }                                                                   \
            for (; i + W <= n; i += W) {                                        \
                VT g = LOAD(gp + i * ES), z = LOAD(zp + i * ES);                \
                STREAM(dst + i * ES, BACKWARD_BODY(g, z));                      \
            }                                                                   \
            _mm_sfence();                                                       \
        }                                                                       \
        for (; i + W <= n; i += W) {                                            \
            VT g = LOAD(gp + i * ES), z = LOAD(zp + i * ES);                    \
            STORE(dst + i * ES, BACKWARD_BODY(g, z));                           \
        }                                                                       \
        if (i < n) {                                                            \
            uint64_t m = (1ull << (n - i)) - 1;                                 \
            VT g = MLOAD(gp + i * ES, m), z = MLOAD(zp + i * ES, m);            \
            MSTORE(dst + i * ES, m, BACKWARD_BODY(g, z));                       \
        }                                                                       \
    }

/* float32 and float16 share the 16-lane float32 vector; float16 converts. */
#define SEL(x, a, b) _mm512_mask_blend_ps(_mm512_cmp_ps_mask((x), vzero, _CMP_GT_OQ), (b), (a))
#define MUL _mm512_mul_ps
#define SETUP_PS                                                                \
    const __m512 va = _mm512_set1_ps(ctx->alpha32), vone = _mm512_set1_ps(1.0f), \
                 vzero = _mm512_setzero_ps(); \
    (void)vone; /* the forward loops need no 1.0 */
#define F32_LOAD(p) _mm512_loadu_ps((const void *)(p))
#define F32_MLOAD(p, m) _mm512_maskz_loadu_ps((__mmask16)(m), (const void *)(p))
#define F32_STORE(p, v) _mm512_storeu_ps((void *)(p), (v))
#define F32_MSTORE(p, m, v) _mm512_mask_storeu_ps((void *)(p), (__mmask16)(m), (v))
#define F32_STREAM(p, v) _mm512_stream_ps((void *)(p), (v))
#define F16_LOAD(p) _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(const void *)(p)))
#define F16_MLOAD(p, m) _mm512_cvtph_ps(_mm256_maskz_loadu_epi16((__mmask16)(m), (const void *)(p)))
#define F16_PACK(v) _mm512_cvtps_ph((v), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
#define F16_STORE(p, v) _mm256_storeu_si256((__m256i *)(void *)(p), F16_PACK(v))
#define F16_MSTORE(p, m, v) _mm256_mask_storeu_epi16((void *)(p), (__mmask16)(m), F16_PACK(v))
#define F16_STREAM(p, v) _mm256_stream_si256((__m256i *)(void *)(p), F16_PACK(v))

AVX512_UNARY(avx512_forward_f32, __m512, 16, 4, F32_LOAD, F32_MLOAD, F32_STORE, F32_MSTORE,
             F32_STREAM, SETUP_PS, FORWARD_BODY(x), forward_loop_f32)
AVX512_UNARY(avx512_grad_f32, __m512, 16, 4, F32_LOAD, F32_MLOAD, F32_STORE, F32_MSTORE,
             F32_STREAM, SETUP_PS, GRAD_BODY(x), grad_loop_f32)
AVX512_BINARY(avx512_backward_f32, __m512, 16, 4, F32_LOAD, F32_MLOAD, F32_STORE, F32_MSTORE,
              F32_STREAM, SETUP_PS, backward_loop_f32)
AVX512_UNARY(avx512_forward_f16, __m512, 16, 2, F16_LOAD, F16_MLOAD, F16_STORE, F16_MSTORE,
             F16_STREAM, SETUP_PS, FORWARD_BODY(x), forward_loop_f16)
AVX512_UNARY(avx512_grad_f16, __m512, 16, 2, F16_LOAD, F16_MLOAD, F16_STORE, F16_MSTORE,
             F16_STREAM, SETUP_PS, GRAD_BODY(x), grad_loop_f16)
AVX512_BINARY(avx512_backward_f16, __m512, 16, 2, F16_LOAD, F16_MLOAD, F16_STORE, F16_MSTORE,
              F16_STREAM, SETUP_PS, backward_loop_f16)
#undef SEL
#undef MUL

#define SEL(x, a, b) _mm512_mask_blend_pd(_mm512_cmp_pd_mask((x), vzero, _CMP_GT_OQ), (b), (a))
#define MUL _mm512_mul_pd
#define SETUP_PD                                                                \
    const __m512d va = _mm512_set1_pd(ctx->alpha), vone = _mm512_set1_pd(1.0),  \
                  vzero = _mm512_setzero_pd(); \
    (void)vone; /* the forward loops need no 1.0 */
#define F64_LOAD(p) _mm512_loadu_pd((const void *)(p))
#define F64_MLOAD(p, m) _mm512_maskz_loadu_pd((__mmask8)(m), (const void *)(p))
#define F64_STORE(p, v) _mm512_storeu_pd((void *)(p), (v))
#define F64_MSTORE(p, m, v) _mm512_mask_storeu_pd((void *)(p), (__mmask8)(m), (v))
#define F64_STREAM(p, v) _mm512_stream_pd((void *)(p), (v))
AVX512_UNARY(avx512_forward_f64, __m512d, 8, 8, F64_LOAD, F64_MLOAD, F64_STORE, F64_MSTORE,
             F64_STREAM, SETUP_PD, FORWARD_BODY(x), forward_loop_f64)
AVX512_UNARY(avx512_grad_f64, __m512d, 8, 8, F64_LOAD, F64_MLOAD, F64_STORE, F64_MSTORE,
             F64_STREAM, SETUP_PD, GRAD_BODY(x), grad_loop_f64)
AVX512_BINARY(avx512_backward_f64, __m512d, 8, 8, F64_LOAD, F64_MLOAD, F64_STORE, F64_MSTORE,
              F64_STREAM, SETUP_PD, backward_loop_f64)
#undef SEL
#undef MUL

/* ---- AVX2 + F16C: the portable loops finish the ragged ends ---- */

#define AVX2_UNARY(NAME, VT, W, ES, LOAD, STORE, STREAM, SETUP, BODY, FALLBACK)  \
    TARGET_AVX2 static void                                                     \
    NAME(char *const *ptrs, const Py_ssize_t *steps, Py_ssize_t n, const LoopContext *ctx) \
    {                                                                           \
        if (steps[0] != ES || steps[1] != ES) {                                 \
            FALLBACK(ptrs, steps, n, ctx);                                      \
            return;                                                             \
        }                                                                       \
        SETUP                                                                   \
        const char *src = ptrs[0];                                              \
        char *dst = ptrs[1];                                                    \
        Py_ssize_t i = 0;                                                       \
        const Py_ssize_t head = ctx->streaming ? stream_head(dst, n, ES, W * ES) : -1; \
        if (head >= 0) {                                                        \
            char *head_ptrs[2] = {(char *)src, dst};                            \
            FALLBACK(head_ptrs, steps, head, ctx);                              \
            for (i = head; i + W <= n; i += W) {                                \
                VT x = LOAD(src + i * ES);                                      \
                STREAM(dst + i * ES, BODY);                                     \
            }                                                                   \
            _mm_sfence();                                                       \
        }                                                                       \
        for (; i + W <= n; i += W) {                                            \
            VT x = LOAD(src + i * ES);                                          \
            STORE(dst + i * ES, BODY);                                          \
        }                                                                       \
        char *tail[2] = {(char *)src + i * ES, dst + i * ES};                   \
        FALLBACK(tail, steps, n - i, ctx);                                      \
    }

#define AVX2_BINARY(NAME, VT, W, ES, LOAD, STORE, STREAM, SETUP, FALLBACK)       \
    TARGET_AVX2 static void                                                     \
    NAME(char *const *ptrs, const Py_ssize_t *steps, Py_ssize_t n, const LoopContext *ctx) \
    {                                                                           \
        if (steps[0] != ES || steps[1] != ES || steps[2] != ES) {               \
            FALLBACK(ptrs, steps, n, ctx);                                      \
            return;                                                             \
        }                                                                       \
        SETUP                                                                   \
        const char *gp = ptrs[0], *zp = ptrs[1];                                \
        char *dst = ptrs[2];                                                    \
        Py_ssize_t i = 0;                                                       \
        const Py_ssize_t head = ctx->streaming ? stream_head(dst, n, ES, W * ES) : -1; \
        if (head >= 0) {                                                        \
            char *head_ptrs[3] = {(char *)gp, (char *)zp, dst};                 \
            FALLBACK(head_ptrs, steps, head, ctx);                              \
            for (i = head; i + W <= n; i += W) {                                \
                VT g = LOAD(gp + i * ES), z = LOAD(zp + i * ES);                \
                STREAM(dst + i * ES, BACKWARD_BODY(g, z));                      \
            }                                                                   \
            _mm_sfence();                                                       \
        }                                                                       \
        for (; i + W <= n; i += W) {                                            \
            VT g = LOAD(gp + i * ES), z = LOAD(zp + i * ES);                    \
            STORE(dst + i * ES, BACKWARD_BODY(g, z));                           \
        }                                                                       \
        char *tail[3] = {(char *)gp + i * ES, (char *)zp + i * ES, dst + i * ES}; \
        FALLBACK(tail, steps, n - i, ctx);                                      \
    }

#define SEL(x, a, b) _mm256_blendv_ps((b), (a), _mm256_cmp_ps((x), vzero, _CMP_GT_OQ))
#define MUL _mm256_mul_ps
#define SETUP_PS256                                                             \
    const __m256 va = _mm256_set1_ps(ctx->alpha32), vone = _mm256_set1_ps(1.0f), \
                 vzero = _mm256_setzero_ps(); \
    (void)vone; /* the forward loops need no 1.0 */
#define F32X8_LOAD(p) _mm256_loadu_ps((const void *)(p))
#define F32X8_STORE(p, v) _mm256_storeu_ps((void *)(p), (v))
#define F32X8_STREAM(p, v) _mm256_stream_ps((void *)(p), (v))
#define F16X8_LOAD(p) _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)(p)))
#define F16X8_PACK(v) _mm256_cvtps_ph((v), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
#define F16X8_STORE(p, v) _mm_storeu_si128((__m128i *)(void *)(p), F16X8_PACK(v))
#define F16X8_STREAM(p, v) _mm_stream_si128((__m128i *)(void *)(p), F16X8_PACK(v))
AVX2_UNARY(avx2_forward_f32, __m256, 8, 4, F32X8_LOAD, F32X8_STORE, F32X8_STREAM, SETUP_PS256,
           FORWARD_BODY(x), forward_loop_f32)
AVX2_UNARY(avx2_grad_f32, __m256, 8, 4, F32X8_LOAD, F32X8_STORE, F32X8_STREAM, SETUP_PS256,
           GRAD_BODY(x), grad_loop_f32)
AVX2_BINARY(avx2_backward_f32, __m256, 8, 4, F32X8_LOAD, F32X8_STORE, F32X8_STREAM, SETUP_PS256,
            backward_loop_f32)
AVX2_UNARY(avx2_forward_f16, __m256, 8, 2, F16X8_LOAD, F16X8_STORE, F16X8_STREAM, SETUP_PS256,
           FORWARD_BODY(x), forward_loop_f16)
AVX2_UNARY(avx2_grad_f16, __m256, 8, 2, F16X8_LOAD, F16X8_STORE, F16X8_STREAM, SETUP_PS256,
           GRAD_BODY(x), grad_loop_f16)
AVX2_BINARY(avx2_backward_f16, __m256, 8, 2, F16X8_LOAD, F16X8_STORE, F16X8_STREAM, SETUP_PS256,
            backward_loop_f16)
#undef SEL
#undef MUL

#define SEL(x, a, b) _mm256_blendv_pd((b), (a), _mm256_cmp_pd((x), vzero, _CMP_GT_OQ))
#define MUL _mm256_mul_pd
#define SETUP_PD256                                                             \
    const __m256d va = _mm256_set1_pd(ctx->alpha), vone = _mm256_set1_pd(1.0),  \
                  vzero = _mm256_setzero_pd(); \
    (void)vone; /* the forward loops need no 1.0 */
#define F64X4_LOAD(p) _mm256_loadu_pd((const void *)(p))
#define F64X4_STORE(p, v) _mm256_storeu_pd((void *)(p), (v))
#define F64X4_STREAM(p, v) _mm256_stream_pd((void *)(p), (v))
AVX2_UNARY(avx2_forward_f64, __m256d, 4, 8, F64X4_LOAD, F64X4_STORE, F64X4_STREAM, SETUP_PD256,
           FORWARD_BODY(x), forward_loop_f64)
AVX2_UNARY(avx2_grad_f64, __m256d, 4, 8, F64X4_LOAD, F64X4_STORE, F64X4_STREAM, SETUP_PD256,
           GRAD_BODY(x), grad_loop_f64)
AVX2_BINARY(avx2_backward_f64, __m256d, 4, 8, F64X4_LOAD, F64X4_STORE, F64X4_STREAM, SETUP_PD256,
            backward_loop_f64)
#undef SEL
#undef MUL

/* Integer inputs stay on the portable loops: they are not the hot formats. */
#define SIMD_TABLE(NAME, ISA)                                                   \
    static const KernelTable NAME = {                                           \
        .name = #ISA,                                                           \
        .forward = {[KIND_F16] = ISA##_forward_f16, [KIND_F32] = ISA##_forward_f32, \
                    [KIND_F64] = ISA##_forward_f64, [KIND_BOOL] = forward_loop_bool, \
                    [KIND_I8] = forward_loop_i8,   [KIND_I16] = forward_loop_i16, \
                    [KIND_I32] = forward_loop_i32, [KIND_I64] = forward_loop_i64, \
                    [KIND_U8] = forward_loop_u8,   [KIND_U16] = forward_loop_u16, \
                    [KIND_U32] = forward_loop_u32, [KIND_U64] = forward_loop_u64}, \
        .grad = {[KIND_F16] = ISA##_grad_f16, [KIND_F32] = ISA##_grad_f32,      \
                 [KIND_F64] = ISA##_grad_f64, [KIND_BOOL] = grad_loop_bool,     \
                 [KIND_I8] = grad_loop_i8,   [KIND_I16] = grad_loop_i16,        \
                 [KIND_I32] = grad_loop_i32, [KIND_I64] = grad_loop_i64,        \
                 [KIND_U8] = grad_loop_u8,   [KIND_U16] = grad_loop_u16,        \
                 [KIND_U32] = grad_loop_u32, [KIND_U64] = grad_loop_u64},       \
        .backward_same = {ISA##_backward_f16, ISA##_backward_f32, ISA##_backward_f64}, \
    };
SIMD_TABLE(AVX2_KERNELS, avx2)
SIMD_TABLE(AVX512_KERNELS, avx512)

/* CPUID leaf 7 feature bits, plus the OS's promise (XCR0) to save the registers. */
static void
cpu_features(int *has_avx2, int *has_avx512)
{
    unsigned int a, b, c, d;
    *has_avx2 = *has_avx512 = 0;
#if defined(_MSC_VER) && !defined(__clang__)
    int regs[4];
    __cpuid(regs, 0);
    if (regs[0] < 7) return;
    __cpuid(regs, 1);
    c = (unsigned int)regs[2];
    if (!(c & (1u << 27)) || !(c & (1u << 29))) return;  /* OSXSAVE, F16C */
    unsigned long long xcr0 = _xgetbv(0);
    __cpuidex(regs, 7, 0);
    b = (unsigned int)regs[1];
#else
    if (__get_cpuid_max(0, NULL) < 7) return;
    __cpuid(1, a, b, c, d);
    if (!(c & (1u << 27)) || !(c & (1u << 29))) return;  /* OSXSAVE, F16C */
    unsigned int xlo, xhi;
    __asm__("xgetbv" : "=a"(xlo), "=d"(xhi) : "c"(0));
    unsigned long long xcr0 = ((unsigned long long)xhi << 32) | xlo;
    __cpuid_count(7, 0, a, b, c, d);
#endif
    int ymm_saved = (xcr0 & 0x6) == 0x6;
    int zmm_saved = (xcr0 & 0xe6) == 0xe6;
    *has_avx2 = ymm_saved && (b & (1u << 5));
    const unsigned int avx512_fdq_bw_vl = (1u << 16) | (1u << 17) | (1u << 30) | (1u << 31);
    *has_avx512 = *has_avx2 && zmm_saved && (b & avx512_fdq_bw_vl) == avx512_fdq_bw_vl;
}
#endif /* x86-64 */

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
#if defined(__aarch64__) && !defined(_MSC_VER)
#define LEAKY_NEON 1
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

static const KernelTable NEON_KERNELS = {
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

/* Every kernel path this CPU can run, best first; returns the count. */
static int
supported_kernels(const KernelTable **tables)
{
    int count = 0;
#ifdef LEAKY_X86_64
    int has_avx2, has_avx512;
    cpu_features(&has_avx2, &has_avx512);
    if (has_avx512) tables[count++] = &AVX512_KERNELS;
    if (has_avx2) tables[count++] = &AVX2_KERNELS;
#endif
#ifdef LEAKY_NEON
    tables[count++] = &NEON_KERNELS;
#endif
    tables[count++] = &PORTABLE_KERNELS;
    return count;
}

/* ------------------------------------------------------------------ */
/* 4. The n-d driver                                                   */
/* ------------------------------------------------------------------ */

/* A buffer as the driver sees it: always with shape and strides filled in. */
typedef struct {
    Py_buffer view;
    int acquired;
    ElemKind kind;
    Py_ssize_t shape[PyBUF_MAX_NDIM];
    Py_ssize_t strides[PyBUF_MAX_NDIM];
} Operand;

typedef struct {
    int ndim;
    Py_ssize_t shape[PyBUF_MAX_NDIM];
    Py_ssize_t strides[MAX_OPERANDS][PyBUF_MAX_NDIM];
} LoopPlan;

/*
 * Drops unit dimensions and merges neighbours that are contiguous in every
 * operand, so a C-contiguous (or uniformly strided) array of any rank
 * becomes one long inner loop.  Returns 0 when there is nothing to do.
 */
static Py_ssize_t
plan_build(LoopPlan *plan, int ndim, const Py_ssize_t *shape, int nops,
           const Py_ssize_t *const *strides)
{
    Py_ssize_t total = 1;
    plan->ndim = 0;
    for (int d = 0; d < ndim; d++) {
        total *= shape[d];
        if (shape[d] == 1) {
            continue;
        }
        int last = plan->ndim - 1;
        int mergeable = last >= 0;
        for (int op = 0; op < nops && mergeable; op++) {
            mergeable = plan->strides[op][last] == strides[op][d] * shape[d];
        }
        if (mergeable) {
            plan->shape[last] *= shape[d];
            for (int op = 0; op < nops; op++) {
                plan->strides[op][last] = strides[op][d];
            }
        }
        else {
            plan->shape[plan->ndim] = shape[d];
            for (int op = 0; op < nops; op++) {
                plan->strides[op][plan->ndim] = strides[op][d];
            }
            plan->ndim++;
        }
    }
    if (total != 0 && plan->ndim == 0) {  /* a single element */
        plan->ndim = 1;
        plan->shape[0] = 1;
        for (int op = 0; op < nops; op++) {
            plan->strides[op][0] = 0;
        }
    }
    return total;
}

static void
plan_run(const LoopPlan *plan, int nops, char *const *base, InnerLoop loop, const LoopContext *ctx)
{
    const int inner = plan->ndim - 1;
    assert(plan->ndim >= 1 && plan->ndim <= PyBUF_MAX_NDIM && nops <= MAX_OPERANDS);
    Py_ssize_t steps[MAX_OPERANDS];
    char *ptrs[MAX_OPERANDS];
    Py_ssize_t index[PyBUF_MAX_NDIM] = {0};
    for (int op = 0; op < nops; op++) {
        steps[op] = plan->strides[op][inner];
        ptrs[op] = base[op];
    }
    for (;;) {
        loop(ptrs, steps, plan->shape[inner], ctx);
        int d = inner - 1;
        for (; d >= 0; d--) {  /* odometer over the outer dimensions */
            for (int op = 0; op < nops; op++) {
                ptrs[op] += plan->strides[op][d];
            }
            if (++index[d] < plan->shape[d]) {
                break;
            }
            for (int op = 0; op < nops; op++) {
                ptrs[op] -= plan->strides[op][d] * plan->shape[d];
            }
            index[d] = 0;
        }
        if (d < 0) {
            return;
        }
    }
}

/* The plan for operands that all have the shape of ops[0]; returns the element count. */
static Py_ssize_t
plan_operands(LoopPlan *plan, Operand *const *ops, int nops, char **base)
{
    const Py_ssize_t *strides[MAX_OPERANDS];
    for (int op = 0; op < nops; op++) {
        strides[op] = ops[op]->strides;
        base[op] = (char *)ops[op]->view.buf;
    }
    return plan_build(plan, ops[0]->view.ndim, ops[0]->shape, nops, strides);
}

/* Runs loop over the operands on this thread. */
static void
run_serial(Operand *const *ops, int nops, InnerLoop loop, const LoopContext *ctx)
{
    LoopPlan plan;
    char *base[MAX_OPERANDS];
    if (plan_operands(&plan, ops, nops, base) > 0) {
        plan_run(&plan, nops, base, loop, ctx);
    }
}

/* ------------------------------------------------------------------ */
/* 4b. The thread pool                                                 */
/* ------------------------------------------------------------------ */

/*
 * Large arrays are split across a small persistent pool of OS threads
 * (pthreads or Win32; no OpenMP runtime to ship).  The calling thread does
 * the first part itself.  Hand-off costs microseconds: a worker that has
 * just finished spins briefly on the job counter before it sleeps on a
 * condition variable, so back-to-back calls never pay a wake-up.
 *
 * - Fork: the pool remembers the pid that made it; a child sees another pid,
 *   abandons the inherited copy (its threads do not exist there) and makes
 *   a pool of its own.
 * - Many Python threads: one job at a time; a caller that finds the pool
 *   busy runs its kernel alone instead of waiting.
 * - Interpreter exit: module free stops and joins the workers.
 * Workers never touch Python objects or the GIL.
 */
#define LEAKY_MAX_THREADS 64
#define LEAKY_SPIN_ROUNDS 20000

#ifdef _WIN32
#include <windows.h>
typedef HANDLE ThreadHandle;
typedef SRWLOCK Mutex;
typedef CONDITION_VARIABLE Cond;
#define mutex_init(m) InitializeSRWLock(m)
#define mutex_destroy(m) ((void)0)
#define mutex_lock(m) AcquireSRWLockExclusive(m)
#define mutex_unlock(m) ReleaseSRWLockExclusive(m)
#define cond_init(c) InitializeConditionVariable(c)
#define cond_destroy(c) ((void)0)
#define cond_wait(c, m) SleepConditionVariableSRW((c), (m), INFINITE, 0)
#define cond_broadcast(c) WakeAllConditionVariable(c)
#define current_pid() 0L
#else
#include <pthread.h>
#include <unistd.h>
typedef pthread_t ThreadHandle;
typedef pthread_mutex_t Mutex;
typedef pthread_cond_t Cond;
#define mutex_init(m) pthread_mutex_init((m), NULL)
#define mutex_destroy(m) pthread_mutex_destroy(m)
#define mutex_lock(m) pthread_mutex_lock(m)
#define mutex_unlock(m) pthread_mutex_unlock(m)
#define cond_init(c) pthread_cond_init((c), NULL)
#define cond_destroy(c) pthread_cond_destroy(c)
#define cond_wait(c, m) pthread_cond_wait((c), (m))
#define cond_broadcast(c) pthread_cond_broadcast(c)
#define current_pid() ((long)getpid())
#endif

#if defined(_MSC_VER) && !defined(__clang__)
#define ATOMIC_LOAD(p) _InterlockedOr64((volatile long long *)(p), 0)
#define ATOMIC_STORE(p, v) _InterlockedExchange64((volatile long long *)(p), (v))
#define ATOMIC_ADD(p, v) _InterlockedExchangeAdd64((volatile long long *)(p), (v))
#define ATOMIC_CAS(p, expected, desired) \
    (_InterlockedCompareExchange64((volatile long long *)(p), (desired), (expected)) == (expected))
#define ATOMIC_LOAD_PTR(p) _InterlockedCompareExchangePointer((void *volatile *)(p), NULL, NULL)
#define ATOMIC_CAS_PTR(p, expected, desired) \
    (_InterlockedCompareExchangePointer((void *volatile *)(p), (desired), (expected)) == (expected))
#else
#define ATOMIC_LOAD(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define ATOMIC_STORE(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)
#define ATOMIC_ADD(p, v) __atomic_fetch_add((p), (v), __ATOMIC_ACQ_REL)
#define ATOMIC_CAS(p, expected, desired)                                          \
    __extension__({ long long expected_ = (expected);                             \
        __atomic_compare_exchange_n((p), &expected_, (desired), 0, __ATOMIC_ACQ_REL, \
                                    __ATOMIC_ACQUIRE); })
#define ATOMIC_LOAD_PTR(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define ATOMIC_CAS_PTR(p, expected, desired)                                      \
    __extension__({ void *expected_ = (expected);                                 \
        __atomic_compare_exchange_n((void **)(p), &expected_, (desired), 0, __ATOMIC_ACQ_REL, \
                                    __ATOMIC_ACQUIRE); })
#endif

#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__) || defined(_M_IX86)
#define cpu_relax() _mm_pause()
#elif defined(__aarch64__) && !defined(_MSC_VER)
#define cpu_relax() __asm__ __volatile__("yield")
#else
#define cpu_relax() ((void)0)
#endif

/* A split of one plan into parts: ranges of its outermost dimension. */
typedef struct {
    const LoopPlan *plan;
    int nops;
    char *base[MAX_OPERANDS];
    InnerLoop loop;
    const LoopContext *ctx;
    int nparts;
} ParallelJob;

static Py_ssize_t
part_start(const ParallelJob *job, int part)
{
    Py_ssize_t extent = job->plan->shape[0];
    Py_ssize_t start = (Py_ssize_t)((double)extent * part / job->nparts);
    if (job->plan->ndim == 1 && part > 0 && part < job->nparts) {
        start &= ~(Py_ssize_t)63;  /* whole cache lines per part on 1-d runs */
    }
    return part >= job->nparts ? extent : start;
}

static void
run_part(const ParallelJob *job, int part)
{
    assert(part >= 0 && part < job->nparts);
    Py_ssize_t lo = part_start(job, part), hi = part_start(job, part + 1);
    assert(lo >= 0 && hi <= job->plan->shape[0]);
    if (hi <= lo) {
        return;
    }
    LoopPlan sub = *job->plan;
    char *base[MAX_OPERANDS];
    sub.shape[0] = hi - lo;
    for (int op = 0; op < job->nops; op++) {
        base[op] = job->base[op] + lo * job->plan->strides[op][0];
    }
    plan_run(&sub, job->nops, base, job->loop, job->ctx);
}

typedef struct ThreadPool ThreadPool;

/*
 * Parts are claimed through one ticket: (job number << 32) | next part.
 * Whoever wins the compare-and-swap runs that part, so the caller runs every
 * part that no worker has picked up yet and never waits for a thread that
 * has not started: when the CPUs are busy with other threads (another
 * library's spinning pool, say) a call degrades to the serial speed instead
 * of waiting for a time slice.  A worker that wakes late finds the ticket of
 * a newer job, or none left, and touches nothing.
 */
typedef struct {
    ThreadPool *pool;
    int index;  /* 0 .. nworkers-1: joins a job only if index < the job's helpers */
    long long parts_run;  /* for tests (_worker_parts): which workers did work */
} WorkerSlot;

struct ThreadPool {
    long long generation;  /* job number; workers wait for it to change */
    long long helpers;     /* workers the current job may use (threads= minus the caller) */
    long long ticket;      /* (generation << 32) | index of the next unclaimed part */
    long long done_parts;  /* parts of the current job finished */
    long long busy;        /* a caller owns the pool */
    long long stop;
    long long sleepers;    /* workers asleep on `work` (guarded by lock) */
    ParallelJob job;       /* valid while parts of it are unfinished */
    long pid;
    int nworkers;
    Mutex lock;
    Cond work;
    Cond done;
    ThreadHandle threads[LEAKY_MAX_THREADS];
    WorkerSlot slots[LEAKY_MAX_THREADS];
};

#define TICKET(generation, index) ((((generation) & 0x7fffffffLL) << 32) | (long long)(index))

/* Claims and runs parts of job `generation` until none is left; counts
   them in *parts_run (a worker's tally; NULL for the caller). */
static void
pool_work_on(ThreadPool *pool, long long generation, long long *parts_run)
{
    for (;;) {
        long long ticket = ATOMIC_LOAD(&pool->ticket);
        int index = (int)(ticket & 0xffffffffLL);
        if ((ticket >> 32) != (generation & 0x7fffffffLL) || index >= pool->job.nparts) {
            return;
        }
        if (!ATOMIC_CAS(&pool->ticket, ticket, ticket + 1)) {
            continue;
        }
        const int nparts = pool->job.nparts;  /* stable: our part is not done yet */
        run_part(&pool->job, index);
        if (parts_run != NULL) {
            ATOMIC_ADD(parts_run, 1);
        }
        if (ATOMIC_ADD(&pool->done_parts, 1) + 1 == nparts) {
            mutex_lock(&pool->lock);  /* pairs with the caller's check under the lock */
            cond_broadcast(&pool->done);
            mutex_unlock(&pool->lock);
        }
    }
}

/* Waits for a job newer than `seen`; returns its number, or -1 when told to stop. */
static long long
pool_wait_for_job(ThreadPool *pool, long long seen)
{
    for (int round = 0; round < LEAKY_SPIN_ROUNDS; round++) {
        if (ATOMIC_LOAD(&pool->stop)) {
            return -1;
        }
        long long generation = ATOMIC_LOAD(&pool->generation);
        if (generation != seen) {
            return generation;
        }
        cpu_relax();
    }
    mutex_lock(&pool->lock);
    pool->sleepers++;
    while (ATOMIC_LOAD(&pool->generation) == seen && !ATOMIC_LOAD(&pool->stop)) {
        cond_wait(&pool->work, &pool->lock);
    }
    pool->sleepers--;
    mutex_unlock(&pool->lock);
    return ATOMIC_LOAD(&pool->stop) ? -1 : ATOMIC_LOAD(&pool->generation);
}

#ifdef _WIN32
static DWORD WINAPI
worker_main(LPVOID arg)
#else
static void *
worker_main(void *arg)
#endif
{
    WorkerSlot *slot = (WorkerSlot *)arg;
    ThreadPool *pool = slot->pool;
    long long seen = 0;
    for (;;) {
        long long generation = pool_wait_for_job(pool, seen);
        if (generation < 0) {
            break;
        }
        seen = generation;
        /* threads=N means N: without this check every awake worker would
           take parts.  `helpers` is read after the new generation, which
           pool_run publishes after it; a stale value can only come from a
           later job, whose ticket then turns this worker away anyway. */
        if (slot->index < ATOMIC_LOAD(&pool->helpers)) {
            pool_work_on(pool, generation, &slot->parts_run);
        }
    }
#ifdef _WIN32
    return 0;
#else
    return NULL;
#endif
}

static int
default_thread_count(void)
{
    long count = 1;
#ifdef _WIN32
    count = (long)GetActiveProcessorCount(ALL_PROCESSOR_GROUPS);
#elif defined(__linux__) && defined(CPU_COUNT)
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        count = CPU_COUNT(&set);  /* the CPUs this process may run on */
    }
    else {
        count = sysconf(_SC_NPROCESSORS_ONLN);
    }
#else
    count = sysconf(_SC_NPROCESSORS_ONLN);
#endif
    if (count < 1) count = 1;
    if (count > LEAKY_MAX_THREADS) count = LEAKY_MAX_THREADS;
    return (int)count;
}

static void
pool_free(ThreadPool *pool)
{
    if (pool == NULL) {
        return;
    }
    if (pool->pid != current_pid()) {
        return;  /* a fork child's copy: no threads to join, the lock may be held */
    }
    ATOMIC_STORE(&pool->stop, 1);
    mutex_lock(&pool->lock);
    cond_broadcast(&pool->work);
    mutex_unlock(&pool->lock);
    for (int i = 0; i < pool->nworkers; i++) {
#ifdef _WIN32
        WaitForSingleObject(pool->threads[i], INFINITE);
        CloseHandle(pool->threads[i]);
#else
        pthread_join(pool->threads[i], NULL);
#endif
    }
    mutex_destroy(&pool->lock);
    cond_destroy(&pool->work);
    cond_destroy(&pool->done);
    PyMem_RawFree(pool);
}

/* A pool with `nthreads - 1` workers; NULL if out of memory. */
static ThreadPool *
pool_new(int nthreads)
{
    ThreadPool *pool = PyMem_RawCalloc(1, sizeof(ThreadPool));
    if (pool == NULL) {
        return NULL;
    }
    pool->pid = current_pid();
    mutex_init(&pool->lock);
    cond_init(&pool->work);
    cond_init(&pool->done);
    for (int i = 0; i < nthreads - 1; i++) {
        pool->slots[i].pool = pool;
        pool->slots[i].index = i;
#ifdef _WIN32
        pool->threads[i] = CreateThread(NULL, 0, worker_main, &pool->slots[i], 0, NULL);
        int failed = pool->threads[i] == NULL;
#else
        int failed = pthread_create(&pool->threads[i], NULL, worker_main, &pool->slots[i]) != 0;
#endif
        if (failed) {
            break;  /* fewer workers is fine: the caller takes their parts */
        }
        pool->nworkers++;
    }
    return pool;
}

/* Runs all parts of `job` on this thread and whichever of the first
   `helpers` workers join in. */
static void
pool_run(ThreadPool *pool, const ParallelJob *job, int helpers)
{
    assert(ATOMIC_LOAD(&pool->busy) == 1 && job->nparts >= 1);
    long long generation = ATOMIC_LOAD(&pool->generation) + 1;
    pool->job = *job;
    ATOMIC_STORE(&pool->helpers, (long long)helpers);
    ATOMIC_STORE(&pool->done_parts, 0);
    ATOMIC_STORE(&pool->ticket, TICKET(generation, 0));
    mutex_lock(&pool->lock);
    ATOMIC_STORE(&pool->generation, generation);
    if (pool->sleepers > 0) {
        cond_broadcast(&pool->work);
    }
    mutex_unlock(&pool->lock);
    pool_work_on(pool, generation, NULL);
    /* what is left are parts that workers are running right now */
    for (int round = 0; round < LEAKY_SPIN_ROUNDS; round++) {
        if (ATOMIC_LOAD(&pool->done_parts) == job->nparts) {
            return;
        }
        cpu_relax();
    }
    mutex_lock(&pool->lock);
    while (ATOMIC_LOAD(&pool->done_parts) < job->nparts) {
        cond_wait(&pool->done, &pool->lock);
    }
    mutex_unlock(&pool->lock);
}

/* Byte range [*lo, *hi) that a view can touch; empty views touch nothing. */
static int
operand_extent(const Operand *op, char **lo, char **hi)
{
    char *start = (char *)op->view.buf, *end = start;
    for (int d = 0; d < op->view.ndim; d++) {
        if (op->shape[d] == 0) {
            return 0;
        }
        Py_ssize_t span = op->strides[d] * (op->shape[d] - 1);
        if (span < 0) {
            start += span;
        }
        else {
            end += span;
        }
    }
    *lo = start;
    *hi = end + op->view.itemsize;
    return 1;
}

static int
operands_overlap(const Operand *a, const Operand *b)
{
    char *alo, *ahi, *blo, *bhi;
    if (!operand_extent(a, &alo, &ahi) || !operand_extent(b, &blo, &bhi)) {
        return 0;
    }
    return alo < bhi && blo < ahi;
}

/* Same memory, element for element: safe to compute in place. */
static int
operands_identical(const Operand *a, const Operand *b)
{
    if (a->view.buf != b->view.buf || a->view.itemsize != b->view.itemsize ||
        a->view.ndim != b->view.ndim) {
        return 0;
    }
    for (int d = 0; d < a->view.ndim; d++) {
        if (a->shape[d] != b->shape[d] ||
            (a->shape[d] > 1 && a->strides[d] != b->strides[d])) {
            return 0;
        }
    }
    return 1;
}

/*
 * When an input partially overlaps the output, writing the output would
 * clobber input elements not yet read.  Like NumPy, read from a private copy
 * instead.  Returns the copy (to be freed by the caller), or NULL with
 * *failed set on allocation failure.
 */
static char *
detach_from_output(Operand *input, const Operand *output, int *failed)
{
    *failed = 0;
    if (!operands_overlap(input, output) || operands_identical(input, output)) {
        return NULL;
    }
    Py_ssize_t count = 1;
    for (int d = 0; d < input->view.ndim; d++) {
        count *= input->shape[d];
    }
    const Py_ssize_t itemsize = input->view.itemsize;
    assert(count > 0 && itemsize > 0 && count <= PY_SSIZE_T_MAX / itemsize);
    char *copy = PyMem_Malloc((size_t)(count * itemsize));
    if (copy == NULL) {
        *failed = 1;
        PyErr_NoMemory();
        return NULL;
    }
    Operand packed;
    packed.view = input->view;
    packed.view.buf = copy;
    Py_ssize_t stride = itemsize;
    for (int d = input->view.ndim - 1; d >= 0; d--) {
        packed.shape[d] = input->shape[d];
        packed.strides[d] = stride;
        stride *= input->shape[d];
    }
    Operand *pair[2] = {input, &packed};
    LoopContext ctx = {.itemsize = itemsize};
    run_serial(pair, 2, copy_loop, &ctx);
    input->view.buf = copy;
    memcpy(input->strides, packed.strides, sizeof(Py_ssize_t) * (size_t)input->view.ndim);
    return copy;
}

/* ------------------------------------------------------------------ */
/* 5. ResultBuffer                                                     */
/* ------------------------------------------------------------------ */

/*
 * A C-contiguous block with a format and a shape, exported through the
 * buffer protocol.  memoryview.cast cannot make 0-d views, views with a zero
 * in the shape, or float16 views, so results for exporters other than NumPy
 * and array.array are memoryviews of one of these.
 */
typedef struct {
    PyObject_VAR_HEAD        /* ob_size = ndim; shape then strides follow */
    char *data;
    Py_ssize_t nbytes;
    ElemKind kind;
    Py_ssize_t dims[1];      /* 2 * ndim entries: shape, then strides */
} ResultBuffer;

static PyObject *
result_buffer_new(PyTypeObject *type, ElemKind kind, int ndim, const Py_ssize_t *shape)
{
    ResultBuffer *self = (ResultBuffer *)type->tp_alloc(type, 2 * (Py_ssize_t)ndim);
    if (self == NULL) {
        return NULL;
    }
    Py_SET_SIZE(self, ndim);
    self->kind = kind;
    Py_ssize_t stride = itemsize_of_result(kind);
    for (int d = ndim - 1; d >= 0; d--) {
        self->dims[d] = shape[d];
        self->dims[ndim + d] = stride;
        stride *= shape[d];
    }
    self->nbytes = stride;
    /* not zero-filled: every byte is written before anyone can see it */
    self->data = PyMem_Malloc(stride > 0 ? (size_t)stride : 1);
    if (self->data == NULL) {
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    return (PyObject *)self;
}

static void
result_buffer_dealloc(PyObject *op)
{
    ResultBuffer *self = (ResultBuffer *)op;
    PyTypeObject *type = Py_TYPE(op);
    PyMem_Free(self->data);
    type->tp_free(op);
    Py_DECREF(type);
}

static int
result_buffer_getbuffer(PyObject *op, Py_buffer *view, int flags)
{
    ResultBuffer *self = (ResultBuffer *)op;
    const int ndim = (int)Py_SIZE(self);
    if (ndim > 1 && (flags & PyBUF_F_CONTIGUOUS) == PyBUF_F_CONTIGUOUS) {
        Py_ssize_t non_unit = 0;
        for (int d = 0; d < ndim; d++) {
            non_unit += self->dims[d] > 1;
        }
        if (non_unit > 1) {
            PyErr_SetString(PyExc_BufferError, "leaky result buffers are C-contiguous");
            view->obj = NULL;
            return -1;
        }
    }
    view->obj = Py_NewRef(op);
    view->buf = self->data;
    view->len = self->nbytes;
    view->readonly = 0;
    view->itemsize = itemsize_of_result(self->kind);
    view->format = (flags & PyBUF_FORMAT) ? (char *)format_of_result(self->kind) : NULL;
    view->ndim = (flags & PyBUF_ND) ? ndim : 1;
    view->shape = (flags & PyBUF_ND) ? self->dims : NULL;
    view->strides = (flags & PyBUF_STRIDES) == PyBUF_STRIDES ? self->dims + ndim : NULL;
    view->suboffsets = NULL;
    view->internal = NULL;
    return 0;
}

static PyType_Slot result_buffer_slots[] = {
    {Py_tp_dealloc, result_buffer_dealloc},
    {Py_bf_getbuffer, result_buffer_getbuffer},
    {Py_tp_doc, "Memory behind a leaky result memoryview (C-contiguous)."},
    {0, NULL},
};

static PyType_Spec result_buffer_spec = {
    .name = "leaky._leaky.ResultBuffer",
    .basicsize = offsetof(ResultBuffer, dims),
    .itemsize = sizeof(Py_ssize_t),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_DISALLOW_INSTANTIATION | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = result_buffer_slots,
};

/* ------------------------------------------------------------------ */
/* 8a. Module state (used by everything below)                         */
/* ------------------------------------------------------------------ */

/*
 * Below gil_threshold elements a call stays on the calling thread and keeps
 * the GIL: releasing it costs more than the work.  From parallel_threshold
 * elements on, work is split across the pool.  Outputs of stream_bytes and
 * more go past the last-level cache anyway, so they are streamed.  The
 * private _tune() reads and sets them, so tests cover both sides of each
 * and the benchmark can try others.  A call reads each once, so a _tune()
 * racing with calls in other threads changes the choice of later calls only.
 */
#define LEAKY_GIL_THRESHOLD 16384
#define LEAKY_PARALLEL_THRESHOLD 32768
#define LEAKY_STREAM_BYTES ((Py_ssize_t)16 << 20)

/*
 * long long, read and written only through ATOMIC_LOAD/ATOMIC_STORE: the
 * module runs without the GIL on free-threaded builds, so a _tune() in one
 * thread may meet a call reading the thresholds in another.  Each value is
 * atomic on its own (no torn reads, no data race); a _tune() that sets
 * several is not one transaction, which no caller needs.
 */
typedef struct {
    long long gil_threshold;
    long long parallel_threshold;
    long long stream_bytes;
} Tuning;

/* PyArray_New's signature, as NumPy's C-API table exports it. */
typedef PyObject *(*NewArrayFunc)(PyTypeObject *, int, const Py_ssize_t *, int,
                                  const Py_ssize_t *, void *, int, int, PyObject *);

typedef struct {
    const KernelTable *kernels;  /* chosen once, at import */
    ThreadPool *pool;            /* made on first use; see pool_for_caller */
    int max_threads;             /* CPUs this process may use */
    Tuning tuning;
    PyTypeObject *result_buffer_type;
    PyObject *new_result;      /* leaky._containers.new_result */
    /*
     * NumPy's C API, published once: numpy_api is NUMPY_API_UNTRIED until
     * one thread wins the compare-and-swap to NUMPY_API_LOADING; that thread
     * alone fills the three fields below and then stores READY or UNUSABLE
     * with release order.  A reader that loads READY (acquire) sees the
     * fields complete; anyone else takes the Python route for that call.
     * No lock, so no thread ever waits on another's import of NumPy (which
     * would risk a deadlock with the import lock), and the number fast path
     * never touches any of it.
     */
    long long numpy_api;
    PyObject *numpy_core;      /* NumPy's _multiarray_umath, once an ndarray was seen */
    PyTypeObject *ndarray_type;
    NewArrayFunc numpy_new_array;  /* PyArray_New from NumPy's C-API table */
    PyObject *default_alpha;   /* the float 0.01 */
    PyObject *one_float;       /* the float 1.0, the gradient where z > 0 */
    PyObject *zero;            /* the int 0, for z > 0 on other numbers */
    PyObject *one;             /* the int 1, for the generic gradient */
    PyObject *str_z;
    PyObject *str_alpha;
    PyObject *str_out;
    PyObject *str_threads;
    PyObject *str_grad_output;
} LeakyState;

enum { NUMPY_API_UNTRIED, NUMPY_API_LOADING, NUMPY_API_READY, NUMPY_API_UNUSABLE };

static inline LeakyState *
get_state(PyObject *module)
{
    return (LeakyState *)PyModule_GetState(module);
}

/* ------------------------------------------------------------------ */
/* 6. Argument parsing                                                 */
/* ------------------------------------------------------------------ */

typedef struct {
    const char *name;       /* for messages: "leaky_relu" */
    int n_positional;       /* parameters that may be passed by position */
    int n_required;
    int n_params;           /* the rest are keyword-only */
} Signature;

/*
 * A hand-written vectorcall parser whose messages read like those of
 * CPython's own builtins.  values[] receives borrowed references, NULL for
 * absent arguments.
 */
static int
parse_arguments(const Signature *sig, PyObject *const *names, PyObject *const *args,
                Py_ssize_t nargs, PyObject *kwnames, PyObject **values)
{
    for (int i = 0; i < sig->n_params; i++) {
        values[i] = NULL;
    }
    if (nargs > sig->n_positional) {
        PyErr_Format(PyExc_TypeError,
                     "%s() takes from %d to %d positional arguments but %zd were given",
                     sig->name, sig->n_required, sig->n_positional, nargs);
        return -1;
    }
    for (Py_ssize_t i = 0; i < nargs; i++) {
        values[i] = args[i];
    }
    Py_ssize_t nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    for (Py_ssize_t k = 0; k < nkw; k++) {
        PyObject *key = PyTuple_GET_ITEM(kwnames, k);
        int found = -1;
        for (int i = 0; i < sig->n_params && found < 0; i++) {
            if (key == names[i]) {
                found = i;
            }
        }
        for (int i = 0; i < sig->n_params && found < 0; i++) {
            int eq = PyUnicode_Compare(key, names[i]) == 0;
            if (PyErr_Occurred()) {
                return -1;
            }
            if (eq) {
                found = i;
            }
        }
        if (found < 0) {
            PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument '%S'",
                         sig->name, key);
            return -1;
        }
        if (values[found] != NULL) {
            PyErr_Format(PyExc_TypeError,
                         "argument for %s() given by name ('%U') and position (%d)",
                         sig->name, names[found], found + 1);
            return -1;
        }
        values[found] = args[nargs + k];
    }
    for (int i = 0; i < sig->n_required; i++) {
        if (values[i] == NULL) {
            PyErr_Format(PyExc_TypeError, "%s() missing required argument '%U' (pos %d)",
                         sig->name, names[i], i + 1);
            return -1;
        }
    }
    return 0;
}

/* A float, an int, or anything else with __float__ or __index__ (Fraction,
   Decimal, NumPy scalars): what alpha and a number grad_output may be. */
static int
is_real_number(PyObject *obj)
{
    if (PyFloat_Check(obj) || PyLong_Check(obj)) {
        return 1;
    }
    PyNumberMethods *nb = Py_TYPE(obj)->tp_as_number;
    return nb != NULL && (nb->nb_float != NULL || nb->nb_index != NULL);
}

/* alpha as a C double; accepts float, int and anything with __float__ or __index__. */
static int
parse_alpha(const char *fname, PyObject *obj, double *alpha)
{
    if (obj == NULL) {
        *alpha = LEAKY_DEFAULT_ALPHA;
        return 0;
    }
    if (PyFloat_CheckExact(obj)) {
        *alpha = PyFloat_AS_DOUBLE(obj);
        return 0;
    }
    if (!is_real_number(obj)) {
        PyErr_Format(PyExc_TypeError,
                     "%s() argument 'alpha' must be a real number, not %.200s",
                     fname, Py_TYPE(obj)->tp_name);
        return -1;
    }
    double value = PyFloat_AsDouble(obj);
    if (value == -1.0 && PyErr_Occurred()) {
        return -1;
    }
    *alpha = value;
    return 0;
}

static LoopContext
make_context(double alpha)
{
    LoopContext ctx = {0};
    ctx.alpha = alpha;
    ctx.alpha32 = (float)alpha;
    ctx.alpha16 = float_to_half(ctx.alpha32);
    return ctx;
}

/* ------------------------------------------------------------------ */
/* 7. Numbers, sequences and buffers                                   */
/* ------------------------------------------------------------------ */

typedef enum { OP_FORWARD, OP_GRAD } UnaryOp;

/*
 * The sign of an exact int or bool: -1, 0 or 1.  When it is -1, *small
 * receives the value if *fits.  Small ints are read off the object's layout
 * without a call (3.12+: the compact-value API; before: the sign of ob_size),
 * which is most of what a leaky_relu(3) costs beyond the call itself.
 */
static inline int
int_sign(PyObject *z, long *small, int *fits)
{
#if PY_VERSION_HEX >= 0x030C0000
    if (PyUnstable_Long_IsCompact((PyLongObject *)z)) {
        Py_ssize_t value = PyUnstable_Long_CompactValue((PyLongObject *)z);
        *small = (long)value;  /* compact means one digit: < 2**30 in size */
        *fits = 1;
        return (value > 0) - (value < 0);
    }
#else
    if (Py_SIZE(z) >= 0) {  /* ob_size carries the sign: no value needed */
        *fits = 0;
        return Py_SIZE(z) > 0;
    }
#endif
    int overflow;
    long value = PyLong_AsLongAndOverflow(z, &overflow);
    *fits = overflow == 0;
    *small = value;
    if (overflow) {
        return overflow;
    }
    return (value > 0) - (value < 0);
}

/* z as a double for exact floats and ints; -1 with an exception on overflow. */
static int
exact_number_as_double(PyObject *z, double *out)
{
    if (PyFloat_CheckExact(z)) {
        *out = PyFloat_AS_DOUBLE(z);
        return 0;
    }
    *out = PyLong_AsDouble(z);
    return (*out == -1.0 && PyErr_Occurred()) ? -1 : 0;
}

static inline int
is_exact_number(PyObject *z)
{
    return PyFloat_CheckExact(z) || PyLong_CheckExact(z) || PyBool_Check(z);
}

/* z > 0 for any object, by Python's own comparison. */
static int
generic_is_positive(LeakyState *st, PyObject *z)
{
    return PyObject_RichCompareBool(z, st->zero, Py_GT);
}

/* leaky_relu of an exact float, int or bool (is_exact_number). */
static inline PyObject *
forward_exact_number(PyObject *z, double alpha)
{
    if (PyFloat_CheckExact(z)) {
        double x = PyFloat_AS_DOUBLE(z);
        return x > 0 ? Py_NewRef(z) : PyFloat_FromDouble(alpha * x);
    }
    long small;
    int fits;
    if (int_sign(z, &small, &fits) >= 0) {
        return Py_NewRef(z);  /* ints >= 0 come back as themselves */
    }
    double x = fits ? (double)small : PyLong_AsDouble(z);
    if (x == -1.0 && PyErr_Occurred()) {
        return NULL;  /* OverflowError, exactly as alpha * z raises it */
    }
    return PyFloat_FromDouble(alpha * x);
}

static PyObject *
forward_number(LeakyState *st, PyObject *z, PyObject *alpha_obj, double alpha)
{
    if (is_exact_number(z)) {
        return forward_exact_number(z, alpha);
    }
    int positive = generic_is_positive(st, z);
    if (positive < 0) {
        return NULL;
    }
    if (positive) {
        return Py_NewRef(z);
    }
    return PyNumber_Multiply(alpha_obj ? alpha_obj : st->default_alpha, z);
}

/* The float gradient: shared 1.0, or alpha itself when it already is a float. */
static PyObject *
float_gradient(LeakyState *st, int positive, PyObject *alpha_obj, double alpha)
{
    if (positive) {
        return Py_NewRef(st->one_float);
    }
    if (alpha_obj == NULL) {
        return Py_NewRef(st->default_alpha);
    }
    return PyFloat_CheckExact(alpha_obj) ? Py_NewRef(alpha_obj) : PyFloat_FromDouble(alpha);
}

/* z > 0 for an exact float, int or bool (is_exact_number). */
static inline int
exact_number_is_positive(PyObject *z)
{
    long small;
    int fits;
    return PyFloat_CheckExact(z) ? PyFloat_AS_DOUBLE(z) > 0 : int_sign(z, &small, &fits) > 0;
}

/* leaky_relu_grad of an exact float, int or bool (is_exact_number). */
static inline PyObject *
grad_exact_number(LeakyState *st, PyObject *z, PyObject *alpha_obj, double alpha)
{
    return float_gradient(st, exact_number_is_positive(z), alpha_obj, alpha);
}

static PyObject *
grad_number(LeakyState *st, PyObject *z, PyObject *alpha_obj, double alpha)
{
    if (is_exact_number(z)) {
        return grad_exact_number(st, z, alpha_obj, alpha);
    }
    int positive = generic_is_positive(st, z);
    if (positive < 0) {
        return NULL;
    }
    return Py_NewRef(positive ? st->one : (alpha_obj ? alpha_obj : st->default_alpha));
}

static PyObject *
backward_number(LeakyState *st, PyObject *grad, PyObject *z, PyObject *alpha_obj, double alpha)
{
    if (is_exact_number(grad) && is_exact_number(z)) {
        double g;
        if (exact_number_as_double(grad, &g) < 0) {
            return NULL;
        }
        return PyFloat_FromDouble(g * (exact_number_is_positive(z) ? 1.0 : alpha));
    }
    /* grad * 1 would hand back a str or a list unchanged: only numbers here */
    if (!is_real_number(grad)) {
        PyErr_Format(PyExc_TypeError,
                     "leaky_relu_backward() argument 'grad_output' must be a real number, "
                     "a sequence of them or a buffer, not %.200s",
                     Py_TYPE(grad)->tp_name);
        return NULL;
    }
    int positive = generic_is_positive(st, z);
    if (positive < 0) {
        return NULL;
    }
    return PyNumber_Multiply(grad, positive ? st->one : (alpha_obj ? alpha_obj : st->default_alpha));
}

static PyObject *
unary_number(LeakyState *st, UnaryOp op, PyObject *z, PyObject *alpha_obj, double alpha)
{
    return op == OP_FORWARD ? forward_number(st, z, alpha_obj, alpha)
                            : grad_number(st, z, alpha_obj, alpha);
}

static inline int
is_sequence(PyObject *obj)
{
    return PyList_Check(obj) || PyTuple_Check(obj);
}

/* Lists and tuples: a list, element by element, with the number rules. */
static PyObject *
unary_sequence(LeakyState *st, UnaryOp op, PyObject *seq, PyObject *alpha_obj, double alpha)
{
    /* A snapshot: an element's __gt__ may mutate the list under us. */
    PyObject *items = PySequence_Tuple(seq);
    if (items == NULL) {
        return NULL;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(items);
    PyObject *result = PyList_New(n);
    if (result != NULL) {
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *value = unary_number(st, op, PyTuple_GET_ITEM(items, i), alpha_obj, alpha);
            if (value == NULL) {
                Py_CLEAR(result);
                break;
            }
            PyList_SET_ITEM(result, i, value);
        }
    }
    Py_DECREF(items);
    return result;
}

static PyObject *
backward_sequence(LeakyState *st, PyObject *grad_seq, PyObject *z_seq, PyObject *alpha_obj,
                  double alpha)
{
    PyObject *result = NULL;
    PyObject *grads = PySequence_Tuple(grad_seq);
    PyObject *zs = grads ? PySequence_Tuple(z_seq) : NULL;
    if (zs == NULL) {
        goto done;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(grads);
    if (PyTuple_GET_SIZE(zs) != n) {
        PyErr_Format(PyExc_ValueError,
                     "leaky_relu_backward() grad_output and z must have the same length, "
                     "got %zd and %zd", n, PyTuple_GET_SIZE(zs));
        goto done;
    }
    result = PyList_New(n);
    if (result == NULL) {
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *value = backward_number(st, PyTuple_GET_ITEM(grads, i),
                                          PyTuple_GET_ITEM(zs, i), alpha_obj, alpha);
        if (value == NULL) {
            Py_CLEAR(result);
            goto done;
        }
        PyList_SET_ITEM(result, i, value);
    }
done:
    Py_XDECREF(grads);
    Py_XDECREF(zs);
    return result;
}

/* Copies shape and strides in, filling what the exporter left out. */
static int
operand_normalize(Operand *op, const char *fname)
{
    Py_buffer *v = &op->view;
    if (v->ndim < 0 || v->ndim > PyBUF_MAX_NDIM) {
        PyErr_Format(PyExc_ValueError, "%s() cannot handle a buffer with %d dimensions",
                     fname, v->ndim);
        return -1;
    }
    if (v->shape == NULL && v->ndim == 1) {
        op->shape[0] = v->itemsize > 0 ? v->len / v->itemsize : 0;
    }
    Py_ssize_t stride = v->itemsize;
    for (int d = v->ndim - 1; d >= 0; d--) {
        if (v->shape != NULL) {
            op->shape[d] = v->shape[d];
        }
        op->strides[d] = v->strides != NULL ? v->strides[d] : stride;
        stride *= op->shape[d];
    }
    return 0;
}

static void
operand_release(Operand *op)
{
    if (op->acquired) {
        PyBuffer_Release(&op->view);
        op->acquired = 0;
    }
}

static int ndarray_operand(LeakyState *st, PyObject *obj, Operand *op, int writable);

static int
operand_acquire_input(LeakyState *st, Operand *op, PyObject *obj, const char *fname,
                      const char *argname)
{
    if (ndarray_operand(st, obj, op, 0)) {
        return 0;
    }
    if (PyObject_GetBuffer(obj, &op->view, PyBUF_RECORDS_RO) < 0) {
        return -1;
    }
    op->acquired = 1;
    switch (parse_format(op->view.format, op->view.itemsize, &op->kind)) {
    case FORMAT_OK:
        break;
    case FORMAT_FOREIGN_BYTE_ORDER:
        PyErr_Format(PyExc_TypeError,
                     "%s() argument '%s' has buffer format '%s' with non-native byte order; "
                     "convert it to native byte order first",
                     fname, argname, op->view.format);
        return -1;
    default:
        PyErr_Format(PyExc_TypeError,
                     "%s() argument '%s' has unsupported buffer format '%s' (itemsize %zd); "
                     "expected float16 'e', float32 'f', float64 'd', a signed or unsigned "
                     "integer format or bool '?'",
                     fname, argname, op->view.format ? op->view.format : "B",
                     op->view.itemsize);
        return -1;
    }
    return operand_normalize(op, fname);
}

static PyObject *
shape_as_tuple(int ndim, const Py_ssize_t *shape)
{
    PyObject *tuple = PyTuple_New(ndim);
    if (tuple == NULL) {
        return NULL;
    }
    for (int d = 0; d < ndim; d++) {
        PyObject *dim = PyLong_FromSsize_t(shape[d]);
        if (dim == NULL) {
            Py_DECREF(tuple);
            return NULL;
        }
        PyTuple_SET_ITEM(tuple, d, dim);
    }
    return tuple;
}

static int
operand_acquire_out(LeakyState *st, Operand *op, PyObject *obj, const char *fname,
                    ElemKind result_kind, const Operand *like)
{
    const char *want = format_of_result(result_kind);
    if (!PyObject_CheckBuffer(obj)) {
        PyErr_Format(PyExc_TypeError,
                     "%s() argument 'out' must be a writable buffer of format '%s' (%s), "
                     "not %.200s", fname, want, name_of_result(result_kind),
                     Py_TYPE(obj)->tp_name);
        return -1;
    }
    ElemKind kind;
    int parsed = FORMAT_OK;
    if (ndarray_operand(st, obj, op, 1)) {
        kind = op->kind;
    }
    else {
        if (PyObject_GetBuffer(obj, &op->view, PyBUF_RECORDS_RO) < 0) {
            return -1;
        }
        op->acquired = 1;
        if (op->view.readonly) {
            PyErr_Format(PyExc_ValueError, "%s() argument 'out' is read-only", fname);
            return -1;
        }
        parsed = parse_format(op->view.format, op->view.itemsize, &kind);
    }
    if (parsed != FORMAT_OK || kind != result_kind) {
        PyErr_Format(PyExc_TypeError,
                     "%s() argument 'out' has buffer format '%s' but the result is %s ('%s')",
                     fname, op->view.format ? op->view.format : "B",
                     name_of_result(result_kind), want);
        return -1;
    }
    op->kind = kind;
    if (op->acquired && operand_normalize(op, fname) < 0) {
        return -1;
    }
    int same_shape = op->view.ndim == like->view.ndim;
    for (int d = 0; same_shape && d < op->view.ndim; d++) {
        same_shape = op->shape[d] == like->shape[d];
    }
    if (!same_shape) {
        PyObject *got = shape_as_tuple(op->view.ndim, op->shape);
        PyObject *expected = got ? shape_as_tuple(like->view.ndim, like->shape) : NULL;
        if (expected != NULL) {
            PyErr_Format(PyExc_ValueError,
                         "%s() argument 'out' has shape %R but the result has shape %R",
                         fname, got, expected);
        }
        Py_XDECREF(got);
        Py_XDECREF(expected);
        return -1;
    }
    return 0;
}

/*
 * A new result with the shape of `like`, in the container that fits the
 * source: NumPy and array.array containers come from leaky._containers (in
 * Python, so that importing leaky never imports NumPy); everything else gets
 * a memoryview of a ResultBuffer.  On success *target is the object to write
 * into and *finish, if not NULL, is called on it to make the value returned.
 */
static int
new_result(LeakyState *st, PyObject *source, ElemKind result_kind, const Operand *like,
           PyObject **target, PyObject **finish)
{
    *target = NULL;
    *finish = NULL;
    PyTypeObject *type = Py_TYPE(source);
    if (type != &PyMemoryView_Type && type != &PyBytes_Type && type != &PyByteArray_Type) {
        PyObject *shape = shape_as_tuple(like->view.ndim, like->shape);
        if (shape == NULL) {
            return -1;
        }
        PyObject *format = PyUnicode_FromString(format_of_result(result_kind));
        if (format == NULL) {
            Py_DECREF(shape);
            return -1;
        }
        PyObject *args[3] = {source, format, shape};
        PyObject *made = PyObject_Vectorcall(st->new_result, args, 3, NULL);
        Py_DECREF(format);
        Py_DECREF(shape);
        if (made == NULL) {
            return -1;
        }
        if (made != Py_None) {
            if (!PyTuple_Check(made) || PyTuple_GET_SIZE(made) != 2) {
                PyErr_SetString(PyExc_SystemError,
                                "leaky._containers.new_result must return None or a pair");
                Py_DECREF(made);
                return -1;
            }
            *target = Py_NewRef(PyTuple_GET_ITEM(made, 0));
            PyObject *fin = PyTuple_GET_ITEM(made, 1);
            *finish = fin == Py_None ? NULL : Py_NewRef(fin);
            Py_DECREF(made);
            return 0;
        }
        Py_DECREF(made);
    }
    *target = result_buffer_new(st->result_buffer_type, result_kind, like->view.ndim, like->shape);
    if (*target == NULL) {
        return -1;
    }
    *finish = (PyObject *)&PyMemoryView_Type;
    Py_INCREF(*finish);
    return 0;
}

/*
 * The NumPy fast path.  Making a result through Python costs about a
 * microsecond, more than the whole kernel on a small array, so for exact
 * numpy.ndarray inputs the result comes from PyArray_New, found at run time
 * in the C-API table that NumPy exports as a capsule (no NumPy at build
 * time, nothing imported before the caller hands us an ndarray).  Table
 * slots and type numbers are NumPy's stable ABI; the data pointer's place in
 * the array object is checked against the buffer protocol once, and any
 * surprise turns the fast path off for good.
 */
#define NPY_FLOAT_TYPENUM 11
#define NPY_DOUBLE_TYPENUM 12
#define NPY_HALF_TYPENUM 23

/* The head of NumPy's PyArrayObject_fields and of PyArray_Descr, the same in
   NumPy 1.x and 2.x (the descriptor differs only after type_num). */
typedef struct {
    PyObject_HEAD
    char *data;
    int nd;
    Py_ssize_t *dimensions;
    Py_ssize_t *strides;
    PyObject *base;
    PyObject *descr;
    int flags;
} NdarrayHead;

typedef struct {
    PyObject_HEAD
    PyTypeObject *typeobj;
    char kind;
    char type;       /* the type character: 'e', 'f', 'd', ... */
    char byteorder;  /* '=' native, '<' or '>' otherwise, '|' not applicable */
    char former_flags;
    int type_num;
} DescrHead;

#define NPY_ARRAY_WRITEABLE_FLAG 0x0400
#define NPY_ARRAY_WARN_ON_WRITE_FLAG 0x80000000u

static inline char *
ndarray_data(PyObject *array)
{
    return ((NdarrayHead *)array)->data;
}

static int
typenum_of_result(ElemKind kind)
{
    switch (kind) {
    case KIND_F16: return NPY_HALF_TYPENUM;
    case KIND_F32: return NPY_FLOAT_TYPENUM;
    default: return NPY_DOUBLE_TYPENUM;
    }
}

/* Looks up NumPy's C API the first time an ndarray arrives; 0 if unusable. */
static int
load_numpy_api(LeakyState *st)
{
    static const char *const modules[] = {"numpy._core._multiarray_umath",
                                          "numpy.core._multiarray_umath"};
    PyObject *core = NULL, *capsule = NULL, *probe = NULL;
    int usable = 0;
    for (size_t i = 0; i < sizeof modules / sizeof *modules && core == NULL; i++) {
        core = PyImport_ImportModule(modules[i]);
        if (core == NULL) {
            PyErr_Clear();
        }
    }
    capsule = core ? PyObject_GetAttrString(core, "_ARRAY_API") : NULL;
    void **api = capsule && PyCapsule_CheckExact(capsule) ? PyCapsule_GetPointer(capsule, NULL) : NULL;
    if (api == NULL) {
        goto done;
    }
    unsigned int (*abi_version)(void) = (unsigned int (*)(void))api[0];
    if (abi_version() < 0x01000009) {  /* NumPy 1.x's ABI and up */
        goto done;
    }
    PyTypeObject *ndarray = (PyTypeObject *)api[2];
    NewArrayFunc new_array = (NewArrayFunc)api[93];
    Py_ssize_t dims[1] = {3};
    probe = new_array(ndarray, 1, dims, NPY_DOUBLE_TYPENUM, NULL, NULL, 0, 0, NULL);
    if (probe == NULL) {
        goto done;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(probe, &view, PyBUF_RECORDS) < 0) {
        goto done;
    }
    usable = Py_TYPE(probe) == ndarray && view.buf == ndarray_data(probe) && view.ndim == 1 &&
             view.itemsize == 8 && view.shape[0] == 3 && view.strides[0] == 8 && !view.readonly;
    PyBuffer_Release(&view);
    /* what ndarray_operand reads must match the buffer protocol's answer */
    const NdarrayHead *head = (const NdarrayHead *)probe;
    const DescrHead *descr = (const DescrHead *)head->descr;
    usable = usable && head->nd == 1 && head->dimensions[0] == 3 && head->strides[0] == 8 &&
             (head->flags & NPY_ARRAY_WRITEABLE_FLAG) && descr != NULL && descr->type == 'd' &&
             descr->byteorder == '=' && descr->type_num == NPY_DOUBLE_TYPENUM;
    if (usable) {
        st->numpy_core = Py_NewRef(core);
        st->numpy_new_array = new_array;
        st->ndarray_type = ndarray;
    }
done:
    PyErr_Clear();  /* no fast path is never an error: the Python route remains */
    Py_XDECREF(probe);
    Py_XDECREF(capsule);
    Py_XDECREF(core);
    return usable;
}

/* 1 if obj is an exact numpy.ndarray and NumPy's C API is usable, which is
   looked up here the first time an ndarray arrives. */
static int
is_exact_ndarray(LeakyState *st, PyObject *obj)
{
    PyTypeObject *type = Py_TYPE(obj);
    long long api = ATOMIC_LOAD(&st->numpy_api);
    if (api != NUMPY_API_READY) {
        /* one look per module, by one thread: a failed one is not retried */
        if (api != NUMPY_API_UNTRIED || strcmp(type->tp_name, "numpy.ndarray") != 0 ||
            !ATOMIC_CAS(&st->numpy_api, NUMPY_API_UNTRIED, NUMPY_API_LOADING)) {
            return 0;
        }
        int usable = load_numpy_api(st);
        ATOMIC_STORE(&st->numpy_api, usable ? NUMPY_API_READY : NUMPY_API_UNUSABLE);
        if (!usable) {
            return 0;
        }
    }
    assert(ATOMIC_LOAD(&st->numpy_api) == NUMPY_API_READY && st->numpy_new_array != NULL);
    return type == st->ndarray_type;
}

/*
 * An exact float16/32/64 ndarray in native byte order, read straight off the
 * array object instead of through the buffer protocol: NumPy's getbuffer
 * rebuilds and compares a format string on every call, about 600
 * instructions, a third of a small call's cost.  Returns 1 with op filled
 * (nothing to release: the caller's reference keeps the array alive, as
 * view.obj would), 0 when the general route must decide, errors included.
 */
static int
ndarray_operand(LeakyState *st, PyObject *obj, Operand *op, int writable)
{
    if (!is_exact_ndarray(st, obj)) {
        return 0;
    }
    const NdarrayHead *head = (const NdarrayHead *)obj;
    const DescrHead *descr = (const DescrHead *)head->descr;
    if (head->nd < 0 || head->nd > PyBUF_MAX_NDIM || descr->byteorder != '=' ||
        (writable && (!(head->flags & NPY_ARRAY_WRITEABLE_FLAG) ||
                      ((unsigned int)head->flags & NPY_ARRAY_WARN_ON_WRITE_FLAG)))) {
        return 0;
    }
    static const char *const formats[] = {[KIND_F16] = "e", [KIND_F32] = "f", [KIND_F64] = "d"};
    ElemKind kind;
    switch (descr->type) {
    case 'e': kind = KIND_F16; break;
    case 'f': kind = KIND_F32; break;
    case 'd': kind = KIND_F64; break;
    default: return 0;  /* ints, bools and the rest: the buffer protocol's format */
    }
    Py_buffer *v = &op->view;
    memset(v, 0, sizeof *v);
    v->buf = head->data;
    v->itemsize = itemsize_of_result(kind);
    v->ndim = head->nd;
    v->readonly = !(head->flags & NPY_ARRAY_WRITEABLE_FLAG);
    v->format = (char *)formats[kind];
    v->shape = op->shape;
    v->strides = op->strides;
    Py_ssize_t len = v->itemsize;
    for (int d = 0; d < head->nd; d++) {
        op->shape[d] = head->dimensions[d];
        op->strides[d] = head->strides[d];
        len *= head->dimensions[d];
    }
    v->len = len;
    op->kind = kind;
    op->acquired = 0;
    return 1;
}

/* A new C-contiguous ndarray result shaped like `like`, or NULL if `source` is no ndarray. */
static PyObject *
new_ndarray_result(LeakyState *st, PyObject *source, ElemKind result_kind, const Operand *like,
                   Operand *out_op)
{
    if (!is_exact_ndarray(st, source)) {
        return NULL;
    }
    PyObject *array = st->numpy_new_array(st->ndarray_type, like->view.ndim, like->shape,
                                          typenum_of_result(result_kind), NULL, NULL, 0, 0, NULL);
    if (array == NULL) {
        return NULL;
    }
    Py_buffer *v = &out_op->view;
    memset(v, 0, sizeof *v);
    v->buf = ndarray_data(array);
    v->itemsize = itemsize_of_result(result_kind);
    v->ndim = like->view.ndim;
    v->readonly = 0;
    Py_ssize_t stride = v->itemsize;
    for (int d = like->view.ndim - 1; d >= 0; d--) {
        out_op->shape[d] = like->shape[d];
        out_op->strides[d] = stride;
        stride *= like->shape[d];
    }
    v->len = stride;
    out_op->kind = result_kind;
    out_op->acquired = 0;  /* nothing to release: we own the new array */
    return array;
}

/* Fills out_op with the buffer to write: the caller's out=, or a new result. */
static int
prepare_output(LeakyState *st, const char *fname, PyObject *source, PyObject *out_obj,
               ElemKind result_kind, const Operand *like, Operand *out_op,
               PyObject **target, PyObject **finish)
{
    if (out_obj != NULL) {
        if (operand_acquire_out(st, out_op, out_obj, fname, result_kind, like) < 0) {
            return -1;
        }
        *target = Py_NewRef(out_obj);
        *finish = NULL;
        return 0;
    }
    *target = new_ndarray_result(st, source, result_kind, like, out_op);
    if (*target != NULL) {
        *finish = NULL;
        return 0;
    }
    if (PyErr_Occurred() || new_result(st, source, result_kind, like, target, finish) < 0) {
        return -1;
    }
    if (PyObject_GetBuffer(*target, &out_op->view, PyBUF_RECORDS) < 0) {
        return -1;
    }
    out_op->acquired = 1;
    out_op->kind = result_kind;
    return operand_normalize(out_op, fname);
}

static PyObject *
finish_result(PyObject *target, PyObject *finish)
{
    if (finish == NULL) {
        return Py_NewRef(target);
    }
    return PyObject_CallOneArg(finish, target);
}


/* This process's pool, made (or remade after a fork) on demand; NULL if busy. */
static ThreadPool *
pool_for_caller(LeakyState *st)
{
    for (;;) {
        ThreadPool *pool = ATOMIC_LOAD_PTR(&st->pool);
        if (pool != NULL && pool->pid == current_pid()) {
            return ATOMIC_CAS(&pool->busy, 0, 1) ? pool : NULL;
        }
        /* none yet, or inherited through fork: the inherited one is left as it is */
        ThreadPool *fresh = pool_new(st->max_threads);
        if (fresh == NULL) {
            return NULL;
        }
        if (!ATOMIC_CAS_PTR(&st->pool, pool, fresh)) {
            pool_free(fresh);  /* another thread installed one first */
        }
    }
}

/*
 * Runs loop over operands that all have the shape of ops[0]: on this thread
 * for small arrays; for large ones without the GIL and, unless threads == 1,
 * split across the pool.  threads == 0 means "choose by size".
 */
static void
run_elementwise(LeakyState *st, Operand *const *ops, int nops, InnerLoop loop,
                const LoopContext *ctx, int threads)
{
    LoopPlan plan;
    ParallelJob job = {.plan = &plan, .nops = nops, .loop = loop, .ctx = ctx};
    Py_ssize_t total = plan_operands(&plan, ops, nops, job.base);
    if (total == 0) {
        return;
    }
    if (total < ATOMIC_LOAD(&st->tuning.gil_threshold)) {
        plan_run(&plan, nops, job.base, loop, ctx);
        return;
    }
    if (threads == 0) {
        threads = total >= ATOMIC_LOAD(&st->tuning.parallel_threshold) ? st->max_threads : 1;
    }
    if (threads > st->max_threads) {
        threads = st->max_threads;
    }
    if (plan.shape[0] < threads) {
        threads = (int)plan.shape[0];
    }
    Py_BEGIN_ALLOW_THREADS
    ThreadPool *pool = threads > 1 ? pool_for_caller(st) : NULL;
    if (pool != NULL) {
        int nthreads = threads < pool->nworkers + 1 ? threads : pool->nworkers + 1;
        /* a few parts per thread, so that whoever is free takes the next one */
        Py_ssize_t min_part = plan.ndim == 1 ? 4096 : 1;
        Py_ssize_t nparts = plan.shape[0] / min_part;
        job.nparts = (int)(nparts < 4 * nthreads ? (nparts < nthreads ? nthreads : nparts)
                                                 : 4 * nthreads);
        pool_run(pool, &job, nthreads - 1);
        ATOMIC_STORE(&pool->busy, 0);
    }
    else {
        plan_run(&plan, nops, job.base, loop, ctx);
    }
    Py_END_ALLOW_THREADS
}

/* threads=None (choose by size) or a count >= 1, as an int; 0 means None. */
static int
parse_threads(const char *fname, PyObject *obj, int *threads)
{
    *threads = 0;
    if (obj == NULL || obj == Py_None) {
        return 0;
    }
    if (!PyLong_Check(obj) || PyBool_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s() argument 'threads' must be an int or None, not %.200s",
                     fname, Py_TYPE(obj)->tp_name);
        return -1;
    }
    int overflow;
    long value = PyLong_AsLongAndOverflow(obj, &overflow);
    if (value == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (overflow < 0 || (overflow == 0 && value < 1)) {
        PyErr_Format(PyExc_ValueError, "%s() argument 'threads' must be at least 1, got %S",
                     fname, obj);
        return -1;
    }
    *threads = (overflow > 0 || value > LEAKY_MAX_THREADS) ? LEAKY_MAX_THREADS : (int)value;
    return 0;
}

/*
 * Non-temporal stores, only into a big caller-provided out= that no input
 * shares.  Not into a result we just allocated: its pages come fresh from
 * the OS, which zeroes them and so leaves them in cache, where plain stores
 * hit; measured on a 2-core Xeon VM at 10**7 float32, streaming made
 * out-of-place calls 17% slower (9.0 vs 7.7 ms) and out= calls no faster.
 */
static int
should_stream(const LeakyState *st, PyObject *out_obj, const Operand *out,
              Py_ssize_t overlapping_inputs)
{
    return out_obj != NULL && overlapping_inputs == 0 &&
           out->view.len >= ATOMIC_LOAD(&st->tuning.stream_bytes);
}

static PyObject *
unary_buffer(LeakyState *st, UnaryOp op, const char *fname, PyObject *z, PyObject *out_obj,
             double alpha, int threads)
{
    Operand in = {.acquired = 0}, out = {.acquired = 0};
    PyObject *target = NULL, *finish = NULL, *result = NULL;
    char *detached = NULL;
    if (operand_acquire_input(st, &in, z, fname, "z") < 0) {
        goto done;
    }
    const ElemKind result_kind = result_kind_of(in.kind);
    if (prepare_output(st, fname, z, out_obj, result_kind, &in, &out, &target, &finish) < 0) {
        goto done;
    }
    const int overlaps = operands_overlap(&in, &out);
    int failed;
    detached = detach_from_output(&in, &out, &failed);
    if (failed) {
        goto done;
    }
    LoopContext ctx = make_context(alpha);
    ctx.streaming = should_stream(st, out_obj, &out, overlaps && !detached);
    Operand *ops[2] = {&in, &out};
    const KernelTable *kernels = st->kernels;
    run_elementwise(st, ops, 2, (op == OP_FORWARD ? kernels->forward : kernels->grad)[in.kind],
                    &ctx, threads);
    operand_release(&out);
    result = finish_result(target, finish);
done:
    PyMem_Free(detached);
    operand_release(&in);
    operand_release(&out);
    Py_XDECREF(target);
    Py_XDECREF(finish);
    return result;
}

static PyObject *
backward_buffer(LeakyState *st, PyObject *grad_obj, PyObject *z_obj, PyObject *out_obj,
                double alpha, int threads)
{
    static const char fname[] = "leaky_relu_backward";
    Operand grad = {.acquired = 0}, z = {.acquired = 0}, out = {.acquired = 0};
    PyObject *target = NULL, *finish = NULL, *result = NULL;
    char *detached_grad = NULL, *detached_z = NULL;
    if (operand_acquire_input(st, &grad, grad_obj, fname, "grad_output") < 0 ||
        operand_acquire_input(st, &z, z_obj, fname, "z") < 0) {
        goto done;
    }
    int same_shape = grad.view.ndim == z.view.ndim;
    for (int d = 0; same_shape && d < grad.view.ndim; d++) {
        same_shape = grad.shape[d] == z.shape[d];
    }
    if (!same_shape) {
        PyObject *gshape = shape_as_tuple(grad.view.ndim, grad.shape);
        PyObject *zshape = gshape ? shape_as_tuple(z.view.ndim, z.shape) : NULL;
        if (zshape != NULL) {
            PyErr_Format(PyExc_ValueError,
                         "%s() grad_output and z must have the same shape, got %R and %R",
                         fname, gshape, zshape);
        }
        Py_XDECREF(gshape);
        Py_XDECREF(zshape);
        goto done;
    }
    const ElemKind result_kind = result_kind_of(grad.kind);
    if (prepare_output(st, fname, grad_obj, out_obj, result_kind, &grad, &out, &target,
                       &finish) < 0) {
        goto done;
    }
    const int grad_overlaps = operands_overlap(&grad, &out);
    const int z_overlaps = operands_overlap(&z, &out);
    int failed;
    detached_grad = detach_from_output(&grad, &out, &failed);
    if (failed) {
        goto done;
    }
    detached_z = detach_from_output(&z, &out, &failed);
    if (failed) {
        goto done;
    }
    LoopContext ctx = make_context(alpha);
    ctx.streaming =
        should_stream(st, out_obj, &out, (grad_overlaps && !detached_grad) + (z_overlaps && !detached_z));
    ctx.grad_kind = grad.kind;
    ctx.z_kind = z.kind;
    InnerLoop loop = backward_loop_mixed;
    if (grad.kind == z.kind && grad.kind <= KIND_F64) {
        loop = st->kernels->backward_same[grad.kind - KIND_F16];
    }
    Operand *ops[3] = {&grad, &z, &out};
    run_elementwise(st, ops, 3, loop, &ctx, threads);
    operand_release(&out);
    result = finish_result(target, finish);
done:
    PyMem_Free(detached_grad);
    PyMem_Free(detached_z);
    operand_release(&grad);
    operand_release(&z);
    operand_release(&out);
    Py_XDECREF(target);
    Py_XDECREF(finish);
    return result;
}

static int
reject_out_for(const char *fname, PyObject *out_obj, PyObject *z)
{
    if (out_obj == NULL) {
        return 0;
    }
    PyErr_Format(PyExc_TypeError,
                 "%s() argument 'out' is only supported for buffer inputs, not %.200s",
                 fname, Py_TYPE(z)->tp_name);
    return -1;
}

static PyObject *
unary_entry(PyObject *module, UnaryOp op, const Signature *sig, PyObject *const *args,
            Py_ssize_t nargs, PyObject *kwnames)
{
    LeakyState *st = get_state(module);
    PyObject *names[4] = {st->str_z, st->str_alpha, st->str_out, st->str_threads};
    PyObject *values[4];
    if (parse_arguments(sig, names, args, nargs, kwnames, values) < 0) {
        return NULL;
    }
    PyObject *z = values[0], *alpha_obj = values[1];
    PyObject *out_obj = values[2] == Py_None ? NULL : values[2];
    double alpha;
    int threads;
    if (parse_alpha(sig->name, alpha_obj, &alpha) < 0 ||
        parse_threads(sig->name, values[3], &threads) < 0) {
        return NULL;
    }
    if (is_exact_number(z)) {
        if (reject_out_for(sig->name, out_obj, z) < 0) {
            return NULL;
        }
        return unary_number(st, op, z, alpha_obj, alpha);
    }
    if (PyObject_CheckBuffer(z)) {
        return unary_buffer(st, op, sig->name, z, out_obj, alpha, threads);
    }
    if (reject_out_for(sig->name, out_obj, z) < 0) {
        return NULL;
    }
    if (is_sequence(z)) {
        return unary_sequence(st, op, z, alpha_obj, alpha);
    }
    return unary_number(st, op, z, alpha_obj, alpha);
}

static const Signature FORWARD_SIGNATURE = {"leaky_relu", 2, 1, 4};
static const Signature GRAD_SIGNATURE = {"leaky_relu_grad", 2, 1, 4};
static const Signature BACKWARD_SIGNATURE = {"leaky_relu_backward", 3, 2, 5};

/*
 * The hot path, before the general parser: is this a call on an exact float,
 * int or bool with the default slope, a float slope by position, or alpha=
 * a float by keyword (call sites pass the interned name, so a pointer
 * compare finds it)?  If so, *alpha_obj is the slope given (NULL for the
 * default) and the caller computes the answer at once.  Kept small and
 * inline: a scalar call should cost about what abs(x) does.
 */
static inline int
is_plain_number_call(PyObject *module, PyObject *const *args, Py_ssize_t nargs,
                     PyObject *kwnames, PyObject **alpha_obj)
{
    if (nargs < 1 || nargs > 2 || !is_exact_number(args[0])) {
        return 0;
    }
    if (kwnames == NULL) {
        *alpha_obj = nargs == 2 ? args[1] : NULL;
    }
    else if (nargs == 1 && PyTuple_GET_SIZE(kwnames) == 1 &&
             PyTuple_GET_ITEM(kwnames, 0) == get_state(module)->str_alpha) {
        *alpha_obj = args[1];
    }
    else {
        return 0;
    }
    return *alpha_obj == NULL || PyFloat_CheckExact(*alpha_obj);
}

static inline double
plain_alpha(PyObject *alpha_obj)
{
    return alpha_obj == NULL ? LEAKY_DEFAULT_ALPHA : PyFloat_AS_DOUBLE(alpha_obj);
}

static PyObject *
leaky_relu(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *alpha_obj;
    if (is_plain_number_call(module, args, nargs, kwnames, &alpha_obj)) {
        return forward_exact_number(args[0], plain_alpha(alpha_obj));
    }
    return unary_entry(module, OP_FORWARD, &FORWARD_SIGNATURE, args, nargs, kwnames);
}

static PyObject *
leaky_relu_grad(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *alpha_obj;
    if (is_plain_number_call(module, args, nargs, kwnames, &alpha_obj)) {
        return grad_exact_number(get_state(module), args[0], alpha_obj, plain_alpha(alpha_obj));
    }
    return unary_entry(module, OP_GRAD, &GRAD_SIGNATURE, args, nargs, kwnames);
}

static PyObject *
leaky_relu_backward(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    LeakyState *st = get_state(module);
    const char *fname = BACKWARD_SIGNATURE.name;
    PyObject *names[5] = {st->str_grad_output, st->str_z, st->str_alpha, st->str_out,
                          st->str_threads};
    PyObject *values[5];
    if (parse_arguments(&BACKWARD_SIGNATURE, names, args, nargs, kwnames, values) < 0) {
        return NULL;
    }
    PyObject *grad = values[0], *z = values[1], *alpha_obj = values[2];
    PyObject *out_obj = values[3] == Py_None ? NULL : values[3];
    double alpha;
    int threads;
    if (parse_alpha(fname, alpha_obj, &alpha) < 0 ||
        parse_threads(fname, values[4], &threads) < 0) {
        return NULL;
    }
    int grad_is_buffer = PyObject_CheckBuffer(grad), z_is_buffer = PyObject_CheckBuffer(z);
    if (grad_is_buffer && z_is_buffer) {
        return backward_buffer(st, grad, z, out_obj, alpha, threads);
    }
    int grad_is_seq = is_sequence(grad), z_is_seq = is_sequence(z);
    if (grad_is_buffer || z_is_buffer || grad_is_seq != z_is_seq) {
        PyErr_Format(PyExc_TypeError,
                     "%s() grad_output and z must both be buffers, both sequences or both "
                     "numbers, not %.200s and %.200s",
                     fname, Py_TYPE(grad)->tp_name, Py_TYPE(z)->tp_name);
        return NULL;
    }
    if (reject_out_for(fname, out_obj, grad) < 0) {
        return NULL;
    }
    if (grad_is_seq) {
        return backward_sequence(st, grad, z, alpha_obj, alpha);
    }
    return backward_number(st, grad, z, alpha_obj, alpha);
}

/* ------------------------------------------------------------------ */
/* 8b. Module definition                                               */
/* ------------------------------------------------------------------ */

PyDoc_STRVAR(leaky_relu_doc,
"leaky_relu($module, z, alpha=0.01, *, out=None, threads=None)\n"
"--\n"
"\n"
"Leaky ReLU: z where z > 0, else alpha * z.\n"
"\n"
"z may be a Python number (a float gives a float; an int >= 0 comes back\n"
"unchanged, a negative int gives the float alpha * z; other real numbers such\n"
"as Fraction use Python's own operators), a list or tuple of numbers (gives a\n"
"list), or any buffer: NumPy arrays and scalars, array.array, memoryview,\n"
"bytes, ctypes arrays.  float16, float32 and float64 buffers keep their\n"
"format; integer and bool buffers give float64.  float32 computes\n"
"z * float32(alpha) in float32; float16 computes in float32 and rounds once,\n"
"as PyTorch does.  A NumPy input gives a NumPy result, array.array gives\n"
"array.array, anything else a memoryview.\n"
"\n"
"out, for buffers only, receives the result and is returned; it may be z\n"
"itself (in place) and may overlap z.\n"
"\n"
"threads, for buffers only: None splits large arrays (32768 elements and\n"
"up) across all the CPUs this process may use; an int caps the count (1\n"
"keeps the work on the calling thread).  Large arrays release the GIL.");

PyDoc_STRVAR(leaky_relu_grad_doc,
"leaky_relu_grad($module, z, alpha=0.01, *, out=None, threads=None)\n"
"--\n"
"\n"
"Derivative of Leaky ReLU: 1 where z > 0, else alpha (so alpha at 0 and NaN).\n"
"\n"
"Takes the same inputs as leaky_relu.  Exact floats and ints give a float;\n"
"other real numbers give 1 or alpha as passed.  float16 buffers hold\n"
"float16(float32(alpha)).");

PyDoc_STRVAR(leaky_relu_backward_doc,
"leaky_relu_backward($module, grad_output, z, alpha=0.01, *, out=None, threads=None)\n"
"--\n"
"\n"
"Fused backward pass: grad_output * (1 if z > 0 else alpha), element-wise.\n"
"\n"
"grad_output and z are both buffers of the same shape, both sequences of\n"
"the same length, or both numbers.  The result has grad_output's format\n"
"(float64 for integer formats); z only decides the sign test.  Same as\n"
"PyTorch's aten.leaky_relu_backward.");

/* _tune(gil_threshold=-1, parallel_threshold=-1, stream_bytes=-1): -1 keeps a value. */
static PyObject *
leaky_tune(PyObject *module, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"gil_threshold", "parallel_threshold", "stream_bytes", NULL};
    Tuning *tuning = &get_state(module)->tuning;
    Py_ssize_t values[3] = {-1, -1, -1};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|nnn:_tune", keywords, &values[0],
                                     &values[1], &values[2])) {
        return NULL;
    }
    long long *fields[3] = {&tuning->gil_threshold, &tuning->parallel_threshold,
                            &tuning->stream_bytes};
    for (int i = 0; i < 3; i++) {
        if (values[i] >= 0) {
            ATOMIC_STORE(fields[i], (long long)values[i]);
        }
    }
    /* each value went in as a Py_ssize_t, so it comes back out as one */
    return Py_BuildValue("{snsnsn}", keywords[0], (Py_ssize_t)ATOMIC_LOAD(fields[0]),
                         keywords[1], (Py_ssize_t)ATOMIC_LOAD(fields[1]), keywords[2],
                         (Py_ssize_t)ATOMIC_LOAD(fields[2]));
}

/* _worker_parts(): parts each worker of this process's pool has run, () before
   the pool exists.  Tests use it to see that threads=N keeps to N. */
static PyObject *
leaky_worker_parts(PyObject *module, PyObject *unused)
{
    ThreadPool *pool = ATOMIC_LOAD_PTR(&get_state(module)->pool);
    if (pool == NULL || pool->pid != current_pid()) {
        return PyTuple_New(0);
    }
    PyObject *counts = PyTuple_New(pool->nworkers);
    for (int i = 0; counts != NULL && i < pool->nworkers; i++) {
        PyObject *count = PyLong_FromLongLong(ATOMIC_LOAD(&pool->slots[i].parts_run));
        if (count == NULL) {
            Py_CLEAR(counts);
            break;
        }
        PyTuple_SET_ITEM(counts, i, count);
    }
    return counts;
}

static PyMethodDef leaky_methods[] = {
    {"leaky_relu", (PyCFunction)(void (*)(void))leaky_relu, METH_FASTCALL | METH_KEYWORDS,
     leaky_relu_doc},
    {"leaky_relu_grad", (PyCFunction)(void (*)(void))leaky_relu_grad,
     METH_FASTCALL | METH_KEYWORDS, leaky_relu_grad_doc},
    {"leaky_relu_backward", (PyCFunction)(void (*)(void))leaky_relu_backward,
     METH_FASTCALL | METH_KEYWORDS, leaky_relu_backward_doc},
    {"_tune", (PyCFunction)(void (*)(void))leaky_tune, METH_VARARGS | METH_KEYWORDS,
     "Read (and, for tests and tuning, set) the size thresholds; returns them as a dict."},
    {"_worker_parts", leaky_worker_parts, METH_NOARGS,
     "Parts of parallel calls that each pool worker has run (for tests)."},
    {NULL, NULL, 0, NULL},
};

static int
intern_into(PyObject **slot, const char *text)
{
    *slot = PyUnicode_InternFromString(text);
    return *slot == NULL ? -1 : 0;
}

/*
 * The best kernel path this CPU supports, unless LEAKY_KERNELS names one
 * (for tests and for comparing paths): "portable", "avx2", "avx512" or (arm64) "neon".
 * Exposes _kernels (the path in use) and _supported_kernels (best first).
 */
static int
choose_kernels(PyObject *module, LeakyState *st)
{
    const KernelTable *tables[4];
    int count = supported_kernels(tables);
    PyObject *names = PyTuple_New(count);
    if (names == NULL) {
        return -1;
    }
    for (int i = 0; i < count; i++) {
        PyObject *name = PyUnicode_FromString(tables[i]->name);
        if (name == NULL) {
            Py_DECREF(names);
            return -1;
        }
        PyTuple_SET_ITEM(names, i, name);
    }
    int added = PyModule_AddObjectRef(module, "_supported_kernels", names);
    Py_DECREF(names);
    if (added < 0) {
        return -1;
    }
    st->kernels = tables[0];
    const char *forced = getenv("LEAKY_KERNELS");
    if (forced != NULL && forced[0] != '\0') {
        st->kernels = NULL;
        for (int i = 0; i < count; i++) {
            if (strcmp(forced, tables[i]->name) == 0) {
                st->kernels = tables[i];
            }
        }
        if (st->kernels == NULL) {
            PyErr_Format(PyExc_ImportError,
                         "LEAKY_KERNELS=%s is not a kernel path this CPU supports", forced);
            return -1;
        }
    }
    return PyModule_AddStringConstant(module, "_kernels", st->kernels->name);
}

/*
 * LEAKY_NUM_THREADS=N caps the threads a call may use (the pool is made with
 * N - 1 workers), as OMP_NUM_THREADS does for OpenMP: for processes that
 * share a machine, such as Dask workers.  It may exceed the CPU count (tests
 * use that to get a pool of several workers on a 2-CPU machine).
 */
static int
thread_count_from_env(int *max_threads)
{
    const char *text = getenv("LEAKY_NUM_THREADS");
    if (text == NULL || text[0] == '\0') {
        return 0;
    }
    char *end;
    errno = 0;
    long value = strtol(text, &end, 10);
    if (errno != 0 || *end != '\0' || value < 1 || value > LEAKY_MAX_THREADS) {
        PyErr_Format(PyExc_ImportError,
                     "LEAKY_NUM_THREADS=%s is not a thread count from 1 to %d", text,
                     LEAKY_MAX_THREADS);
        return -1;
    }
    *max_threads = (int)value;
    return 0;
}

static int
leaky_exec(PyObject *module)
{
    LeakyState *st = get_state(module);
    st->result_buffer_type =
        (PyTypeObject *)PyType_FromModuleAndSpec(module, &result_buffer_spec, NULL);
    if (st->result_buffer_type == NULL) {
        return -1;
    }
    if (PyModule_AddType(module, st->result_buffer_type) < 0) {
        return -1;
    }
    st->default_alpha = PyFloat_FromDouble(LEAKY_DEFAULT_ALPHA);
    st->one_float = PyFloat_FromDouble(1.0);
    st->zero = PyLong_FromLong(0);
    st->one = PyLong_FromLong(1);
    if (st->default_alpha == NULL || st->one_float == NULL || st->zero == NULL ||
        st->one == NULL) {
        return -1;
    }
    if (intern_into(&st->str_z, "z") < 0 || intern_into(&st->str_alpha, "alpha") < 0 ||
        intern_into(&st->str_out, "out") < 0 || intern_into(&st->str_threads, "threads") < 0 ||
        intern_into(&st->str_grad_output, "grad_output") < 0) {
        return -1;
    }
    /* leaky/__init__.py imports us, so the package's submodules are importable here. */
    PyObject *containers = PyImport_ImportModule("leaky._containers");
    if (containers == NULL) {
        return -1;
    }
    st->new_result = PyObject_GetAttrString(containers, "new_result");
    Py_DECREF(containers);
    if (st->new_result == NULL) {
        return -1;
    }
    st->max_threads = default_thread_count();
    if (thread_count_from_env(&st->max_threads) < 0) {
        return -1;
    }
    st->tuning.gil_threshold = LEAKY_GIL_THRESHOLD;
    st->tuning.parallel_threshold = LEAKY_PARALLEL_THRESHOLD;
    st->tuning.stream_bytes = LEAKY_STREAM_BYTES;
#ifdef NDEBUG
    const int assertions = 0;
#else
    const int assertions = 1;  /* lets the hardening scripts check what they built */
#endif
    if (PyModule_AddIntConstant(module, "_assertions", assertions) < 0 ||
        PyModule_AddIntConstant(module, "PYBUF_MAX_NDIM", PyBUF_MAX_NDIM) < 0 ||
        PyModule_AddIntConstant(module, "_max_threads", st->max_threads) < 0) {
        return -1;
    }
    return choose_kernels(module, st);
}

static int
leaky_traverse(PyObject *module, visitproc visit, void *arg)
{
    LeakyState *st = get_state(module);
    Py_VISIT(st->result_buffer_type);
    Py_VISIT(st->new_result);
    Py_VISIT(st->numpy_core);
    return 0;
}

static int
leaky_clear(PyObject *module)
{
    LeakyState *st = get_state(module);
    Py_CLEAR(st->result_buffer_type);
    Py_CLEAR(st->new_result);
    Py_CLEAR(st->numpy_core);
    st->ndarray_type = NULL;
    st->numpy_new_array = NULL;
    st->numpy_api = NUMPY_API_UNUSABLE;  /* torn down: never looked up again */
    Py_CLEAR(st->default_alpha);
    Py_CLEAR(st->one_float);
    Py_CLEAR(st->zero);
    Py_CLEAR(st->one);
    Py_CLEAR(st->str_z);
    Py_CLEAR(st->str_alpha);
    Py_CLEAR(st->str_out);
    Py_CLEAR(st->str_threads);
    Py_CLEAR(st->str_grad_output);
    return 0;
}

static void
leaky_free(void *module)
{
    LeakyState *st = get_state((PyObject *)module);
    if (st != NULL) {
        pool_free(st->pool);  /* stops and joins the workers */
        st->pool = NULL;
    }
    (void)leaky_clear((PyObject *)module);
}

static PyModuleDef_Slot leaky_slots[] = {
    {Py_mod_exec, leaky_exec},
#ifdef Py_mod_multiple_interpreters
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
#endif
#ifdef Py_mod_gil
    {Py_mod_gil, Py_MOD_GIL_NOT_USED},
#endif
    {0, NULL},
};

static struct PyModuleDef leaky_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "leaky._leaky",
    .m_doc = "C implementation of leaky's Leaky ReLU functions.",
    .m_size = sizeof(LeakyState),
    .m_methods = leaky_methods,
    .m_slots = leaky_slots,
    .m_traverse = leaky_traverse,
    .m_clear = leaky_clear,
    .m_free = leaky_free,
};

PyMODINIT_FUNC
PyInit__leaky(void)
{
    return PyModuleDef_Init(&leaky_module);
}
