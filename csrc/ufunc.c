/*
 * leaky._ufunc: leaky_relu, leaky_relu_grad and leaky_relu_backward as real
 * NumPy ufuncs (the public face is leaky.ufunc, made on first access so
 * that `import leaky` never imports NumPy).
 *
 * Compiled against NumPy's headers, the documented way to make a ufunc:
 * NumPy's machinery then gives broadcasting (per-channel slopes), out=,
 * where=, casting=, dtype=, __array_ufunc__ dispatch (pandas, xarray, Dask,
 * masked arrays) and subclass wrapping.  The inner loops are leaky's own:
 * the kernel table of leaky._leaky, reached through its capsule
 * (ufunc_api.h says why a capsule rather than a second copy).
 *
 * The type loops are leaky's dtype rules, in the order NumPy's type
 * resolver tries them (it takes the first loop every input casts to
 * safely):
 *   - bool and every integer z first, with a float64 slope, giving float64
 *     (tried first so that int8 or bool z do not land in the float16 or
 *     float32 loop, which they cast to safely);
 *   - float16 z with a float32 slope: computed in float32 with
 *     float32(alpha) and rounded once, as leaky_relu does;
 *   - float32 z with a float32 slope, float64 with float64.
 * leaky_relu_backward's loops: an integer or bool grad_output with float64
 * z and slope (float64 result), then grad_output and z of one float kind
 * (float16 with a float32 slope).  Mixed float kinds follow NumPy's
 * promotion (float16 with float32 computes in float32).
 *
 * An inner loop whose slope does not move (stride 0: a scalar alpha, or a
 * per-channel alpha broadcast along the inner axis) runs the kernel table's
 * loop once over the run, SIMD and thread pool included; a slope that moves
 * runs it once per run of equal slopes.  Operands that alias (reduce,
 * accumulate: operands_independent) run one element after the other.
 *
 * Floating-point exception flags: leaky's functions never warn, so the
 * loops leave the flags as they found them (a slope of 2 on -1e308 gives
 * -inf without NumPy's "overflow encountered" warning, as leaky_relu does);
 * flags raised by NumPy's own casts around the loop still count.
 */
#include "ufunc_api.h"

#include <fenv.h>

#define NPY_NO_DEPRECATED_API NPY_1_23_API_VERSION
/* NumPy 1.23 and 1.24 share one C-API version: builds run on leaky's oldest
   supported NumPy (1.24) and on every 2.x.  Set here rather than left to the
   headers' default, which newer NumPy releases raise. */
#define NPY_TARGET_VERSION NPY_1_23_API_VERSION
#include <numpy/arrayobject.h>
#include <numpy/ufuncobject.h>

static const LeakyUfuncApi *api;  /* from leaky._leaky, which this module keeps alive */

typedef enum { UF_FORWARD, UF_GRAD, UF_BACKWARD } UfuncOp;

/* What one type loop computes: its op, z's (or grad_output's) kind, the slope's width. */
typedef struct {
    UfuncOp op;
    ElemKind kind;       /* z for forward and grad, grad_output for backward */
    ElemKind z_kind;     /* backward only */
    int slope_is_f32;    /* the slope operand is float32 (float16 and float32 loops) */
} LoopSpec;

/* The LoopContext leaky's functions build for a slope (leaky.h, loop_context_for). */
static inline LoopContext
context_at(const char *slope, int slope_is_f32)
{
    if (slope_is_f32) {
        float a;
        memcpy(&a, slope, sizeof a);
        LoopContext ctx = loop_context_for((double)a);
        ctx.alpha32 = a;  /* its own bits: widening would quiet a signalling NaN */
        return ctx;
    }
    double a;
    memcpy(&a, slope, sizeof a);
    return loop_context_for(a);
}

static InnerLoop
loop_of(const LoopSpec *spec)
{
    switch (spec->op) {
    case UF_FORWARD: return api->kernels->forward[spec->kind];
    case UF_GRAD: return api->kernels->grad[spec->kind];
    default:
        if (spec->kind == spec->z_kind && spec->kind <= KIND_F64) {
            return api->kernels->backward_same[spec->kind - KIND_F16];
        }
        return api->backward_mixed;
    }
}

/* How many slopes from p on, at most n, have p's bits (so give the same context). */
static npy_intp
equal_run32(const char *p, npy_intp step, npy_intp n)
{
    uint32_t first, next;
    memcpy(&first, p, sizeof first);
    npy_intp run = 1;
    for (; run < n; run++) {
        memcpy(&next, p + run * step, sizeof next);
        if (next != first) {
            break;
        }
    }
    return run;
}

