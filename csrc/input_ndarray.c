/*
 * input_ndarray.c: exact numpy.ndarray as a kind of input.  The only file
 * that knows NumPy's struct layouts.
 *
 * Float arrays are read straight off the array object and their results made
 * with NumPy's PyArray_New; every other dtype is taken through the buffer
 * protocol (input_buffer.c), whose format check names what leaky cannot
 * compute, and still gets its result from PyArray_New.
 */
#include "leaky.h"

/*
 * The NumPy fast path.  Making a result through Python costs about a
 * microsecond, more than the whole kernel on a small array, so for exact
 * numpy.ndarray inputs the result comes from PyArray_New, found at run time
 * in the C-API table that NumPy exports as a capsule (no NumPy at build
 * time, nothing imported before the caller hands us an ndarray).  Table
 * slots and type numbers are NumPy's stable ABI; the data pointer's place in
 * the array object is checked against the buffer protocol once, and any
 * surprise turns the fast path off for good.
 */
#define NPY_FLOAT_TYPENUM 11
#define NPY_DOUBLE_TYPENUM 12
#define NPY_HALF_TYPENUM 23

/* The head of NumPy's PyArrayObject_fields and of PyArray_Descr, the same in
   NumPy 1.x and 2.x (the descriptor differs only after type_num). */
typedef struct {
    PyObject_HEAD
    char *data;
    int nd;
    Py_ssize_t *dimensions;
    Py_ssize_t *strides;
    PyObject *base;
    PyObject *descr;
    int flags;
} NdarrayHead;

typedef struct {
    PyObject_HEAD
    PyTypeObject *typeobj;
    char kind;
    char type;       /* the type character: 'e', 'f', 'd', ... */
    char byteorder;  /* '=' native, '<' or '>' otherwise, '|' not applicable */
    char former_flags;
    int type_num;
} DescrHead;

/* The descriptor's elsize, which differs: NumPy 1.x has an int right after
   type_num, NumPy 2.x (ABI 2) a 64-bit flags word and then an npy_intp. */
typedef struct {
    PyObject_HEAD
    PyTypeObject *typeobj;
    char kind, type, byteorder, flags;
    int type_num;
    int elsize;
} DescrV1;

typedef struct {
    PyObject_HEAD
    PyTypeObject *typeobj;
    char kind, type, byteorder, former_flags;
    int type_num;
    uint64_t flags;
    Py_ssize_t elsize;
} DescrV2;

static inline Py_ssize_t
descr_elsize(const LeakyState *st, const PyObject *descr)
{
    return st->numpy_descr_wide ? ((const DescrV2 *)descr)->elsize : ((const DescrV1 *)descr)->elsize;
}

#define NPY_ARRAY_WRITEABLE_FLAG 0x0400
#define NPY_ARRAY_WARN_ON_WRITE_FLAG 0x80000000u

static inline char *
ndarray_data(PyObject *array)
{
    return ((NdarrayHead *)array)->data;
}

static int
typenum_of_result(ElemKind kind)
{
    switch (kind) {
    case KIND_F16: return NPY_HALF_TYPENUM;
    case KIND_F32: return NPY_FLOAT_TYPENUM;
    default: return NPY_DOUBLE_TYPENUM;
    }
}

