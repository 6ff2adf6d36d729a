/*
 * result_buffer.c: ResultBuffer, the exporter behind memoryview results and,
 * through __dlpack__, behind torch, JAX and array-API results.
 */
#include "leaky.h"
#include "dlpack.h"
#include "arrow_abi.h"

/*
 * A dense block with a format, a shape and strides, exported through the
 * buffer protocol and DLPack: C-ordered, or for a tensor's result in the
 * tensor's own order (result_k_strides), which is some permutation of the
 * axes with positive strides, so the block is still exactly nbytes long.  memoryview.cast cannot make 0-d views, views
 * with a zero in the shape, or float16 views, so results for exporters
 * other than NumPy and array.array are memoryviews of one of these; results
 * for tensors are the caller's library's from_dlpack of one.  bfloat16 has
 * no buffer format, so a bfloat16 one exports through DLPack only.
 */
typedef struct {
    PyObject_VAR_HEAD        /* ob_size = ndim; shape then strides follow */
    char *data;
    Py_ssize_t nbytes;
    ElemKind kind;
    char c_contiguous, f_contiguous;  /* as NumPy's flags say: unit sides aside */
    /* a result of Arrow inputs (input_arrow.c): its validity bitmap, offset 0,
       in a shared block like data's (NULL: no nulls), and its null count */
    char *validity;
    Py_ssize_t null_count;
    Py_ssize_t dims[1];      /* 2 * ndim entries: shape, then strides */
} ResultBuffer;

/*
 * The elements live in a block of their own, with a reference count in a
 * header before them: the ResultBuffer holds one reference, and each tensor
 * exported through __dlpack__ another.  A DLPack consumer may call its
 * deleter on any thread, with or without the GIL, in any interpreter, even
 * during finalization, so the deleter touches no Python object: it drops
 * its reference atomically, and whoever drops the last frees the block
 * (raw allocator: no GIL needed).  The elements start on a 64-byte
 * boundary: XLA wraps a DLPack tensor without a copy only when it is so
 * aligned (jax.numpy.from_dlpack copied every result before), and a cache
 * line per AVX-512 store does no harm either.
 */
#define SHARED_ALIGNMENT 64

typedef struct {
    long long refs;
    void *block;  /* what PyMem_RawMalloc returned */
} SharedHeader;

static char *
shared_data_new(Py_ssize_t nbytes)
{
    size_t size = sizeof(SharedHeader) + SHARED_ALIGNMENT + (size_t)(nbytes > 0 ? nbytes : 1);
    if ((size_t)nbytes > PY_SSIZE_T_MAX - sizeof(SharedHeader) - SHARED_ALIGNMENT) {
        return NULL;
    }
    char *block = PyMem_RawMalloc(size);
    if (block == NULL) {
        return NULL;
    }
    uintptr_t start = ((uintptr_t)block + sizeof(SharedHeader) + SHARED_ALIGNMENT - 1) &
                      ~(uintptr_t)(SHARED_ALIGNMENT - 1);
    char *data = block + (start - (uintptr_t)block);
    SharedHeader *header = (SharedHeader *)data - 1;
    header->refs = 1;
    header->block = block;
    return data;
}

void
shared_data_retain(char *data)
{
    ATOMIC_ADD(&((SharedHeader *)data - 1)->refs, 1);
}

void
shared_data_release(char *data)
{
    SharedHeader *header = (SharedHeader *)data - 1;
    if (ATOMIC_ADD(&header->refs, -1) == 1) {
        PyMem_RawFree(header->block);
    }
}

/* Whether a block laid out as dims says is contiguous in C (fortran 0) or F order. */
static int
dims_contiguous(int ndim, const Py_ssize_t *dims, Py_ssize_t itemsize, int fortran)
{
    Py_ssize_t expected = itemsize;
    for (int k = 0; k < ndim; k++) {
        const int d = fortran ? k : ndim - 1 - k;
        if (dims[d] == 0) {
            return 1;
        }
        if (dims[d] != 1) {
            if (dims[ndim + d] != expected) {
                return 0;
            }
            expected *= dims[d];
        }
    }
    return 1;
}

