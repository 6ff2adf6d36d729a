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
 * Merges neighbours (d, d + 1) that are contiguous in every operand: the
 * pair walks the same addresses as one axis of their combined length.
 */
static void
plan_coalesce(LoopPlan *plan, int nops)
{
    int kept = 0;
    for (int d = 1; d < plan->ndim; d++) {
        int mergeable = 1;
        for (int op = 0; op < nops && mergeable; op++) {
            Py_ssize_t step;  /* wild strides may overflow here: then no merge */
            mergeable = !checked_mul(plan->strides[op][d], plan->shape[d], &step) &&
                        plan->strides[op][kept] == step;
        }
        if (mergeable) {
            plan->shape[kept] *= plan->shape[d];
            for (int op = 0; op < nops; op++) {
                plan->strides[op][kept] = plan->strides[op][d];
            }
        }
        else {
            kept++;
            plan->shape[kept] = plan->shape[d];
            for (int op = 0; op < nops; op++) {
                plan->strides[op][kept] = plan->strides[op][d];
            }
        }
    }
    plan->ndim = kept + 1;
}

/*
 * 1 if axis a should run inside axis b: decided by the output if it steps
 * along both with different step sizes, else by the first input that does
 * (stride 0 is a broadcast and says nothing); 0 (keep the C order) if none
 * does.
 */
static int
runs_inside(const LoopPlan *plan, int nops, int a, int b)
{
    for (int i = 0; i < nops; i++) {
        const Py_ssize_t *strides = plan->strides[(i + nops - 1) % nops];  /* output first */
        Py_ssize_t sa = strides[a] < 0 ? -strides[a] : strides[a];
        Py_ssize_t sb = strides[b] < 0 ? -strides[b] : strides[b];
        if (sa != 0 && sb != 0 && sa != sb) {
            return sa < sb;
        }
    }
    return 0;
}

/*
 * What NumPy's iterator does for a transposed, F-ordered or reversed
 * array: flip the axes that every operand walks backwards (none forwards),
 * moving each base to the axis's far end, then sort the axes so the smallest
 * steps are innermost, and merge again.  The output's strides decide first
 * (contiguous stores), the inputs' where they do not (ties, broadcasts).
 * That holds for a fresh C-contiguous result too: against a transposed
 * input, walking by the input's strides instead measured no faster
 * (docs/performance.md).  Identical operands get the same flips and
 * permutation, so in place stays element for element in place.
 */
static void
plan_reorder(LoopPlan *plan, int nops, char **base)
{
    const int ndim = plan->ndim;
    int changed = 0;
    for (int d = 0; d < ndim; d++) {
        int backwards = 0, forwards = 0;
        for (int op = 0; op < nops; op++) {
            backwards |= plan->strides[op][d] < 0;
            forwards |= plan->strides[op][d] > 0;
        }
        if (backwards && !forwards) {
            for (int op = 0; op < nops; op++) {
                base[op] += plan->strides[op][d] * (plan->shape[d] - 1);
                plan->strides[op][d] = -plan->strides[op][d];
            }
            changed = 1;
        }
    }
    int perm[PyBUF_MAX_NDIM];
    for (int d = 0; d < ndim; d++) {
        perm[d] = d;
    }
    for (int i = 1; i < ndim; i++) {  /* insertion sort, stable: few axes */
        int axis = perm[i], j = i;
        while (j > 0 && runs_inside(plan, nops, perm[j - 1], axis)) {
            perm[j] = perm[j - 1];
            j--;
        }
        perm[j] = axis;
        changed |= j != i;
    }
    if (!changed) {
        return;
    }
    LoopPlan sorted = {.ndim = ndim};
    for (int d = 0; d < ndim; d++) {
        sorted.shape[d] = plan->shape[perm[d]];
        for (int op = 0; op < nops; op++) {
            sorted.strides[op][d] = plan->strides[op][perm[d]];
        }
    }
    plan_coalesce(&sorted, nops);
    plan->ndim = sorted.ndim;
    memcpy(plan->shape, sorted.shape, sizeof(Py_ssize_t) * (size_t)sorted.ndim);
    for (int op = 0; op < nops; op++) {
        memcpy(plan->strides[op], sorted.strides[op], sizeof(Py_ssize_t) * (size_t)sorted.ndim);
    }
}

