/*
 * leaky._leaky: Leaky ReLU, its gradient and its fused backward pass for
 * Python numbers, sequences and anything that exports the buffer protocol.
 *
 * This file is the module: argument parsing, the three public functions
 * with their scalar fast path, module state and multi-phase init.  The work
 * is done in the files leaky.h lists; docs/architecture.md shows how a call
 * flows through them.
 *
 * The public functions are the C functions themselves: a Python-level
 * wrapper would cost more than the whole computation on a float.
 */
#include "leaky.h"

/* ------------------------------------------------------------------ */
/* Argument parsing                                                   */
/* ------------------------------------------------------------------ */

typedef struct {
    const char *name;       /* for messages: "leaky_relu" */
    int n_positional;       /* parameters that may be passed by position */
    int n_required;
    int n_params;           /* the rest are keyword-only */
} Signature;

/*
 * A hand-written vectorcall parser whose messages read like those of
 * CPython's own builtins.  values[] receives borrowed references, NULL for
 * absent arguments.
 */
static int
parse_arguments(const Signature *sig, PyObject *const *names, PyObject *const *args,
                Py_ssize_t nargs, PyObject *kwnames, PyObject **values)
{
    for (int i = 0; i < sig->n_params; i++) {
        values[i] = NULL;
    }
    if (nargs > sig->n_positional) {
        PyErr_Format(PyExc_TypeError,
                     "%s() takes from %d to %d positional arguments but %zd were given",
                     sig->name, sig->n_required, sig->n_positional, nargs);
        return -1;
    }
    for (Py_ssize_t i = 0; i < nargs; i++) {
        values[i] = args[i];
    }
    Py_ssize_t nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    for (Py_ssize_t k = 0; k < nkw; k++) {
        PyObject *key = PyTuple_GET_ITEM(kwnames, k);
        int found = -1;
        for (int i = 0; i < sig->n_params && found < 0; i++) {
            if (key == names[i]) {
                found = i;
            }
        }
        for (int i = 0; i < sig->n_params && found < 0; i++) {
            int eq = PyUnicode_Compare(key, names[i]) == 0;
            if (PyErr_Occurred()) {
                return -1;
            }
            if (eq) {
                found = i;
            }
        }
        if (found < 0) {
            PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument '%S'",
                         sig->name, key);
            return -1;
        }
        if (values[found] != NULL) {
            PyErr_Format(PyExc_TypeError,
                         "argument for %s() given by name ('%U') and position (%d)",
                         sig->name, names[found], found + 1);
            return -1;
        }
        values[found] = args[nargs + k];
    }
    for (int i = 0; i < sig->n_required; i++) {
        if (values[i] == NULL) {
            PyErr_Format(PyExc_TypeError, "%s() missing required argument '%U' (pos %d)",
                         sig->name, names[i], i + 1);
            return -1;
        }
    }
    return 0;
}

/* alpha as a C double; accepts float, int and anything with __float__ or __index__. */
static int
parse_alpha(const char *fname, PyObject *obj, double *alpha)
{
    if (obj == NULL) {
        *alpha = LEAKY_DEFAULT_ALPHA;
        return 0;
    }
    if (PyFloat_CheckExact(obj)) {
        *alpha = PyFloat_AS_DOUBLE(obj);
        return 0;
    }
    if (!is_real_number(obj)) {
        PyErr_Format(PyExc_TypeError,
                     "%s() argument 'alpha' must be a real number, not %.200s",
                     fname, Py_TYPE(obj)->tp_name);
        explain_array_alpha(fname, obj);
        return -1;
    }
    double value = PyFloat_AsDouble(obj);
    if (value == -1.0 && PyErr_Occurred()) {
        explain_array_alpha(fname, obj);  /* slopes as an array: point at leaky.ufunc */
        return -1;
    }
    *alpha = value;
    return 0;
}

