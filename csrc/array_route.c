/*
 * array_route.c: what leaky._leaky shares with leaky.ufunc, and the route
 * from leaky's functions to it.
 *
 * leaky.ufunc (csrc/ufunc.c, the extension leaky._ufunc) is a NumPy ufunc
 * whose inner loops are this extension's kernels: add_ufunc_api publishes
 * them in a capsule (ufunc_api.h says why a capsule).
 *
 * The route: objects that only NumPy understands, pandas and xarray
 * objects, Dask arrays, ndarray subclasses such as masked arrays, anything
 * with __array_ufunc__, __array_function__, __array__, __array_interface__
 * or __array_struct__, go to leaky.ufunc when NumPy is already imported, so
 * that each gets its own type back through NumPy's __array_ufunc__ protocol
 * (a masked array keeps its mask, a Series its index).  leaky.c asks here
 * only after its own fast paths have declined, so exact ndarrays, other
 * buffers, numbers and lists never pay for the test beyond a pointer walk.
 */
#include "ufunc_api.h"

/* ------------------------------------------------------------------ */
/* The capsule                                                        */
/* ------------------------------------------------------------------ */

/* LeakyUfuncApi.run_1d: one run, on the pool when it is large (no Python here). */
static void
ufunc_run_1d(void *state, InnerLoop loop, int nops, char *const *ptrs, const Py_ssize_t *steps,
             Py_ssize_t n, const LoopContext *ctx)
{
    LeakyState *st = state;
    assert(nops >= 1 && nops <= MAX_OPERANDS);
    int threads = n >= ATOMIC_LOAD(&st->tuning.parallel_threshold) ? st->max_threads : 1;
    ThreadPool *pool = threads > 1 ? pool_for_caller(st) : NULL;
    if (pool == NULL) {
        loop(ptrs, steps, n, ctx);
        return;
    }
    LoopPlan plan = {.ndim = 1, .buffered = PLAN_DIRECT};
    plan.shape[0] = n;
    ParallelJob job = {.plan = &plan, .nops = nops, .loop = loop, .ctx = ctx};
    for (int op = 0; op < nops; op++) {
        plan.strides[op][0] = steps[op];
        job.base[op] = ptrs[op];
    }
    int nthreads = threads < pool_thread_count(pool) ? threads : pool_thread_count(pool);
    /* as run_elementwise splits a one-axis plan: parts of 4096 and up, a few per thread */
    Py_ssize_t nparts = n / 4096;
    job.nparts = (int)(nparts < 4 * nthreads ? (nparts < nthreads ? nthreads : nparts)
                                             : 4 * nthreads);
    pool_run(pool, &job, nthreads - 1);
    pool_release(pool);
}

static void
free_ufunc_api(PyObject *capsule)
{
    PyMem_Free(PyCapsule_GetPointer(capsule, LEAKY_UFUNC_API_NAME));
}

static int add_array_route_names(LeakyState *st);

