/*
 * numbers.c: Python numbers, and lists and tuples of them, one element at a
 * time.  Exact floats, ints and bools are computed in C (the helpers in
 * leaky.h, which leaky.c's scalar fast path inlines); other real numbers
 * (Fraction, Decimal, NumPy scalars without a buffer) use Python's own
 * comparison and multiplication.
 */
#include "leaky.h"

/* A float, an int, or anything else with __float__ or __index__ (Fraction,
   Decimal, NumPy scalars): what alpha and a number grad_output may be. */
int
is_real_number(PyObject *obj)
{
    if (PyFloat_Check(obj) || PyLong_Check(obj)) {
        return 1;
    }
    PyNumberMethods *nb = Py_TYPE(obj)->tp_as_number;
    return nb != NULL && (nb->nb_float != NULL || nb->nb_index != NULL);
}

/* Whether the type of obj has attribute `name`, without raising: 1 or 0. */
static int
type_has(PyObject *obj, PyObject *name)
{
    PyObject *found;
#if PY_VERSION_HEX >= 0x030D0000
    if (PyObject_GetOptionalAttr((PyObject *)Py_TYPE(obj), name, &found) < 0) {
        PyErr_Clear();
        return 0;
    }
#else
    found = PyObject_GetAttr((PyObject *)Py_TYPE(obj), name);
    if (found == NULL) {
        PyErr_Clear();
    }
#endif
    Py_XDECREF(found);
    return found != NULL;
}

/*
 * What the number path accepts as z or grad_output (it runs Python's
 * `z > 0` on it, and multiplies), so that no array-like ever reaches it: a
 * float or int (subclasses included), or an object whose type has
 * __float__ or __index__ (Fraction, Decimal, your own real numbers) and is
 * no collection and no array: no __len__ (sequence or mapping), no
 * __iter__, and none of __array__, __array_interface__, __array_struct__
 * or __dlpack__.  Checked on the type, so a __getattr__ cannot fake it.
 * Looser than alpha's is_real_number on purpose: alpha is one number by
 * definition, where NumPy's scalars (which have __array__) are welcome.
 */
int
is_number_operand(LeakyState *st, PyObject *obj)
{
    if (PyFloat_Check(obj) || PyLong_Check(obj)) {
        return 1;
    }
    PyTypeObject *type = Py_TYPE(obj);
    PyNumberMethods *nb = type->tp_as_number;
    if (nb == NULL || (nb->nb_float == NULL && nb->nb_index == NULL)) {
        return 0;
    }
    if ((type->tp_as_sequence != NULL && type->tp_as_sequence->sq_length != NULL) ||
        (type->tp_as_mapping != NULL && type->tp_as_mapping->mp_length != NULL) ||
        type->tp_iter != NULL) {
        return 0;
    }
    for (int i = 0; i < 4; i++) {
        if (type_has(obj, st->array_like_names[i])) {
            return 0;
        }
    }
    return 1;
}

/* The TypeError for a z or grad_output that the number path refuses (in a
   list, unary_nested and backward_nested add the position). */
static PyObject *
refuse_number(const char *fname, const char *argname, PyObject *obj)
{
    if (is_jax_tracer(obj)) {
        explain_jax_tracer(fname, argname, obj);
    }
    else {
        PyErr_Format(PyExc_TypeError,
                     "%s() argument '%s' must be a real number, a list or tuple of them, a "
                     "buffer or a DLPack tensor, not %.200s",
                     fname, argname, Py_TYPE(obj)->tp_name);
    }
    return NULL;
}

/* z as a double for exact floats and ints; -1 with an exception on overflow. */
static int
exact_number_as_double(PyObject *z, double *out)
{
    if (PyFloat_CheckExact(z)) {
        *out = PyFloat_AS_DOUBLE(z);
        return 0;
    }
    *out = PyLong_AsDouble(z);
    return (*out == -1.0 && PyErr_Occurred()) ? -1 : 0;
}
/* z > 0 for any object, by Python's own comparison. */
static int
generic_is_positive(LeakyState *st, PyObject *z)
{
    return PyObject_RichCompareBool(z, st->zero, Py_GT);
}

