/*
 * buffers.c: leaky_relu, leaky_relu_grad and leaky_relu_backward on
 * anything with the buffer protocol: acquire the operands, check formats
 * and shapes, make or check the output, detach inputs that overlap it, and
 * hand the loop to the driver.
 */
#include "leaky.h"

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

static void
operand_release(Operand *op)
{
    dlpack_release(op);
    if (op->acquired) {
        PyBuffer_Release(&op->view);
        op->acquired = 0;
    }
}

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

/*
 * PyObject_GetBuffer failed on obj.  NumPy refuses to export dtypes that
 * have no buffer format (datetime64, timedelta64, ml_dtypes' bfloat16 and
 * float8 types, ...) with a ValueError; for those, raise the TypeError that
 * names the dtype, as for any format leaky cannot compute, with NumPy's
 * error as its cause.  Any other failure passes through unchanged.
 */
static int
explain_refused_export(const char *fname, const char *argname, PyObject *obj)
{
    if (!PyErr_ExceptionMatches(PyExc_ValueError)) {
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
                 fname, argname, dtype);
    Py_DECREF(dtype);
    PyObject *explained = take_exception();
    PyException_SetCause(explained, refusal);  /* steals refusal */
    put_back_exception(explained);
    return -1;
}

/*
 * The buffer export of obj failed: may it come through DLPack instead?  For
 * a BufferError from an exporter with __dlpack__ (jaxlib refuses bfloat16
 * buffers that way), yes, and the error is cleared.  NumPy's own refusals
 * (ValueError, for dtypes without a format) keep explain_refused_export's
 * message: NumPy's DLPack export refuses the same dtypes.
 */
static int
dlpack_instead(LeakyState *st, PyObject *obj)
{
    if (!PyErr_ExceptionMatches(PyExc_BufferError)) {
        return 0;
    }
    PyObject *refusal = take_exception();
    int has = has_dlpack(st, obj);
    if (has == 1) {
        Py_DECREF(refusal);
        return 1;
    }
    if (has < 0) {
        PyErr_Clear();
    }
    put_back_exception(refusal);
    return 0;
}

/* "float32 ('f')", or "bfloat16", which has no format: for messages about out=. */
static void
describe_result(ElemKind kind, char *text, size_t size)
{
    const char *format = format_of_result(kind);
    if (format != NULL) {
        snprintf(text, size, "%s ('%s')", name_of_result(kind), format);
    }
    else {
        snprintf(text, size, "%s", name_of_result(kind));
    }
}

static int
operand_acquire_input(LeakyState *st, Operand *op, PyObject *obj, const char *fname,
                      const char *argname)
{
    if (ndarray_operand(st, obj, op, 0)) {
        return operand_check_size(op, fname, argname);
    }
    if (!PyObject_CheckBuffer(obj)) {  /* leaky.c sends only DLPack exporters here */
        return dlpack_operand(st, obj, op, fname, argname, 0);
    }
    if (PyObject_GetBuffer(obj, &op->view, PyBUF_RECORDS_RO) < 0) {
        if (dlpack_instead(st, obj)) {
            return dlpack_operand(st, obj, op, fname, argname, 0);
        }
        return explain_refused_export(fname, argname, obj);
    }
    op->acquired = 1;
    switch (parse_format(op->view.format, op->view.itemsize, &op->kind)) {
    case FORMAT_OK:
        break;
    case FORMAT_FOREIGN_BYTE_ORDER:
        PyErr_Format(PyExc_TypeError,
                     "%s() argument '%s' has buffer format '%s' with non-native byte order; "
                     "convert it to native byte order first",
                     fname, argname, op->view.format);
        return -1;
    default:
        PyErr_Format(PyExc_TypeError,
                     "%s() argument '%s' has unsupported buffer format '%s' (itemsize %zd); "
                     "expected float16 'e', float32 'f', float64 'd', a signed or unsigned "
                     "integer format or bool '?'",
                     fname, argname, op->view.format ? op->view.format : "B",
                     op->view.itemsize);
        return -1;
    }
    if (operand_normalize(op, fname) < 0) {
        return -1;
    }
    return operand_check_size(op, fname, argname);
}

static PyObject *
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