/* Looks up NumPy's C API the first time an ndarray arrives; 0 if unusable. */
static int
load_numpy_api(LeakyState *st)
{
    static const char *const modules[] = {"numpy._core._multiarray_umath",
                                          "numpy.core._multiarray_umath"};
    PyObject *core = NULL, *capsule = NULL, *probe = NULL;
    int usable = 0;
    for (size_t i = 0; i < sizeof modules / sizeof *modules && core == NULL; i++) {
        core = PyImport_ImportModule(modules[i]);
        if (core == NULL) {
            PyErr_Clear();
        }
    }
    capsule = core ? PyObject_GetAttrString(core, "_ARRAY_API") : NULL;
    void **api = capsule && PyCapsule_CheckExact(capsule) ? PyCapsule_GetPointer(capsule, NULL) : NULL;
    if (api == NULL) {
        goto done;
    }
    unsigned int (*abi_version)(void) = (unsigned int (*)(void))api[0];
    if (abi_version() < 0x01000009) {  /* NumPy 1.x's ABI and up */
        goto done;
    }
    st->numpy_descr_wide = abi_version() >= 0x02000000;
    PyTypeObject *ndarray = (PyTypeObject *)api[2];
    NewArrayFunc new_array = (NewArrayFunc)api[93];
    Py_ssize_t dims[1] = {3};
    probe = new_array(ndarray, 1, dims, NPY_DOUBLE_TYPENUM, NULL, NULL, 0, 0, NULL);
    if (probe == NULL) {
        goto done;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(probe, &view, PyBUF_RECORDS) < 0) {
        goto done;
    }
    usable = Py_TYPE(probe) == ndarray && view.buf == ndarray_data(probe) && view.ndim == 1 &&
             view.itemsize == 8 && view.shape[0] == 3 && view.strides[0] == 8 && !view.readonly;
    PyBuffer_Release(&view);
    /* what ndarray_operand reads must match the buffer protocol's answer */
    const NdarrayHead *head = (const NdarrayHead *)probe;
    const DescrHead *descr = (const DescrHead *)head->descr;
    usable = usable && head->nd == 1 && head->dimensions[0] == 3 && head->strides[0] == 8 &&
             (head->flags & NPY_ARRAY_WRITEABLE_FLAG) && descr != NULL && descr->type == 'd' &&
             descr->byteorder == '=' && descr->type_num == NPY_DOUBLE_TYPENUM &&
             descr_elsize(st, head->descr) == 8;
    /* the scalar types that name float16/32/64: ml_dtypes' int1 has type
       character 'e' and a type number of its own, one byte wide */
    for (int k = KIND_F16; usable && k <= KIND_F64; k++) {
        Py_ssize_t none[1] = {0};
        PyObject *empty = new_array(ndarray, 1, none, typenum_of_result((ElemKind)k), NULL, NULL,
                                    0, 0, NULL);
        if (empty == NULL) {
            usable = 0;
            break;
        }
        const PyObject *d = ((const NdarrayHead *)empty)->descr;
        st->numpy_float_types[k] = ((const DescrHead *)d)->typeobj;
        usable = ((const DescrHead *)d)->type_num == typenum_of_result((ElemKind)k) &&
                 descr_elsize(st, d) == itemsize_of_result((ElemKind)k);
        Py_DECREF(empty);
    }
    if (usable) {
        st->numpy_core = Py_NewRef(core);
        st->numpy_new_array = new_array;
        st->ndarray_type = ndarray;
    }
done:
    PyErr_Clear();  /* no fast path is never an error: the Python route remains */
    Py_XDECREF(probe);
    Py_XDECREF(capsule);
    Py_XDECREF(core);
    return usable;
}

/* 1 if obj is an exact numpy.ndarray and NumPy's C API is usable, which is
   looked up here the first time an ndarray arrives. */
static int
is_exact_ndarray(LeakyState *st, PyObject *obj)
{
    PyTypeObject *type = Py_TYPE(obj);
    if (ATOMIC_LOAD(&st->numpy_api) != LOOKUP_READY &&
        !look_up_once(st, &st->numpy_api, strcmp(type->tp_name, "numpy.ndarray") == 0,
                      load_numpy_api)) {
        return 0;
    }
    assert(ATOMIC_LOAD(&st->numpy_api) == LOOKUP_READY && st->numpy_new_array != NULL);
    return type == st->ndarray_type;
}

/*
 * op as a view of a float16/32/64 ndarray, read off the array object: its
 * data pointer, shape and strides.  view.obj stays NULL, so
 * buffer_view_release has nothing to give back.
 */