static PyObject *
forward_number(LeakyState *st, PyObject *z, PyObject *alpha_obj, double alpha)
{
    if (is_exact_number(z)) {
        return forward_exact_number(z, alpha);
    }
    if (!is_number_operand(st, z)) {
        return refuse_number("leaky_relu", "z", z);
    }
    int positive = generic_is_positive(st, z);
    if (positive < 0) {
        return NULL;
    }
    if (positive) {
        return Py_NewRef(z);
    }
    return PyNumber_Multiply(alpha_obj ? alpha_obj : st->default_alpha, z);
}

static PyObject *
grad_number(LeakyState *st, PyObject *z, PyObject *alpha_obj, double alpha)
{
    if (is_exact_number(z)) {
        return grad_exact_number(st, z, alpha_obj, alpha);
    }
    if (!is_number_operand(st, z)) {
        return refuse_number("leaky_relu_grad", "z", z);
    }
    int positive = generic_is_positive(st, z);
    if (positive < 0) {
        return NULL;
    }
    return Py_NewRef(positive ? st->one : (alpha_obj ? alpha_obj : st->default_alpha));
}

PyObject *
backward_number(LeakyState *st, PyObject *grad, PyObject *z, PyObject *alpha_obj, double alpha)
{
    if (is_exact_number(grad) && is_exact_number(z)) {
        double g;
        if (exact_number_as_double(grad, &g) < 0) {
            return NULL;
        }
        /* the NaN rule (leaky.h): a NaN g comes back quieted, whatever alpha is */
        return PyFloat_FromDouble(product64(g, exact_number_is_positive(z) ? 1.0 : alpha));
    }
    /* grad * 1 would hand back a str or a list unchanged: only numbers here,
       and the same ones leaky_relu takes as z */
    if (!is_number_operand(st, grad)) {
        return refuse_number("leaky_relu_backward", "grad_output", grad);
    }
    if (!is_number_operand(st, z)) {
        return refuse_number("leaky_relu_backward", "z", z);
    }
    int positive = generic_is_positive(st, z);
    if (positive < 0) {
        return NULL;
    }
    return PyNumber_Multiply(grad, positive ? st->one : (alpha_obj ? alpha_obj : st->default_alpha));
}

PyObject *
unary_number(LeakyState *st, UnaryOp op, PyObject *z, PyObject *alpha_obj, double alpha)
{
    return op == OP_FORWARD ? forward_number(st, z, alpha_obj, alpha)
                            : grad_number(st, z, alpha_obj, alpha);
}
/*
 * Lists and tuples, nested to any depth up to PyBUF_MAX_NDIM (NumPy's own
 * limit on dimensions): a list of the same shape, element by element, with
 * the number rules.  The nesting must be rectangular, as an array's: at each
 * depth every element is a sequence of one length, or every element a
 * number.  The walk is depth first in order, so the first element met at a
 * depth sets that depth's length and kind, and an error names the position
 * that breaks it, z[1][0] style.
 */
typedef struct {
    const char *fname;
    const char *argname;
    int number_depth;  /* depth of the sequences that hold numbers; -1 until seen */
    Py_ssize_t lengths[PyBUF_MAX_NDIM];  /* lengths[d]: of the sequences at depth d */
    int known;                           /* depths whose length is set */
    Py_ssize_t index[PyBUF_MAX_NDIM];    /* where the walk is, for messages */
} Nesting;

/* "z[1][0]": the name and the indices down to (not including) depth. */
static PyObject *
position_name(const Nesting *nest, int depth)
{
    PyObject *name = PyUnicode_FromString(nest->argname);
    for (int d = 0; d < depth && name != NULL; d++) {
        PyObject *longer = PyUnicode_FromFormat("%U[%zd]", name, nest->index[d]);
        Py_SETREF(name, longer);
    }
    return name;
}

/* "z[0][0]": the first position at a depth, which set its length and kind. */
static PyObject *
first_position_name(const Nesting *nest, int depth)
{
    PyObject *name = PyUnicode_FromString(nest->argname);
    for (int d = 0; d < depth && name != NULL; d++) {
        Py_SETREF(name, PyUnicode_FromFormat("%U[0]", name));
    }
    return name;
}

/* TypeError "leaky_relu() z is ragged: <at> ..., but <first> ...". */
static void
ragged(const Nesting *nest, int depth, const char *what_here, const char *what_first)
{
    PyObject *here = position_name(nest, depth);
    PyObject *first = here ? first_position_name(nest, depth) : NULL;
    if (first != NULL) {
        PyErr_Format(PyExc_TypeError, "%s() %s is ragged: %U %s, but %U %s", nest->fname,
                     nest->argname, here, what_here, first, what_first);
    }
    Py_XDECREF(here);
    Py_XDECREF(first);
}