static int
operand_acquire_out(LeakyState *st, Operand *op, PyObject *obj, const char *fname,
                    ElemKind result_kind, const Operand *like)
{
    char want[40];
    describe_result(result_kind, want, sizeof want);
    int is_buffer = PyObject_CheckBuffer(obj);
    int dlpack = is_buffer ? 0 : has_dlpack(st, obj);
    if (dlpack < 0) {
        return -1;
    }
    if (!is_buffer && !dlpack) {
        PyErr_Format(PyExc_TypeError,
                     "%s() argument 'out' must be a writable buffer or tensor of %s, not %.200s",
                     fname, want, Py_TYPE(obj)->tp_name);
        return -1;
    }
    ElemKind kind;
    int parsed = FORMAT_OK;
    if (ndarray_operand(st, obj, op, 1)) {
        kind = op->kind;
    }
    else if (dlpack) {
        if (dlpack_operand(st, obj, op, fname, "out", 1) < 0) {
            return -1;
        }
        kind = op->kind;
    }
    else {
        if (PyObject_GetBuffer(obj, &op->view, PyBUF_RECORDS_RO) < 0) {
            /* no DLPack door for out=: an exporter that refuses its buffer
               (jaxlib, for bfloat16) says nothing of writability through
               DLPack 0.x, and JAX arrays are immutable; read-only, then */
            if (PyErr_ExceptionMatches(PyExc_BufferError)) {
                PyObject *refusal = take_exception();
                int tensor = has_dlpack(st, obj);
                PyErr_Clear();  /* has_dlpack's own error, if any: the refusal matters more */
                if (tensor == 1) {
                    PyErr_Format(PyExc_ValueError,
                                 "%s() argument 'out' is read-only: %.200s refused its buffer, "
                                 "and leaky writes only into writable buffers and tensors",
                                 fname, Py_TYPE(obj)->tp_name);
                    PyObject *explained = take_exception();
                    PyException_SetCause(explained, refusal);  /* steals refusal */
                    put_back_exception(explained);
                    return -1;
                }
                put_back_exception(refusal);
            }
            return explain_refused_export(fname, "out", obj);
        }
        op->acquired = 1;
        if (op->view.readonly) {
            PyErr_Format(PyExc_ValueError, "%s() argument 'out' is read-only", fname);
            return -1;
        }
        parsed = parse_format(op->view.format, op->view.itemsize, &kind);
    }
    if (op->dlpack != NULL && kind != result_kind) {
        static const char *const names[KIND_COUNT] = {
            [KIND_F16] = "float16", [KIND_F32] = "float32", [KIND_F64] = "float64",
            [KIND_BF16] = "bfloat16", [KIND_BOOL] = "bool", [KIND_I8] = "int8",
            [KIND_I16] = "int16", [KIND_I32] = "int32", [KIND_I64] = "int64",
            [KIND_U8] = "uint8", [KIND_U16] = "uint16", [KIND_U32] = "uint32",
            [KIND_U64] = "uint64"};
        PyErr_Format(PyExc_TypeError, "%s() argument 'out' has dtype %s but the result is %s",
                     fname, names[kind], want);
        return -1;
    }
    if (parsed != FORMAT_OK || kind != result_kind) {
        PyErr_Format(PyExc_TypeError,
                     "%s() argument 'out' has buffer format '%s' but the result is %s",
                     fname, op->view.format ? op->view.format : "B", want);
        return -1;
    }
    op->kind = kind;
    if (op->acquired && operand_normalize(op, fname) < 0) {
        return -1;
    }
    int same_shape = op->view.ndim == like->view.ndim;
    for (int d = 0; same_shape && d < op->view.ndim; d++) {
        same_shape = op->shape[d] == like->shape[d];
    }
    if (!same_shape) {
        PyObject *got = shape_as_tuple(op->view.ndim, op->shape);
        PyObject *expected = got ? shape_as_tuple(like->view.ndim, like->shape) : NULL;
        if (expected != NULL) {
            PyErr_Format(PyExc_ValueError,
                         "%s() argument 'out' has shape %R but the result has shape %R",
                         fname, got, expected);
        }
        Py_XDECREF(got);
        Py_XDECREF(expected);
        return -1;
    }
    return operand_check_size(op, fname, "out");
}

/*
 * A result whose byte count would not fit in Py_ssize_t (an int8 input
 * broadcast to 2**61 elements has a float64 result 8 times its size):
 * ValueError before anything is allocated, with NumPy's words for it.
 */
static int
check_result_size(const char *fname, ElemKind result_kind, const Operand *like)
{
    Py_ssize_t nbytes;
    if (!checked_nbytes(like->view.ndim, like->shape, itemsize_of_result(result_kind), &nbytes)) {
        return 0;
    }
    PyObject *shape = shape_as_tuple(like->view.ndim, like->shape);
    if (shape != NULL) {
        PyErr_Format(PyExc_ValueError,
                     "%s() result is too big: shape %R of %s takes more than %zd bytes",
                     fname, shape, name_of_result(result_kind), PY_SSIZE_T_MAX);
        Py_DECREF(shape);
    }
    return -1;
}

/*
 * A new result with the shape of `like`, in the container that fits the
 * source: NumPy and array.array containers come from leaky._containers (in
 * Python, so that importing leaky never imports NumPy); everything else gets
 * a memoryview of a ResultBuffer.  On success *target is the object to write
 * into and *finish, if not NULL, is called on it to make the value returned.
 */
