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
 * What the number path accepts as z or grad_output (the number fallback
 * runs Python's `z > 0` on it, and multiplies), so that no array-like ever
 * reaches it: a float or int (subclasses included), or an object whose type
 * has __float__ or __index__ (Fraction, Decimal, your own real numbers) and
 * is no collection and no array: no __len__ (sequence or mapping), no
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

/* The TypeError for a z or grad_output that the number path refuses. */
static PyObject *
refuse_number(const char *fname, const char *argname, PyObject *obj, int in_sequence)
{
    if (is_jax_tracer(obj)) {
        explain_jax_tracer(fname, argname, obj);
    }
    else if (in_sequence) {
        PyErr_Format(PyExc_TypeError,
                     "%s() argument '%s' is a list or tuple, whose items must be real "
                     "numbers, not %.200s", fname, argname, Py_TYPE(obj)->tp_name);
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
forward_number(LeakyState *st, PyObject *z, PyObject *alpha_obj, double alpha, int in_sequence)
{
    if (is_exact_number(z)) {
        return forward_exact_number(z, alpha);
    }
    if (!is_number_operand(st, z)) {
        return refuse_number("leaky_relu", "z", z, in_sequence);
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
grad_number(LeakyState *st, PyObject *z, PyObject *alpha_obj, double alpha, int in_sequence)
{
    if (is_exact_number(z)) {
        return grad_exact_number(st, z, alpha_obj, alpha);
    }
    if (!is_number_operand(st, z)) {
        return refuse_number("leaky_relu_grad", "z", z, in_sequence);
    }
    int positive = generic_is_positive(st, z);
    if (positive < 0) {
        return NULL;
    }
    return Py_NewRef(positive ? st->one : (alpha_obj ? alpha_obj : st->default_alpha));
}

static PyObject *
backward_item(LeakyState *st, PyObject *grad, PyObject *z, PyObject *alpha_obj, double alpha,
              int in_sequence)
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
        return refuse_number("leaky_relu_backward", "grad_output", grad, in_sequence);
    }
    if (!is_number_operand(st, z)) {
        return refuse_number("leaky_relu_backward", "z", z, in_sequence);
    }
    int positive = generic_is_positive(st, z);
    if (positive < 0) {
        return NULL;
    }
    return PyNumber_Multiply(grad, positive ? st->one : (alpha_obj ? alpha_obj : st->default_alpha));
}

PyObject *
backward_number(LeakyState *st, PyObject *grad, PyObject *z, PyObject *alpha_obj, double alpha)
{
    return backward_item(st, grad, z, alpha_obj, alpha, 0);
}

static PyObject *
unary_item(LeakyState *st, UnaryOp op, PyObject *z, PyObject *alpha_obj, double alpha,
           int in_sequence)
{
    return op == OP_FORWARD ? forward_number(st, z, alpha_obj, alpha, in_sequence)
                            : grad_number(st, z, alpha_obj, alpha, in_sequence);
}

PyObject *
unary_number(LeakyState *st, UnaryOp op, PyObject *z, PyObject *alpha_obj, double alpha)
{
    return unary_item(st, op, z, alpha_obj, alpha, 0);
}
/* Lists and tuples: a list, element by element, with the number rules. */
PyObject *
unary_sequence(LeakyState *st, UnaryOp op, PyObject *seq, PyObject *alpha_obj, double alpha)
{
    /* A snapshot: an element's __gt__ may mutate the list under us. */
    PyObject *items = PySequence_Tuple(seq);
    if (items == NULL) {
        return NULL;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(items);
    PyObject *result = PyList_New(n);
    if (result != NULL) {
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *value = unary_item(st, op, PyTuple_GET_ITEM(items, i), alpha_obj, alpha, 1);
            if (value == NULL) {
                Py_CLEAR(result);
                break;
            }
            PyList_SET_ITEM(result, i, value);
        }
    }
    Py_DECREF(items);
    return result;
}

PyObject *
backward_sequence(LeakyState *st, PyObject *grad_seq, PyObject *z_seq, PyObject *alpha_obj,
                  double alpha)
{
    PyObject *result = NULL;
    PyObject *grads = PySequence_Tuple(grad_seq);
    PyObject *zs = grads ? PySequence_Tuple(z_seq) : NULL;
    if (zs == NULL) {
        goto done;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(grads);
    if (PyTuple_GET_SIZE(zs) != n) {
        PyErr_Format(PyExc_ValueError,
                     "leaky_relu_backward() grad_output and z must have the same length, "
                     "got %zd and %zd", n, PyTuple_GET_SIZE(zs));
        goto done;
    }
    result = PyList_New(n);
    if (result == NULL) {
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *value = backward_item(st, PyTuple_GET_ITEM(grads, i),
                                        PyTuple_GET_ITEM(zs, i), alpha_obj, alpha, 1);
        if (value == NULL) {
            Py_CLEAR(result);
            goto done;
        }
        PyList_SET_ITEM(result, i, value);
    }
done:
    Py_XDECREF(grads);
    Py_XDECREF(zs);
    return result;
}
