/*
 * leaky.h: what the files of leaky._leaky share.  Private: no Python code
 * or other project sees it.  docs/architecture.md says which file owns what
 * and how a call flows through them.
 *
 * Sections, in the order a call meets them:
 *   atomics         a tiny shim over GCC/clang builtins and MSVC intrinsics
 *   element kinds   the formats leaky computes on, and their result formats
 *   float16         bit-exact half <-> single conversion (inline: hot loops)
 *   inner loops     LoopContext, InnerLoop and the per-CPU KernelTable
 *   the driver      Operand, LoopPlan and the parallel job the pool runs
 *   module state    LeakyState, thresholds and the thread pool's handle
 *   numbers         the exact-number tests the scalar fast path inlines
 *   entry points    what each file offers the others
 */
#ifndef LEAKY_H
#define LEAKY_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <assert.h>  /* checked in LEAKY_DEBUG=1 and LEAKY_SANITIZE=1 builds (setup.py) */
#include <math.h>
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Functions shared between leaky's files are not exported from the shared
   object: hidden, they are called directly, not through the PLT. */
#if defined(__GNUC__) && !defined(_WIN32)
#pragma GCC visibility push(hidden)
#endif

#define LEAKY_DEFAULT_ALPHA 0.01
#define MAX_OPERANDS 3
#define LEAKY_MAX_THREADS 1024  /* the reason is in pool.c, default_thread_count */

#if defined(__x86_64__) || defined(_M_X64)
#define LEAKY_X86_64 1
#endif
#if defined(__aarch64__) && !defined(_MSC_VER)
#define LEAKY_NEON 1
#endif

/* ------------------------------------------------------------------ */
/* Atomics                                                            */
/* ------------------------------------------------------------------ */

#if defined(_MSC_VER) && !defined(__clang__)
/*
 * cl.exe's C has no <stdatomic.h> without /experimental:c11atomics, so:
 * read-modify-writes are the _Interlocked* intrinsics (full barriers,
 * declared by <intrin.h>), and loads are plain loads with acquire order.
 * A load must not be an interlocked operation: the pool's spinning workers
 * load the ticket in a loop, and a read-modify-write would take the cache
 * line from the threads that update it.  __iso_volatile_load64 is a single
 * 64-bit load whatever /volatile: says (aligned, so never torn); on x64
 * (TSO) every load is an acquire and only the compiler must not move later
 * accesses above it; on ARM64 a dmb ish after it makes it one.
 */
#include <intrin.h>
#if defined(_M_ARM64)
#define ATOMIC_ACQUIRE_FENCE() __dmb(_ARM64_BARRIER_ISH)
#else
#define ATOMIC_ACQUIRE_FENCE() _ReadWriteBarrier()
#endif
_Static_assert(sizeof(void *) == sizeof(long long), "64-bit targets only (pointer loads)");
static __forceinline long long
atomic_load_acquire64(const volatile long long *p)
{
    long long value = __iso_volatile_load64((const volatile __int64 *)p);
    ATOMIC_ACQUIRE_FENCE();
    return value;
}
/* every field these touch is a long long or a pointer */
#define ATOMIC_LOAD(p) atomic_load_acquire64((const volatile long long *)(p))
#define ATOMIC_STORE(p, v) _InterlockedExchange64((volatile long long *)(p), (v))
#define ATOMIC_ADD(p, v) _InterlockedExchangeAdd64((volatile long long *)(p), (v))
#define ATOMIC_CAS(p, expected, desired) \
    (_InterlockedCompareExchange64((volatile long long *)(p), (desired), (expected)) == (expected))
#define ATOMIC_LOAD_PTR(p) ((void *)atomic_load_acquire64((const volatile long long *)(p)))
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

/* ------------------------------------------------------------------ */
/* Element kinds and buffer formats (formats.c parses them)           */
/* ------------------------------------------------------------------ */

