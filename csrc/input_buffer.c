/*
 * input_buffer.c: the buffer protocol (PEP 3118) as a kind of input.
 *
 * Anything that exports a buffer (array.array, memoryview, bytes, ctypes,
 * NumPy scalars and the NumPy arrays input_ndarray.c does not read itself,
 * JAX arrays): acquired with PyObject_GetBuffer, its format parsed by
 * parse_format (formats.c), released with PyBuffer_Release; its result is
 * the container leaky._containers picks for the source (an array.array, a
 * NumPy array or scalar, a library's from_dlpack), else a memoryview of a
 * ResultBuffer.
 */
#include "leaky.h"

/* The pending exception, taken out (NULL if none), and put back. */
PyObject *
take_exception(void)
{
#if PY_VERSION_HEX >= 0x030C0000
    return PyErr_GetRaisedException();
#else
    PyObject *type, *value, *traceback;
    PyErr_Fetch(&type, &value, &traceback);
    if (type == NULL) {
        return NULL;
    }
    PyErr_NormalizeException(&type, &value, &traceback);
    if (traceback != NULL) {
        PyException_SetTraceback(value, traceback);
    }
    Py_DECREF(type);
    Py_XDECREF(traceback);
    return value;
#endif
}

void
put_back_exception(PyObject *exc)
{
#if PY_VERSION_HEX >= 0x030C0000
    PyErr_SetRaisedException(exc);
#else
    PyErr_Restore(Py_NewRef((PyObject *)Py_TYPE(exc)), exc, PyException_GetTraceback(exc));
#endif
}

/* Raises `explained` (already set) with the taken exception `cause` as its __cause__. */
static void
chain_cause(PyObject *cause)
{
    PyObject *explained = take_exception();
    PyException_SetCause(explained, cause);  /* steals cause */
    put_back_exception(explained);
}

/* Copies shape and strides in, filling what the exporter left out. */
static int
operand_normalize(Operand *op, const char *fname)
{
    Py_buffer *v = &op->view;
    if (v->ndim < 0 || v->ndim > PyBUF_MAX_NDIM) {
        PyErr_Format(PyExc_ValueError, "%s() cannot handle a buffer with %d dimensions",
                     fname, v->ndim);
        return -1;
    }
    if (v->shape == NULL && v->ndim == 1) {
        op->shape[0] = v->itemsize > 0 ? v->len / v->itemsize : 0;
    }
    Py_ssize_t stride = v->itemsize;
    for (int d = v->ndim - 1; d >= 0; d--) {
        if (v->shape != NULL) {
            op->shape[d] = v->shape[d];
        }
        op->strides[d] = v->strides != NULL ? v->strides[d] : stride;
        stride = outer_stride(stride, op->shape[d]);
    }
    return 0;
}

/*
 * PyObject_GetBuffer failed on obj.  NumPy refuses to export dtypes that
 * have no buffer format (datetime64, timedelta64, ml_dtypes' bfloat16 and
 * float8 types, ...) with a ValueError, and their scalars with a TypeError
 * that names neither; for those, raise the TypeError that names the
 * argument and the dtype, as for any format leaky cannot compute, with
 * NumPy's error as its cause.  Any other failure passes through unchanged.
 */
static int
explain_refused_export(const OperandRole *role, PyObject *obj)
{
    if (!PyErr_ExceptionMatches(PyExc_ValueError) && !PyErr_ExceptionMatches(PyExc_TypeError)) {
        return -1;
    }
    PyObject *refusal = take_exception();
    PyObject *dtype = PyObject_GetAttrString(obj, "dtype");
    if (dtype == NULL) {
        PyErr_Clear();
        put_back_exception(refusal);
        return -1;
    }
    PyErr_Format(PyExc_TypeError,
                 "%s() argument '%s' has dtype '%S', which has no buffer format and which "
                 "leaky cannot compute; expected float16, float32, float64, a signed or "
                 "unsigned integer or bool",
                 role->fname, role->argname, dtype);
    Py_DECREF(dtype);
    chain_cause(refusal);
    return -1;
}

/*
 * The buffer export of obj failed with a BufferError: jaxlib refuses
 * bfloat16 buffers that way, and such an object may still come through
 * DLPack.  As an input: decline (0, the error cleared), so buffers.c asks
 * the DLPack kind next.  As out=: DLPack 0.x says nothing of writability
 * and JAX arrays are immutable, so it is read-only (ValueError).  -1 with
 * the refusal kept for an object without __dlpack__.
 */