/* threads=None (choose by size) or a count >= 1, as an int; 0 means None. */
static int
parse_threads(const char *fname, PyObject *obj, int *threads)
{
    *threads = 0;
    if (obj == NULL || obj == Py_None) {
        return 0;
    }
    /* any integer that says so through __index__ (numpy.int64, say), as for
       range(); bool is an int but never a thread count */
    if (PyBool_Check(obj) || !PyIndex_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s() argument 'threads' must be an int or None, not %.200s",
                     fname, Py_TYPE(obj)->tp_name);
        return -1;
    }
    PyObject *count = PyNumber_Index(obj);
    if (count == NULL) {
        return -1;
    }
    int overflow;
    long value = PyLong_AsLongAndOverflow(count, &overflow);
    Py_DECREF(count);
    if (value == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (overflow < 0 || (overflow == 0 && value < 1)) {
        PyErr_Format(PyExc_ValueError, "%s() argument 'threads' must be at least 1, got %S",
                     fname, obj);
        return -1;
    }
    *threads = (overflow > 0 || value > LEAKY_MAX_THREADS) ? LEAKY_MAX_THREADS : (int)value;
    return 0;
}
/* ------------------------------------------------------------------ */
/* The public functions, with their scalar fast path                  */
/* ------------------------------------------------------------------ */

static int
reject_out_for(const char *fname, PyObject *out_obj, PyObject *z)
{
    if (out_obj == NULL) {
        return 0;
    }
    PyErr_Format(PyExc_TypeError,
                 "%s() argument 'out' is only supported for buffer and tensor inputs, not %.200s",
                 fname, Py_TYPE(z)->tp_name);
    return -1;
}

static PyObject *
unary_entry(PyObject *module, UnaryOp op, const Signature *sig, PyObject *const *args,
            Py_ssize_t nargs, PyObject *kwnames)
{
    LeakyState *st = get_state(module);
    PyObject *names[4] = {st->str_z, st->str_alpha, st->str_out, st->str_threads};
    PyObject *values[4];
    if (parse_arguments(sig, names, args, nargs, kwnames, values) < 0) {
        return NULL;
    }
    PyObject *z = values[0], *alpha_obj = values[1];
    PyObject *out_obj = values[2] == Py_None ? NULL : values[2];
    double alpha;
    int threads;
    if (parse_alpha(sig->name, alpha_obj, &alpha) < 0 ||
        parse_threads(sig->name, values[3], &threads) < 0) {
        return NULL;
    }
    if (is_exact_number(z)) {
        if (reject_out_for(sig->name, out_obj, z) < 0) {
            return NULL;
        }
        return unary_number(st, op, z, alpha_obj, alpha);
    }
    if (PyObject_CheckBuffer(z)) {
        if (is_ndarray_subclass(z)) {  /* a masked array keeps its mask (array_route.c) */
            return unary_via_ufunc(st, op, z, alpha_obj, out_obj);
        }
        return unary_buffer(st, op, sig->name, z, out_obj, alpha, threads);
    }
    /* torch and array-API tensors, and Arrow arrays and streams (pyarrow, a
       polars Series), which keep their type and nulls on the array paths */
    int array = takes_array_path(st, z);
    if (array != 0) {
        return array < 0 ? NULL : unary_buffer(st, op, sig->name, z, out_obj, alpha, threads);
    }
    if (!is_sequence(z) && is_array_like(st, z)) {  /* pandas, xarray, Dask: leaky.ufunc */
        return unary_via_ufunc(st, op, z, alpha_obj, out_obj);
    }
    if (reject_out_for(sig->name, out_obj, z) < 0) {
        return NULL;
    }
    if (is_sequence(z)) {
        return unary_sequence(st, op, z, alpha_obj, alpha);
    }
    return unary_number(st, op, z, alpha_obj, alpha);
}

static const Signature FORWARD_SIGNATURE = {"leaky_relu", 2, 1, 4};
static const Signature GRAD_SIGNATURE = {"leaky_relu_grad", 2, 1, 4};
static const Signature BACKWARD_SIGNATURE = {"leaky_relu_backward", 3, 2, 5};

/*
 * The hot path, before the general parser: is this a call on an exact float,
 * int or bool with the default slope, a float slope by position, or alpha=
 * a float by keyword (call sites pass the interned name, so a pointer
 * compare finds it)?  If so, *alpha_obj is the slope given (NULL for the
 * default) and the caller computes the answer at once.  Kept small and
 * inline: a scalar call should cost about what abs(x) does.
 */
