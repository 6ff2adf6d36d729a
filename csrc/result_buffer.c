/*
 * result_buffer.c: ResultBuffer, the exporter behind memoryview results.
 */
#include "leaky.h"

/*
 * A C-contiguous block with a format and a shape, exported through the
 * buffer protocol.  memoryview.cast cannot make 0-d views, views with a zero
 * in the shape, or float16 views, so results for exporters other than NumPy
 * and array.array are memoryviews of one of these.
 */
typedef struct {
    PyObject_VAR_HEAD        /* ob_size = ndim; shape then strides follow */
    char *data;
    Py_ssize_t nbytes;
    ElemKind kind;
    Py_ssize_t dims[1];      /* 2 * ndim entries: shape, then strides */
} ResultBuffer;

PyObject *
result_buffer_new(PyTypeObject *type, ElemKind kind, int ndim, const Py_ssize_t *shape)
{
    ResultBuffer *self = (ResultBuffer *)type->tp_alloc(type, 2 * (Py_ssize_t)ndim);
    if (self == NULL) {
        return NULL;
    }
    Py_SET_SIZE(self, ndim);
    self->kind = kind;
    Py_ssize_t stride = itemsize_of_result(kind), nbytes;
    if (checked_nbytes(ndim, shape, stride, &nbytes)) {  /* buffers.c checks first */
        Py_DECREF(self);
        PyErr_SetString(PyExc_ValueError, "leaky result is too big");
        return NULL;
    }
    for (int d = ndim - 1; d >= 0; d--) {
        self->dims[d] = shape[d];
        self->dims[ndim + d] = stride;
        stride = outer_stride(stride, shape[d]);
    }
    self->nbytes = nbytes;
    /* not zero-filled: every byte is written before anyone can see it */
    self->data = PyMem_Malloc(nbytes > 0 ? (size_t)nbytes : 1);
    if (self->data == NULL) {
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    return (PyObject *)self;
}

static void
result_buffer_dealloc(PyObject *op)
{
    ResultBuffer *self = (ResultBuffer *)op;
    PyTypeObject *type = Py_TYPE(op);
    PyMem_Free(self->data);
    type->tp_free(op);
    Py_DECREF(type);
}

static int
result_buffer_getbuffer(PyObject *op, Py_buffer *view, int flags)
{
    ResultBuffer *self = (ResultBuffer *)op;
    const int ndim = (int)Py_SIZE(self);
    if (ndim > 1 && (flags & PyBUF_F_CONTIGUOUS) == PyBUF_F_CONTIGUOUS) {
        Py_ssize_t non_unit = 0;
        for (int d = 0; d < ndim; d++) {
            non_unit += self->dims[d] > 1;
        }
        if (non_unit > 1) {
            PyErr_SetString(PyExc_BufferError, "leaky result buffers are C-contiguous");
            view->obj = NULL;
            return -1;
        }
    }
    view->obj = Py_NewRef(op);
    view->buf = self->data;
    view->len = self->nbytes;
    view->readonly = 0;
    view->itemsize = itemsize_of_result(self->kind);
    view->format = (flags & PyBUF_FORMAT) ? (char *)format_of_result(self->kind) : NULL;
    view->ndim = (flags & PyBUF_ND) ? ndim : 1;
    view->shape = (flags & PyBUF_ND) ? self->dims : NULL;
    view->strides = (flags & PyBUF_STRIDES) == PyBUF_STRIDES ? self->dims + ndim : NULL;
    view->suboffsets = NULL;
    view->internal = NULL;
    return 0;
}

static PyType_Slot result_buffer_slots[] = {
    {Py_tp_dealloc, result_buffer_dealloc},
    {Py_bf_getbuffer, result_buffer_getbuffer},
    {Py_tp_doc, "Memory behind a leaky result memoryview (C-contiguous)."},
    {0, NULL},
};

PyType_Spec result_buffer_spec = {
    .name = "leaky._leaky.ResultBuffer",
    .basicsize = offsetof(ResultBuffer, dims),
    .itemsize = sizeof(Py_ssize_t),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_DISALLOW_INSTANTIATION | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = result_buffer_slots,
};