/* strides: NULL for C order, else a dense order from result_k_strides. */
PyObject *
result_buffer_new(PyTypeObject *type, ElemKind kind, int ndim, const Py_ssize_t *shape,
                  const Py_ssize_t *strides)
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
        self->dims[ndim + d] = strides != NULL ? strides[d] : stride;
        stride = outer_stride(stride, shape[d]);
    }
    self->nbytes = nbytes;
    self->validity = NULL;
    self->null_count = 0;
    self->c_contiguous = (char)dims_contiguous(ndim, self->dims, itemsize_of_result(kind), 0);
    self->f_contiguous = (char)dims_contiguous(ndim, self->dims, itemsize_of_result(kind), 1);
    /* not zero-filled: every byte is written before anyone can see it */
    self->data = shared_data_new(nbytes);
    if (self->data == NULL) {
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    return (PyObject *)self;
}

/* The block as the driver's output operand. */
static void
result_buffer_operand(PyObject *result, Operand *op)
{
    ResultBuffer *self = (ResultBuffer *)result;
    const int ndim = (int)Py_SIZE(self);
    Py_buffer *v = &op->view;
    memset(v, 0, sizeof *v);
    v->buf = self->data;
    v->len = self->nbytes;
    v->itemsize = itemsize_of_result(self->kind);
    v->ndim = ndim;
    v->shape = op->shape;
    v->strides = op->strides;
    for (int d = 0; d < ndim; d++) {
        op->shape[d] = self->dims[d];
        op->strides[d] = self->dims[ndim + d];
    }
    op->kind = self->kind;
    op->owner = NULL;  /* the caller's reference to the block keeps it alive */
    op->dlpack = NULL;
}

/*
 * A new ResultBuffer shaped like `like` as made's target and operand;
 * made->finish is `finish` (NULL: the ResultBuffer itself is returned).
 */
int
new_result_buffer(LeakyState *st, ElemKind result_kind, const Operand *like,
                  const Py_ssize_t *strides, NewResult *made, PyObject *finish)
{
    made->target = result_buffer_new(st->result_buffer_type, result_kind, like->view.ndim,
                                     like->shape, strides);
    if (made->target == NULL) {
        return -1;
    }
    made->finish = Py_XNewRef(finish);
    result_buffer_operand(made->target, &made->operand);
    return 0;
}

static void
result_buffer_dealloc(PyObject *op)
{
    ResultBuffer *self = (ResultBuffer *)op;
    PyTypeObject *type = Py_TYPE(op);
    if (self->data != NULL) {
        shared_data_release(self->data);
    }
    if (self->validity != NULL) {
        shared_data_release(self->validity);
    }
    type->tp_free(op);
    Py_DECREF(type);
}

