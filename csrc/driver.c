/*
 * driver.c: runs an inner loop over operands of any shape and strides.
 *
 * A plan merges what it can into one long inner loop and walks the rest
 * with an odometer; run_elementwise decides, by size, whether to keep the
 * GIL, run on this thread or split the plan across the pool (pool.c).  The
 * overlap tests decide when an input must be copied before the output is
 * written.
 */
#include "leaky.h"

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

void
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
Py_ssize_t
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

int
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
char *
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

/*
 * Runs loop over operands that all have the shape of ops[0]: on this thread
 * for small arrays; for large ones without the GIL and, unless threads == 1,
 * split across the pool.  threads == 0 means "choose by size".
 */
void
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
        int nthreads = threads < pool_thread_count(pool) ? threads : pool_thread_count(pool);
        /* a few parts per thread, so that whoever is free takes the next one */
        Py_ssize_t min_part = plan.ndim == 1 ? 4096 : 1;
        Py_ssize_t nparts = plan.shape[0] / min_part;
        job.nparts = (int)(nparts < 4 * nthreads ? (nparts < nthreads ? nthreads : nparts)
                                                 : 4 * nthreads);
        pool_run(pool, &job, nthreads - 1);
        pool_release(pool);
    }
    else {
        plan_run(&plan, nops, job.base, loop, ctx);
    }
    Py_END_ALLOW_THREADS
}