typedef enum {
    KIND_F16,
    KIND_F32,
    KIND_F64,
    KIND_BF16,  /* bfloat16: reaches leaky through DLPack only (no buffer format) */
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

/* The floating kinds, which keep their format (KIND_F16..KIND_BF16). */
static inline int
is_float_kind(ElemKind kind)
{
    return kind <= KIND_BF16;
}

/* Floating kinds keep their format; integers and bool compute in float64. */
static inline ElemKind
result_kind_of(ElemKind kind)
{
    return is_float_kind(kind) ? kind : KIND_F64;
}

/* The struct-module format of a result; NULL for bfloat16, which has none
   (its results leave through DLPack, never as a buffer of a format). */
static inline const char *
format_of_result(ElemKind kind)
{
    switch (kind) {
    case KIND_F16: return "e";
    case KIND_F32: return "f";
    case KIND_BF16: return NULL;
    default: return "d";
    }
}

static inline Py_ssize_t
itemsize_of_result(ElemKind kind)
{
    switch (kind) {
    case KIND_F16: return 2;
    case KIND_BF16: return 2;
    case KIND_F32: return 4;
    default: return 8;
    }
}

/* Bytes one element of a kind takes in memory: an operand's item size. */
static inline Py_ssize_t
itemsize_of_kind(ElemKind kind)
{
    switch (kind) {
    case KIND_BOOL:
    case KIND_I8:
    case KIND_U8: return 1;
    case KIND_F16:
    case KIND_BF16:
    case KIND_I16:
    case KIND_U16: return 2;
    case KIND_F32:
    case KIND_I32:
    case KIND_U32: return 4;
    default: return 8;
    }
}

static inline const char *
name_of_result(ElemKind kind)
{
    switch (kind) {
    case KIND_F16: return "float16";
    case KIND_BF16: return "bfloat16";
    case KIND_F32: return "float32";
    default: return "float64";
    }
}

/* Every kind's dtype name, for messages about tensors, which have no format. */
static inline const char *
name_of_kind(ElemKind kind)
{
    static const char *const names[KIND_COUNT] = {
        [KIND_F16] = "float16", [KIND_F32] = "float32", [KIND_F64] = "float64",
        [KIND_BF16] = "bfloat16", [KIND_BOOL] = "bool", [KIND_I8] = "int8",
        [KIND_I16] = "int16", [KIND_I32] = "int32", [KIND_I64] = "int64",
        [KIND_U8] = "uint8", [KIND_U16] = "uint16", [KIND_U32] = "uint32",
        [KIND_U64] = "uint64"};
    return kind < KIND_COUNT ? names[kind] : "unknown";
}

typedef enum { FORMAT_OK, FORMAT_UNSUPPORTED, FORMAT_FOREIGN_BYTE_ORDER } FormatStatus;

FormatStatus parse_format(const char *format, Py_ssize_t itemsize, ElemKind *kind);

/* ------------------------------------------------------------------ */
/* float16                                                            */
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
/* bfloat16                                                           */
/* ------------------------------------------------------------------ */

/*
 * A bfloat16 is the top half of a float32: widening is a shift, exact.  It
 * is computed in float32 with float32(alpha) and rounded once, to nearest,
 * ties to even, as PyTorch's CPU kernels do (tests/data/bfloat16_pytorch.npz
 * holds their results).  A NaN is narrowed by truncation with its quiet bit
 * set (0x0040), so its sign and the top of its payload survive and rounding
 * can never carry it into infinity; that is what AVX512_BF16's VCVTNEPS2BF16
 * does too.  PyTorch's own NaN bits differ between its vector and scalar
 * conversions, so leaky does not copy them (docs/semantics.md).
 */
static inline float
bf16_to_float(uint16_t b)
{
    return f32_from_bits((uint32_t)b << 16);
}

static inline uint16_t
float_to_bf16(float f)
{
    uint32_t bits = bits_from_f32(f);
    if ((bits & 0x7fffffffu) > 0x7f800000u) {
        return (uint16_t)((bits >> 16) | 0x0040u);
    }
    /* Adding 0x7fff plus the lowest kept bit rounds the 16 dropped bits to
       nearest-even; an overflow carries into the exponent and gives inf. */
    bits += 0x7fffu + ((bits >> 16) & 1u);
    return (uint16_t)(bits >> 16);
}

/* z > 0 read off the bits: 0x0001..0x7f80 are the positive bfloat16s. */
static inline int
bf16_is_positive(uint16_t b)
{
    return (uint16_t)(b - 1u) < 0x7f80u;
}

/* ------------------------------------------------------------------ */
/* The NaN rule                                                       */
/* ------------------------------------------------------------------ */

/*
 * Every product leaky forms is a data value times the slope: alpha * z in
 * leaky_relu, grad_output * alpha in leaky_relu_backward.  With one NaN
 * operand the product is that NaN, quieted, its sign and payload kept (x86
 * and arm64 alike).  With two it is not pinned down: x86 returns its first
 * source operand, arm64 a signalling NaN before a quiet one, and compilers
 * treat multiplication as commutative, so `a * x` in C fixes no order (the
 * AVX2 float64 loop and its portable tail used to disagree within one
 * array).  Two NaNs meet only when the slope is NaN, so leaky's rule is:
 *
 *     when both operands are NaN, the product is the data operand's NaN
 *     (z, or grad_output), quieted.
 *
 * So a NaN z or grad_output always comes back as itself, quieted, whatever
 * the slope; a NaN slope otherwise gives its own NaN, quieted (in float32
 * and float16, the NaN of float32(alpha), which the conversion quieted).
 * leaky_relu_grad multiplies nothing and returns the slope's bits.
 *
 * How each path keeps it: the SIMD kernels hand any call with a NaN slope
 * (slope_is_nan) to the portable loops, whose NaN-slope versions use the
 * product helpers below; the SIMD loops for ordinary slopes are unchanged.
 * The mixed-kind loop and the scalar backward (numbers.c) use the helpers
 * at every slope, since a compiler may fold g * 1.0 to g and so leave a
 * signalling NaN unquieted (see product64; the portable float32/float64
 * backward loops avoid that fold another way, see loops_portable.c); the
 * scalar forward (forward_exact_number) tests its z.
 * docs/semantics.md states the rule; tests/test_nan_bits.py and
 * tests/c/kernel_paths.c check it on every path.
 */
static inline double
quiet64(double v)
{
    uint64_t bits;
    memcpy(&bits, &v, sizeof bits);
    bits |= (uint64_t)1 << 51;
    memcpy(&v, &bits, sizeof v);
    return v;
}

static inline float
quiet32(float v)
{
    return f32_from_bits(bits_from_f32(v) | 0x00400000u);
}

static inline int
half_is_nan(uint16_t h)
{
    return (h & 0x7fffu) > 0x7c00u;
}

static inline int
bf16_is_nan(uint16_t b)
{
    return (b & 0x7fffu) > 0x7f80u;
}

/*
 * data * slope under the rule, written out: the multiply only ever sees two
 * non-NaN operands.  Both NaN cases are set by hand, not left to the
 * hardware, because a compiler folds a multiply by a known 1.0 away (g * 1.0
 * where z > 0; a bool grad_output's 1.0 * alpha), which would hand back a
 * signalling NaN unquieted.  (isnan is safe: leaky is never built with
 * -ffinite-math-only.)
 */
static inline double
product64(double data, double slope)
{
    return isnan(data) ? quiet64(data) : isnan(slope) ? quiet64(slope) : data * slope;
}

static inline float
product32(float data, float slope)
{
    return isnan(data) ? quiet32(data) : isnan(slope) ? quiet32(slope) : data * slope;
}

/* float16 data times a float32 slope, in float32, rounded once (float_to_half
   quiets a NaN slope itself, keeping the top of its payload). */
static inline uint16_t
product16(uint16_t data, float slope)
{
    return half_is_nan(data) ? (uint16_t)(data | 0x0200u)
                             : float_to_half(half_to_float(data) * slope);
}

/* The same for bfloat16 data (float_to_bf16 quiets a NaN slope). */
static inline uint16_t
product_bf16(uint16_t data, float slope)
{
    return bf16_is_nan(data) ? (uint16_t)(data | 0x0040u)
                             : float_to_bf16(bf16_to_float(data) * slope);
}

/* ------------------------------------------------------------------ */
/* Inner loops and kernel tables                                      */
/* ------------------------------------------------------------------ */

typedef struct {
    double alpha;
    float alpha32;     /* float32(alpha): the slope of float32 and float16 */
    uint16_t alpha16;  /* float16(float32(alpha)): the float16 gradient */
    uint16_t alpha_bf16;  /* bfloat16(float32(alpha)): the bfloat16 gradient */
    ElemKind grad_kind;  /* backward's generic loop: kinds of its inputs */
    ElemKind z_kind;
    Py_ssize_t itemsize;  /* copy loop */
    int streaming;        /* SIMD loops may write with non-temporal stores */
} LoopContext;

/* The context for a slope: each lane type's slope derived once from alpha.
   Every caller that runs the loops builds its context here (buffers.c, the
   ufunc's type loops, the C harnesses), so no kind's slope is left unset. */
static inline LoopContext
loop_context_for(double alpha)
{
    LoopContext ctx = {0};
    ctx.alpha = alpha;
    ctx.alpha32 = (float)alpha;
    ctx.alpha16 = float_to_half(ctx.alpha32);
    ctx.alpha_bf16 = float_to_bf16(ctx.alpha32);
    return ctx;
}

/* Is the slope NaN?  Then the SIMD kernels leave the call to the portable
   loops (see "The NaN rule"); float32(alpha) is NaN exactly when alpha is. */
static inline int
slope_is_nan(const LoopContext *ctx)
{
    return isnan(ctx->alpha);
}

/*
 * One contiguous-in-index run of n elements: ptrs[0..k-1] are inputs and
 * ptrs[k] the output, each advancing by its own byte step.  Loads and stores
 * go through memcpy because buffers may be unaligned (offset byte views);
 * compilers turn them into plain moves.
 */
typedef void (*InnerLoop)(char *const *ptrs, const Py_ssize_t *steps, Py_ssize_t n,
                          const LoopContext *ctx);

/* The same signature, as a function type, to declare loops by name. */
typedef void InnerLoopFunction(char *const *ptrs, const Py_ssize_t *steps, Py_ssize_t n,
                               const LoopContext *ctx);

/*
 * One wheel is built for each platform's baseline instruction set; the
 * x86-64 AVX2 (+F16C) and AVX-512 loops are compiled through per-function
 * target attributes and chosen at import by CPU detection.  They handle
 * unit-stride runs and hand anything else to the portable loops, and
 * they compute exactly what the portable loops compute (IEEE multiply and
 * compare, one float16 rounding), so every path gives the same bits.  Calls
 * with a NaN slope, where that would leave a NaN times a NaN to the
 * hardware, go to the portable loops whole ("The NaN rule").
 *
 * Large outputs into a caller's out= can be written with streaming stores
 * (ctx->streaming): they bypass the cache and save the read-for-ownership
 * of each output line.  The caller only asks for it when the output does
 * not overlap an input (buffers.c, should_stream).
 */
typedef struct {
    const char *name;
    InnerLoop forward[KIND_COUNT];
    InnerLoop grad[KIND_COUNT];
    InnerLoop backward_same[4];  /* grad_output and z of one float kind (is_float_kind) */
} KernelTable;

/* loops_portable.c: every kind, any stride; the SIMD loops fall back to them. */
extern InnerLoopFunction forward_loop_f16, forward_loop_f32, forward_loop_f64,
    forward_loop_bf16, forward_loop_bool, forward_loop_i8, forward_loop_i16, forward_loop_i32, forward_loop_i64,
    forward_loop_u8, forward_loop_u16, forward_loop_u32, forward_loop_u64;
extern InnerLoopFunction grad_loop_f16, grad_loop_f32, grad_loop_f64, grad_loop_bf16,
    grad_loop_bool,
    grad_loop_i8, grad_loop_i16, grad_loop_i32, grad_loop_i64, grad_loop_u8, grad_loop_u16,
    grad_loop_u32, grad_loop_u64;
extern InnerLoopFunction backward_loop_f16, backward_loop_f32, backward_loop_f64,
    backward_loop_bf16, backward_loop_mixed, copy_loop;
/* The same loops for ordinary (non-NaN) slopes only: the SIMD kernels' fallback
   for strided runs and ragged ends, once they have sent NaN slopes to the
   loops above (grad needs no such split: it multiplies nothing). */
extern InnerLoopFunction forward_ordinary_f16, forward_ordinary_f32, forward_ordinary_f64,
    forward_ordinary_bf16, backward_ordinary_f16, backward_ordinary_f32, backward_ordinary_f64,
    backward_ordinary_bf16;
extern const KernelTable PORTABLE_KERNELS;
#ifdef LEAKY_X86_64
extern const KernelTable AVX2_KERNELS, AVX512_KERNELS;  /* kernels_avx2.c, kernels_avx512.c */
#endif
#ifdef LEAKY_NEON
extern const KernelTable NEON_KERNELS;  /* kernels_neon.c */
#endif

/* cpu_dispatch.c: every kernel path this CPU can run, best first; returns the count. */
int supported_kernels(const KernelTable **tables);

/*
 * What a SIMD kernel computes, lane by lane, as the portable loops define
 * it: forward x > 0 ? x : alpha * x; grad x > 0 ? 1 : alpha; backward
 * g * (z > 0 ? 1 : alpha); forward and backward first hand a NaN slope to
 * the portable loop (slope_is_nan).  Each ISA's file writes its kernel once per
 * lane type, as an always-inline function of `op` (and, on float32 lanes,
 * of whether the elements are float16 in memory); the instances in its
 * kernel table pass constants, so each compiles to a straight loop of its
 * own with no test of `op` left in it.
 */
typedef enum { SIMD_FORWARD, SIMD_GRAD, SIMD_BACKWARD } SimdOp;

#if defined(_MSC_VER) && !defined(__clang__)
#define ALWAYS_INLINE __forceinline
#else
#define ALWAYS_INLINE inline __attribute__((always_inline))
#endif

/* The portable loop over elements [from, from + count) of a run: the SIMD
   loops' ragged ends (and AVX2's head before streaming stores).  Kernels
   take two portable loops: `whole`, the kernel-table entry, for the calls
   they hand over entire (NaN slopes), and `portable`, its ordinary-slope
   version, for strided runs and ragged ends. */
static ALWAYS_INLINE void
portable_part(InnerLoop portable, int binary, char *const *ptrs, const Py_ssize_t *steps,
              Py_ssize_t from, Py_ssize_t count, Py_ssize_t size, const LoopContext *ctx)
{
    if (binary) {
        char *part[3] = {ptrs[0] + from * size, ptrs[1] + from * size, ptrs[2] + from * size};
        portable(part, steps, count, ctx);
    }
    else {
        char *part[2] = {ptrs[0] + from * size, ptrs[1] + from * size};
        portable(part, steps, count, ctx);
    }
}

#ifdef LEAKY_X86_64

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

/* Integer inputs stay on the portable loops: they are not the hot formats. */
#define SIMD_TABLE(NAME, ISA)                                                   \
    const KernelTable NAME = {                                                  \
        .name = #ISA,                                                           \
        .forward = {[KIND_F16] = ISA##_forward_f16, [KIND_F32] = ISA##_forward_f32, \
                    [KIND_F64] = ISA##_forward_f64, [KIND_BF16] = ISA##_forward_bf16, \
                    [KIND_BOOL] = forward_loop_bool,                          \
                    [KIND_I8] = forward_loop_i8,   [KIND_I16] = forward_loop_i16, \
                    [KIND_I32] = forward_loop_i32, [KIND_I64] = forward_loop_i64, \
                    [KIND_U8] = forward_loop_u8,   [KIND_U16] = forward_loop_u16, \
                    [KIND_U32] = forward_loop_u32, [KIND_U64] = forward_loop_u64}, \
        .grad = {[KIND_F16] = ISA##_grad_f16, [KIND_F32] = ISA##_grad_f32,      \
                 [KIND_F64] = ISA##_grad_f64, [KIND_BF16] = ISA##_grad_bf16,   \
                 [KIND_BOOL] = grad_loop_bool,                                  \
                 [KIND_I8] = grad_loop_i8,   [KIND_I16] = grad_loop_i16,        \
                 [KIND_I32] = grad_loop_i32, [KIND_I64] = grad_loop_i64,        \
                 [KIND_U8] = grad_loop_u8,   [KIND_U16] = grad_loop_u16,        \
                 [KIND_U32] = grad_loop_u32, [KIND_U64] = grad_loop_u64},       \
        .backward_same = {ISA##_backward_f16, ISA##_backward_f32, ISA##_backward_f64, \
                          ISA##_backward_bf16},                                 \
    };
#endif /* LEAKY_X86_64 */

/* ------------------------------------------------------------------ */
/* The n-d driver (driver.c) and the thread pool (pool.c)             */
/* ------------------------------------------------------------------ */

/*
 * Overflow-checked Py_ssize_t arithmetic, for byte counts and extents
 * computed from shapes and strides that any exporter (or NumPy's
 * as_strided) may hand us.  Each returns 1, leaving *r unset, on overflow.
 */
static inline int
checked_mul(Py_ssize_t a, Py_ssize_t b, Py_ssize_t *r)
{
#if defined(__GNUC__) || defined(__clang__)
    return __builtin_mul_overflow(a, b, r);
#else
    if (a == 0 || b == 0) {
        *r = 0;
        return 0;
    }
    if (a == PY_SSIZE_T_MIN || b == PY_SSIZE_T_MIN) {
        return 1;  /* conservative: no real extent gets near it */
    }
    Py_ssize_t ua = a < 0 ? -a : a, ub = b < 0 ? -b : b;
    if (ua > PY_SSIZE_T_MAX / ub) {
        return 1;
    }
    *r = a * b;
    return 0;
#endif
}

static inline int
checked_add(Py_ssize_t a, Py_ssize_t b, Py_ssize_t *r)
{
#if defined(__GNUC__) || defined(__clang__)
    return __builtin_add_overflow(a, b, r);
#else
    if ((b > 0 && a > PY_SSIZE_T_MAX - b) || (b < 0 && a < PY_SSIZE_T_MIN - b)) {
        return 1;
    }
    *r = a + b;
    return 0;
#endif
}

/*
 * itemsize times the product of the shape; 1 on overflow.  As in NumPy, the
 * product of the nonzero sides must fit even when a 0 makes the count 0, so
 * an empty result is too big exactly when NumPy says so of its own.
 */
static inline int
checked_nbytes(int ndim, const Py_ssize_t *shape, Py_ssize_t itemsize, Py_ssize_t *nbytes)
{
    Py_ssize_t n = itemsize;
    int empty = 0;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] == 0) {
            empty = 1;
        }
        else if (checked_mul(n, shape[d], &n)) {
            return 1;
        }
    }
    *nbytes = empty ? 0 : n;
    return 0;
}