static inline int
is_plain_number_call(PyObject *module, PyObject *const *args, Py_ssize_t nargs,
                     PyObject *kwnames, PyObject **alpha_obj)
{
    if (nargs < 1 || nargs > 2 || !is_exact_number(args[0])) {
        return 0;
    }
    if (kwnames == NULL) {
        *alpha_obj = nargs == 2 ? args[1] : NULL;
    }
    else if (nargs == 1 && PyTuple_GET_SIZE(kwnames) == 1 &&
             PyTuple_GET_ITEM(kwnames, 0) == get_state(module)->str_alpha) {
        *alpha_obj = args[1];
    }
    else {
        return 0;
    }
    return *alpha_obj == NULL || PyFloat_CheckExact(*alpha_obj);
}

static inline double
plain_alpha(PyObject *alpha_obj)
{
    return alpha_obj == NULL ? LEAKY_DEFAULT_ALPHA : PyFloat_AS_DOUBLE(alpha_obj);
}

static PyObject *
leaky_relu(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *alpha_obj;
    if (is_plain_number_call(module, args, nargs, kwnames, &alpha_obj)) {
        return forward_exact_number(args[0], plain_alpha(alpha_obj));
    }
    return unary_entry(module, OP_FORWARD, &FORWARD_SIGNATURE, args, nargs, kwnames);
}

static PyObject *
leaky_relu_grad(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *alpha_obj;
    if (is_plain_number_call(module, args, nargs, kwnames, &alpha_obj)) {
        return grad_exact_number(get_state(module), args[0], alpha_obj, plain_alpha(alpha_obj));
    }
    return unary_entry(module, OP_GRAD, &GRAD_SIGNATURE, args, nargs, kwnames);
}

static PyObject *
leaky_relu_backward(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    LeakyState *st = get_state(module);
    const char *fname = BACKWARD_SIGNATURE.name;
    PyObject *names[5] = {st->str_grad_output, st->str_z, st->str_alpha, st->str_out,
                          st->str_threads};
    PyObject *values[5];
    if (parse_arguments(&BACKWARD_SIGNATURE, names, args, nargs, kwnames, values) < 0) {
        return NULL;
    }
    PyObject *grad = values[0], *z = values[1], *alpha_obj = values[2];
    PyObject *out_obj = values[3] == Py_None ? NULL : values[3];
    double alpha;
    int threads;
    if (parse_alpha(fname, alpha_obj, &alpha) < 0 ||
        parse_threads(fname, values[4], &threads) < 0) {
        return NULL;
    }
    int grad_is_buffer = takes_array_path(st, grad), z_is_buffer = takes_array_path(st, z);
    if (grad_is_buffer < 0 || z_is_buffer < 0) {
        return NULL;
    }
    if (grad_is_buffer && z_is_buffer) {
        if (is_ndarray_subclass(grad) || is_ndarray_subclass(z)) {  /* array_route.c */
            return backward_via_ufunc(st, grad, z, alpha_obj, out_obj);
        }
        return backward_buffer(st, grad, z, out_obj, alpha, threads);
    }
    int grad_is_seq = is_sequence(grad), z_is_seq = is_sequence(z);
    /* pandas, xarray, Dask, masked arrays on either side: leaky.ufunc (array_route.c) */
    if ((!grad_is_seq && !is_exact_number(grad) && is_array_like(st, grad)) ||
        (!z_is_seq && !is_exact_number(z) && is_array_like(st, z))) {
        return backward_via_ufunc(st, grad, z, alpha_obj, out_obj);
    }
    if (grad_is_buffer || z_is_buffer || grad_is_seq != z_is_seq) {
        PyErr_Format(PyExc_TypeError,
                     "%s() grad_output and z must both be buffers or tensors, both sequences "
                     "or both numbers, not %.200s and %.200s",
                     fname, Py_TYPE(grad)->tp_name, Py_TYPE(z)->tp_name);
        return NULL;
    }
    if (reject_out_for(fname, out_obj, grad) < 0) {
        return NULL;
    }
    if (grad_is_seq) {
        return backward_sequence(st, grad, z, alpha_obj, alpha);
    }
    return backward_number(st, grad, z, alpha_obj, alpha);
}

/* ------------------------------------------------------------------ */
/* Module definition                                                  */
/* ------------------------------------------------------------------ */

