/*
 * input_arrow.c: Arrow arrays as operands, through the Arrow PyCapsule
 * interface (__arrow_c_array__, __arrow_c_stream__), so any producer works
 * (pyarrow, polars, nanoarrow, DuckDB) and pyarrow is never imported here.
 * The structs are the Arrow C data interface's (arrow_abi.h).
 *
 * In: a primitive array's values are read where they lie (offset applied);
 * a bool array, which Arrow packs into bits, is unpacked into bytes, and a
 * stream of several chunks is concatenated, both into a private copy (one
 * loop over contiguous memory, and two operands chunked differently still
 * line up).  Every ArrowArray and ArrowSchema moved out of a capsule is
 * released exactly once, at release, or at once when only its bytes were
 * copied.
 * Out: a ResultBuffer (result_buffer.c) carrying the validity bitmap of the
 * inputs (null where any input is null, as pyarrow.compute does for binary
 * functions), its elements under nulls zeroed after the loop, turned into
 * the input's own library's type by leaky._containers.arrow_result.
 */
#include "leaky.h"
#include "arrow_abi.h"

/* What an Arrow operand holds between acquire and release (view.internal). */
typedef struct {
    struct ArrowSchema schema;
    struct ArrowArray *chunks;  /* each released at release, unless copied and released at once */
    Py_ssize_t nchunks;
    char *copy;                 /* unpacked bools or concatenated chunks, else NULL */
    unsigned char *own_validity;  /* the concatenated bitmap, else NULL */
    const unsigned char *validity;  /* NULL: no nulls */
    int64_t validity_offset;        /* in bits */
    Py_ssize_t length;
} ArrowHold;

static void
hold_free(ArrowHold *hold)
{
    for (Py_ssize_t i = 0; i < hold->nchunks; i++) {
        if (hold->chunks[i].release != NULL) {
            hold->chunks[i].release(&hold->chunks[i]);
        }
    }
    PyMem_RawFree(hold->chunks);
    if (hold->schema.release != NULL) {
        hold->schema.release(&hold->schema);
    }
    PyMem_RawFree(hold->copy);
    PyMem_RawFree(hold->own_validity);
    PyMem_RawFree(hold);
}

/* A producer's release callback may run Python (a ctypes producer), which
   must not start with an exception set: one pending is put aside meanwhile. */
static void
arrow_release(Operand *op)
{
    PyObject *pending = take_exception();
    hold_free((ArrowHold *)op->view.internal);
    op->view.internal = NULL;
    if (pending != NULL) {
        put_back_exception(pending);
    }
}

static inline int
bit_at(const unsigned char *bits, int64_t i)
{
    return (bits[i >> 3] >> (i & 7)) & 1;
}

/* dst[dst_off...] = src[src_off...] for n bits (src NULL: all set). */
static void
copy_bits(unsigned char *dst, int64_t dst_off, const unsigned char *src, int64_t src_off,
          int64_t n)
{
    if (dst_off % 8 == 0 && (src == NULL || src_off % 8 == 0)) {  /* whole bytes at once */
        if (src == NULL) {
            memset(dst + dst_off / 8, 0xff, (size_t)(n / 8));
        }
        else {
            memcpy(dst + dst_off / 8, src + src_off / 8, (size_t)(n / 8));
        }
        dst_off += n / 8 * 8;
        src_off += n / 8 * 8;
        n %= 8;
    }
    for (int64_t i = 0; i < n; i++) {
        const int64_t d = dst_off + i;
        const unsigned char mask = (unsigned char)(1u << (d & 7));
        if (src == NULL || bit_at(src, src_off + i)) {
            dst[d >> 3] |= mask;
        }
        else {
            dst[d >> 3] &= (unsigned char)~mask;
        }
    }
}

/* dst[0..n) &= src[src_off..]: a result is null where any input is. */
static void
and_bits(unsigned char *dst, const unsigned char *src, int64_t src_off, int64_t n)
{
    int64_t i = 0;
    if (src_off % 8 == 0) {
        for (; i + 8 <= n; i += 8) {
            dst[i >> 3] &= src[(src_off + i) >> 3];
        }
    }
    for (; i < n; i++) {
        if (!bit_at(src, src_off + i)) {
            dst[i >> 3] &= (unsigned char)~(1u << (i & 7));
        }
    }
}

/* The element kind of a primitive Arrow format, or KIND_COUNT. */
static ElemKind
kind_of_format(const char *format)
{
    if (format[0] == '\0' || format[1] != '\0') {
        return KIND_COUNT;
    }
    switch (format[0]) {
    case 'e': return KIND_F16;
    case 'f': return KIND_F32;
    case 'g': return KIND_F64;
    case 'b': return KIND_BOOL;
    case 'c': return KIND_I8;
    case 'C': return KIND_U8;
    case 's': return KIND_I16;
    case 'S': return KIND_U16;
    case 'i': return KIND_I32;
    case 'I': return KIND_U32;
    case 'l': return KIND_I64;
    case 'L': return KIND_U64;
    default: return KIND_COUNT;
    }
}

