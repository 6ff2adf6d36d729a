/*
 * Nanoseconds per element of each kernel path's float32 and bfloat16 loops
 * (float16 too, for reference), one thread, on unit-stride runs of 10^3,
 * 10^5 and 10^7 elements: the measurement behind the bfloat16 speed target
 * (at most 2x float32 per element).  Inputs are finite values of both signs,
 * output a separate buffer, no streaming stores.  Each figure is the best of
 * 30 short timed batches, so a busy machine inflates it less.
 *
 *   gcc -O3 -flto -std=c11 -Icsrc -I<Python's include> tests/c/kernel_speed.c \
 *       csrc/loops_portable.c csrc/kernels_avx2.c csrc/kernels_avx512.c \
 *       csrc/kernels_neon.c csrc/cpu_dispatch.c -o kernel_speed && ./kernel_speed [path]
 *
 * Not run by CI (timings there mean little); tests/c/kernel_paths.c checks
 * the same loops for bits.
 */
#include "leaky.h"

#include <stdio.h>
#include <time.h>

static double
now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t
next_random(void)
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

/* Best nanoseconds per element over 30 batches of ~2e6 elements (or one call):
   short batches, so that some run without being preempted on a busy machine. */
static double
time_loop(InnerLoop loop, SimdOp op, Py_ssize_t size, Py_ssize_t n, char *in1, char *in2,
          char *out, const LoopContext *ctx)
{
    const Py_ssize_t steps[3] = {size, size, size};
    char *ptrs2[2] = {in1, out}, *ptrs3[3] = {in1, in2, out};
    char *const *ptrs = op == SIMD_BACKWARD ? ptrs3 : ptrs2;
    long calls = (long)(2000000 / n) + 1;
    double best = 1e30;
    for (int batch = 0; batch < 30; batch++) {
        double start = now();
        for (long c = 0; c < calls; c++) {
            loop(ptrs, steps, n, ctx);
        }
        double per = (now() - start) / ((double)calls * (double)n) * 1e9;
        best = per < best ? per : best;
    }
    return best;
}

int
main(int argc, char **argv)
{
    static const Py_ssize_t sizes[] = {1000, 100000, 10000000};
    static const char *const op_names[] = {"forward", "grad", "backward"};
    const Py_ssize_t most = 10000000;
    char *in1 = malloc((size_t)most * 4), *in2 = malloc((size_t)most * 4);
    char *out = malloc((size_t)most * 4);
    if (!in1 || !in2 || !out) {
        return 1;
    }
    LoopContext ctx = loop_context_for(0.01);
    const KernelTable *tables[4];
    int ntables = supported_kernels(tables);
    printf("%-9s %-9s %9s %9s %9s %9s %7s\n", "path", "op", "n", "f32 ns", "bf16 ns",
           "f16 ns", "bf16/f32");
    for (int t = 0; t < ntables; t++) {
        if (argc > 1 && strcmp(argv[1], tables[t]->name) != 0) {
            continue;  /* the one path named */
        }
        for (int op = SIMD_FORWARD; op <= SIMD_BACKWARD; op++) {
            for (int s = 0; s < 3; s++) {
                const Py_ssize_t n = sizes[s];
                double ns[3];
                const ElemKind kinds[3] = {KIND_F32, KIND_BF16, KIND_F16};
                for (int k = 0; k < 3; k++) {
                    const Py_ssize_t size = itemsize_of_result(kinds[k]);
                    for (Py_ssize_t i = 0; i < n; i++) {  /* finite, both signs, ~1 */
                        float a = (float)((int64_t)(next_random() % 2001) - 1000) / 256.0f;
                        float b = (float)((int64_t)(next_random() % 2001) - 1000) / 256.0f;
                        if (kinds[k] == KIND_F32) {
                            memcpy(in1 + 4 * i, &a, 4);
                            memcpy(in2 + 4 * i, &b, 4);
                        }
                        else {
                            uint16_t ha = kinds[k] == KIND_BF16 ? float_to_bf16(a) : float_to_half(a);
                            uint16_t hb = kinds[k] == KIND_BF16 ? float_to_bf16(b) : float_to_half(b);
                            memcpy(in1 + 2 * i, &ha, 2);
                            memcpy(in2 + 2 * i, &hb, 2);
                        }
                    }
                    ns[k] = time_loop(loop_of(tables[t], (SimdOp)op, kinds[k]), (SimdOp)op,
                                      size, n, in1, in2, out, &ctx);
                }
                printf("%-9s %-9s %9zd %9.3f %9.3f %9.3f %7.2f\n", tables[t]->name,
                       op_names[op], n, ns[0], ns[1], ns[2], ns[1] / ns[0]);
                fflush(stdout);
            }
        }
    }
    free(in1);
    free(in2);
    free(out);
    return 0;
}
