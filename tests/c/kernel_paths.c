/*
 * Every SIMD kernel table this CPU runs, against the portable loops, bit for
 * bit: float16, float32 and float64; forward, grad and backward; runs of 0
 * to 100 elements at every offset before a 64-byte line (so every masked or
 * portable head before streaming stores), unit and doubled steps (the
 * portable fallback), streaming on and off, and random bit patterns (NaN
 * payloads, infinities, subnormals) at six ordinary slopes and four NaN
 * slopes with payloads (quiet and signalling, both signs).  A third of the
 * elements are NaNs of either sign, quiet or signalling, with random
 * payloads.  The portable loops' results are also checked, element by
 * element, against the NaN rule (leaky.h) written out on bits below: under
 * qemu that is the check of the rule on arm64, whose NaN choices differ
 * from x86's.
 *
 * Built and run by .ci/kernel_paths.sh: natively, and cross-compiled for
 * arm64 under qemu-user, where it is the only check of the NEON loops.
 * Exit status 1 on any difference.
 */
#include "leaky.h"

#include <stdio.h>

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t
next_random(void)  /* xorshift64: reproducible from run to run */
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* ---- the NaN rule, written out on bits (leaky.h, "The NaN rule") ---- */

static int
nan64(uint64_t b)
{
    return (b & 0x7fffffffffffffffull) > 0x7ff0000000000000ull;
}

static int
nan32(uint32_t b)
{
    return (b & 0x7fffffffu) > 0x7f800000u;
}

static int
nan16(uint16_t b)
{
    return (b & 0x7fffu) > 0x7c00u;
}

/* A NaN of `bits` bits: random sign, quiet or signalling, random payload. */
static uint64_t
random_nan(int bits)
{
    const int mantissa = bits == 64 ? 52 : bits == 32 ? 23 : 10;
    const uint64_t sign = (uint64_t)1 << (bits - 1);
    const uint64_t exponent = (sign - 1) & ~(((uint64_t)1 << mantissa) - 1);
    uint64_t fraction = next_random() & (((uint64_t)1 << mantissa) - 1);
    if (fraction == 0) {
        fraction = 1;
    }
    return (next_random() % 2 ? sign : 0) | exponent | fraction;
}

/*
 * Element i of a run as the rule defines it, from the inputs' bits: z > 0
 * keeps z (forward) or multiplies by 1 (backward); otherwise a NaN data
 * operand (z, grad_output) comes back quieted, a NaN slope likewise, and
 * only non-NaN operands reach the multiply.  Returns the result's bits.
 */
static uint64_t
rule_element(ElemKind kind, SimdOp op, const char *x, const char *z, const LoopContext *ctx)
{
    const char *sign_of = op == SIMD_BACKWARD ? z : x;  /* the operand tested for > 0 */
    if (kind == KIND_F64) {
        uint64_t xb, zb, ab, one = 0x3ff0000000000000ull;
        double zv, xv, fv;
        memcpy(&xb, x, 8);
        memcpy(&zb, sign_of, 8);
        memcpy(&ab, &ctx->alpha, 8);
        memcpy(&zv, &zb, 8);
        int positive = zv > 0;
        if (op == SIMD_GRAD) return positive ? one : ab;
        if (op == SIMD_FORWARD && positive) return xb;
        uint64_t fb = positive ? one : ab;
        if (nan64(xb)) return xb | 0x0008000000000000ull;
        if (nan64(fb)) return fb | 0x0008000000000000ull;
        memcpy(&xv, &xb, 8);
        memcpy(&fv, &fb, 8);
        double r = xv * fv;
        memcpy(&xb, &r, 8);
        return xb;
    }
    if (kind == KIND_F32) {
        uint32_t xb, zb, ab, one = 0x3f800000u;
        float zv, xv, fv;
        memcpy(&xb, x, 4);
        memcpy(&zb, sign_of, 4);
        memcpy(&ab, &ctx->alpha32, 4);
        memcpy(&zv, &zb, 4);
        int positive = zv > 0;
        if (op == SIMD_GRAD) return positive ? one : ab;
        if (op == SIMD_FORWARD && positive) return xb;
        uint32_t fb = positive ? one : ab;
        if (nan32(xb)) return xb | 0x00400000u;
        if (nan32(fb)) return fb | 0x00400000u;
        memcpy(&xv, &xb, 4);
        memcpy(&fv, &fb, 4);
        float r = xv * fv;
        memcpy(&xb, &r, 4);
        return xb;
    }
    uint16_t xb, zb;
    uint32_t ab;
    memcpy(&xb, x, 2);
    memcpy(&zb, sign_of, 2);
    memcpy(&ab, &ctx->alpha32, 4);
    int positive = !(zb & 0x8000u) && zb != 0 && zb <= 0x7c00u;
    if (op == SIMD_GRAD) return positive ? 0x3c00u : ctx->alpha16;
    if (op == SIMD_FORWARD && positive) return xb;
    if (nan16(xb)) return xb | 0x0200u;
    if (!positive && nan32(ab)) {  /* float32(alpha) narrowed: sign, quiet, payload's top */
        return ((ab >> 16) & 0x8000u) | 0x7e00u | ((ab >> 13) & 0x3ffu);
    }
    return float_to_half(half_to_float(xb) * (positive ? 1.0f : ctx->alpha32));
}