PyDoc_STRVAR(leaky_relu_doc,
"leaky_relu($module, z, alpha=0.01, *, out=None, threads=None)\n"
"--\n"
"\n"
"Leaky ReLU: z where z > 0, else alpha * z.\n"
"\n"
"z may be a Python number (a float gives a float; an int >= 0 comes back\n"
"unchanged, a negative int gives the float alpha * z; other real numbers such\n"
"as Fraction use Python's own operators), a list or tuple of numbers (gives a\n"
"list), or any buffer: NumPy arrays and scalars, array.array, memoryview,\n"
"bytes, ctypes arrays.  float16, float32 and float64 buffers keep their\n"
"format; integer and bool buffers give float64.  float32 computes\n"
"z * float32(alpha) in float32; float16 computes in float32 and rounds once,\n"
"as PyTorch does.  A NumPy input gives a NumPy result, array.array gives\n"
"array.array, anything else a memoryview.  CPU tensors with __dlpack__\n"
"(PyTorch, JAX, array-API libraries; bfloat16 included) are read through\n"
"DLPack and give a tensor of their own library.\n"
"\n"
"out, for buffers and tensors only, receives the result and is returned;\n"
"it may be z itself (in place) and may overlap z.\n"
"\n"
"threads, for buffers only: None splits large arrays (32768 elements and\n"
"up) across all the CPUs this process may use; an int caps the count (1\n"
"keeps the work on the calling thread).  Large arrays release the GIL.");

PyDoc_STRVAR(leaky_relu_grad_doc,
"leaky_relu_grad($module, z, alpha=0.01, *, out=None, threads=None)\n"
"--\n"
"\n"
"Derivative of Leaky ReLU: 1 where z > 0, else alpha (so alpha at 0 and NaN).\n"
"\n"
"Takes the same inputs as leaky_relu.  Exact floats and ints give a float;\n"
"other real numbers give 1 or alpha as passed.  float16 buffers hold\n"
"float16(float32(alpha)).");

PyDoc_STRVAR(leaky_relu_backward_doc,
"leaky_relu_backward($module, grad_output, z, alpha=0.01, *, out=None, threads=None)\n"
"--\n"
"\n"
"Fused backward pass: grad_output * (1 if z > 0 else alpha), element-wise.\n"
"\n"
"grad_output and z are both buffers of the same shape, both sequences of\n"
"the same length, or both numbers.  The result has grad_output's format\n"
"(float64 for integer formats); z only decides the sign test.  Same as\n"
"PyTorch's aten.leaky_relu_backward.");

/* _tune(gil_threshold=-1, parallel_threshold=-1, stream_bytes=-1): -1 keeps a value. */
static PyObject *
leaky_tune(PyObject *module, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"gil_threshold", "parallel_threshold", "stream_bytes", NULL};
    Tuning *tuning = &get_state(module)->tuning;
    Py_ssize_t values[3] = {-1, -1, -1};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|nnn:_tune", keywords, &values[0],
                                     &values[1], &values[2])) {
        return NULL;
    }
    long long *fields[3] = {&tuning->gil_threshold, &tuning->parallel_threshold,
                            &tuning->stream_bytes};
    for (int i = 0; i < 3; i++) {
        if (values[i] >= 0) {
            ATOMIC_STORE(fields[i], (long long)values[i]);
        }
    }
    /* each value went in as a Py_ssize_t, so it comes back out as one */
    return Py_BuildValue("{snsnsn}", keywords[0], (Py_ssize_t)ATOMIC_LOAD(fields[0]),
                         keywords[1], (Py_ssize_t)ATOMIC_LOAD(fields[1]), keywords[2],
                         (Py_ssize_t)ATOMIC_LOAD(fields[2]));
}

/* _default_thread_count(root): the automatic pool size with the cgroup files
   read under `root` (pool.c, thread_count_for); for tests only. */
static PyObject *
leaky_default_thread_count(PyObject *module, PyObject *root)
{
    PyObject *bytes = NULL, *result = NULL;
    if (!PyUnicode_FSConverter(root, &bytes)) {
        return NULL;
    }
    result = PyLong_FromLong(thread_count_for(PyBytes_AS_STRING(bytes)));
    Py_DECREF(bytes);
    return result;
}