static void
view_of_ndarray(PyObject *array, ElemKind kind, Operand *op)
{
    static const char *const formats[] = {[KIND_F16] = "e", [KIND_F32] = "f", [KIND_F64] = "d"};
    const NdarrayHead *head = (const NdarrayHead *)array;
    Py_buffer *v = &op->view;
    memset(v, 0, sizeof *v);
    v->buf = head->data;
    v->itemsize = itemsize_of_result(kind);
    v->ndim = head->nd;
    v->readonly = !(head->flags & NPY_ARRAY_WRITEABLE_FLAG);
    v->format = (char *)formats[kind];
    v->shape = op->shape;
    v->strides = op->strides;
    Py_ssize_t len = v->itemsize;
    for (int d = 0; d < head->nd; d++) {
        op->shape[d] = head->dimensions[d];
        op->strides[d] = head->strides[d];
        len = outer_stride(len, head->dimensions[d]);
    }
    v->len = len;
    op->kind = kind;
}

/*
 * An exact float16/32/64 ndarray in native byte order, read straight off the
 * array object instead of through the buffer protocol: NumPy's getbuffer
 * rebuilds and compares a format string on every call, about 600
 * instructions, a third of a small call's cost.  Nothing to release: the
 * caller's reference keeps the array alive, as view.obj would.  Every other
 * exact ndarray goes through its buffer.
 */
static int
ndarray_acquire(LeakyState *st, PyObject *obj, Operand *op, const OperandRole *role)
{
    if (!is_exact_ndarray(st, obj)) {
        return 0;
    }
    const NdarrayHead *head = (const NdarrayHead *)obj;
    const DescrHead *descr = (const DescrHead *)head->descr;
    /* by type number, scalar type and size, never by the type character,
       which other dtypes reuse (ml_dtypes' one-byte int1 is 'e') */
    ElemKind kind = KIND_COUNT;
    switch (descr->type_num) {
    case NPY_HALF_TYPENUM: kind = KIND_F16; break;
    case NPY_FLOAT_TYPENUM: kind = KIND_F32; break;
    case NPY_DOUBLE_TYPENUM: kind = KIND_F64; break;
    default: break;  /* ints, bools and the rest: the buffer protocol's format */
    }
    if (kind == KIND_COUNT || descr->typeobj != st->numpy_float_types[kind] ||
        descr_elsize(st, head->descr) != itemsize_of_result(kind) || head->nd < 0 ||
        head->nd > PyBUF_MAX_NDIM || descr->byteorder != '=' ||
        (role->writable && (!(head->flags & NPY_ARRAY_WRITEABLE_FLAG) ||
                            ((unsigned int)head->flags & NPY_ARRAY_WARN_ON_WRITE_FLAG)))) {
        int got = buffer_view_acquire(st, obj, op, role);
        if (op->owner != NULL) {
            op->owner = &ndarray_input;  /* released as a buffer, its result an ndarray */
        }
        return got;
    }
    view_of_ndarray(obj, kind, op);
    op->owner = &ndarray_input;
    return 1;
}

/*
 * A new ndarray result shaped like the inputs, in their memory order as
 * NumPy's ufuncs lay out theirs (order='K'): np.multiply(x.T, a) is
 * F-ordered, and so is leaky_relu(x.T), whose loop then runs contiguous.
 */
static int
ndarray_new_result(LeakyState *st, PyObject *source, ElemKind result_kind,
                   const Operand *const *inputs, int ninputs, NewResult *made)
{
    const Operand *like = inputs[0];
    Py_ssize_t k_strides[PyBUF_MAX_NDIM];
    const int keep = result_k_strides(inputs, ninputs, itemsize_of_result(result_kind), k_strides);
    PyObject *array = st->numpy_new_array(st->ndarray_type, like->view.ndim, like->shape,
                                          typenum_of_result(result_kind),
                                          keep ? k_strides : NULL, NULL, 0, 0, NULL);
    if (array == NULL) {
        return -1;
    }
    made->target = array;
    made->finish = NULL;
    view_of_ndarray(array, result_kind, &made->operand);
    made->operand.owner = NULL;  /* nothing to release: made->target owns the new array */
    return 0;
}

const InputKind ndarray_input = {
    .name = "numpy.ndarray",
    .acquire = ndarray_acquire,
    .release = buffer_view_release,
    .new_result = ndarray_new_result,
};