/* Which protocol obj's type offers: 1 __arrow_c_array__, 2 __arrow_c_stream__ only, 0 none. */
static int
arrow_protocol(LeakyState *st, PyObject *obj)
{
    /* looked up on the type, as CPython looks up special methods: one
       method-cache probe, so tensors that pass through pay almost nothing */
    PyTypeObject *type = Py_TYPE(obj);
    if (_PyType_Lookup(type, st->str_arrow_c_array) != NULL) {
        return 1;
    }
    return _PyType_Lookup(type, st->str_arrow_c_stream) != NULL ? 2 : 0;
}

/*
 * Whether obj's type is a polars class: polars' Series also has
 * __array_ufunc__, but through it a Float32 Series came back Float64; the
 * Arrow route keeps its dtype, its nulls and its name.
 */
static int
is_polars_type(PyTypeObject *type)
{
    PyObject *module = PyObject_GetAttrString((PyObject *)type, "__module__");
    if (module == NULL) {
        PyErr_Clear();
        return 0;
    }
    const char *name = PyUnicode_Check(module) ? PyUnicode_AsUTF8(module) : NULL;
    const int polars = name != NULL && strncmp(name, "polars.", 7) == 0;
    Py_DECREF(module);
    if (name == NULL) {
        PyErr_Clear();
    }
    return polars;
}

/*
 * Which protocol leaky reads obj through: 0 for none, and 0 too for an
 * object that also implements __array_ufunc__ (pandas, which exports Arrow
 * streams since 2.2, DataFrames as structs): it asked for NumPy's
 * semantics, and its own type back, which leaky.ufunc gives it; polars'
 * Series, which would lose its dtype there, is the exception.
 */
static int
arrow_route(LeakyState *st, PyObject *obj)
{
    if (is_sequence(obj)) {
        return 0;
    }
    const int protocol = arrow_protocol(st, obj);
    if (protocol == 0) {
        return 0;
    }
    PyTypeObject *type = Py_TYPE(obj);
    PyObject *ufunc_name = st->str_array_protocols[0];  /* "__array_ufunc__" (array_route.c) */
    if (_PyType_Lookup(type, ufunc_name) != NULL && !is_polars_type(type)) {
        return 0;
    }
    return protocol;
}

int
is_arrow_object(LeakyState *st, PyObject *obj)
{
    return arrow_route(st, obj) != 0;
}

/* Moves the struct out of a capsule of that name, leaving it released there. */
static int
move_out_of_capsule(PyObject *capsule, const char *name, void *to, size_t size)
{
    void *from = PyCapsule_GetPointer(capsule, name);
    if (from == NULL) {
        return -1;
    }
    memcpy(to, from, size);
    /* the capsule's destructor then finds it released and leaves it alone */
    if (strcmp(name, ARROW_SCHEMA_CAPSULE) == 0) {
        ((struct ArrowSchema *)from)->release = NULL;
    }
    else if (strcmp(name, ARROW_ARRAY_CAPSULE) == 0) {
        ((struct ArrowArray *)from)->release = NULL;
    }
    else {
        ((struct ArrowArrayStream *)from)->release = NULL;
    }
    return 0;
}

static int
take_array(LeakyState *st, PyObject *obj, ArrowHold *hold)
{
    PyObject *pair = PyObject_CallMethodNoArgs(obj, st->str_arrow_c_array);
    if (pair == NULL) {
        return -1;
    }
    if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2) {
        PyErr_Format(PyExc_TypeError, "%.200s.__arrow_c_array__() must return a (schema, array) "
                     "pair of capsules", Py_TYPE(obj)->tp_name);
        Py_DECREF(pair);
        return -1;
    }
    hold->chunks = PyMem_RawCalloc(1, sizeof *hold->chunks);
    if (hold->chunks == NULL) {
        Py_DECREF(pair);
        PyErr_NoMemory();
        return -1;
    }
    int rc = move_out_of_capsule(PyTuple_GET_ITEM(pair, 0), ARROW_SCHEMA_CAPSULE, &hold->schema,
                                 sizeof hold->schema);
    if (rc == 0) {
        rc = move_out_of_capsule(PyTuple_GET_ITEM(pair, 1), ARROW_ARRAY_CAPSULE, hold->chunks,
                                 sizeof *hold->chunks);
        hold->nchunks = rc == 0;
    }
    Py_DECREF(pair);
    return rc;
}

