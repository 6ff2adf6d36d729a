/*
 * buffers.c: leaky_relu, leaky_relu_grad and leaky_relu_backward on arrays.
 *
 * Only orchestration: each operand is acquired by the first kind of input
 * that takes it (input_kinds: an exact ndarray, a buffer, an Arrow array, a DLPack tensor;
 * each its own file, which alone knows how to acquire, release and make a
 * result for it); here the shapes and the output are checked, inputs that
 * overlap the output detached, and the loop handed to the driver.
 */
#include "leaky.h"

/* Asked in this order: the ndarray fast path first, DLPack last, since a
   buffer that refuses its export (jaxlib's bfloat16) may still be a tensor,
   and a pyarrow array exports DLPack too, but without its nulls.  torch's
   C-level route comes before Arrow, so a torch tensor pays no Arrow look-up,
   and passes every tensor it is not sure of (and every error) on to the
   protocol. */
static const InputKind *const input_kinds[] = {&ndarray_input, &buffer_input, &torch_input,
                                               &arrow_input, &dlpack_input};

/*
 * leaky.c's dispatch: 1 for what the array paths take (a buffer, a DLPack
 * tensor, an Arrow array), 0 for anything else, -1 with an exception.
 * Exact numbers, lists and tuples are none of these: no attribute look-up
 * for them.
 */
int
takes_array_path(LeakyState *st, PyObject *obj)
{
    if (PyObject_CheckBuffer(obj)) {
        return 1;
    }
    if (is_sequence(obj) || is_exact_number(obj)) {
        return 0;
    }
    const int tensor = has_dlpack(st, obj);  /* input_dlpack.c */
    return tensor != 0 ? tensor : is_arrow_object(st, obj);  /* input_arrow.c */
}

static void
operand_release(Operand *op)
{
    operand_drop_detached(op);
    const InputKind *owner = op->owner;
    if (owner != NULL) {
        op->owner = NULL;
        owner->release(op);
    }
}

/* 1 with op acquired by the first kind that takes obj, 0 if none does, -1 with an exception. */
static int
acquire_operand(LeakyState *st, PyObject *obj, Operand *op, const OperandRole *role)
{
    for (size_t i = 0; i < sizeof input_kinds / sizeof *input_kinds; i++) {
        int got = input_kinds[i]->acquire(st, obj, op, role);
        if (got != 0) {
            return got;
        }
    }
    return 0;
}