/* _worker_parts(): parts each worker of this process's pool has run, () before
   the pool exists.  Tests use it to see that threads=N keeps to N. */
static PyObject *
leaky_worker_parts(PyObject *module, PyObject *unused)
{
    return pool_worker_parts(ATOMIC_LOAD_PTR(&get_state(module)->pool));
}

/* _numpy_fast_path(): "untried", "loading", "ready" or "unusable".  Tests
   check that an exact ndarray found NumPy's layout usable, so the suite run
   against NumPy 1.x (.ci/run) proves the fast path on both struct layouts. */
static PyObject *
leaky_numpy_fast_path(PyObject *module, PyObject *unused)
{
    static const char *const names[] = {[LOOKUP_UNTRIED] = "untried",
                                        [LOOKUP_LOADING] = "loading",
                                        [LOOKUP_READY] = "ready",
                                        [LOOKUP_UNUSABLE] = "unusable"};
    long long api = ATOMIC_LOAD(&get_state(module)->numpy_api);
    assert(api >= LOOKUP_UNTRIED && api <= LOOKUP_UNUSABLE);
    return PyUnicode_FromString(names[api]);
}

static PyMethodDef leaky_methods[] = {
    {"leaky_relu", (PyCFunction)(void (*)(void))leaky_relu, METH_FASTCALL | METH_KEYWORDS,
     leaky_relu_doc},
    {"leaky_relu_grad", (PyCFunction)(void (*)(void))leaky_relu_grad,
     METH_FASTCALL | METH_KEYWORDS, leaky_relu_grad_doc},
    {"leaky_relu_backward", (PyCFunction)(void (*)(void))leaky_relu_backward,
     METH_FASTCALL | METH_KEYWORDS, leaky_relu_backward_doc},
    {"_tune", (PyCFunction)(void (*)(void))leaky_tune, METH_VARARGS | METH_KEYWORDS,
     "Read (and, for tests and tuning, set) the size thresholds; returns them as a dict."},
    {"_worker_parts", leaky_worker_parts, METH_NOARGS,
     "Parts of parallel calls that each pool worker has run (for tests)."},
    {"_default_thread_count", leaky_default_thread_count, METH_O,
     "The pool size default_thread_count() picks, with the cgroup files read under "
     "the given root instead of / (for tests, on fabricated cgroup trees)."},
    {"_numpy_fast_path", leaky_numpy_fast_path, METH_NOARGS,
     "Whether exact ndarrays are read straight off NumPy's structs (for tests)."},
    {NULL, NULL, 0, NULL},
};

static int
intern_into(PyObject **slot, const char *text)
{
    *slot = PyUnicode_InternFromString(text);
    return *slot == NULL ? -1 : 0;
}

/*
 * The best kernel path this CPU supports, unless LEAKY_KERNELS names one
 * (for tests and for comparing paths): "portable", "avx2", "avx512" or (arm64) "neon".
 * Exposes _kernels (the path in use) and _supported_kernels (best first).
 */
static int
choose_kernels(PyObject *module, LeakyState *st)
{
    const KernelTable *tables[4];
    int count = supported_kernels(tables);
    PyObject *names = PyTuple_New(count);
    if (names == NULL) {
        return -1;
    }
    for (int i = 0; i < count; i++) {
        PyObject *name = PyUnicode_FromString(tables[i]->name);
        if (name == NULL) {
            Py_DECREF(names);
            return -1;
        }
        PyTuple_SET_ITEM(names, i, name);
    }
    int added = PyModule_AddObjectRef(module, "_supported_kernels", names);
    Py_DECREF(names);
    if (added < 0) {
        return -1;
    }
    st->kernels = tables[0];
    const char *forced = getenv("LEAKY_KERNELS");
    if (forced != NULL && forced[0] != '\0') {
        st->kernels = NULL;
        for (int i = 0; i < count; i++) {
            if (strcmp(forced, tables[i]->name) == 0) {
                st->kernels = tables[i];
            }
        }
        if (st->kernels == NULL) {
            PyErr_Format(PyExc_ImportError,
                         "LEAKY_KERNELS=%s is not a kernel path this CPU supports", forced);
            return -1;
        }
    }
    return PyModule_AddStringConstant(module, "_kernels", st->kernels->name);
}