/*
 * The C-order stride of the next axis out: stride * side.  It can overflow
 * only in an empty array (a side is 0, checked_nbytes is 0) with huge other
 * sides, whose strides nobody follows; 0 then.
 */
static inline Py_ssize_t
outer_stride(Py_ssize_t stride, Py_ssize_t side)
{
    Py_ssize_t r;
    return checked_mul(stride, side, &r) ? 0 : r;
}

typedef struct InputKind InputKind;

/*
 * An array as the driver sees it: always with shape and strides filled in.
 * `owner` is the kind of input that acquired it (buffers.c's input_kinds)
 * and releases it; NULL for memory nobody has to release (a result leaky
 * made, whose reference the caller holds).
 */
typedef struct {
    Py_buffer view;
    const InputKind *owner;
    PyObject *dlpack;  /* the used DLPack capsule behind view, if any (input_dlpack.c) */
    /* an input that overlapped the output is computed from a private copy
       (driver.c, detach_from_output): view.buf points into `detached`, and
       the exporter's own pointer is kept to hand back at release */
    char *detached;
    void *exported_buf;
    ElemKind kind;
    Py_ssize_t shape[PyBUF_MAX_NDIM];
    Py_ssize_t strides[PyBUF_MAX_NDIM];
} Operand;

/*
 * A loop over ndim axes, the innermost last.  When `buffered`, some operand
 * steps through the inner axis by other than its item size (a reversed or
 * transposed operand against the rest, a broadcast): plan_run then hands
 * the inner loop chunks copied to and from contiguous scratch, so that the
 * SIMD (or vectorized portable) unit-stride path runs, as NumPy's buffered
 * iterator does.
 */