static void
stream_error(struct ArrowArrayStream *stream, int code, const char *what)
{
    const char *message = stream->get_last_error != NULL ? stream->get_last_error(stream) : NULL;
    PyErr_Format(PyExc_BufferError, "an Arrow stream failed in %s (error %d): %s", what, code,
                 message != NULL ? message : "no message");
}

/* Every chunk of the stream, which is released before returning. */
static int
take_stream(LeakyState *st, PyObject *obj, ArrowHold *hold)
{
    PyObject *capsule = PyObject_CallMethodNoArgs(obj, st->str_arrow_c_stream);
    if (capsule == NULL) {
        return -1;
    }
    struct ArrowArrayStream stream;
    int rc = move_out_of_capsule(capsule, ARROW_STREAM_CAPSULE, &stream, sizeof stream);
    Py_DECREF(capsule);
    if (rc < 0) {
        return -1;
    }
    int code = stream.get_schema(&stream, &hold->schema);
    if (code != 0) {
        hold->schema.release = NULL;
        stream_error(&stream, code, "get_schema");
        rc = -1;
    }
    Py_ssize_t room = 0;
    while (rc == 0) {
        if (hold->nchunks == room) {
            room = room ? 2 * room : 4;
            struct ArrowArray *more = PyMem_RawRealloc(hold->chunks, (size_t)room * sizeof *more);
            if (more == NULL) {
                PyErr_NoMemory();
                rc = -1;
                break;
            }
            hold->chunks = more;
        }
        struct ArrowArray *next = &hold->chunks[hold->nchunks];
        memset(next, 0, sizeof *next);
        code = stream.get_next(&stream, next);
        if (code != 0) {
            stream_error(&stream, code, "get_next");
            rc = -1;
        }
        else if (next->release == NULL) {
            break;  /* the end of the stream */
        }
        else {
            hold->nchunks++;
        }
    }
    PyObject *pending = take_exception();  /* as in arrow_release */
    stream.release(&stream);
    if (pending != NULL) {
        put_back_exception(pending);
    }
    return rc;
}

static int
refuse_format(const OperandRole *role, const struct ArrowSchema *schema)
{
    if (schema->dictionary != NULL) {
        PyErr_Format(PyExc_TypeError,
                     "%s() argument '%s' is a dictionary-encoded Arrow array (indices '%s', "
                     "values '%s'); decode it first", role->fname, role->argname,
                     schema->format, schema->dictionary->format);
    }
    else {
        PyErr_Format(PyExc_TypeError,
                     "%s() argument '%s' is an Arrow array of format '%s', which leaky cannot "
                     "compute on; it takes Arrow floats ('e', 'f', 'g'), integers and booleans "
                     "('b')", role->fname, role->argname, schema->format);
    }
    return -1;
}

/* Fills op from the chunks: zero-copy for one chunk that is not bool. */
static int
lay_out(ArrowHold *hold, Operand *op, ElemKind kind)
{
    const Py_ssize_t itemsize = itemsize_of_kind(kind);
    int64_t total = 0;
    int any_nulls = 0;
    for (Py_ssize_t i = 0; i < hold->nchunks; i++) {
        const struct ArrowArray *c = &hold->chunks[i];
        if (c->length < 0 || c->offset < 0 || c->n_buffers != 2 || c->n_children != 0 ||
            (c->length > 0 && c->buffers[1] == NULL) || c->length > PY_SSIZE_T_MAX - total) {
            PyErr_SetString(PyExc_ValueError, "malformed Arrow array: a primitive array has "
                            "two buffers, a length and an offset >= 0");
            return -1;
        }
        total += c->length;
        any_nulls |= c->null_count != 0 && c->buffers[0] != NULL;
    }
    if ((Py_ssize_t)total > PY_SSIZE_T_MAX / itemsize) {
        PyErr_SetString(PyExc_ValueError, "Arrow array too big");
        return -1;
    }
    hold->length = (Py_ssize_t)total;
    static char empty[8];
    char *values = empty;
    if (hold->nchunks == 1 && kind != KIND_BOOL) {
        const struct ArrowArray *c = &hold->chunks[0];
        if (c->length > 0) {
            values = (char *)c->buffers[1] + c->offset * itemsize;
        }
        if (any_nulls) {
            hold->validity = c->buffers[0];
            hold->validity_offset = c->offset;
        }
    }
    else if (total > 0) {
        hold->copy = PyMem_RawMalloc((size_t)(total * itemsize));
        if (any_nulls) {
            hold->own_validity = PyMem_RawMalloc((size_t)((total + 7) / 8));
        }
        if (hold->copy == NULL || (any_nulls && hold->own_validity == NULL)) {
            PyErr_NoMemory();
            return -1;
        }
        int64_t at = 0;
        for (Py_ssize_t i = 0; i < hold->nchunks; i++) {
            struct ArrowArray *c = &hold->chunks[i];
            if (kind == KIND_BOOL) {
                const unsigned char *bits = c->buffers[1];
                for (int64_t j = 0; j < c->length; j++) {
                    hold->copy[at + j] = (char)bit_at(bits, c->offset + j);
                }
            }
            else if (c->length > 0) {
                memcpy(hold->copy + at * itemsize, (const char *)c->buffers[1] + c->offset * itemsize,
                       (size_t)(c->length * itemsize));
            }
            if (any_nulls) {
                const int has = c->null_count != 0 && c->buffers[0] != NULL;
                copy_bits(hold->own_validity, at, has ? c->buffers[0] : NULL, c->offset,
                          c->length);
            }
            at += c->length;
            c->release(c);  /* its bytes are copied: given back at once */
        }
        values = hold->copy;
        hold->validity = hold->own_validity;
        hold->validity_offset = 0;
    }
    Py_buffer *v = &op->view;
    v->buf = values;
    v->itemsize = itemsize;
    v->len = hold->length * itemsize;
    v->readonly = 1;
    v->ndim = 1;
    v->format = NULL;
    v->shape = op->shape;
    v->strides = op->strides;
    op->shape[0] = hold->length;
    op->strides[0] = itemsize;
    op->kind = kind;
    return 0;
}