/*
 * Checks a sequence of n elements found at depth against the shape seen so
 * far (and records its length if it is the first at that depth); -1 with a
 * TypeError if it breaks it.
 */
static int
nesting_enter(Nesting *nest, int depth, Py_ssize_t n)
{
    if (depth >= PyBUF_MAX_NDIM) {  /* a list that holds itself ends here too */
        PyErr_Format(PyExc_TypeError,
                     "%s() %s nests deeper than %d levels (NumPy's limit on dimensions)",
                     nest->fname, nest->argname, PyBUF_MAX_NDIM);
        return -1;
    }
    if (nest->number_depth >= 0 && depth >= nest->number_depth) {
        ragged(nest, depth, "is a sequence", "is a number");
        return -1;
    }
    if (depth == nest->known) {
        nest->lengths[depth] = n;
        nest->known++;
    }
    else if (nest->lengths[depth] != n) {
        PyObject *here = position_name(nest, depth);
        PyObject *first = here ? first_position_name(nest, depth) : NULL;
        if (first != NULL) {
            PyErr_Format(PyExc_TypeError,
                         "%s() %s is ragged: %U has %zd elements, but %U has %zd",
                         nest->fname, nest->argname, here, n, first, nest->lengths[depth]);
        }
        Py_XDECREF(here);
        Py_XDECREF(first);
        return -1;
    }
    return 0;
}

/* A number (not a sequence) at depth: z[i] is at depth 1.  Inline: it runs
   once per element of every list. */
static inline int
nesting_number(Nesting *nest, int depth)
{
    if ((nest->number_depth >= 0 && nest->number_depth != depth) || nest->known > depth) {
        ragged(nest, depth, "is a number", "is a sequence");
        return -1;
    }
    nest->number_depth = depth;
    return 0;
}

/*
 * An element's TypeError (a str, a dict: Python's `>` or `*` failed on it)
 * again, with its position in front: "leaky_relu() at z[0][1]: '>' not
 * supported ...", the original as its __cause__.  Elements are duck-typed as
 * in the number rules (anything with `>` and `*` works), so the position is
 * added when one fails rather than checked up front.
 */
static void
name_failed_element(const Nesting *nest, const Nesting *other, int depth)
{
    if (!PyErr_ExceptionMatches(PyExc_TypeError)) {
        return;
    }
    PyObject *type, *cause, *traceback;
    PyErr_Fetch(&type, &cause, &traceback);
    PyErr_NormalizeException(&type, &cause, &traceback);
    if (traceback != NULL && cause != NULL) {
        PyException_SetTraceback(cause, traceback);
    }
    Py_XDECREF(type);
    Py_XDECREF(traceback);
    PyObject *here = position_name(nest, depth);
    if (here != NULL && other != NULL) {  /* backward: "grad_output[1] and z[1]" */
        PyObject *there = position_name(other, depth);
        Py_SETREF(here, there ? PyUnicode_FromFormat("%U and %U", here, there) : NULL);
        Py_XDECREF(there);
    }
    /* the cause's own "leaky_relu() " in front would name the function twice */
    PyObject *text = cause != NULL ? PyObject_Str(cause) : NULL;
    PyObject *prefix = text != NULL ? PyUnicode_FromFormat("%s() ", nest->fname) : NULL;
    if (prefix != NULL && PyUnicode_Tailmatch(text, prefix, 0, PY_SSIZE_T_MAX, -1) == 1) {
        Py_SETREF(text, PyUnicode_Substring(text, PyUnicode_GET_LENGTH(prefix), PY_SSIZE_T_MAX));
    }
    Py_XDECREF(prefix);
    if (text == NULL) {
        Py_CLEAR(here);
    }
    if (here != NULL) {
        PyErr_Format(PyExc_TypeError, "%s() at %U: %U", nest->fname, here, text);
        Py_DECREF(here);
        PyObject *exc_type, *exc, *exc_tb;
        PyErr_Fetch(&exc_type, &exc, &exc_tb);
        PyErr_NormalizeException(&exc_type, &exc, &exc_tb);
        PyException_SetCause(exc, cause);  /* steals cause */
        cause = NULL;
        PyErr_Restore(exc_type, exc, exc_tb);
    }
    Py_XDECREF(text);
    Py_XDECREF(cause);
}