static int
new_result(LeakyState *st, PyObject *source, ElemKind result_kind, const Operand *like,
           PyObject **target, PyObject **finish)
{
    *target = NULL;
    *finish = NULL;
    PyTypeObject *type = Py_TYPE(source);
    if (type != &PyMemoryView_Type && type != &PyBytes_Type && type != &PyByteArray_Type) {
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
        PyObject *made = PyObject_Vectorcall(st->new_result, args, 3, NULL);
        Py_DECREF(format);
        Py_DECREF(shape);
        if (made == NULL) {
            return -1;
        }
        if (made != Py_None) {
            if (!PyTuple_Check(made) || PyTuple_GET_SIZE(made) != 2) {
                PyErr_SetString(PyExc_SystemError,
                                "leaky._containers.new_result must return None or a pair");
                Py_DECREF(made);
                return -1;
            }
            PyObject *made_target = PyTuple_GET_ITEM(made, 0);
            PyObject *fin = PyTuple_GET_ITEM(made, 1);
            *finish = fin == Py_None ? NULL : Py_NewRef(fin);
            if (made_target != Py_None) {
                *target = Py_NewRef(made_target);
                Py_DECREF(made);
                return 0;
            }
            Py_DECREF(made);  /* (None, finish): a ResultBuffer, then finish */
            *target = result_buffer_new(st->result_buffer_type, result_kind, like->view.ndim,
                                        like->shape);
            return *target == NULL ? -1 : 0;
        }
        Py_DECREF(made);
    }
    *target = result_buffer_new(st->result_buffer_type, result_kind, like->view.ndim, like->shape);
    if (*target == NULL) {
        return -1;
    }
    /* a tensor of no known library gets the ResultBuffer itself, which
       exports __dlpack__ (and, but for bfloat16, a buffer); buffers get a
       memoryview of it */
    *finish = like->dlpack != NULL ? NULL : Py_NewRef((PyObject *)&PyMemoryView_Type);
    return 0;
}
/* Fills out_op with the buffer to write: the caller's out=, or a new result. */
static int
prepare_output(LeakyState *st, const char *fname, PyObject *source, PyObject *out_obj,
               ElemKind result_kind, const Operand *like, Operand *out_op,
               PyObject **target, PyObject **finish)
{
    if (out_obj != NULL) {
        if (operand_acquire_out(st, out_op, out_obj, fname, result_kind, like) < 0) {
            return -1;
        }
        *target = Py_NewRef(out_obj);
        *finish = NULL;
        return 0;
    }
    if (check_result_size(fname, result_kind, like) < 0) {
        return -1;
    }
    *target = new_ndarray_result(st, source, result_kind, like, out_op);
    if (*target != NULL) {
        *finish = NULL;
        return 0;
    }
    if (PyErr_Occurred() || new_result(st, source, result_kind, like, target, finish) < 0) {
        return -1;
    }
    if (Py_TYPE(*target) == st->result_buffer_type) {
        result_buffer_operand(*target, out_op);  /* also for bfloat16, which has no format */
        return 0;
    }
    if (PyObject_GetBuffer(*target, &out_op->view, PyBUF_RECORDS) < 0) {
        return -1;
    }
    out_op->acquired = 1;
    out_op->kind = result_kind;
    return operand_normalize(out_op, fname);
}

static PyObject *
finish_result(PyObject *target, PyObject *finish)
{
    if (finish == NULL) {
        return Py_NewRef(target);
    }
    return PyObject_CallOneArg(finish, target);
}

/*
 * Non-temporal stores, only into a big caller-provided out= that no input
 * shares.  Not into a result we just allocated: its pages come fresh from
 * the OS, which zeroes them and so leaves them in cache, where plain stores
 * hit; measured on a 2-core Xeon VM at 10**7 float32, streaming made
 * out-of-place calls 17% slower (9.0 vs 7.7 ms) and out= calls no faster.
 */
static int
should_stream(const LeakyState *st, PyObject *out_obj, const Operand *out,
              Py_ssize_t overlapping_inputs)
{
    return out_obj != NULL && overlapping_inputs == 0 &&
           out->view.len >= ATOMIC_LOAD(&st->tuning.stream_bytes);
}

