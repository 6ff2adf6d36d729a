/*
 * Every SIMD kernel table this CPU runs, against the portable loops, bit for
 * bit: float16, float32 and float64; forward, grad and backward; runs of 0
 * to 100 elements at every offset before a 64-byte line (so every masked or
 * portable head before streaming stores), unit and doubled steps (the
 * portable fallback), streaming on and off, and random bit patterns (NaN
 * payloads, infinities, subnormals) at six slopes.
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
    static const double slopes[] = {0.01, -0.3, 1.5, 0.0, 3e38, -1e-45};
    static const int nslopes = (int)(sizeof slopes / sizeof *slopes);
    static unsigned char first[4096], second[4096], out_simd[4096], out_portable[4096];
    const KernelTable *tables[4];
    int ntables = supported_kernels(tables);
    long runs = 0, differences = 0;
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
    printf("%ld runs, %ld differences\n", runs, differences);
    return differences != 0;
}