/*
 * Drops unit dimensions and merges neighbours that are contiguous in every
 * operand, so a C-contiguous (or uniformly strided) array of any rank
 * becomes one long inner loop; what is left with two or more axes is
 * reordered unless the order is ORDER_C (plan_reorder).  base[op] may move
 * (flipped axes).  Returns the element count: 0 when there is nothing to do,
 * -1 if it overflows (operand_check_size makes that unreachable for
 * operands it has seen).
 */
static Py_ssize_t
plan_build(LoopPlan *plan, int ndim, const Py_ssize_t *shape, int nops,
           const Py_ssize_t *const *strides, char **base, LoopOrder order)
{
    Py_ssize_t total = 1;
    plan->ndim = 0;
    for (int d = 0; d < ndim; d++) {
        if (checked_mul(total, shape[d], &total)) {
            return -1;
        }
        if (shape[d] == 1) {
            continue;
        }
        plan->shape[plan->ndim] = shape[d];
        for (int op = 0; op < nops; op++) {
            plan->strides[op][plan->ndim] = strides[op][d];
        }
        plan->ndim++;
    }
    if (total == 0) {
        return 0;
    }
    if (plan->ndim == 0) {  /* a single element */
        plan->ndim = 1;
        plan->shape[0] = 1;
        for (int op = 0; op < nops; op++) {
            plan->strides[op][0] = 0;
        }
        return total;
    }
    plan_coalesce(plan, nops);
    /* one axis needs no sorting, but a reversed run (x[::-1]) still wants
       its flip, to reach the contiguous SIMD loops: measured 2.7x slower
       than C order before; C-contiguous inputs never get here */
    if (order != ORDER_C && (plan->ndim > 1 || plan->strides[0][0] < 0)) {
        plan_reorder(plan, nops, base);
    }
    return total;
}

/* Elements per chunk of a buffered inner loop: 3 operands of 8 bytes fit in 6 KiB. */
#define CHUNK 256

/* n elements of `size` bytes from src (step apart) to dst (step apart). */
static void
copy_strided(char *dst, Py_ssize_t dst_step, const char *src, Py_ssize_t src_step,
             Py_ssize_t n, Py_ssize_t size)
{
    switch (size) {  /* fixed-size memcpy: one move each */
#define COPY_AS(BYTES)                                                        \
    case BYTES:                                                               \
        for (Py_ssize_t i = 0; i < n; i++) {                                  \
            memcpy(dst + i * dst_step, src + i * src_step, BYTES);            \
        }                                                                     \
        return;
    COPY_AS(1)
    COPY_AS(2)
    COPY_AS(4)
    COPY_AS(8)
#undef COPY_AS
    default:
        for (Py_ssize_t i = 0; i < n; i++) {
            memcpy(dst + i * dst_step, src + i * src_step, (size_t)size);
        }
    }
}

/*
 * One inner run of n elements, CHUNK at a time: inputs that do not step by
 * their item size are gathered into scratch first, and an output that does
 * not is written to scratch and scattered after, in order, so an output
 * that overlaps itself still gets its last write last.  Inputs that overlap
 * the output were detached or are identical to it (in place: each chunk is
 * read before it is written back).
 */
static void
run_chunked(const LoopPlan *plan, int nops, char *const *ptrs, const Py_ssize_t *steps,
            Py_ssize_t n, InnerLoop loop, const LoopContext *ctx)
{
    double scratch_[MAX_OPERANDS][CHUNK];  /* 8-byte items at most: leaky's kinds */
    char *scratch[MAX_OPERANDS];
    const int out = nops - 1;
    for (int op = 0; op < nops; op++) {
        assert(plan->itemsize[op] <= (Py_ssize_t)sizeof(double));
        scratch[op] = (char *)scratch_[op];
    }
    for (Py_ssize_t done = 0; done < n; done += CHUNK) {
        const Py_ssize_t m = n - done < CHUNK ? n - done : CHUNK;
        char *part[MAX_OPERANDS];
        for (int op = 0; op < nops; op++) {
            char *at = ptrs[op] + done * steps[op];
            if (steps[op] == plan->itemsize[op]) {
                part[op] = at;
            }
            else {
                part[op] = scratch[op];
                if (op != out) {
                    copy_strided(scratch[op], plan->itemsize[op], at, steps[op], m,
                                 plan->itemsize[op]);
                }
            }
        }
        loop(part, plan->itemsize, m, ctx);
        if (part[out] == scratch[out]) {
            copy_strided(ptrs[out] + done * steps[out], steps[out], scratch[out],
                         plan->itemsize[out], m, plan->itemsize[out]);
        }
    }
}

/* Rows of a tile: 16 float64 rows are two cache lines of a transposed operand. */
#define TILE_ROWS 16