/*
 * A buffer in a list (a NumPy scalar, a 0-d array) is one element, as a
 * number is: 1 if obj is such a buffer, 0 if it is no buffer or an exact
 * number (the number rules apply), -1 with a TypeError for a buffer with
 * dimensions, which would make the list ragged.
 */
static int
is_zero_d_buffer(const Nesting *nest, PyObject *obj)
{
    if (is_exact_number(obj) || !PyObject_CheckBuffer(obj)) {
        return 0;
    }
    PyTypeObject *type = Py_TYPE(obj);
    if ((type->tp_as_sequence == NULL || type->tp_as_sequence->sq_length == NULL) &&
        (type->tp_as_mapping == NULL || type->tp_as_mapping->mp_length == NULL)) {
        return 1;  /* no len(): a NumPy scalar, even one that exports its bytes */
    }
    Py_buffer view;
    /* no format asked: ml_dtypes' scalars export only without one (the
       buffer route then names their dtype) */
    if (PyObject_GetBuffer(obj, &view, PyBUF_STRIDES) < 0) {
        PyErr_Clear();
        return 1;
    }
    int ndim = view.ndim;
    PyBuffer_Release(&view);
    if (ndim == 0) {
        return 1;
    }
    /* name_failed_element puts the position in front */
    PyErr_Format(PyExc_TypeError,
                 "%s() argument '%s' is a %.200s with %d dimensions, but a list or tuple holds "
                 "numbers, NumPy scalars and 0-d arrays (or lists of them)",
                 nest->fname, nest->argname, type->tp_name, ndim);
    return -1;
}

/* One element of a list: what the call on it alone gives. */
static PyObject *
unary_element(LeakyState *st, UnaryOp op, PyObject *item, const Nesting *nest,
              PyObject *alpha_obj, double alpha)
{
    int buffer = is_zero_d_buffer(nest, item);
    if (buffer < 0) {
        return NULL;
    }
    if (!buffer) {
        return unary_number(st, op, item, alpha_obj, alpha);
    }
    if (is_ndarray_subclass(item)) {
        return unary_via_ufunc(st, op, item, alpha_obj, NULL);
    }
    return unary_buffer(st, op, nest->fname, item, NULL, alpha, 1);
}

static PyObject *
backward_element(LeakyState *st, PyObject *g, PyObject *z, const Nesting *grads,
                 const Nesting *zs, PyObject *alpha_obj, double alpha)
{
    int g_buffer = is_zero_d_buffer(grads, g);
    int z_buffer = g_buffer < 0 ? -1 : is_zero_d_buffer(zs, z);
    if (z_buffer < 0) {
        return NULL;
    }
    if (!g_buffer && !z_buffer) {
        return backward_number(st, g, z, alpha_obj, alpha);
    }
    if (g_buffer && z_buffer) {
        if (is_ndarray_subclass(g) || is_ndarray_subclass(z)) {
            return backward_via_ufunc(st, g, z, alpha_obj, NULL);
        }
        return backward_buffer(st, g, z, NULL, alpha, 1);
    }
    PyErr_Format(PyExc_TypeError,
                 "leaky_relu_backward() grad_output and z must both be NumPy scalars or 0-d "
                 "arrays, or both numbers, not %.200s and %.200s",
                 Py_TYPE(g)->tp_name, Py_TYPE(z)->tp_name);
    return NULL;
}

