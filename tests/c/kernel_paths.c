/*
 * Every SIMD kernel table this CPU runs, against the portable loops, bit for
 * bit: float16, float32, float64 and bfloat16; forward, grad and backward; runs of 0
 * to 100 elements at every offset before a 64-byte line (so every masked or
 * portable head before streaming stores), unit and doubled steps (the
 * portable fallback), streaming on and off, and random bit patterns (NaN
 * payloads, infinities, subnormals) at six ordinary slopes and four NaN
 * slopes with payloads (quiet and signalling, both signs).  A third of the
 * elements are NaNs of either sign, quiet or signalling, with random
 * payloads.  The portable loops' results are also checked, element by
 * element, against the NaN rule (leaky.h) written out on bits below: under
 * qemu that is the check of the rule on arm64, whose NaN choices differ
 * from x86's.  On x86-64 the bfloat16 cases run once more with DAZ and FTZ
 * set, where the paths must still agree (main says why).
 *
 * Given a folder (argv[1]) holding tests/data/bfloat16_pytorch.npz's arrays
 * as raw little-endian files (.ci/kernel_paths.sh writes them), it then runs
 * every path, the portable one included, over all 65,536 bfloat16 patterns
 * at the file's five slopes, for the three functions, in runs of varied
 * lengths: every non-NaN result must be PyTorch's bits, every NaN result a
 * NaN with the rule's bits (PyTorch's own NaN bits are an accident; see
 * tests/data/README.md).
 *
 * Built and run by .ci/kernel_paths.sh: natively, and cross-compiled for
 * arm64 under qemu-user, where it is the only check of the NEON loops.
 * Exit status 1 on any difference.
 */
#include "leaky.h"

#include <stdio.h>
#ifdef LEAKY_X86_64
#include <xmmintrin.h>  /* _mm_getcsr, _mm_setcsr: the DAZ pass */
#endif

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

static int
nan_bf16(uint16_t b)
{
    return (b & 0x7fffu) > 0x7f80u;
}

/* A NaN of the kind's format: random sign, quiet or signalling, random payload. */
static uint64_t
random_nan(ElemKind kind)
{
    const int bits = (int)itemsize_of_result(kind) * 8;
    const int mantissa = kind == KIND_F64 ? 52 : kind == KIND_F32 ? 23 : kind == KIND_F16 ? 10 : 7;
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
    if (kind == KIND_BF16) {  /* float32's top half: the slope's NaN keeps its top bits */
        int positive = !(zb & 0x8000u) && zb != 0 && zb <= 0x7f80u;
        if (op == SIMD_GRAD) return positive ? 0x3f80u : ctx->alpha_bf16;
        if (op == SIMD_FORWARD && positive) return xb;
        if (nan_bf16(xb)) return xb | 0x0040u;
        if (!positive && nan32(ab)) return (ab >> 16) | 0x0040u;
        return float_to_bf16(bf16_to_float(xb) * (positive ? 1.0f : ctx->alpha32));
    }
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

/* ---- PyTorch's bfloat16 results (tests/data/bfloat16_pytorch.npz) ---- */

enum { PATTERNS = 65536, VECTOR_SLOPES = 5 };
static uint16_t vector_x[PATTERNS], vector_grad_output[PATTERNS];
static uint16_t vector_want[3][VECTOR_SLOPES][PATTERNS];  /* by SimdOp, slope, pattern */
static double vector_alphas[VECTOR_SLOPES];

/* One array, as raw bytes (little-endian, as both x86-64 and arm64 read them). */
static int
read_raw(const char *folder, const char *name, void *into, size_t bytes)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", folder, name);
    FILE *file = fopen(path, "rb");
    if (file == NULL) {
        printf("cannot open %s\n", path);
        return -1;
    }
    size_t got = fread(into, 1, bytes, file);
    int longer = fgetc(file) != EOF;
    fclose(file);
    if (got != bytes || longer) {
        printf("%s is not %zu bytes long\n", path, bytes);
        return -1;
    }
    return 0;
}

static int
read_vectors(const char *folder)
{
    return read_raw(folder, "x_bits", vector_x, sizeof vector_x) ||
           read_raw(folder, "grad_output_bits", vector_grad_output, sizeof vector_grad_output) ||
           read_raw(folder, "alphas", vector_alphas, sizeof vector_alphas) ||
           read_raw(folder, "leaky_relu_bits", vector_want[SIMD_FORWARD],
                    sizeof vector_want[SIMD_FORWARD]) ||
           read_raw(folder, "leaky_relu_grad_bits", vector_want[SIMD_GRAD],
                    sizeof vector_want[SIMD_GRAD]) ||
           read_raw(folder, "leaky_relu_backward_bits", vector_want[SIMD_BACKWARD],
                    sizeof vector_want[SIMD_BACKWARD]);
}

/*
 * One path's bfloat16 loops over every pattern, in runs of 1 to 67 elements
 * (so the SIMD loops' ragged ends and masked or portable heads see the
 * vectors too), streaming on every other run.  Returns the wrong results.
 */