enum { PLAN_DIRECT, PLAN_CHUNKED, PLAN_TILED };

typedef struct {
    int ndim;
    int buffered;  /* PLAN_DIRECT, PLAN_CHUNKED or PLAN_TILED (driver.c, run_tiles) */
    Py_ssize_t shape[PyBUF_MAX_NDIM];
    Py_ssize_t strides[MAX_OPERANDS][PyBUF_MAX_NDIM];
    Py_ssize_t itemsize[MAX_OPERANDS];
} LoopPlan;

/* A split of one plan into parts: ranges of its outermost dimension. */
typedef struct {
    const LoopPlan *plan;
    int nops;
    char *base[MAX_OPERANDS];
    InnerLoop loop;
    const LoopContext *ctx;
    int nparts;
} ParallelJob;

typedef struct ThreadPool ThreadPool;

/*
 * The order a plan walks its elements in.  The output is always the last
 * operand.  ORDER_ANY flips the axes every operand walks backwards and sorts
 * the axes, smallest stride innermost, so that the inner loop is the
 * contiguous one whatever the layout (plan_reorder).  ORDER_C keeps the
 * logical C order of the shape, for an output that may overlap itself: the
 * last write in C order wins, as in NumPy.
 */
typedef enum { ORDER_ANY, ORDER_C } LoopOrder;