static PyObject *
unary_nested(LeakyState *st, UnaryOp op, PyObject *seq, int depth, Nesting *nest,
             PyObject *alpha_obj, double alpha)
{
    /* A snapshot: an element's __gt__ may mutate the list under us. */
    PyObject *items = PySequence_Tuple(seq);
    if (items == NULL) {
        return NULL;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(items);
    PyObject *result = nesting_enter(nest, depth, n) < 0 ? NULL : PyList_New(n);
    for (Py_ssize_t i = 0; result != NULL && i < n; i++) {
        PyObject *item = PyTuple_GET_ITEM(items, i), *value = NULL;
        nest->index[depth] = i;
        if (is_sequence(item)) {
            value = unary_nested(st, op, item, depth + 1, nest, alpha_obj, alpha);
        }
        else if (nesting_number(nest, depth + 1) == 0) {
            value = unary_element(st, op, item, nest, alpha_obj, alpha);
            if (value == NULL) {
                name_failed_element(nest, NULL, depth + 1);
            }
        }
        if (value == NULL) {
            Py_CLEAR(result);
            break;
        }
        PyList_SET_ITEM(result, i, value);
    }
    Py_DECREF(items);
    return result;
}

PyObject *
unary_sequence(LeakyState *st, UnaryOp op, PyObject *seq, PyObject *alpha_obj, double alpha)
{
    /* fields set one by one: an initializer would zero the 1 KiB of arrays
       on every call, a third of what a 10-element list costs */
    Nesting nest;
    nest.fname = op == OP_FORWARD ? "leaky_relu" : "leaky_relu_grad";
    nest.argname = "z";
    nest.number_depth = -1;
    nest.known = 0;
    return unary_nested(st, op, seq, 0, &nest, alpha_obj, alpha);
}

/*
 * grad_output and z walked together: each must be rectangular on its own
 * (as above) and the two of one shape, sequence for sequence.
 */
static PyObject *
backward_nested(LeakyState *st, PyObject *grad_seq, PyObject *z_seq, int depth, Nesting *grads,
                Nesting *zs, PyObject *alpha_obj, double alpha)
{
    PyObject *result = NULL;
    PyObject *g_items = PySequence_Tuple(grad_seq);
    PyObject *z_items = g_items ? PySequence_Tuple(z_seq) : NULL;
    if (z_items == NULL) {
        goto done;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(g_items);
    if (PyTuple_GET_SIZE(z_items) != n) {
        PyObject *g_name = position_name(grads, depth);
        PyObject *z_name = g_name ? position_name(zs, depth) : NULL;
        if (z_name != NULL) {
            PyErr_Format(PyExc_ValueError,
                         "leaky_relu_backward() %U and %U must have the same length, "
                         "got %zd and %zd",
                         g_name, z_name, n, PyTuple_GET_SIZE(z_items));
        }
        Py_XDECREF(g_name);
        Py_XDECREF(z_name);
        goto done;
    }
    if (nesting_enter(grads, depth, n) < 0 || nesting_enter(zs, depth, n) < 0) {
        goto done;
    }
    result = PyList_New(n);
    for (Py_ssize_t i = 0; result != NULL && i < n; i++) {
        PyObject *g = PyTuple_GET_ITEM(g_items, i), *z = PyTuple_GET_ITEM(z_items, i);
        PyObject *value = NULL;
        grads->index[depth] = zs->index[depth] = i;
        int g_seq = is_sequence(g), z_seq = is_sequence(z);
        if (g_seq && z_seq) {
            value = backward_nested(st, g, z, depth + 1, grads, zs, alpha_obj, alpha);
        }
        else if (g_seq || z_seq) {
            PyObject *g_name = position_name(grads, depth + 1);
            PyObject *z_name = g_name ? position_name(zs, depth + 1) : NULL;
            if (z_name != NULL) {
                PyErr_Format(PyExc_TypeError,
                             "leaky_relu_backward() %U and %U must both be sequences or both "
                             "numbers, not %.200s and %.200s",
                             g_name, z_name, Py_TYPE(g)->tp_name, Py_TYPE(z)->tp_name);
            }
            Py_XDECREF(g_name);
            Py_XDECREF(z_name);
        }
        else if (nesting_number(grads, depth + 1) == 0 && nesting_number(zs, depth + 1) == 0) {
            value = backward_element(st, g, z, grads, zs, alpha_obj, alpha);
            if (value == NULL) {
                name_failed_element(grads, zs, depth + 1);
            }
        }
        if (value == NULL) {
            Py_CLEAR(result);
            break;
        }
        PyList_SET_ITEM(result, i, value);
    }
done:
    Py_XDECREF(g_items);
    Py_XDECREF(z_items);
    return result;
}

PyObject *
backward_sequence(LeakyState *st, PyObject *grad_seq, PyObject *z_seq, PyObject *alpha_obj,
                  double alpha)
{
    Nesting grads, zs;  /* as in unary_sequence: only what is read before it is written */
    grads.fname = zs.fname = "leaky_relu_backward";
    grads.argname = "grad_output";
    zs.argname = "z";
    grads.number_depth = zs.number_depth = -1;
    grads.known = zs.known = 0;
    return backward_nested(st, grad_seq, z_seq, 0, &grads, &zs, alpha_obj, alpha);
}