static int
refused_buffer(LeakyState *st, PyObject *obj, const OperandRole *role)
{
    PyObject *refusal = take_exception();
    int tensor = has_dlpack(st, obj);
    PyErr_Clear();  /* has_dlpack's own error, if any: the refusal matters more */
    if (tensor != 1) {
        put_back_exception(refusal);
        return -1;
    }
    if (!role->writable) {
        Py_DECREF(refusal);
        return 0;
    }
    PyErr_Format(PyExc_ValueError,
                 "%s() argument 'out' is read-only: %.200s refused its buffer, and leaky "
                 "writes only into writable buffers and tensors",
                 role->fname, Py_TYPE(obj)->tp_name);
    chain_cause(refusal);
    return -1;
}

/*
 * NumPy's datetime64 and timedelta64 scalars export their raw bytes
 * as a 1-d 'B' buffer, not their value: refuse them, naming the dtype, where
 * the bytes would otherwise be computed into a 0-d scalar result.
 */
static int
refuse_numpy_scalar_bytes(const OperandRole *role, PyObject *obj, const Py_buffer *view)
{
    if (view->ndim == 0) {
        return 0;
    }
    for (PyTypeObject *type = Py_TYPE(obj); type != NULL; type = type->tp_base) {
        if (strcmp(type->tp_name, "numpy.generic") == 0) {
            PyObject *dtype = PyObject_GetAttrString(obj, "dtype");
            if (dtype != NULL) {
                PyErr_Format(PyExc_TypeError,
                             "%s() argument '%s' is a NumPy scalar of dtype '%S', whose buffer "
                             "holds its raw bytes, and which leaky cannot compute",
                             role->fname, role->argname, dtype);
                Py_DECREF(dtype);
            }
            return -1;
        }
    }
    return 0;
}

/*
 * obj's buffer as op, owned by buffer_input (its release is
 * buffer_view_release): 1, 0 when the export failed in a way that leaves
 * DLPack to try (refused_buffer), or -1 with an exception.
 */
int
buffer_view_acquire(LeakyState *st, PyObject *obj, Operand *op, const OperandRole *role)
{
    if (PyObject_GetBuffer(obj, &op->view, PyBUF_RECORDS_RO) < 0) {
        if (PyErr_ExceptionMatches(PyExc_BufferError)) {
            return refused_buffer(st, obj, role);
        }
        return explain_refused_export(role, obj);
    }
    op->owner = &buffer_input;
    if (refuse_numpy_scalar_bytes(role, obj, &op->view) < 0) {
        return -1;
    }
    if (role->writable && op->view.readonly) {
        PyErr_Format(PyExc_ValueError, "%s() argument 'out' is read-only", role->fname);
        return -1;
    }
    switch (parse_format(op->view.format, op->view.itemsize, &op->kind)) {
    case FORMAT_OK:
        break;
    case FORMAT_FOREIGN_BYTE_ORDER:
        if (role->writable) {
            op->kind = KIND_COUNT;  /* buffers.c: "has buffer format ... but the result is" */
            break;
        }
        PyErr_Format(PyExc_TypeError,
                     "%s() argument '%s' has buffer format '%s' with non-native byte order; "
                     "convert it to native byte order first",
                     role->fname, role->argname, op->view.format);
        return -1;
    default:
        if (role->writable) {
            op->kind = KIND_COUNT;
            break;
        }
        PyErr_Format(PyExc_TypeError,
                     "%s() argument '%s' has unsupported buffer format '%s' (itemsize %zd); "
                     "expected float16 'e', float32 'f', float64 'd', a signed or unsigned "
                     "integer format or bool '?'",
                     role->fname, role->argname, op->view.format ? op->view.format : "B",
                     op->view.itemsize);
        return -1;
    }
    if (operand_normalize(op, role->fname) < 0) {
        return -1;
    }
    return 1;
}

/* Gives the buffer back; a view that never came from an exporter (view.obj NULL) is skipped. */
void
buffer_view_release(Operand *op)
{
    PyBuffer_Release(&op->view);
}