static int
result_buffer_getbuffer(PyObject *op, Py_buffer *view, int flags)
{
    ResultBuffer *self = (ResultBuffer *)op;
    const int ndim = (int)Py_SIZE(self);
    /* a consumer that takes no strides assumes C order (PEP 3118) */
    const char *refused = NULL;
    if ((flags & PyBUF_ANY_CONTIGUOUS) == PyBUF_ANY_CONTIGUOUS) {
        refused = self->c_contiguous || self->f_contiguous ? NULL : "C- or F-contiguous";
    }
    else if ((flags & PyBUF_C_CONTIGUOUS) == PyBUF_C_CONTIGUOUS ||
             (flags & PyBUF_STRIDES) != PyBUF_STRIDES) {
        refused = self->c_contiguous ? NULL : "C-contiguous";
    }
    else if ((flags & PyBUF_F_CONTIGUOUS) == PyBUF_F_CONTIGUOUS) {
        refused = self->f_contiguous ? NULL : "F-contiguous";
    }
    if (refused != NULL) {
        PyErr_Format(PyExc_BufferError, "this leaky result is not %s: it keeps its input's "
                     "memory order; ask for strides", refused);
        view->obj = NULL;
        return -1;
    }
    if (format_of_result(self->kind) == NULL) {
        PyErr_Format(PyExc_BufferError,
                     "leaky result of %s has no buffer format; take it through DLPack "
                     "(torch.from_dlpack, numpy.from_dlpack with ml_dtypes, ...)",
                     name_of_result(self->kind));
        view->obj = NULL;
        return -1;
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

/*
 * __dlpack__(*, stream=None, max_version=None, dl_device=None, copy=None),
 * as the array API standard defines it: a "dltensor_versioned" capsule for
 * a consumer that passes max_version >= (1, 0), the older "dltensor" one
 * otherwise.  The memory is on the CPU, which has no streams: stream must be
 * None (or -1, "no synchronization").  copy=True exports a copy (flagged
 * IS_COPIED); copy=False and None share the block.  The tensor holds a
 * reference to its block until the consumer calls the deleter.
 */
static PyObject *
result_buffer_dlpack(PyObject *op, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"stream", "max_version", "dl_device", "copy", NULL};
    PyObject *stream = Py_None, *max_version = Py_None, *dl_device = Py_None, *copy = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|$OOOO:__dlpack__", keywords, &stream,
                                     &max_version, &dl_device, &copy)) {
        return NULL;
    }
    if (stream != Py_None) {
        int overflow = 0;
        long value = PyLong_Check(stream) ? PyLong_AsLongAndOverflow(stream, &overflow) : 0;
        if (value != -1 || overflow) {
            PyErr_SetString(PyExc_BufferError,
                            "leaky results are CPU memory, which has no streams: stream must "
                            "be None");
            return NULL;
        }
    }
    int versioned = 0;
    if (max_version != Py_None) {
        if (!PyTuple_Check(max_version) || PyTuple_GET_SIZE(max_version) != 2) {
            PyErr_SetString(PyExc_TypeError,
                            "__dlpack__() max_version must be None or a (major, minor) tuple");
            return NULL;
        }
        long major = PyLong_AsLong(PyTuple_GET_ITEM(max_version, 0));
        if (major == -1 && PyErr_Occurred()) {
            return NULL;
        }
        versioned = major >= DLPACK_MAJOR_VERSION;
    }
    if (dl_device != Py_None) {
        long type = -1;
        if (PyTuple_Check(dl_device) && PyTuple_GET_SIZE(dl_device) == 2) {
            type = PyLong_AsLong(PyTuple_GET_ITEM(dl_device, 0));
            if (type == -1 && PyErr_Occurred()) {
                return NULL;
            }
        }
        if (type != kDLCPU) {
            PyErr_SetString(PyExc_BufferError,
                            "leaky results are CPU memory and export to the CPU only");
            return NULL;
        }
    }
    int copied = copy == Py_None ? 0 : PyObject_IsTrue(copy);
    if (copied < 0) {
        return NULL;
    }
    ResultBuffer *self = (ResultBuffer *)op;
    const int ndim = (int)Py_SIZE(self);
    char *data = self->data;
    if (copied) {
        data = shared_data_new(self->nbytes);
        if (data == NULL) {
            return PyErr_NoMemory();
        }
        memcpy(data, self->data, (size_t)self->nbytes);
    }
    else {
        shared_data_retain(data);
    }
    /* the tensor owns the reference taken above (dlpack_export drops it on failure) */
    return dlpack_export(data, self->kind, ndim, self->dims, self->dims + ndim, versioned,
                         copied);
}

/* A ResultBuffer's elements as an unversioned capsule, shared as __dlpack__() shares
   them: for the torch route's from_dlpack (input_dlpack.c), without a Python call. */
PyObject *
result_buffer_capsule(PyObject *op)
{
    ResultBuffer *self = (ResultBuffer *)op;
    const int ndim = (int)Py_SIZE(self);
    shared_data_retain(self->data);
    return dlpack_export(self->data, self->kind, ndim, self->dims, self->dims + ndim, 0, 0);
}

static PyObject *
result_buffer_dlpack_device(PyObject *op, PyObject *unused)
{
    return Py_BuildValue("(ii)", kDLCPU, 0);
}

/*
 * A validity bitmap for a 1-d result of Arrow inputs, every bit clear, for
 * input_arrow.c to fill; NULL with MemoryError.  It lives in a shared block
 * like the elements, so that exported Arrow arrays outlive the ResultBuffer.
 */