/*
 * The two innermost axes in tiles of TILE_ROWS x CHUNK: for a transposed
 * operand against the rest, the CHUNK cache lines a chunk of one row reads
 * are read again by the next rows of the tile while they are still in L1,
 * not after a whole row has pushed them out.  Changes the order of writes,
 * so never for an output that may overlap itself (ORDER_C).
 */
static void
run_tiles(const LoopPlan *plan, int nops, char *const *ptrs, const Py_ssize_t *steps,
          InnerLoop loop, const LoopContext *ctx)
{
    const int inner = plan->ndim - 1, outer = inner - 1;
    const Py_ssize_t rows = plan->shape[outer], cols = plan->shape[inner];
    char *at[MAX_OPERANDS];
    for (Py_ssize_t r0 = 0; r0 < rows; r0 += TILE_ROWS) {
        const Py_ssize_t r1 = rows - r0 < TILE_ROWS ? rows : r0 + TILE_ROWS;
        for (Py_ssize_t c0 = 0; c0 < cols; c0 += CHUNK) {
            const Py_ssize_t m = cols - c0 < CHUNK ? cols - c0 : CHUNK;
            for (Py_ssize_t r = r0; r < r1; r++) {
                for (int op = 0; op < nops; op++) {
                    at[op] = ptrs[op] + r * plan->strides[op][outer] + c0 * steps[op];
                }
                run_chunked(plan, nops, at, steps, m, loop, ctx);
            }
        }
    }
}