/*
 * LEAKY_NUM_THREADS=N caps the threads a call may use (the pool is made with
 * N - 1 workers), as OMP_NUM_THREADS does for OpenMP: for processes that
 * share a machine, such as Dask workers.  It may exceed the CPU count (tests
 * use that to get a pool of several workers on a 2-CPU machine).
 *
 * A bad value never stops the import; as OpenMP runtimes do, leaky says so
 * with a RuntimeWarning naming the count it uses instead.  Whitespace
 * around the number is ignored on both sides; empty (or blank) means unset.
 * No count ("abc", "0", "-1", "2.5"): the automatic count.  Above the cap
 * (LEAKY_MAX_THREADS, see default_thread_count): the cap.  Returns -1 only
 * if the warning itself raised (warnings turned into errors).
 */
static int
thread_count_from_env(int *max_threads)
{
    const char *text = getenv("LEAKY_NUM_THREADS");
    if (text == NULL) {
        return 0;
    }
    const char *blank = " \t\n\v\f\r";
    const char *start = text, *stop = text + strlen(text);
    while (*start != '\0' && strchr(blank, *start) != NULL) {
        start++;
    }
    while (stop > start && strchr(blank, stop[-1]) != NULL) {
        stop--;
    }
    if (start == stop) {
        return 0;
    }
    const char *digit = *start == '+' ? start + 1 : start;
    long value = 0;
    int is_count = digit < stop;
    for (; is_count && digit < stop; digit++) {
        if (*digit < '0' || *digit > '9') {
            is_count = 0;
        }
        else if (value <= LEAKY_MAX_THREADS) {  /* past the cap: stays past it */
            value = value * 10 + (*digit - '0');
        }
    }
    if (is_count && value >= 1 && value <= LEAKY_MAX_THREADS) {
        *max_threads = (int)value;
        return 0;
    }
    PyObject *shown = PyUnicode_DecodeFSDefault(text);  /* as os.environ shows it */
    if (shown == NULL) {
        return -1;
    }
    int warned;
    if (is_count && value > LEAKY_MAX_THREADS) {
        *max_threads = LEAKY_MAX_THREADS;
        warned = PyErr_WarnFormat(PyExc_RuntimeWarning, 1,
                                  "LEAKY_NUM_THREADS=%R is more than leaky's cap of %d "
                                  "threads; using %d",
                                  shown, LEAKY_MAX_THREADS, LEAKY_MAX_THREADS);
    }
    else {
        warned = PyErr_WarnFormat(PyExc_RuntimeWarning, 1,
                                  "LEAKY_NUM_THREADS=%R is not a thread count (a whole "
                                  "number from 1 to %d); ignored, using %d (the CPUs this "
                                  "process may use)",
                                  shown, LEAKY_MAX_THREADS, *max_threads);
    }
    Py_DECREF(shown);
    return warned;
}