PyObject *
unary_buffer(LeakyState *st, UnaryOp op, const char *fname, PyObject *z, PyObject *out_obj,
             double alpha, int threads)
{
    Operand in = {.acquired = 0}, out = {.acquired = 0};
    PyObject *target = NULL, *finish = NULL, *result = NULL;
    char *detached = NULL;
    if (operand_acquire_input(st, &in, z, fname, "z") < 0) {
        goto done;
    }
    const ElemKind result_kind = result_kind_of(in.kind);
    if (prepare_output(st, fname, z, out_obj, result_kind, &in, &out, &target, &finish) < 0) {
        goto done;
    }
    /* a fresh result overlaps nothing; an out= that may overlap itself is
       computed from copies of the inputs, in C order */
    const int overlaps = out_obj != NULL && operands_overlap(&in, &out);
    const int self_overlap = out_obj != NULL && operand_overlaps_itself(&out);
    int failed = 0;
    detached = overlaps ? detach_from_output(&in, &out, self_overlap, &failed) : NULL;
    if (failed) {
        goto done;
    }
    LoopContext ctx = loop_context_for(alpha);
    ctx.streaming = !self_overlap && should_stream(st, out_obj, &out, overlaps && !detached);
    Operand *ops[2] = {&in, &out};
    const KernelTable *kernels = st->kernels;
    if (run_elementwise(st, ops, 2, (op == OP_FORWARD ? kernels->forward : kernels->grad)[in.kind],
                        &ctx, threads, self_overlap ? ORDER_C : ORDER_ANY) < 0 ||
        (out_obj != NULL && out.dlpack != NULL && dlpack_written(st, out_obj) < 0)) {
        goto done;
    }
    operand_release(&out);
    result = finish_result(target, finish);
done:
    PyMem_Free(detached);
    operand_release(&in);
    operand_release(&out);
    Py_XDECREF(target);
    Py_XDECREF(finish);
    return result;
}

PyObject *
backward_buffer(LeakyState *st, PyObject *grad_obj, PyObject *z_obj, PyObject *out_obj,
                double alpha, int threads)
{
    static const char fname[] = "leaky_relu_backward";
    Operand grad = {.acquired = 0}, z = {.acquired = 0}, out = {.acquired = 0};
    PyObject *target = NULL, *finish = NULL, *result = NULL;
    char *detached_grad = NULL, *detached_z = NULL;
    if (operand_acquire_input(st, &grad, grad_obj, fname, "grad_output") < 0 ||
        operand_acquire_input(st, &z, z_obj, fname, "z") < 0) {
        goto done;
    }
    int same_shape = grad.view.ndim == z.view.ndim;
    for (int d = 0; same_shape && d < grad.view.ndim; d++) {
        same_shape = grad.shape[d] == z.shape[d];
    }
    if (!same_shape) {
        PyObject *gshape = shape_as_tuple(grad.view.ndim, grad.shape);
        PyObject *zshape = gshape ? shape_as_tuple(z.view.ndim, z.shape) : NULL;
        if (zshape != NULL) {
            PyErr_Format(PyExc_ValueError,
                         "%s() grad_output and z must have the same shape, got %R and %R",
                         fname, gshape, zshape);
        }
        Py_XDECREF(gshape);
        Py_XDECREF(zshape);
        goto done;
    }
    const ElemKind result_kind = result_kind_of(grad.kind);
    if (prepare_output(st, fname, grad_obj, out_obj, result_kind, &grad, &out, &target,
                       &finish) < 0) {
        goto done;
    }
    const int grad_overlaps = out_obj != NULL && operands_overlap(&grad, &out);
    const int z_overlaps = out_obj != NULL && operands_overlap(&z, &out);
    const int self_overlap = out_obj != NULL && operand_overlaps_itself(&out);
    int failed = 0;
    detached_grad = grad_overlaps ? detach_from_output(&grad, &out, self_overlap, &failed) : NULL;
    if (failed) {
        goto done;
    }
    detached_z = z_overlaps ? detach_from_output(&z, &out, self_overlap, &failed) : NULL;
    if (failed) {
        goto done;
    }
    LoopContext ctx = loop_context_for(alpha);
    ctx.streaming = !self_overlap &&
        should_stream(st, out_obj, &out, (grad_overlaps && !detached_grad) + (z_overlaps && !detached_z));
    ctx.grad_kind = grad.kind;
    ctx.z_kind = z.kind;
    InnerLoop loop = backward_loop_mixed;
    if (grad.kind == z.kind && is_float_kind(grad.kind)) {
        loop = st->kernels->backward_same[grad.kind - KIND_F16];
    }
    Operand *ops[3] = {&grad, &z, &out};
    if (run_elementwise(st, ops, 3, loop, &ctx, threads, self_overlap ? ORDER_C : ORDER_ANY) < 0 ||
        (out_obj != NULL && out.dlpack != NULL && dlpack_written(st, out_obj) < 0)) {
        goto done;
    }
    operand_release(&out);
    result = finish_result(target, finish);
done:
    PyMem_Free(detached_grad);
    PyMem_Free(detached_z);
    operand_release(&grad);
    operand_release(&z);
    operand_release(&out);
    Py_XDECREF(target);
    Py_XDECREF(finish);
    return result;
}