unsigned char *
result_buffer_new_validity(PyObject *result)
{
    ResultBuffer *self = (ResultBuffer *)result;
    assert(Py_SIZE(self) == 1 && self->validity == NULL);
    Py_ssize_t nbytes = (self->dims[0] + 7) / 8;
    self->validity = shared_data_new(nbytes);
    if (self->validity == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    memset(self->validity, 0, (size_t)(nbytes > 0 ? nbytes : 1));
    return (unsigned char *)self->validity;
}

/*
 * The elements of whole bitmap bytes, each ANDed with all-ones where its bit
 * is set and zero where not: eight lanes of fixed count, no branch, which
 * compilers vectorize.  Testing bit by bit cost 5-10x the kernel in
 * mispredicted branches at 10-50% nulls (perf).
 */
#define DEFINE_ZERO_NULLS(name, type)                                            \
    static void name(char *data, const unsigned char *bits, Py_ssize_t bytes)  \
    {                                                                          \
        for (Py_ssize_t j = 0; j < bytes; j++) {                               \
            const unsigned valid = bits[j];                                    \
            type lanes[8];                                                     \
            memcpy(lanes, data + j * 8 * (Py_ssize_t)sizeof(type), sizeof lanes); \
            for (int k = 0; k < 8; k++) {                                      \
                lanes[k] &= (type)((type)0 - (type)((valid >> k) & 1u));       \
            }                                                                  \
            memcpy(data + j * 8 * (Py_ssize_t)sizeof(type), lanes, sizeof lanes); \
        }                                                                      \
    }
DEFINE_ZERO_NULLS(zero_nulls16, uint16_t)
DEFINE_ZERO_NULLS(zero_nulls32, uint32_t)
DEFINE_ZERO_NULLS(zero_nulls64, uint64_t)

/*
 * After the loop: every element under a null set to zero and the null count
 * taken.  The loop computed on whatever bytes the inputs hold under their
 * nulls (Arrow leaves them unspecified); zero is what Arrow's own builders
 * put there, so no computed value is ever exposed under a null.
 */
void
result_buffer_seal_nulls(PyObject *result)
{
    ResultBuffer *self = (ResultBuffer *)result;
    if (self->validity == NULL) {
        return;
    }
    const unsigned char *bits = (const unsigned char *)self->validity;
    const Py_ssize_t n = self->dims[0], itemsize = itemsize_of_result(self->kind);
    const Py_ssize_t whole = n / 8;
    (itemsize == 2 ? zero_nulls16 : itemsize == 4 ? zero_nulls32 : zero_nulls64)(self->data, bits,
                                                                                  whole);
    Py_ssize_t valid = 0;
    for (Py_ssize_t j = 0; j < whole; j++) {
        unsigned b = bits[j];
        b = b - ((b >> 1) & 0x55u);
        b = (b & 0x33u) + ((b >> 2) & 0x33u);
        valid += (b + (b >> 4)) & 0x0fu;
    }
    for (Py_ssize_t i = whole * 8; i < n; i++) {  /* the last, partial byte */
        if ((bits[i >> 3] >> (i & 7)) & 1u) {
            valid++;
        }
        else {
            memset(self->data + i * itemsize, 0, (size_t)itemsize);
        }
    }
    self->null_count = n - valid;
}

/* What an exported ArrowArray holds: a reference to each shared block. */
typedef struct {
    char *data;
    char *validity;
    const void *buffers[2];
} ExportedArray;

/* Arrow's release callbacks: any thread, with or without the GIL, so no
   Python object is touched; each marks its struct released, as the spec asks. */
static void
release_exported_array(struct ArrowArray *array)
{
    ExportedArray *held = array->private_data;
    shared_data_release(held->data);
    if (held->validity != NULL) {
        shared_data_release(held->validity);
    }
    PyMem_RawFree(held);
    array->release = NULL;
}

static void
release_exported_schema(struct ArrowSchema *schema)
{
    schema->release = NULL;  /* format and name are static strings */
}

static void
arrow_schema_capsule_free(PyObject *capsule)
{
    struct ArrowSchema *schema = PyCapsule_GetPointer(capsule, ARROW_SCHEMA_CAPSULE);
    if (schema != NULL && schema->release != NULL) {
        schema->release(schema);  /* a consumer that moved it out left release NULL */
    }
    PyMem_RawFree(schema);
}

static void
arrow_array_capsule_free(PyObject *capsule)
{
    struct ArrowArray *array = PyCapsule_GetPointer(capsule, ARROW_ARRAY_CAPSULE);
    if (array != NULL && array->release != NULL) {
        array->release(array);
    }
    PyMem_RawFree(array);
}

/*
 * __arrow_c_array__(requested_schema=None): a 1-d result as the Arrow
 * PyCapsule interface's (schema, array) pair, float16/32/64 ("e", "f", "g"),
 * with its validity bitmap when it has nulls.  The array shares the result's
 * blocks, each holding a reference until its release callback runs.  A
 * requested schema is ignored, which the interface allows: leaky cannot cast.
 */
static PyObject *
result_buffer_arrow_c_array(PyObject *op, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"requested_schema", NULL};
    PyObject *requested = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|O:__arrow_c_array__", keywords,
                                     &requested)) {
        return NULL;
    }
    ResultBuffer *self = (ResultBuffer *)op;
    const char *format = self->kind == KIND_F16   ? "e"
                         : self->kind == KIND_F32 ? "f"
                         : self->kind == KIND_F64 ? "g"
                                                  : NULL;
    if (Py_SIZE(self) != 1 || format == NULL) {
        PyErr_Format(PyExc_TypeError,
                     "only a 1-d float16, float32 or float64 leaky result is an Arrow array, "
                     "not %zd-d %s", Py_SIZE(self), name_of_result(self->kind));
        return NULL;
    }
    struct ArrowSchema *schema = PyMem_RawCalloc(1, sizeof *schema);
    struct ArrowArray *array = PyMem_RawCalloc(1, sizeof *array);
    ExportedArray *held = PyMem_RawCalloc(1, sizeof *held);
    if (schema == NULL || array == NULL || held == NULL) {
        PyMem_RawFree(schema);
        PyMem_RawFree(array);
        PyMem_RawFree(held);
        return PyErr_NoMemory();
    }
    schema->format = format;
    schema->name = "";
    schema->flags = ARROW_FLAG_NULLABLE;
    schema->release = release_exported_schema;
    held->data = self->data;
    shared_data_retain(held->data);
    if (self->validity != NULL && self->null_count > 0) {
        held->validity = self->validity;
        shared_data_retain(held->validity);
    }
    held->buffers[0] = held->validity;
    held->buffers[1] = held->data;
    array->length = self->dims[0];
    array->null_count = held->validity != NULL ? self->null_count : 0;
    array->n_buffers = 2;
    array->buffers = held->buffers;
    array->release = release_exported_array;
    array->private_data = held;
    PyObject *schema_capsule = PyCapsule_New(schema, ARROW_SCHEMA_CAPSULE,
                                             arrow_schema_capsule_free);
    if (schema_capsule == NULL) {
        schema->release(schema);
        PyMem_RawFree(schema);
        array->release(array);
        PyMem_RawFree(array);
        return NULL;
    }
    PyObject *array_capsule = PyCapsule_New(array, ARROW_ARRAY_CAPSULE, arrow_array_capsule_free);
    if (array_capsule == NULL) {
        Py_DECREF(schema_capsule);
        array->release(array);
        PyMem_RawFree(array);
        return NULL;
    }
    return Py_BuildValue("(NN)", schema_capsule, array_capsule);
}