static InnerLoop
loop_of(const KernelTable *table, SimdOp op, ElemKind kind)
{
    switch (op) {
    case SIMD_FORWARD: return table->forward[kind];
    case SIMD_GRAD: return table->grad[kind];
    default: return table->backward_same[kind - KIND_F16];
    }
}

int
main(void)
{
    static const double ordinary[] = {0.01, -0.3, 1.5, 0.0, 3e38, -1e-45};
    static const uint64_t nan_slopes[] = {
        0x7ff8000000000abcull,  /* quiet, +; float32(alpha) loses the payload */
        0xfff4000123456789ull,  /* signalling, -; payload reaches float32 and float16 */
        0x7ff0000000000001ull,  /* signalling, +, smallest payload */
        0xffffffffffffffffull,  /* quiet, -, every payload bit */
    };
    enum { NORDINARY = 6, NNAN = 4, NSLOPES = NORDINARY + NNAN };
    double slopes[NSLOPES];
    for (int i = 0; i < NSLOPES; i++) {
        if (i < NORDINARY) {
            slopes[i] = ordinary[i];
        }
        else {
            memcpy(&slopes[i], &nan_slopes[i - NORDINARY], sizeof slopes[i]);
        }
    }
    const int nslopes = NSLOPES;
    static unsigned char first[4096], second[4096], out_simd[4096], out_portable[4096];
    const KernelTable *tables[4];
    int ntables = supported_kernels(tables);
    long runs = 0, differences = 0, rule_differences = 0;
    for (int t = 0; t < ntables; t++) {
        if (tables[t] == &PORTABLE_KERNELS) {
            continue;
        }
        for (int kind = KIND_F16; kind <= KIND_F64; kind++) {
            const Py_ssize_t size = itemsize_of_result((ElemKind)kind);
            for (int op = SIMD_FORWARD; op <= SIMD_BACKWARD; op++) {
                InnerLoop simd = loop_of(tables[t], (SimdOp)op, (ElemKind)kind);
                InnerLoop portable = loop_of(&PORTABLE_KERNELS, (SimdOp)op, (ElemKind)kind);
                for (int rep = 0; rep < 2000; rep++, runs++) {
                    const Py_ssize_t n = (Py_ssize_t)(next_random() % 101);
                    const Py_ssize_t step = next_random() % 4 == 0 ? 2 * size : size;
                    const Py_ssize_t offset = (Py_ssize_t)(next_random() % 72);
                    for (size_t i = 0; i < sizeof first; i++) {
                        first[i] = (unsigned char)next_random();
                        second[i] = (unsigned char)next_random();
                    }
                    for (Py_ssize_t i = 0; i < n; i++) {  /* a third of each input: NaNs */
                        for (int input = 0; input < 2; input++) {
                            if (next_random() % 3 == 0) {
                                uint64_t nan = random_nan((int)size * 8);
                                memcpy((input ? second : first) + offset + i * step, &nan,
                                       (size_t)size);  /* little-endian: the low bytes */
                            }
                        }
                    }
                    memset(out_simd, 0xab, sizeof out_simd);
                    memset(out_portable, 0xab, sizeof out_portable);
                    LoopContext ctx = {0};
                    ctx.alpha = slopes[rep % nslopes];
                    ctx.alpha32 = (float)ctx.alpha;
                    ctx.alpha16 = float_to_half(ctx.alpha32);
                    ctx.streaming = (int)(next_random() % 2);
                    const Py_ssize_t steps[3] = {step, step, step};
                    char *in1 = (char *)first + offset, *in2 = (char *)second + offset;
                    if (op == SIMD_BACKWARD) {
                        char *simd_ptrs[3] = {in1, in2, (char *)out_simd + offset};
                        char *portable_ptrs[3] = {in1, in2, (char *)out_portable + offset};
                        simd(simd_ptrs, steps, n, &ctx);
                        portable(portable_ptrs, steps, n, &ctx);
                    }
                    else {
                        char *simd_ptrs[2] = {in1, (char *)out_simd + offset};
                        char *portable_ptrs[2] = {in1, (char *)out_portable + offset};
                        simd(simd_ptrs, steps, n, &ctx);
                        portable(portable_ptrs, steps, n, &ctx);
                    }
                    for (Py_ssize_t i = 0; i < n; i++) {
                        const Py_ssize_t at = offset + i * step;
                        uint64_t want = rule_element((ElemKind)kind, (SimdOp)op,
                                                     (char *)first + at, (char *)second + at, &ctx);
                        uint64_t got = 0;
                        memcpy(&got, out_portable + at, (size_t)size);
                        if (got != want && rule_differences++ < 10) {
                            printf("breaks the NaN rule: portable kind %d op %d alpha %g "
                                   "element %zd: got 0x%llx, want 0x%llx\n",
                                   kind, op, ctx.alpha, i, (unsigned long long)got,
                                   (unsigned long long)want);
                        }
                    }
                    if (memcmp(out_simd, out_portable, sizeof out_simd) != 0 &&
                        differences++ < 10) {
                        printf("differs: %s kind %d op %d n %zd step %zd offset %zd "
                               "streaming %d alpha %g\n",
                               tables[t]->name, kind, op, n, step, offset, ctx.streaming,
                               ctx.alpha);
                    }
                }
            }
        }
        printf("%s: checked against portable\n", tables[t]->name);
    }
    printf("%ld runs, %ld differences, %ld breaks of the NaN rule\n", runs, differences,
           rule_differences);
    return differences != 0 || rule_differences != 0;
}