static npy_intp
equal_run64(const char *p, npy_intp step, npy_intp n)
{
    uint64_t first, next;
    memcpy(&first, p, sizeof first);
    npy_intp run = 1;
    for (; run < n; run++) {
        memcpy(&next, p + run * step, sizeof next);
        if (next != first) {
            break;
        }
    }
    return run;
}

/* The byte range [*lo, *hi) that n elements from p, step apart, span. */
static void
span_of(const char *p, npy_intp step, npy_intp n, npy_intp itemsize, uintptr_t *lo, uintptr_t *hi)
{
    const uintptr_t first = (uintptr_t)p;
    const uintptr_t last = first + (uintptr_t)step * (uintptr_t)(n - 1);  /* unsigned: wraps, never UB */
    *lo = step < 0 ? last : first;
    *hi = (step < 0 ? first : last) + (uintptr_t)itemsize;
}

/*
 * Whether the inner loop may treat its operands as independent: vectorize
 * (kernels load whole vectors before they store) and split across the pool
 * (parts run in any order).  NumPy's inner-loop contract lets operands
 * alias: a reduction's output has step 0 and is its first input too (out =
 * f(out, x[i]), element after element), and accumulate's first input is the
 * output one element back.  Such a loop is a recurrence: each element needs
 * the one written just before it.  So, as NumPy's own loops check before
 * they vectorize, every input (the slope included) must share no byte with
 * the output, or be the output itself element for element (same address,
 * step and size: each element is read before its own write and no other);
 * and the output must not write one element twice.  n == 1 reads everything
 * before it writes.
 */
static int
operands_independent(const LoopSpec *spec, char *const *args, const npy_intp *steps, npy_intp n)
{
    const int nin = spec->op == UF_BACKWARD ? 3 : 2;
    if (n == 1) {
        return 1;
    }
    if (steps[nin] == 0) {
        return 0;
    }
    npy_intp size[4];
    size[0] = itemsize_of_kind(spec->kind);
    if (spec->op == UF_BACKWARD) {
        size[1] = itemsize_of_kind(spec->z_kind);
    }
    size[nin - 1] = spec->slope_is_f32 ? 4 : 8;
    size[nin] = itemsize_of_kind(result_kind_of(spec->kind));
    uintptr_t out_lo, out_hi;
    span_of(args[nin], steps[nin], n, size[nin], &out_lo, &out_hi);
    for (int i = 0; i < nin; i++) {
        uintptr_t lo, hi;
        span_of(args[i], steps[i], n, size[i], &lo, &hi);
        if (lo >= out_hi || out_lo >= hi) {
            continue;
        }
        if (args[i] != args[nin] || steps[i] != steps[nin] || size[i] != size[nin]) {
            return 0;
        }
    }
    return 1;
}

/* The context for the slope at p, for spec's loop. */
static inline LoopContext
context_of(const LoopSpec *spec, const char *slope)
{
    LoopContext ctx = context_at(slope, spec->slope_is_f32);
    ctx.grad_kind = spec->kind;
    ctx.z_kind = spec->op == UF_BACKWARD ? spec->z_kind : spec->kind;
    return ctx;
}

/*
 * Operands that may alias: NumPy's element loop, one element after the
 * other in order, each read (its slope included) just before its own
 * write, so that every element sees what the elements before it wrote.
 * The kernel runs on one element at a time, so the bits are those of the
 * fast path; the context is rebuilt only when the slope's bits change.
 */
static void
run_in_order(const LoopSpec *spec, InnerLoop loop, int nops, char **ptrs,
             const Py_ssize_t *loop_steps, const char *slope_at, npy_intp slope_step, npy_intp n)
{
    const size_t slope_size = spec->slope_is_f32 ? 4 : 8;
    unsigned char bits[8], seen[8];
    memcpy(seen, slope_at, slope_size);
    LoopContext ctx = context_of(spec, (const char *)seen);
    for (npy_intp i = 0; i < n; i++) {
        memcpy(bits, slope_at, slope_size);
        if (memcmp(bits, seen, slope_size) != 0) {
            memcpy(seen, bits, slope_size);
            ctx = context_of(spec, (const char *)seen);
        }
        loop(ptrs, loop_steps, 1, &ctx);
        for (int k = 0; k < nops; k++) {
            ptrs[k] += loop_steps[k];
        }
        slope_at += slope_step;
    }
}

/*
 * The one inner loop of every type loop: args are the inputs (z, slope; or
 * grad_output, z, slope) and the output, NumPy's order.  leaky's loops take
 * the data operands and the output, the slope through the context.
 */