Py_ssize_t plan_operands(LoopPlan *plan, Operand *const *ops, int nops, char **base,
                         LoopOrder order);
void plan_run(const LoopPlan *plan, int nops, char *const *base, InnerLoop loop,
              const LoopContext *ctx);
int operand_check_size(const Operand *op, const char *fname, const char *argname);
int operands_overlap(const Operand *a, const Operand *b);
int operand_overlaps_itself(const Operand *op);
int result_k_strides(const Operand *const *inputs, int ninputs, Py_ssize_t itemsize,
                     Py_ssize_t *strides);
int detach_from_output(Operand *input, const Operand *output, int output_overlaps_itself);
void operand_drop_detached(Operand *op);

int default_thread_count(void);
int thread_count_for(const char *cgroup_root);  /* _default_thread_count(root), tests */
void pool_run(ThreadPool *pool, const ParallelJob *job, int helpers);
int pool_thread_count(const ThreadPool *pool);  /* its workers and the caller */
void pool_release(ThreadPool *pool);            /* undoes pool_for_caller's claim */
void pool_free(ThreadPool *pool);
PyObject *pool_worker_parts(ThreadPool *pool);  /* _worker_parts() */

/* ------------------------------------------------------------------ */
/* Module state                                                       */
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

/* torch's tensor methods and modules input_dlpack.c uses, by name (never importing torch) */
enum {
    TORCH_IS_NEG, TORCH_IS_ZEROTENSOR, TORCH_IS_INFERENCE, TORCH_RESOLVE_NEG, TORCH_CLONE,
    TORCH_GRAPH_MODULE, TORCH_INCREMENT_VERSION, TORCH_REQUIRES_GRAD, TORCH_NAME_COUNT
};