static int
arrow_acquire(LeakyState *st, PyObject *obj, Operand *op, const OperandRole *role)
{
    const int protocol = arrow_route(st, obj);
    if (protocol == 0) {
        return 0;
    }
    if (role->writable) {
        PyErr_Format(PyExc_ValueError,
                     "%s() argument 'out' is an Arrow array (%.200s), and Arrow arrays are "
                     "immutable: leave out= out to get a new one", role->fname,
                     Py_TYPE(obj)->tp_name);
        return -1;
    }
    ArrowHold *hold = PyMem_RawCalloc(1, sizeof *hold);
    if (hold == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    memset(&op->view, 0, sizeof op->view);
    op->view.internal = hold;
    op->owner = &arrow_input;
    op->dlpack = NULL;
    op->detached = NULL;
    if ((protocol == 1 ? take_array(st, obj, hold) : take_stream(st, obj, hold)) < 0) {
        return -1;
    }
    const struct ArrowSchema *schema = &hold->schema;
    const ElemKind kind = kind_of_format(schema->format);
    if (schema->dictionary != NULL || schema->n_children != 0 || kind == KIND_COUNT) {
        return refuse_format(role, schema);
    }
    return lay_out(hold, op, kind) < 0 ? -1 : 1;
}

/* finish(target), bound to (leaky._containers.arrow_result, source). */
static PyObject *
arrow_finish(PyObject *bound, PyObject *target)
{
    result_buffer_seal_nulls(target);
    return PyObject_CallFunctionObjArgs(PyTuple_GET_ITEM(bound, 0), target,
                                        PyTuple_GET_ITEM(bound, 1), NULL);
}

static PyMethodDef arrow_finish_def = {"arrow_finish", arrow_finish, METH_O, NULL};

/*
 * A ResultBuffer of the inputs' length, with the validity bitmap of every
 * Arrow input that has nulls ANDed into it; its finish zeroes the elements
 * under nulls and hands it to _containers.arrow_result with the source.
 */
static int
arrow_new_result(LeakyState *st, PyObject *source, ElemKind result_kind,
                 const Operand *const *inputs, int ninputs, NewResult *made)
{
    if (new_result_buffer(st, result_kind, inputs[0], NULL, made, NULL) < 0) {
        return -1;
    }
    unsigned char *validity = NULL;
    const int64_t n = inputs[0]->shape[0];
    for (int i = 0; i < ninputs; i++) {
        const ArrowHold *hold = inputs[i]->owner == &arrow_input ? inputs[i]->view.internal : NULL;
        if (hold == NULL || hold->validity == NULL) {
            continue;
        }
        if (validity == NULL) {
            validity = result_buffer_new_validity(made->target);
            if (validity == NULL) {
                return -1;
            }
            copy_bits(validity, 0, NULL, 0, n);
        }
        and_bits(validity, hold->validity, hold->validity_offset, n);
    }
    PyObject *bound = PyTuple_Pack(2, st->arrow_result, source);
    if (bound == NULL) {
        return -1;
    }
    made->finish = PyCFunction_New(&arrow_finish_def, bound);
    Py_DECREF(bound);
    return made->finish == NULL ? -1 : 0;
}

const InputKind arrow_input = {
    .name = "Arrow array",
    .acquire = arrow_acquire,
    .release = arrow_release,
    .new_result = arrow_new_result,
    .written = NULL,
};