static int
leaky_exec(PyObject *module)
{
    LeakyState *st = get_state(module);
    st->result_buffer_type =
        (PyTypeObject *)PyType_FromModuleAndSpec(module, &result_buffer_spec, NULL);
    if (st->result_buffer_type == NULL) {
        return -1;
    }
    if (PyModule_AddType(module, st->result_buffer_type) < 0) {
        return -1;
    }
    st->default_alpha = PyFloat_FromDouble(LEAKY_DEFAULT_ALPHA);
    st->one_float = PyFloat_FromDouble(1.0);
    st->zero = PyLong_FromLong(0);
    st->one = PyLong_FromLong(1);
    if (st->default_alpha == NULL || st->one_float == NULL || st->zero == NULL ||
        st->one == NULL) {
        return -1;
    }
    if (dlpack_init_state(st) < 0) {
        return -1;
    }
    if (intern_into(&st->str_z, "z") < 0 || intern_into(&st->str_alpha, "alpha") < 0 ||
        intern_into(&st->str_out, "out") < 0 || intern_into(&st->str_threads, "threads") < 0 ||
        intern_into(&st->str_grad_output, "grad_output") < 0) {
        return -1;
    }
    /* leaky/__init__.py imports us, so the package's submodules are importable here. */
    PyObject *containers = PyImport_ImportModule("leaky._containers");
    if (containers == NULL) {
        return -1;
    }
    st->new_result = PyObject_GetAttrString(containers, "new_result");
    st->arrow_result = st->new_result ? PyObject_GetAttrString(containers, "arrow_result") : NULL;
    Py_DECREF(containers);
    if (st->arrow_result == NULL ||
        intern_into(&st->str_arrow_c_array, "__arrow_c_array__") < 0 ||
        intern_into(&st->str_arrow_c_stream, "__arrow_c_stream__") < 0) {
        return -1;
    }
    st->max_threads = default_thread_count();
    if (thread_count_from_env(&st->max_threads) < 0) {
        return -1;
    }
    st->tuning.gil_threshold = LEAKY_GIL_THRESHOLD;
    st->tuning.parallel_threshold = LEAKY_PARALLEL_THRESHOLD;
    st->tuning.stream_bytes = LEAKY_STREAM_BYTES;
#ifdef NDEBUG
    const int assertions = 0;
#else
    const int assertions = 1;  /* lets the hardening scripts check what they built */
#endif
    if (PyModule_AddIntConstant(module, "_assertions", assertions) < 0 ||
        PyModule_AddIntConstant(module, "PYBUF_MAX_NDIM", PyBUF_MAX_NDIM) < 0 ||
        PyModule_AddIntConstant(module, "_max_threads", st->max_threads) < 0 ||
        PyModule_AddIntConstant(module, "_thread_cap", LEAKY_MAX_THREADS) < 0) {
        return -1;
    }
    if (choose_kernels(module, st) < 0) {
        return -1;
    }
    return add_ufunc_api(module, st);  /* after choose_kernels: it hands on st->kernels */
}

static int
leaky_traverse(PyObject *module, visitproc visit, void *arg)
{
    LeakyState *st = get_state(module);
    Py_VISIT(st->result_buffer_type);
    Py_VISIT(st->new_result);
    Py_VISIT(st->arrow_result);
    Py_VISIT(st->numpy_core);
    return 0;
}

static int
leaky_clear(PyObject *module)
{
    LeakyState *st = get_state(module);
    Py_CLEAR(st->result_buffer_type);
    Py_CLEAR(st->new_result);
    Py_CLEAR(st->arrow_result);
    Py_CLEAR(st->str_arrow_c_array);
    Py_CLEAR(st->str_arrow_c_stream);
    Py_CLEAR(st->numpy_core);
    st->ndarray_type = NULL;
    st->numpy_new_array = NULL;
    st->numpy_api = LOOKUP_UNUSABLE;  /* torn down: never looked up again */
    Py_CLEAR(st->default_alpha);
    Py_CLEAR(st->one_float);
    Py_CLEAR(st->zero);
    Py_CLEAR(st->one);
    Py_CLEAR(st->str_z);
    Py_CLEAR(st->str_alpha);
    Py_CLEAR(st->str_out);
    Py_CLEAR(st->str_threads);
    Py_CLEAR(st->str_grad_output);
    dlpack_clear_state(st);
    clear_array_route(st);
    return 0;
}

static void
leaky_free(void *module)
{
    LeakyState *st = get_state((PyObject *)module);
    if (st != NULL) {
        pool_free(st->pool);  /* stops and joins the workers */
        st->pool = NULL;
    }
    (void)leaky_clear((PyObject *)module);
}

static PyModuleDef_Slot leaky_slots[] = {
    {Py_mod_exec, leaky_exec},
#ifdef Py_mod_multiple_interpreters
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
#endif
#ifdef Py_mod_gil
    {Py_mod_gil, Py_MOD_GIL_NOT_USED},
#endif
    {0, NULL},
};

static struct PyModuleDef leaky_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "leaky._leaky",
    .m_doc = "C implementation of leaky's Leaky ReLU functions.",
    .m_size = sizeof(LeakyState),
    .m_methods = leaky_methods,
    .m_slots = leaky_slots,
    .m_traverse = leaky_traverse,
    .m_clear = leaky_clear,
    .m_free = leaky_free,
};

PyMODINIT_FUNC
PyInit__leaky(void)
{
    return PyModuleDef_Init(&leaky_module);
}