typedef struct {
    const KernelTable *kernels;  /* chosen once, at import */
    ThreadPool *pool;            /* made on first use; see pool_for_caller */
    int max_threads;             /* CPUs this process may use */
    Tuning tuning;
    PyTypeObject *result_buffer_type;
    PyObject *new_result;      /* leaky._containers.new_result */
    PyObject *arrow_result;    /* leaky._containers.arrow_result (input_arrow.c) */
    PyObject *str_arrow_c_array;   /* "__arrow_c_array__" */
    PyObject *str_arrow_c_stream;  /* "__arrow_c_stream__" */
    /*
     * NumPy's C API, published once (look_up_once, LOOKUP_*): the fields
     * below are filled by the one thread that looks it up.  The number fast
     * path never touches any of it.
     */
    long long numpy_api;
    PyObject *numpy_core;      /* NumPy's _multiarray_umath, once an ndarray was seen */
    PyTypeObject *ndarray_type;
    NewArrayFunc numpy_new_array;  /* PyArray_New from NumPy's C-API table */
    /* numpy.float16/32/64 by kind (borrowed: static types of numpy_core) and
       where the descriptor's elsize is, which NumPy 2 moved (input_ndarray.c) */
    PyTypeObject *numpy_float_types[3];
    int numpy_descr_wide;
    PyObject *default_alpha;   /* the float 0.01 */
    PyObject *one_float;       /* the float 1.0, the gradient where z > 0 */
    PyObject *zero;            /* the int 0, for z > 0 on other numbers */
    PyObject *one;             /* the int 1, for the generic gradient */
    PyObject *str_z;
    PyObject *str_alpha;
    PyObject *str_out;
    PyObject *str_threads;
    PyObject *str_grad_output;
    PyObject *str_dlpack;          /* "__dlpack__" (input_dlpack.c) */
    PyObject *str_dlpack_device;   /* "__dlpack_device__" */
    PyObject *dlpack_kwnames;      /* ("max_version",) */
    PyObject *dlpack_out_kwnames;  /* ("max_version", "copy"): out= asks for no copy */
    PyObject *dlpack_max_version;  /* (1, 0) */
    PyObject *torch_names[TORCH_NAME_COUNT];  /* torch's tensor methods (input_dlpack.c) */
    /*
     * torch's C-level DLPack calls (input_dlpack.c's torch_input), looked up
     * in sys.modules the first time a torch tensor arrives, published once
     * as numpy_api is (look_up_once); until then every tensor takes the
     * protocol route.
     */
    long long torch_route;
    PyTypeObject *torch_tensor_type;      /* torch.Tensor */
    PyObject *torch_tensor_dlpack;        /* torch.Tensor.__dlpack__ */
    PyObject *torch_tensor_dlpack_device; /* torch.Tensor.__dlpack_device__ */
    PyObject *torch_has_torch_function;   /* torch._C._has_torch_function_unary */
    PyObject *torch_to_dlpack;            /* torch.utils.dlpack.to_dlpack */
    PyObject *torch_finish;               /* a ResultBuffer to a tensor (torch_result) */
    PyObject *torch_increment_version;    /* torch._C._increment_version, or NULL */
    PyObject *array_like_names[4]; /* what makes a number an array-like (numbers.c) */
    PyObject *str_array_protocols[6];  /* array_route.c: "numpy", "__array_ufunc__", ... */
} LeakyState;

/* The states of a look-up published once (look_up_once). */
enum { LOOKUP_UNTRIED, LOOKUP_LOADING, LOOKUP_READY, LOOKUP_UNUSABLE };

/*
 * A look-up done once per module (NumPy's C API, torch's C-level calls),
 * for callers that saw *state not LOOKUP_READY: the first thread that
 * `wants` it wins the compare-and-swap to LOOKUP_LOADING, runs `load` (which
 * fills its fields of the state) and stores READY or UNUSABLE with release
 * order, so a reader that loads READY (acquire) sees the fields complete.
 * Everyone else, and everyone after a failed look-up, gets 0 and takes the
 * Python route for that call.  No lock: no thread ever waits on another's
 * import (which would risk a deadlock with the import lock).
 */
