/*
 * ufunc_api.h: what leaky._leaky hands leaky._ufunc, the NumPy ufunc
 * extension, through the capsule leaky._leaky._ufunc_api.
 *
 * Why a capsule and not a second copy of the kernels: the ufunc's inner
 * loops are then exactly the loops leaky's own functions run, the kernel
 * path chosen once at import (LEAKY_KERNELS included, so CI's run of the
 * suite per path covers the ufunc too), and large runs split across the
 * same thread pool.  Linking the kernel sources into the second extension
 * would compile them twice, detect the CPU twice and give it a second pool.
 * Both extensions are built from one source tree into one wheel, so the
 * struct below is no public ABI; its version and size are checked anyway,
 * so that a stale build of one next to a new build of the other fails at
 * import with a clear message rather than calling through a wrong layout.
 */
#ifndef LEAKY_UFUNC_API_H
#define LEAKY_UFUNC_API_H

#include "leaky.h"

#define LEAKY_UFUNC_API_NAME "leaky._leaky._ufunc_api"
#define LEAKY_UFUNC_API_VERSION 1

typedef struct {
    int version;           /* LEAKY_UFUNC_API_VERSION */
    size_t size;           /* sizeof(LeakyUfuncApi) */
    const KernelTable *kernels;  /* the table leaky's own functions use */
    InnerLoop backward_mixed;    /* grad_output and z of different kinds */
    /*
     * Runs loop over n elements of nops one-dimensional operands (the output
     * last), splitting large runs across leaky's thread pool as leaky's own
     * functions do.  Never touches Python: NumPy may call it with the GIL
     * released.  state is the opaque pointer below.
     */
    void (*run_1d)(void *state, InnerLoop loop, int nops, char *const *ptrs,
                   const Py_ssize_t *steps, Py_ssize_t n, const LoopContext *ctx);
    void *state;
} LeakyUfuncApi;

#endif /* LEAKY_UFUNC_API_H */