static void
leaky_inner_loop(char **args, const npy_intp *dimensions, const npy_intp *steps, void *data)
{
    const LoopSpec *spec = data;
    const npy_intp n = dimensions[0];
    if (n <= 0) {
        return;
    }
    const int nops = spec->op == UF_BACKWARD ? 3 : 2;  /* data operands and the output */
    const int slope = nops - 1;                        /* the slope's place in args */
    char *ptrs[3];
    Py_ssize_t loop_steps[3];
    for (int i = 0; i < nops - 1; i++) {
        ptrs[i] = args[i];
        loop_steps[i] = steps[i];
    }
    ptrs[nops - 1] = args[slope + 1];
    loop_steps[nops - 1] = steps[slope + 1];
    InnerLoop loop = loop_of(spec);
    /* two reads of the status words; restoring the whole FP environment
       (fesetexceptflag) cost more than a small array's whole loop */
    const int raised_before = fetestexcept(FE_ALL_EXCEPT);
    if (!operands_independent(spec, args, steps, n)) {
        run_in_order(spec, loop, nops, ptrs, loop_steps, args[slope], steps[slope], n);
    }
    else if (steps[slope] == 0) {
        LoopContext ctx = context_of(spec, args[slope]);
        api->run_1d(api->state, loop, nops, ptrs, loop_steps, n, &ctx);
    }
    else {
        /*
         * A slope that moves.  NumPy's iterator often hands a broadcast slope
         * over this way, copied into a buffer (alpha of (C, 1, 1) becomes runs
         * of H * W equal values), so the loop runs once per run of equal
         * slopes; a slope per element is a run of one.
         */
        const char *slope_at = args[slope];
        const npy_intp slope_step = steps[slope];
        npy_intp done = 0;
        while (done < n) {
            npy_intp run = spec->slope_is_f32 ? equal_run32(slope_at, slope_step, n - done)
                                              : equal_run64(slope_at, slope_step, n - done);
            LoopContext ctx = context_of(spec, slope_at);
            api->run_1d(api->state, loop, nops, ptrs, loop_steps, run, &ctx);
            for (int k = 0; k < nops; k++) {
                ptrs[k] += run * loop_steps[k];
            }
            slope_at += run * slope_step;
            done += run;
        }
    }
    const int raised = fetestexcept(FE_ALL_EXCEPT) & ~raised_before;
    if (raised) {
        feclearexcept(raised);
    }
}

/* ------------------------------------------------------------------ */
/* The type loops                                                     */
/* ------------------------------------------------------------------ */

/* NumPy's integer type numbers, in its own order, and the kinds leaky reads them as. */
#define N_INTEGER_TYPES 11
static const int integer_types[N_INTEGER_TYPES] = {
    NPY_BOOL, NPY_BYTE, NPY_UBYTE, NPY_SHORT, NPY_USHORT, NPY_INT,
    NPY_UINT, NPY_LONG, NPY_ULONG, NPY_LONGLONG, NPY_ULONGLONG,
};

static ElemKind
kind_of_integer(int type_num)
{
    switch (type_num) {
    case NPY_BOOL: return KIND_BOOL;
    case NPY_BYTE: return KIND_I8;
    case NPY_UBYTE: return KIND_U8;
    case NPY_SHORT: return KIND_I16;
    case NPY_USHORT: return KIND_U16;
    case NPY_INT: return KIND_I32;
    case NPY_UINT: return KIND_U32;
    case NPY_LONG: return sizeof(long) == 8 ? KIND_I64 : KIND_I32;
    case NPY_ULONG: return sizeof(long) == 8 ? KIND_U64 : KIND_U32;
    case NPY_LONGLONG: return KIND_I64;
    default: return KIND_U64;  /* NPY_ULONGLONG */
    }
}

#define N_LOOPS (N_INTEGER_TYPES + 3)

/* One ufunc's tables; static, as NumPy keeps pointers into them for good. */
typedef struct {
    PyUFuncGenericFunction funcs[N_LOOPS];
    void *data[N_LOOPS];
    char types[N_LOOPS * 4];
    LoopSpec specs[N_LOOPS];
} UfuncTables;

static UfuncTables forward_tables, grad_tables, backward_tables;

static void
fill_tables(UfuncTables *t, UfuncOp op)
{
    const int nargs = op == UF_BACKWARD ? 4 : 3;
    int loop = 0;
    for (int i = 0; i < N_INTEGER_TYPES; i++, loop++) {
        char *types = t->types + loop * nargs;
        t->specs[loop] = (LoopSpec){op, kind_of_integer(integer_types[i]), KIND_F64, 0};
        types[0] = (char)integer_types[i];
        if (op == UF_BACKWARD) {
            types[1] = NPY_DOUBLE;  /* z: any real kind casts to float64 with its sign */
        }
        types[nargs - 2] = NPY_DOUBLE;
        types[nargs - 1] = NPY_DOUBLE;
    }
    static const struct {
        int type_num;
        ElemKind kind;
        int slope_type;
    } floats[3] = {{NPY_HALF, KIND_F16, NPY_FLOAT},
                   {NPY_FLOAT, KIND_F32, NPY_FLOAT},
                   {NPY_DOUBLE, KIND_F64, NPY_DOUBLE}};
    for (int i = 0; i < 3; i++, loop++) {
        char *types = t->types + loop * nargs;
        t->specs[loop] = (LoopSpec){op, floats[i].kind, floats[i].kind,
                                    floats[i].slope_type == NPY_FLOAT};
        types[0] = (char)floats[i].type_num;
        if (op == UF_BACKWARD) {
            types[1] = (char)floats[i].type_num;
        }
        types[nargs - 2] = (char)floats[i].slope_type;
        types[nargs - 1] = (char)floats[i].type_num;
    }
    for (int i = 0; i < N_LOOPS; i++) {
        t->funcs[i] = leaky_inner_loop;
        t->data[i] = &t->specs[i];
    }
}