static inline int
look_up_once(LeakyState *st, long long *state, int wants, int (*load)(LeakyState *))
{
    if (!wants || ATOMIC_LOAD(state) != LOOKUP_UNTRIED ||
        !ATOMIC_CAS(state, LOOKUP_UNTRIED, LOOKUP_LOADING)) {
        return 0;
    }
    const int usable = load(st);
    ATOMIC_STORE(state, usable ? LOOKUP_READY : LOOKUP_UNUSABLE);
    return usable;
}

static inline LeakyState *
get_state(PyObject *module)
{
    return (LeakyState *)PyModule_GetState(module);
}

/* pool.c: this process's pool, made (or remade after a fork) on demand; NULL if busy. */
ThreadPool *pool_for_caller(LeakyState *st);
int run_elementwise(LeakyState *st, Operand *const *ops, int nops, InnerLoop loop,
                    const LoopContext *ctx, int threads, LoopOrder order);

/* ------------------------------------------------------------------ */
/* Numbers (numbers.c); inline here for leaky.c's scalar fast path    */
/* ------------------------------------------------------------------ */

typedef enum { OP_FORWARD, OP_GRAD } UnaryOp;

/*
 * The sign of an exact int or bool: -1, 0 or 1.  When it is -1, *as_long
 * receives the value if *fits.  Small ints are read off the object's layout
 * without a call (3.12+: the compact-value API; before: the sign of ob_size),
 * which is most of what a leaky_relu(3) costs beyond the call itself.
 */
static inline int
int_sign(PyObject *z, long *as_long, int *fits)
{
#if PY_VERSION_HEX >= 0x030C0000
    if (PyUnstable_Long_IsCompact((PyLongObject *)z)) {
        Py_ssize_t value = PyUnstable_Long_CompactValue((PyLongObject *)z);
        *as_long = (long)value;  /* compact means one digit: < 2**30 in size */
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
    *as_long = value;
    if (overflow) {
        return overflow;
    }
    return (value > 0) - (value < 0);
}

static inline int
is_exact_number(PyObject *z)
{
    return PyFloat_CheckExact(z) || PyLong_CheckExact(z) || PyBool_Check(z);
}

/* leaky_relu of an exact float, int or bool (is_exact_number). */
static inline PyObject *
forward_exact_number(PyObject *z, double alpha)
{
    if (PyFloat_CheckExact(z)) {
        double x = PyFloat_AS_DOUBLE(z);
        if (x > 0) {
            return Py_NewRef(z);
        }
        /* the NaN rule, with one test: past it, alpha * x has at most one NaN
           operand, and neither is a constant a compiler could fold away */
        return PyFloat_FromDouble(isnan(x) ? quiet64(x) : alpha * x);
    }
    long as_long;
    int fits;
    if (int_sign(z, &as_long, &fits) >= 0) {
        return Py_NewRef(z);  /* ints >= 0 come back as themselves */
    }
    double x = fits ? (double)as_long : PyLong_AsDouble(z);
    if (x == -1.0 && PyErr_Occurred()) {
        return NULL;  /* OverflowError, exactly as alpha * z raises it */
    }
    return PyFloat_FromDouble(alpha * x);  /* x from an int: never NaN, no rule needed */
}

/* The float gradient: shared 1.0, or alpha itself when it already is a float. */
static inline PyObject *
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
    long as_long;
    int fits;
    return PyFloat_CheckExact(z) ? PyFloat_AS_DOUBLE(z) > 0 : int_sign(z, &as_long, &fits) > 0;
}

/* leaky_relu_grad of an exact float, int or bool (is_exact_number). */
static inline PyObject *
grad_exact_number(LeakyState *st, PyObject *z, PyObject *alpha_obj, double alpha)
{
    return float_gradient(st, exact_number_is_positive(z), alpha_obj, alpha);
}

static inline int
is_sequence(PyObject *obj)
{
    return PyList_Check(obj) || PyTuple_Check(obj);
}

int is_real_number(PyObject *obj);
int is_number_operand(LeakyState *st, PyObject *obj);
PyObject *unary_number(LeakyState *st, UnaryOp op, PyObject *z, PyObject *alpha_obj,
                       double alpha);
PyObject *backward_number(LeakyState *st, PyObject *grad, PyObject *z, PyObject *alpha_obj,
                          double alpha);
PyObject *unary_sequence(LeakyState *st, UnaryOp op, PyObject *seq, PyObject *alpha_obj,
                         double alpha);
PyObject *backward_sequence(LeakyState *st, PyObject *grad_seq, PyObject *z_seq,
                            PyObject *alpha_obj, double alpha);

/* ------------------------------------------------------------------ */
/* Arrays: buffers.c orchestrates, one file per kind of input          */
/* ------------------------------------------------------------------ */

int takes_array_path(LeakyState *st, PyObject *obj);
PyObject *unary_buffer(LeakyState *st, UnaryOp op, const char *fname, PyObject *z,
                       PyObject *out_obj, double alpha, int threads);
PyObject *backward_buffer(LeakyState *st, PyObject *grad_obj, PyObject *z_obj,
                          PyObject *out_obj, double alpha, int threads);