static int
acquire_input(LeakyState *st, Operand *op, PyObject *obj, const char *fname, const char *argname)
{
    const OperandRole role = {fname, argname, 0};
    int got = acquire_operand(st, obj, op, &role);
    if (got == 0) {  /* leaky.c sends only buffers and tensors here */
        PyErr_Format(PyExc_TypeError, "%s() argument '%s' must be a buffer or tensor, not %.200s",
                     fname, argname, Py_TYPE(obj)->tp_name);
    }
    return got < 1 ? -1 : operand_check_size(op, fname, argname);
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
acquire_out(LeakyState *st, Operand *op, PyObject *obj, const char *fname, ElemKind result_kind,
            const Operand *like)
{
    char want[40];
    describe_result(result_kind, want, sizeof want);
    const OperandRole role = {fname, "out", 1};
    int got = acquire_operand(st, obj, op, &role);
    if (got <= 0) {
        if (got == 0) {
            PyErr_Format(PyExc_TypeError,
                         "%s() argument 'out' must be a writable buffer or tensor of %s, not "
                         "%.200s", fname, want, Py_TYPE(obj)->tp_name);
        }
        return -1;
    }
    if (op->kind != result_kind) {
        if (op->view.format != NULL || op->kind == KIND_COUNT) {
            PyErr_Format(PyExc_TypeError,
                         "%s() argument 'out' has buffer format '%s' but the result is %s",
                         fname, op->view.format ? op->view.format : "B", want);
        }
        else {  /* a tensor, which has a dtype and no format */
            PyErr_Format(PyExc_TypeError, "%s() argument 'out' has dtype %s but the result is %s",
                         fname, name_of_kind(op->kind), want);
        }
        return -1;
    }
    int same_shape = op->view.ndim == like->view.ndim;
    for (int d = 0; same_shape && d < op->view.ndim; d++) {
        same_shape = op->shape[d] == like->shape[d];
    }
    if (!same_shape) {
        PyObject *got_shape = shape_as_tuple(op->view.ndim, op->shape);
        PyObject *expected = got_shape ? shape_as_tuple(like->view.ndim, like->shape) : NULL;
        if (expected != NULL) {
            PyErr_Format(PyExc_ValueError,
                         "%s() argument 'out' has shape %R but the result has shape %R",
                         fname, got_shape, expected);
        }
        Py_XDECREF(got_shape);
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
 * Fills made with what to write: the caller's out=, or a new result in the
 * container of the source's own kind (an ndarray for an ndarray, an
 * array.array for an array.array, a tensor for a tensor, ...), in the
 * inputs' memory order where that kind keeps it.  The source is inputs[0].
 */
static int
prepare_output(LeakyState *st, const char *fname, PyObject *source,
               const Operand *const *inputs, int ninputs, PyObject *out_obj,
               ElemKind result_kind, NewResult *made)
{
    const Operand *source_op = inputs[0];
    if (out_obj != NULL) {
        if (acquire_out(st, &made->operand, out_obj, fname, result_kind, source_op) < 0) {
            return -1;
        }
        made->target = Py_NewRef(out_obj);
        return 0;
    }
    if (check_result_size(fname, result_kind, source_op) < 0) {
        return -1;
    }
    return source_op->owner->new_result(st, source, result_kind, inputs, ninputs, made);
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

/*
 * Inputs that overlap out= are computed from private copies (driver.c), all
 * of them when out may overlap itself; an input identical to out is left
 * alone (in place).  How many inputs still share memory with out, or -1.
 */
static int
detach_inputs(Operand *const *inputs, int ninputs, const Operand *out, int self_overlap)
{
    int sharing = 0;
    for (int i = 0; i < ninputs; i++) {
        if (operands_overlap(inputs[i], out)) {
            if (detach_from_output(inputs[i], out, self_overlap) < 0) {
                return -1;
            }
            sharing += inputs[i]->detached == NULL;
        }
    }
    return sharing;
}

/*
 * The loop over ops (the inputs, then the output), and the value returned:
 * the output is released first, so that a library's from_dlpack (finish)
 * sees a result nobody else holds.  NULL with an exception.
 */
static PyObject *
run_and_finish(LeakyState *st, Operand *const *ops, int nops, NewResult *made, PyObject *out_obj,
               InnerLoop loop, LoopContext *ctx, int threads)
{
    Operand *out = ops[nops - 1];
    /* a fresh result overlaps nothing; an out= that may overlap itself is
       computed from copies of the inputs, in C order */
    const int self_overlap = out_obj != NULL && operand_overlaps_itself(out);
    const int sharing = out_obj != NULL ? detach_inputs(ops, nops - 1, out, self_overlap) : 0;
    if (sharing < 0) {
        return NULL;
    }
    ctx->streaming = !self_overlap && should_stream(st, out_obj, out, sharing);
    if (run_elementwise(st, ops, nops, loop, ctx, threads, self_overlap ? ORDER_C : ORDER_ANY) < 0) {
        return NULL;
    }
    if (out_obj != NULL && out->owner->written != NULL && out->owner->written(st, out_obj) < 0) {
        return NULL;
    }
    operand_release(out);
    return finish_result(made->target, made->finish);
}

PyObject *
unary_buffer(LeakyState *st, UnaryOp op, const char *fname, PyObject *z, PyObject *out_obj,
             double alpha, int threads)
{
    Operand in = {.owner = NULL};
    NewResult made = {.target = NULL};
    PyObject *result = NULL;
    const Operand *inputs[1] = {&in};
    if (acquire_input(st, &in, z, fname, "z") < 0 ||
        prepare_output(st, fname, z, inputs, 1, out_obj, result_kind_of(in.kind), &made) < 0) {
        goto done;
    }
    LoopContext ctx = loop_context_for(alpha);
    Operand *ops[2] = {&in, &made.operand};
    const KernelTable *kernels = st->kernels;
    InnerLoop loop = (op == OP_FORWARD ? kernels->forward : kernels->grad)[in.kind];
    result = run_and_finish(st, ops, 2, &made, out_obj, loop, &ctx, threads);
done:
    operand_release(&in);
    operand_release(&made.operand);
    Py_XDECREF(made.target);
    Py_XDECREF(made.finish);
    return result;
}

PyObject *
backward_buffer(LeakyState *st, PyObject *grad_obj, PyObject *z_obj, PyObject *out_obj,
                double alpha, int threads)
{
    static const char fname[] = "leaky_relu_backward";
    Operand grad = {.owner = NULL}, z = {.owner = NULL};
    NewResult made = {.target = NULL};
    PyObject *result = NULL;
    if (acquire_input(st, &grad, grad_obj, fname, "grad_output") < 0 ||
        acquire_input(st, &z, z_obj, fname, "z") < 0) {
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
    const Operand *inputs[2] = {&grad, &z};
    if (prepare_output(st, fname, grad_obj, inputs, 2, out_obj, result_kind_of(grad.kind),
                       &made) < 0) {
        goto done;
    }
    LoopContext ctx = loop_context_for(alpha);
    ctx.grad_kind = grad.kind;
    ctx.z_kind = z.kind;
    InnerLoop loop = backward_loop_mixed;
    if (grad.kind == z.kind && is_float_kind(grad.kind)) {
        loop = st->kernels->backward_same[grad.kind - KIND_F16];
    }
    Operand *ops[3] = {&grad, &z, &made.operand};
    result = run_and_finish(st, ops, 3, &made, out_obj, loop, &ctx, threads);
done:
    operand_release(&grad);
    operand_release(&z);
    operand_release(&made.operand);
    Py_XDECREF(made.target);
    Py_XDECREF(made.finish);
    return result;
}