static PyObject *
result_buffer_repr(PyObject *op)
{
    ResultBuffer *self = (ResultBuffer *)op;
    const int ndim = (int)Py_SIZE(self);
    PyObject *shape = shape_as_tuple(ndim, self->dims);
    if (shape == NULL) {
        return NULL;
    }
    PyObject *text = PyUnicode_FromFormat("<leaky ResultBuffer %s %R>",
                                          name_of_result(self->kind), shape);
    Py_DECREF(shape);
    return text;
}

static PyMethodDef result_buffer_methods[] = {
    {"__arrow_c_array__", (PyCFunction)(void (*)(void))result_buffer_arrow_c_array,
     METH_VARARGS | METH_KEYWORDS,
     "__arrow_c_array__(requested_schema=None)\n--\n\n"
     "A 1-d result as an Arrow array: the Arrow PyCapsule interface's (schema, array)."},
    {"__dlpack__", (PyCFunction)(void (*)(void))result_buffer_dlpack,
     METH_VARARGS | METH_KEYWORDS,
     "__dlpack__(*, stream=None, max_version=None, dl_device=None, copy=None)\n--\n\n"
     "The result as a DLPack capsule (the array API standard's protocol)."},
    {"__dlpack_device__", result_buffer_dlpack_device, METH_NOARGS,
     "(1, 0): DLPack's CPU device."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot result_buffer_slots[] = {
    {Py_tp_dealloc, result_buffer_dealloc},
    {Py_tp_repr, result_buffer_repr},
    {Py_tp_methods, result_buffer_methods},
    {Py_bf_getbuffer, result_buffer_getbuffer},
    {Py_tp_doc, "Memory behind a leaky result (dense, C order or its input's): a buffer and a "
                "DLPack tensor; a 1-d one also an Arrow array."},
    {0, NULL},
};

PyType_Spec result_buffer_spec = {
    .name = "leaky._leaky.ResultBuffer",
    .basicsize = offsetof(ResultBuffer, dims),
    .itemsize = sizeof(Py_ssize_t),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_DISALLOW_INSTANTIATION | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = result_buffer_slots,
};