static int
buffer_acquire(LeakyState *st, PyObject *obj, Operand *op, const OperandRole *role)
{
    return PyObject_CheckBuffer(obj) ? buffer_view_acquire(st, obj, op, role) : 0;
}

PyObject *
shape_as_tuple(int ndim, const Py_ssize_t *shape)
{
    PyObject *tuple = PyTuple_New(ndim);
    if (tuple == NULL) {
        return NULL;
    }
    for (int d = 0; d < ndim; d++) {
        PyObject *dim = PyLong_FromSsize_t(shape[d]);
        if (dim == NULL) {
            Py_DECREF(tuple);
            return NULL;
        }
        PyTuple_SET_ITEM(tuple, d, dim);
    }
    return tuple;
}

/*
 * A result in the container leaky._containers.new_result picks for source
 * (in Python, so that importing leaky never imports NumPy): an array.array,
 * a NumPy array or scalar, or a ResultBuffer for a library's from_dlpack.
 * Where it picks nothing, a ResultBuffer finished by default_finish (NULL:
 * returned as it is).  A ResultBuffer gets `strides` (NULL: C order); a
 * container _containers makes is C-ordered.
 */
int
result_from_containers(LeakyState *st, PyObject *source, ElemKind result_kind,
                       const Operand *like, const Py_ssize_t *strides, NewResult *made,
                       PyObject *default_finish)
{
    PyObject *shape = shape_as_tuple(like->view.ndim, like->shape);
    if (shape == NULL) {
        return -1;
    }
    /* bfloat16 has no format: its name, for the DLPack containers */
    const char *format_text = format_of_result(result_kind);
    PyObject *format =
        PyUnicode_FromString(format_text ? format_text : name_of_result(result_kind));
    if (format == NULL) {
        Py_DECREF(shape);
        return -1;
    }
    PyObject *args[3] = {source, format, shape};
    PyObject *picked = PyObject_Vectorcall(st->new_result, args, 3, NULL);
    Py_DECREF(format);
    Py_DECREF(shape);
    if (picked == NULL) {
        return -1;
    }
    if (picked == Py_None) {
        Py_DECREF(picked);
        return new_result_buffer(st, result_kind, like, strides, made, default_finish);
    }
    if (!PyTuple_Check(picked) || PyTuple_GET_SIZE(picked) != 2) {
        PyErr_SetString(PyExc_SystemError,
                        "leaky._containers.new_result must return None or a pair");
        Py_DECREF(picked);
        return -1;
    }
    PyObject *target = PyTuple_GET_ITEM(picked, 0);
    PyObject *finish = PyTuple_GET_ITEM(picked, 1);
    finish = finish == Py_None ? NULL : finish;
    if (target == Py_None) {  /* (None, finish): a ResultBuffer, then finish */
        int status = new_result_buffer(st, result_kind, like, strides, made, finish);
        Py_DECREF(picked);
        return status;
    }
    made->target = Py_NewRef(target);
    made->finish = Py_XNewRef(finish);
    Py_DECREF(picked);
    Operand *op = &made->operand;
    if (PyObject_GetBuffer(made->target, &op->view, PyBUF_RECORDS) < 0) {
        return -1;
    }
    op->owner = &buffer_input;
    op->kind = result_kind;
    return operand_normalize(op, "leaky");
}

/* C order: a memoryview, array.array or ResultBuffer input has no layout
   worth keeping, and memoryview.cast and tolist want C order. */
static int
buffer_new_result(LeakyState *st, PyObject *source, ElemKind result_kind,
                  const Operand *const *inputs, int ninputs, NewResult *made)
{
    const Operand *like = inputs[0];
    (void)ninputs;
    PyObject *as_memoryview = (PyObject *)&PyMemoryView_Type;
    PyTypeObject *type = Py_TYPE(source);
    if (type == &PyMemoryView_Type || type == &PyBytes_Type || type == &PyByteArray_Type) {
        /* nothing _containers would pick: skip the Python call */
        return new_result_buffer(st, result_kind, like, NULL, made, as_memoryview);
    }
    return result_from_containers(st, source, result_kind, like, NULL, made, as_memoryview);
}

const InputKind buffer_input = {
    .name = "buffer",
    .acquire = buffer_acquire,
    .release = buffer_view_release,
    .new_result = buffer_new_result,
};