void
plan_run(const LoopPlan *plan, int nops, char *const *base, InnerLoop loop, const LoopContext *ctx)
{
    const int inner = plan->ndim - 1;
    const int tiled = plan->buffered == PLAN_TILED;
    assert(plan->ndim >= 1 && plan->ndim <= PyBUF_MAX_NDIM && nops <= MAX_OPERANDS);
    Py_ssize_t steps[MAX_OPERANDS];
    char *ptrs[MAX_OPERANDS];
    Py_ssize_t index[PyBUF_MAX_NDIM] = {0};
    for (int op = 0; op < nops; op++) {
        steps[op] = plan->strides[op][inner];
        ptrs[op] = base[op];
    }
    LoopContext plain;
    if (plan->buffered && ctx->streaming) {
        plain = *ctx;  /* no streaming stores into scratch that is read back at once */
        plain.streaming = 0;
        ctx = &plain;
    }
    for (;;) {
        if (!plan->buffered) {
            loop(ptrs, steps, plan->shape[inner], ctx);
        }
        else if (tiled) {
            run_tiles(plan, nops, ptrs, steps, loop, ctx);
        }
        else {
            run_chunked(plan, nops, ptrs, steps, plan->shape[inner], loop, ctx);
        }
        int d = inner - 1 - tiled;
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

/* Shorter inner runs than this go to the strided loops as they are. */
#define MIN_CHUNKED 16

/*
 * The plan for operands that all have the shape of ops[0], the output last;
 * returns the element count (-1 on overflow, see plan_build).
 */
Py_ssize_t
plan_operands(LoopPlan *plan, Operand *const *ops, int nops, char **base, LoopOrder order)
{
    const Py_ssize_t *strides[MAX_OPERANDS];
    for (int op = 0; op < nops; op++) {
        strides[op] = ops[op]->strides;
        base[op] = (char *)ops[op]->view.buf;
        plan->itemsize[op] = ops[op]->view.itemsize;
    }
    Py_ssize_t total =
        plan_build(plan, ops[0]->view.ndim, ops[0]->shape, nops, strides, base, order);
    plan->buffered = PLAN_DIRECT;
    const int inner = plan->ndim - 1;
    if (total > 0 && plan->shape[inner] >= MIN_CHUNKED) {
        for (int op = 0; op < nops; op++) {
            if (plan->strides[op][inner] != plan->itemsize[op]) {
                plan->buffered = PLAN_CHUNKED;
            }
        }
        /* an operand whose small steps are on the next axis out: tiles */
        for (int op = 0; op < nops && plan->buffered && inner > 0 && order != ORDER_C; op++) {
            Py_ssize_t across = plan->strides[op][inner - 1], along = plan->strides[op][inner];
            if ((across < 0 ? -across : across) < (along < 0 ? -along : along)) {
                plan->buffered = PLAN_TILED;
            }
        }
    }
    return total;
}

/* Runs loop over the operands on this thread. */
static void
run_serial(Operand *const *ops, int nops, InnerLoop loop, const LoopContext *ctx)
{
    LoopPlan plan;
    char *base[MAX_OPERANDS];
    if (plan_operands(&plan, ops, nops, base, ORDER_ANY) > 0) {
        plan.buffered = PLAN_DIRECT;  /* its one caller copies: scratch would copy twice */
        plan_run(&plan, nops, base, loop, ctx);
    }
}

/*
 * Byte offsets [*lo, *hi) from view.buf that a view can touch.  Returns 0
 * for an empty view (it touches nothing), 1 otherwise, and -1 if the
 * offsets or their distance do not fit in Py_ssize_t: no real buffer spans
 * that, but NumPy's as_strided makes such views.
 */
static int
extent_offsets(const Operand *op, Py_ssize_t *lo, Py_ssize_t *hi)
{
    Py_ssize_t low = 0, high = op->view.itemsize, span, width;
    int overflow = 0;
    for (int d = 0; d < op->view.ndim; d++) {
        if (op->shape[d] == 0) {
            return 0;  /* empty, whatever the other sides */
        }
        if (checked_mul(op->strides[d], op->shape[d] - 1, &span)) {
            overflow = 1;  /* still looking for a 0 side */
        }
        else if (span < 0 ? checked_add(low, span, &low) : checked_add(high, span, &high)) {
            overflow = 1;
        }
    }
    if (overflow || low == PY_SSIZE_T_MIN || checked_add(high, -low, &width)) {  /* low <= 0 */
        return -1;
    }
    *lo = low;
    *hi = high;
    return 1;
}

/* 1 if op is C-contiguous (unit sides aside): it spans its byte count, no more. */
static int
c_contiguous(const Operand *op)
{
    Py_ssize_t expected = op->view.itemsize;
    for (int d = op->view.ndim - 1; d >= 0; d--) {
        if (op->shape[d] != 1) {
            if (op->strides[d] != expected) {
                return 0;
            }
            expected *= op->shape[d];  /* checked_nbytes has bounded the product */
        }
    }
    return 1;
}

/*
 * Every buffer leaky reads or writes passes here first: its byte count and
 * its extent must fit in Py_ssize_t, so that nothing computed from its
 * shape and strides later (the overlap tests, detach_from_output's copy,
 * plan_build's total) can overflow.  ValueError otherwise, as NumPy's
 * "array is too big".
 */
int
operand_check_size(const Operand *op, const char *fname, const char *argname)
{
    Py_ssize_t nbytes, lo, hi;
    if (checked_nbytes(op->view.ndim, op->shape, op->view.itemsize, &nbytes) ||
        (!c_contiguous(op) && extent_offsets(op, &lo, &hi) < 0)) {
        PyErr_Format(PyExc_ValueError,
                     "%s() argument '%s' is too big: its shape and strides span more than "
                     "%zd bytes", fname, argname, PY_SSIZE_T_MAX);
        return -1;
    }
    return 0;
}

/* Byte range [*lo, *hi) that a view can touch, as addresses; 0 if it touches nothing. */
static int
operand_extent(const Operand *op, uintptr_t *lo, uintptr_t *hi)
{
    Py_ssize_t low, high;
    int touched = extent_offsets(op, &low, &high);
    assert(touched >= 0);  /* operand_check_size saw every operand */
    if (touched <= 0) {
        return 0;
    }
    *lo = (uintptr_t)op->view.buf + (uintptr_t)low;  /* unsigned: wraps, never UB */
    *hi = (uintptr_t)op->view.buf + (uintptr_t)high;
    return 1;
}

int
operands_overlap(const Operand *a, const Operand *b)
{
    uintptr_t alo, ahi, blo, bhi;
    if (!operand_extent(a, &alo, &ahi) || !operand_extent(b, &blo, &bhi)) {
        return 0;
    }
    return alo < bhi && blo < ahi;
}

/*
 * Whether two elements of one view may share a byte: conservative (it may
 * say yes for a view that does not), never wrong the other way.  Yes if an
 * axis of length > 1 has stride 0; otherwise the axes are taken smallest
 * |stride| first, and each must step past everything the smaller ones span,
 * one element included, or the view may overlap itself: a sliding window,
 * an item-size-unaligned stride, a view that folds back on itself.
 */
int
operand_overlaps_itself(const Operand *op)
{
    Py_ssize_t side[PyBUF_MAX_NDIM], step[PyBUF_MAX_NDIM];
    int n = 0;
    for (int d = 0; d < op->view.ndim; d++) {
        if (op->shape[d] == 0) {
            return 0;
        }
    }
    if (c_contiguous(op)) {  /* the common out=: no sorting */
        return 0;
    }
    for (int d = 0; d < op->view.ndim; d++) {
        if (op->shape[d] == 1) {
            continue;
        }
        Py_ssize_t s = op->strides[d] < 0 ? -op->strides[d] : op->strides[d];
        if (s == 0) {
            return 1;
        }
        int j = n++;
        for (; j > 0 && step[j - 1] > s; j--) {  /* insertion sort by |stride| */
            step[j] = step[j - 1];
            side[j] = side[j - 1];
        }
        step[j] = s;
        side[j] = op->shape[d];
    }
    Py_ssize_t reach = op->view.itemsize;  /* bytes the smaller axes span */
    for (int k = 0; k < n; k++) {
        if (step[k] < reach) {
            return 1;
        }
        reach += step[k] * (side[k] - 1);  /* within the checked extent */
    }
    return 0;
}

/*
 * NumPy's contiguity flags: unit sides say nothing, an empty array is both.
 * fortran: 1 asks for F order (first axis innermost), 0 for C order.
 */
static int
numpy_contiguous(const Operand *op, int fortran)
{
    const int ndim = op->view.ndim;
    Py_ssize_t expected = op->view.itemsize;
    for (int d = 0; d < ndim; d++) {
        if (op->shape[d] == 0) {
            return 1;
        }
    }
    for (int k = 0; k < ndim; k++) {
        const int d = fortran ? k : ndim - 1 - k;
        if (op->shape[d] != 1) {
            if (op->strides[d] != expected) {
                return 0;
            }
            expected *= op->shape[d];  /* checked_nbytes has bounded the product */
        }
    }
    return 1;
}

/*
 * Whether axis a should sit inside axis b in a result in the inputs' order,
 * by NumPy's iterator's rule (npyiter_find_best_axis_ordering): an input
 * whose strides along a and b are both nonzero votes (unit sides count as
 * stride 0, as the iterator sees them); a needs every vote, and C order wins
 * a conflict.  Returns 1 (inside), 0 (outside), -1 (no input votes).
 */
static int
k_order_inside(const Operand *const *inputs, int ninputs, int a, int b)
{
    int decided = -1;
    for (int i = 0; i < ninputs; i++) {
        const Operand *op = inputs[i];
        Py_ssize_t sa = op->shape[a] == 1 ? 0 : op->strides[a];
        Py_ssize_t sb = op->shape[b] == 1 ? 0 : op->strides[b];
        if (sa == 0 || sb == 0) {
            continue;
        }
        sa = sa < 0 ? -sa : sa;
        sb = sb < 0 ? -sb : sb;
        if (sb <= sa) {
            return 0;
        }
        decided = 1;
    }
    return decided;
}

/*
 * The strides of a fresh result of `itemsize` bytes per element, shaped
 * like inputs[0] (every input has its shape), in the order NumPy's ufuncs
 * give a result under order='K', so that the result of a transposed,
 * F-ordered or permuted input is laid out as the input and the loop over
 * the two runs contiguous (a C-ordered result against x.T needs the tile
 * gather, measured 5x slower than np.multiply).  NumPy's two routes, in
 * its order: inputs all C-contiguous give C order, inputs all F-contiguous
 * F order (its trivial loop; 0-d inputs aside); any other mix is sorted by
 * the iterator's rule, axes by |stride| with every stride positive, an
 * axis no input orders (a broadcast, a unit side, a sliding window's equal
 * strides) kept where C order puts it.  Returns 0 for C order (strides
 * left unfilled: the container's own default), 1 with strides filled.
 */
int
result_k_strides(const Operand *const *inputs, int ninputs, Py_ssize_t itemsize,
                 Py_ssize_t *strides)
{
    const int ndim = inputs[0]->view.ndim;
    if (ndim <= 1) {
        return 0;
    }
    /* the trivial loop's order: the first input's, C where it is both,
       which every other input must share */
    enum { UNSET, C_ORDER, F_ORDER, MIXED } trivial = UNSET;
    for (int i = 0; i < ninputs && trivial != MIXED; i++) {
        if (trivial == UNSET) {
            trivial = numpy_contiguous(inputs[i], 0)   ? C_ORDER
                      : numpy_contiguous(inputs[i], 1) ? F_ORDER
                                                       : MIXED;
        }
        else if (!numpy_contiguous(inputs[i], trivial == F_ORDER)) {
            trivial = MIXED;
        }
    }
    if (trivial == C_ORDER) {
        return 0;
    }
    int order[PyBUF_MAX_NDIM];  /* the axes, innermost first */
    if (trivial == F_ORDER) {
        for (int k = 0; k < ndim; k++) {
            order[k] = k;
        }
    }
    else {
        for (int k = 0; k < ndim; k++) {
            order[k] = ndim - 1 - k;
        }
        for (int k0 = 1; k0 < ndim; k0++) {  /* insertion sort, as the iterator's */
            const int axis = order[k0];
            int pos = k0;
            for (int k1 = k0 - 1; k1 >= 0; k1--) {
                int inside = k_order_inside(inputs, ninputs, axis, order[k1]);
                if (inside == 1) {
                    pos = k1;
                }
                else if (inside == 0) {
                    break;
                }
            }
            for (int k = k0; k > pos; k--) {
                order[k] = order[k - 1];
            }
            order[pos] = axis;
        }
    }
    int c_order = 1;
    Py_ssize_t stride = itemsize;
    for (int k = 0; k < ndim; k++) {
        c_order &= order[k] == ndim - 1 - k;
        strides[order[k]] = stride;
        stride = outer_stride(stride, inputs[0]->shape[order[k]]);
    }
    return !c_order;
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
 * For an input that overlaps the output (the caller asked operands_overlap):
 * writing the output would clobber input elements not yet read.  Like
 * NumPy, read from a private copy instead.  An input identical to the
 * output is safe in place, unless the output overlaps itself
 * (output_overlaps_itself, from operand_overlaps_itself): then one element's
 * write changes another's input, so identical inputs are copied too.
 * The copy belongs to the input (input->detached), which computes from it
 * until operand_drop_detached hands the exporter's own pointer back: a
 * PEP 688 __release_buffer__ must see the view it lent, not our copy.
 * 0, or -1 with MemoryError.
 */
int
detach_from_output(Operand *input, const Operand *output, int output_overlaps_itself)
{
    assert(operands_overlap(input, output) && input->detached == NULL);
    if (!output_overlaps_itself && operands_identical(input, output)) {
        return 0;
    }
    const Py_ssize_t itemsize = input->view.itemsize;
    Py_ssize_t nbytes;
    if (checked_nbytes(input->view.ndim, input->shape, itemsize, &nbytes)) {
        /* operand_check_size rules this out; kept as a guard */
        PyErr_SetString(PyExc_ValueError, "leaky: an input is too big to copy");
        return -1;
    }
    assert(nbytes > 0);
    char *copy = PyMem_Malloc((size_t)nbytes);
    if (copy == NULL) {
        PyErr_NoMemory();
        return -1;
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
    input->exported_buf = input->view.buf;
    input->detached = copy;
    input->view.buf = copy;
    /* view.strides, the exporter's own array, is left as it was lent */
    memcpy(input->strides, packed.strides, sizeof(Py_ssize_t) * (size_t)input->view.ndim);
    return 0;
}

/* Undoes detach_from_output: the exporter's pointer back in view.buf, the copy freed. */
void
operand_drop_detached(Operand *op)
{
    if (op->detached != NULL) {
        op->view.buf = op->exported_buf;
        PyMem_Free(op->detached);
        op->detached = NULL;
    }
}

/*
 * Runs loop over operands that all have the shape of ops[0], the output
 * last: on this thread for small arrays; for large ones without the GIL and,
 * unless threads == 1, split across the pool.  threads == 0 means "choose by
 * size".  ORDER_C (an output that may overlap itself) always runs on one
 * thread, so the last write in C order wins.  Returns -1 with ValueError if
 * the element count overflows, 0 otherwise.
 */
int
run_elementwise(LeakyState *st, Operand *const *ops, int nops, InnerLoop loop,
                const LoopContext *ctx, int threads, LoopOrder order)
{
    LoopPlan plan;
    ParallelJob job = {.plan = &plan, .nops = nops, .loop = loop, .ctx = ctx};
    Py_ssize_t total = plan_operands(&plan, ops, nops, job.base, order);
    if (total <= 0) {
        if (total < 0) {
            PyErr_Format(PyExc_ValueError, "leaky: more than %zd elements", PY_SSIZE_T_MAX);
            return -1;
        }
        return 0;
    }
    if (total < ATOMIC_LOAD(&st->tuning.gil_threshold)) {
        plan_run(&plan, nops, job.base, loop, ctx);
        return 0;
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
    if (order == ORDER_C) {
        threads = 1;
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
    return 0;
}