static long
check_vectors(const KernelTable *table)
{
    static uint16_t out[PATTERNS];
    const Py_ssize_t steps[3] = {2, 2, 2};
    long wrong = 0;
    for (int op = SIMD_FORWARD; op <= SIMD_BACKWARD; op++) {
        InnerLoop loop = loop_of(table, (SimdOp)op, KIND_BF16);
        const uint16_t *data = op == SIMD_BACKWARD ? vector_grad_output : vector_x;
        for (int s = 0; s < VECTOR_SLOPES; s++) {
            LoopContext ctx = loop_context_for(vector_alphas[s]);
            memset(out, 0xab, sizeof out);
            Py_ssize_t at = 0;
            for (int run = 0; at < PATTERNS; run++) {
                Py_ssize_t n = 1 + (Py_ssize_t)((run * 37) % 67);
                n = n < PATTERNS - at ? n : PATTERNS - at;
                ctx.streaming = run % 2;
                char *x = (char *)(vector_x + at), *g = (char *)(vector_grad_output + at);
                char *o = (char *)(out + at);
                if (op == SIMD_BACKWARD) {
                    char *ptrs[3] = {g, x, o};
                    loop(ptrs, steps, n, &ctx);
                }
                else {
                    char *ptrs[2] = {x, o};
                    loop(ptrs, steps, n, &ctx);
                }
                at += n;
            }
            for (Py_ssize_t i = 0; i < PATTERNS; i++) {
                const uint16_t want = vector_want[op][s][i], got = out[i];
                const uint64_t rule = rule_element(KIND_BF16, (SimdOp)op, (const char *)&data[i],
                                                   (const char *)&vector_x[i], &ctx);
                int right = nan_bf16(want) ? nan_bf16(got) && got == rule : got == want;
                if (!right && wrong++ < 10) {
                    printf("bfloat16 vectors: %s op %d alpha %g pattern 0x%04zx: got 0x%04x, "
                           "PyTorch 0x%04x, the rule 0x%04llx\n",
                           table->name, op, ctx.alpha, i, got, want, (unsigned long long)rule);
                }
            }
        }
    }
    return wrong;
}

int
main(int argc, char **argv)
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
#ifdef LEAKY_X86_64
    const int passes = 2;
#else
    const int passes = 1;
#endif
    /*
     * On x86-64 a second pass runs bfloat16 with DAZ and FTZ set, as a
     * library built with -ffast-math leaves them in a process: the
     * multiplies then see and give zeros for subnormals, on every path
     * alike, and the bfloat16 kernels test z > 0 on bits, as the portable
     * loops do, so the paths must still agree.  (float16's SIMD kernels
     * compare floats there, so they would not.)
     */
    for (int pass = 0; pass < passes; pass++) {
#ifdef LEAKY_X86_64
        const unsigned int csr = _mm_getcsr();
        if (pass == 1) {
            _mm_setcsr(csr | 0x8040u);  /* FTZ (bit 15) and DAZ (bit 6) */
        }
#endif
        for (int t = 0; t < ntables; t++) {
            if (tables[t] == &PORTABLE_KERNELS) {
                continue;
            }
            for (int kind = pass == 0 ? KIND_F16 : KIND_BF16; kind <= KIND_BF16; kind++) {
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
                                    uint64_t nan = random_nan((ElemKind)kind);
                                    memcpy((input ? second : first) + offset + i * step, &nan,
                                           (size_t)size);  /* little-endian: the low bytes */
                                }
                            }
                        }
                        memset(out_simd, 0xab, sizeof out_simd);
                        memset(out_portable, 0xab, sizeof out_portable);
                        LoopContext ctx = loop_context_for(slopes[rep % nslopes]);
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
                        /* the rule is stated for the default environment: not under DAZ */
                        for (Py_ssize_t i = 0; i < n && pass == 0; i++) {
                            const Py_ssize_t at = offset + i * step;
                            uint64_t want =
                                rule_element((ElemKind)kind, (SimdOp)op, (char *)first + at,
                                             (char *)second + at, &ctx);
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
            printf("%s: checked against portable%s\n", tables[t]->name,
                   pass == 1 ? " (bfloat16, under DAZ and FTZ)" : "");
        }
#ifdef LEAKY_X86_64
        _mm_setcsr(csr);
#endif
    }
    printf("%ld runs, %ld differences, %ld breaks of the NaN rule\n", runs, differences,
           rule_differences);
    long vector_differences = 0;
    if (argc > 1) {
        if (read_vectors(argv[1]) != 0) {
            return 1;
        }
        for (int t = 0; t < ntables; t++) {
            long wrong = check_vectors(tables[t]);
            printf("%s: bfloat16 against PyTorch, %d results, %ld wrong\n", tables[t]->name,
                   3 * VECTOR_SLOPES * PATTERNS, wrong);
            vector_differences += wrong;
        }
    }
    return differences != 0 || rule_differences != 0 || vector_differences != 0;
}