PyDoc_STRVAR(forward_doc,
"leaky_relu(z, alpha, /, out=None, *, where=True, casting='same_kind', order='K', "
"dtype=None, subok=True)\n"
"\n"
"Leaky ReLU as a NumPy ufunc: z where z > 0, else alpha * z.  alpha is\n"
"required and broadcasts against z (per-channel slopes).  leaky's dtype\n"
"rules: float16 computes in float32 with float32(alpha) and rounds once;\n"
"float32 and float64 keep their type; integers and bool give float64.");

PyDoc_STRVAR(grad_doc,
"leaky_relu_grad(z, alpha, /, out=None, *, where=True, casting='same_kind', order='K', "
"dtype=None, subok=True)\n"
"\n"
"Derivative of Leaky ReLU as a NumPy ufunc: 1 where z > 0, else alpha.");

PyDoc_STRVAR(backward_doc,
"leaky_relu_backward(grad_output, z, alpha, /, out=None, *, where=True, "
"casting='same_kind', order='K', dtype=None, subok=True)\n"
"\n"
"Fused backward pass as a NumPy ufunc: grad_output * (1 if z > 0 else alpha).\n"
"Integer and bool grad_output give float64; float kinds follow NumPy's promotion.");

static int
add_ufunc(PyObject *module, UfuncTables *t, UfuncOp op, const char *name, const char *doc)
{
    fill_tables(t, op);
    const int nin = op == UF_BACKWARD ? 3 : 2;
    PyObject *ufunc = PyUFunc_FromFuncAndData(t->funcs, t->data, t->types, N_LOOPS, nin, 1,
                                              PyUFunc_None, name, doc, 0);
    if (ufunc == NULL) {
        return -1;
    }
    int added = PyModule_AddObjectRef(module, name, ufunc);
    Py_DECREF(ufunc);
    return added;
}

/* leaky._leaky's capsule; the module is kept as our attribute _leaky, so the
   kernel table and the state it points into outlive every call. */
static int
load_leaky_api(PyObject *module)
{
    PyObject *leaky = PyImport_ImportModule("leaky._leaky");
    if (leaky == NULL) {
        return -1;
    }
    int added = PyModule_AddObjectRef(module, "_leaky", leaky);
    Py_DECREF(leaky);
    if (added < 0) {
        return -1;
    }
    const LeakyUfuncApi *found = PyCapsule_Import(LEAKY_UFUNC_API_NAME, 0);
    if (found == NULL) {
        return -1;
    }
    if (found->version != LEAKY_UFUNC_API_VERSION || found->size != sizeof(LeakyUfuncApi)) {
        PyErr_Format(PyExc_ImportError,
                     "leaky._ufunc and leaky._leaky come from different builds (capsule "
                     "version %d, expected %d); reinstall leaky",
                     found->version, LEAKY_UFUNC_API_VERSION);
        return -1;
    }
    api = found;
    return 0;
}

static struct PyModuleDef ufunc_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "leaky._ufunc",
    .m_doc = "leaky's functions as NumPy ufuncs; use them as leaky.ufunc.",
    .m_size = -1,  /* NumPy's C API and its ufuncs are per process */
};

PyMODINIT_FUNC
PyInit__ufunc(void)
{
    import_array();
    import_umath();
    PyObject *module = PyModule_Create(&ufunc_module);
    if (module == NULL) {
        return NULL;
    }
#ifdef Py_GIL_DISABLED
    PyUnstable_Module_SetGIL(module, Py_MOD_GIL_NOT_USED);
#endif
    if (load_leaky_api(module) < 0 ||
        add_ufunc(module, &forward_tables, UF_FORWARD, "leaky_relu", forward_doc) < 0 ||
        add_ufunc(module, &grad_tables, UF_GRAD, "leaky_relu_grad", grad_doc) < 0 ||
        add_ufunc(module, &backward_tables, UF_BACKWARD, "leaky_relu_backward", backward_doc) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