/* What an operand is to the call, for the checks and the messages. */
typedef struct {
    const char *fname;    /* "leaky_relu", ... */
    const char *argname;  /* "z", "grad_output", "out" */
    int writable;         /* out=: a read-only array is refused */
} OperandRole;

/* A new result: the object to write into, the operand over it, and what to
   call on it (NULL: nothing) to make the value returned. */
typedef struct {
    PyObject *target;
    PyObject *finish;
    Operand operand;
} NewResult;

/*
 * A kind of input: the one file that knows how such an object lends its
 * memory, how to give it back, and what result container matches it.
 * buffers.c asks each kind in turn (input_kinds) and never looks inside.
 *
 * acquire: 1 with op filled and op->owner set, 0 when obj is not this
 *   kind's (nothing set, no exception), -1 with an exception (op->owner set
 *   if there is something to release).  A writable role asks for memory
 *   leaky may write; an `out=` whose element format leaky cannot compute is
 *   acquired with op->kind = KIND_COUNT, for buffers.c's message.
 * release: gives back what acquire took; called once, with op->owner set.
 * new_result: a fresh result for inputs of which inputs[0] is of this kind,
 *   shaped like inputs[0] (all ninputs share its shape), laid out in their
 *   memory order where the kind keeps it (result_k_strides, driver.c); 0
 *   with *made filled, or -1 with an exception.
 * written: NULL, or told after leaky wrote into obj as out= (a torch
 *   tensor's version counter); 0, or -1 with an exception.
 */
struct InputKind {
    const char *name;
    int (*acquire)(LeakyState *st, PyObject *obj, Operand *op, const OperandRole *role);
    void (*release)(Operand *op);
    int (*new_result)(LeakyState *st, PyObject *source, ElemKind result_kind,
                      const Operand *const *inputs, int ninputs, NewResult *made);
    int (*written)(LeakyState *st, PyObject *obj);
};

extern const InputKind ndarray_input;  /* input_ndarray.c: exact numpy.ndarray */
extern const InputKind buffer_input;   /* input_buffer.c: the buffer protocol */
extern const InputKind torch_input;    /* input_dlpack.c: torch tensors, without the protocol */
extern const InputKind dlpack_input;   /* input_dlpack.c: DLPack tensors */
extern const InputKind arrow_input;    /* input_arrow.c: the Arrow PyCapsule interface */

/* input_arrow.c: leaky.c's dispatch sends these to the array paths too */
int is_arrow_object(LeakyState *st, PyObject *obj);

/* input_buffer.c: the buffer protocol, for the other kinds' odd cases too */
int buffer_view_acquire(LeakyState *st, PyObject *obj, Operand *op, const OperandRole *role);
void buffer_view_release(Operand *op);
int result_from_containers(LeakyState *st, PyObject *source, ElemKind result_kind,
                           const Operand *like, const Py_ssize_t *strides, NewResult *made,
                           PyObject *default_finish);
PyObject *shape_as_tuple(int ndim, const Py_ssize_t *shape);

PyObject *take_exception(void);
void put_back_exception(PyObject *exc);

/* result_buffer.c: ResultBuffer, leaky's own result memory */
extern PyType_Spec result_buffer_spec;
PyObject *result_buffer_new(PyTypeObject *type, ElemKind kind, int ndim, const Py_ssize_t *shape,
                            const Py_ssize_t *strides);
int new_result_buffer(LeakyState *st, ElemKind result_kind, const Operand *like,
                      const Py_ssize_t *strides, NewResult *made, PyObject *finish);
PyObject *result_buffer_capsule(PyObject *result);
unsigned char *result_buffer_new_validity(PyObject *result);  /* Arrow results (input_arrow.c) */
void result_buffer_seal_nulls(PyObject *result);

/* input_dlpack.c: tensors in, results out as capsules (dlpack.h) */
int dlpack_init_state(LeakyState *st);
void dlpack_clear_state(LeakyState *st);
int has_dlpack(LeakyState *st, PyObject *obj);
PyObject *dlpack_export(char *data, ElemKind kind, int ndim, const Py_ssize_t *shape,
                        const Py_ssize_t *byte_strides, int versioned, int copied);
void shared_data_retain(char *data);   /* result_buffer.c: a result's elements, */
void shared_data_release(char *data);  /* shared with the tensors it exported */
int is_jax_tracer(PyObject *obj);
void explain_jax_tracer(const char *fname, const char *argname, PyObject *obj);

/* ------------------------------------------------------------------ */
/* leaky.ufunc's capsule and the route to it (array_route.c)          */
/* ------------------------------------------------------------------ */

int add_ufunc_api(PyObject *module, LeakyState *st);  /* also interns the protocol names */
void clear_array_route(LeakyState *st);
int is_ndarray_subclass(PyObject *obj);
int is_array_like(LeakyState *st, PyObject *obj);
PyObject *unary_via_ufunc(LeakyState *st, UnaryOp op, PyObject *z, PyObject *alpha_obj,
                          PyObject *out_obj);
PyObject *backward_via_ufunc(LeakyState *st, PyObject *grad, PyObject *z, PyObject *alpha_obj,
                             PyObject *out_obj);
void explain_array_alpha(const char *fname, PyObject *obj);

#if defined(__GNUC__) && !defined(_WIN32)
#pragma GCC visibility pop
#endif

#endif /* LEAKY_H */