int
add_ufunc_api(PyObject *module, LeakyState *st)
{
    LeakyUfuncApi *api = PyMem_Malloc(sizeof *api);
    if (api == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    api->version = LEAKY_UFUNC_API_VERSION;
    api->size = sizeof *api;
    api->kernels = st->kernels;
    api->backward_mixed = backward_loop_mixed;
    api->run_1d = ufunc_run_1d;
    api->state = st;  /* leaky._ufunc keeps this module alive while it uses it */
    if (add_array_route_names(st) < 0) {
        PyMem_Free(api);
        return -1;
    }
    PyObject *capsule = PyCapsule_New(api, LEAKY_UFUNC_API_NAME, free_ufunc_api);
    if (capsule == NULL) {
        PyMem_Free(api);
        return -1;
    }
    int added = PyModule_AddObjectRef(module, "_ufunc_api", capsule);
    Py_DECREF(capsule);
    return added;
}

/* ------------------------------------------------------------------ */
/* Which objects take the route                                       */
/* ------------------------------------------------------------------ */

/*
 * A strict subclass of numpy.ndarray (np.ma.MaskedArray, np.matrix,
 * np.memmap, ...), found by name along the base chain, so that no NumPy is
 * needed to ask: exact ndarrays stop at once (their base is object), other
 * buffers after a few string compares.  They export the buffer protocol,
 * but the buffer path would hand back a plain ndarray and drop what the
 * subclass carries (a mask), so they go through the ufunc.
 */
int
is_ndarray_subclass(PyObject *obj)
{
    PyTypeObject *first = Py_TYPE(obj)->tp_base;
    if (first == &PyBaseObject_Type) {  /* exact ndarrays, array.array, memoryview, bytes */
        return 0;
    }
    for (PyTypeObject *base = first; base != NULL; base = base->tp_base) {
        if (strcmp(base->tp_name, "numpy.ndarray") == 0) {
            return 1;
        }
    }
    return 0;
}

/* The protocols NumPy's ufuncs accept: three methods, looked up on the type as
   NumPy does, then two data protocols, often instance attributes; and the
   name NumPy's module has in sys.modules, last. */
static const char *const PROTOCOLS[6] = {"__array_ufunc__",     "__array_function__",
                                         "__array__",           "__array_interface__",
                                         "__array_struct__",    "numpy"};
enum { N_METHODS = 3, N_PROTOCOLS = 5, NUMPY_NAME = 5 };

/* Is NumPy in sys.modules?  name: "numpy" as a str, or NULL to make one. */
static int
numpy_is_imported(PyObject *name)
{
    PyObject *modules = PyImport_GetModuleDict();  /* borrowed */
    /* only its presence counts: nothing is read through the borrowed value */
    PyObject *numpy = name != NULL ? PyDict_GetItemWithError(modules, name)
                                   : PyDict_GetItemString(modules, "numpy");
    if (numpy == NULL && PyErr_Occurred()) {
        PyErr_Clear();
    }
    return numpy != NULL;
}

/*
 * Does obj (or its type) have this attribute?  Without raising and clearing
 * an AttributeError when it has not, which cost ~150 ns a name: Fraction and
 * Decimal z (the number route) ask all five.  Errors count as "no".
 */
static int
has_attribute(PyObject *obj, PyObject *name, int on_type)
{
    PyObject *value = NULL;
#if PY_VERSION_HEX >= 0x030D0000
    (void)on_type;
    int found = PyObject_GetOptionalAttr(obj, name, &value);
#else
    /* before 3.13 only the generic getattr answers "no" without an exception;
       a type's own getattr raises, so a type is asked through its MRO cache */
    if (on_type) {
        return _PyType_Lookup((PyTypeObject *)obj, name) != NULL;
    }
    int found = _PyObject_LookupAttr(obj, name, &value);
#endif
    Py_XDECREF(value);
    if (found < 0) {
        PyErr_Clear();
        return 0;
    }
    return found;
}

static int
add_array_route_names(LeakyState *st)
{
    for (int i = 0; i < 6; i++) {
        st->str_array_protocols[i] = PyUnicode_InternFromString(PROTOCOLS[i]);
        if (st->str_array_protocols[i] == NULL) {
            return -1;
        }
    }
    return 0;
}

void
clear_array_route(LeakyState *st)
{
    for (int i = 0; i < 6; i++) {
        Py_CLEAR(st->str_array_protocols[i]);
    }
}

/*
 * Does NumPy's ufunc machinery understand obj where leaky's own paths do
 * not?  Only asked of objects that are no exact number, list, tuple or
 * plain buffer, and only once NumPy is imported: leaky never imports it.
 */
int
is_array_like(LeakyState *st, PyObject *obj)
{
    if (!numpy_is_imported(st->str_array_protocols[NUMPY_NAME])) {
        return 0;
    }
    if (PyObject_CheckBuffer(obj)) {
        return is_ndarray_subclass(obj);
    }
    for (int i = 0; i < N_PROTOCOLS; i++) {
        PyObject *owner = i < N_METHODS ? (PyObject *)Py_TYPE(obj) : obj;
        if (has_attribute(owner, st->str_array_protocols[i], i < N_METHODS)) {
            return 1;
        }
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* The route                                                          */
/* ------------------------------------------------------------------ */

/* leaky.ufunc.<name>(*args, out=out_obj); out_obj may be NULL. */
static PyObject *
call_ufunc(const char *name, PyObject **args, Py_ssize_t nargs, PyObject *out_obj)
{
    PyObject *result = NULL, *kwnames = NULL, *func = NULL;
    PyObject *module = PyImport_ImportModule("leaky.ufunc");
    if (module == NULL) {
        goto done;
    }
    func = PyObject_GetAttrString(module, name);
    if (func == NULL) {
        goto done;
    }
    if (out_obj != NULL) {
        kwnames = Py_BuildValue("(s)", "out");
        if (kwnames == NULL) {
            goto done;
        }
        args[nargs] = out_obj;  /* the caller left room for it */
    }
    result = PyObject_Vectorcall(func, args, (size_t)nargs, kwnames);
done:
    Py_XDECREF(kwnames);
    Py_XDECREF(func);
    Py_XDECREF(module);
    return result;
}

PyObject *
unary_via_ufunc(LeakyState *st, UnaryOp op, PyObject *z, PyObject *alpha_obj, PyObject *out_obj)
{
    PyObject *args[3] = {z, alpha_obj != NULL ? alpha_obj : st->default_alpha, NULL};
    return call_ufunc(op == OP_FORWARD ? "leaky_relu" : "leaky_relu_grad", args, 2, out_obj);
}

PyObject *
backward_via_ufunc(LeakyState *st, PyObject *grad, PyObject *z, PyObject *alpha_obj,
                   PyObject *out_obj)
{
    PyObject *args[4] = {grad, z, alpha_obj != NULL ? alpha_obj : st->default_alpha, NULL};
    return call_ufunc("leaky_relu_backward", args, 3, out_obj);
}

/*
 * parse_alpha failed on obj: if it is an array of slopes, say where
 * broadcasting slopes live rather than pass on NumPy's "only 0-dimensional
 * arrays can be converted" (or pandas' "cannot convert the series").
 * Leaves any other error as it is.
 */
void
explain_array_alpha(const char *fname, PyObject *obj)
{
    if (!PyErr_ExceptionMatches(PyExc_TypeError) && !PyErr_ExceptionMatches(PyExc_ValueError)) {
        return;
    }
    PyObject *type, *value, *traceback;
    PyErr_Fetch(&type, &value, &traceback);
    int array_like = PyObject_CheckBuffer(obj);
    for (int i = 0; i < N_PROTOCOLS && !array_like && numpy_is_imported(NULL); i++) {
        PyObject *owner = i < N_METHODS ? (PyObject *)Py_TYPE(obj) : obj;
        array_like = PyObject_HasAttrString(owner, PROTOCOLS[i]);  /* an error path: slow is fine */
    }
    if (!array_like) {
        PyErr_Restore(type, value, traceback);
        return;
    }
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(traceback);
    PyErr_Format(PyExc_TypeError,
                 "%s() argument 'alpha' must be a real number, not an array (%.200s); for "
                 "per-element or per-channel slopes use leaky.ufunc.%s(), which broadcasts "
                 "alpha against z",
                 fname, Py_TYPE(obj)->tp_name, fname);
}
