/*
 * input_dlpack.c: DLPack tensors as a kind of input, and results out as
 * capsules (dlpack.h).
 *
 * In: an object with __dlpack__ and no usable buffer (torch tensors, JAX
 * bfloat16 arrays, any array-API library) becomes an Operand, so that the
 * same driver and kernels run on it.  The protocol, as the array API
 * standard's __dlpack__ page says:
 *
 *   1. __dlpack_device__() must say CPU, before anything is exported;
 *   2. __dlpack__(max_version=(1, 0)) asks for a DLManagedTensorVersioned
 *      ("dltensor_versioned" capsule); an exporter that does not know the
 *      keyword (TypeError) is asked again without it and gives the older
 *      DLManagedTensor ("dltensor");
 *   3. the consumer renames the capsule "used_..." as it takes ownership,
 *      and then calls the tensor's deleter exactly once when done.  Until
 *      the rename, the exporter's capsule destructor frees the tensor, so an
 *      error before it needs nothing from us; after it, the Operand holds
 *      the capsule and dlpack_release calls the deleter.
 *
 * Result: a ResultBuffer (result_buffer.c) handed to the tensor's own
 * library's from_dlpack (leaky._containers), or returned as it is.  Its
 * __dlpack__ hands its memory over through dlpack_export, without a copy.
 */
#include "leaky.h"
#include "dlpack.h"

int
dlpack_init_state(LeakyState *st)
{
    st->str_dlpack = PyUnicode_InternFromString("__dlpack__");
    st->str_dlpack_device = PyUnicode_InternFromString("__dlpack_device__");
    st->dlpack_kwnames = Py_BuildValue("(s)", "max_version");
    st->dlpack_out_kwnames = Py_BuildValue("(ss)", "max_version", "copy");
    st->dlpack_max_version = Py_BuildValue("(ii)", DLPACK_MAJOR_VERSION, DLPACK_MINOR_VERSION);
    static const char *const array_like[4] = {"__array__", "__array_interface__",
                                              "__array_struct__", "__dlpack__"};
    for (int i = 0; i < 4; i++) {
        st->array_like_names[i] = PyUnicode_InternFromString(array_like[i]);
        if (st->array_like_names[i] == NULL) {
            return -1;
        }
    }
    static const char *const torch_names[TORCH_NAME_COUNT] = {
        [TORCH_IS_NEG] = "is_neg", [TORCH_IS_ZEROTENSOR] = "_is_zerotensor",
        [TORCH_IS_INFERENCE] = "is_inference", [TORCH_RESOLVE_NEG] = "resolve_neg",
        [TORCH_CLONE] = "clone",
        [TORCH_GRAPH_MODULE] = "torch.autograd.graph",
        [TORCH_INCREMENT_VERSION] = "increment_version", [TORCH_REQUIRES_GRAD] = "requires_grad"};
    for (int i = 0; i < TORCH_NAME_COUNT; i++) {
        st->torch_names[i] = PyUnicode_InternFromString(torch_names[i]);
        if (st->torch_names[i] == NULL) {
            return -1;
        }
    }
    return (st->str_dlpack && st->str_dlpack_device && st->dlpack_kwnames &&
            st->dlpack_out_kwnames && st->dlpack_max_version) ? 0 : -1;
}

void
dlpack_clear_state(LeakyState *st)
{
    Py_CLEAR(st->str_dlpack);
    Py_CLEAR(st->str_dlpack_device);
    Py_CLEAR(st->dlpack_kwnames);
    Py_CLEAR(st->dlpack_out_kwnames);
    Py_CLEAR(st->dlpack_max_version);
    for (int i = 0; i < 4; i++) {
        Py_CLEAR(st->array_like_names[i]);
    }
    for (int i = 0; i < TORCH_NAME_COUNT; i++) {
        Py_CLEAR(st->torch_names[i]);
    }
    Py_CLEAR(st->torch_tensor_type);
    Py_CLEAR(st->torch_tensor_dlpack);
    Py_CLEAR(st->torch_tensor_dlpack_device);
    Py_CLEAR(st->torch_has_torch_function);
    Py_CLEAR(st->torch_to_dlpack);
    Py_CLEAR(st->torch_finish);
    Py_CLEAR(st->torch_increment_version);
    st->torch_route = LOOKUP_UNUSABLE;  /* torn down: never looked up again */
}

/*
 * Whether obj offers __dlpack__: 1, 0, or -1 with an exception (an
 * attribute lookup that raised something other than AttributeError).
 * Called only for objects that are neither exact numbers, buffers, lists
 * nor tuples, so the number and buffer paths never pay for it.
 */
int
has_dlpack(LeakyState *st, PyObject *obj)
{
    PyObject *method = PyObject_GetAttr(obj, st->str_dlpack);
    if (method != NULL) {
        Py_DECREF(method);
        return 1;
    }
    if (PyErr_ExceptionMatches(PyExc_AttributeError)) {
        PyErr_Clear();
        return 0;
    }
    return -1;
}


/* ------------------------------------------------------------------ */
/* Import                                                             */
/* ------------------------------------------------------------------ */

static const char *
device_name(int32_t type)
{
    switch (type) {
    case 2: return "cuda";
    case 3: return "cuda_host (pinned)";
    case 4: return "opencl";
    case 7: return "vulkan";
    case 8: return "metal (mps)";
    case 9: return "vpi";
    case 10: return "rocm";
    case 11: return "rocm_host";
    case 13: return "cuda_managed";
    case 14: return "oneapi (xpu)";
    case 15: return "webgpu";
    case 16: return "hexagon";
    case 17: return "maia";
    default: return "a non-CPU device";
    }
}

/* The kind leaky computes a DLPack dtype as; 0 with *name set if it cannot. */
static int
kind_of_dtype(DLDataType dtype, ElemKind *kind, char *name, size_t size)
{
    static const char *const float8_names[] = {
        [7] = "float8_e3m4",   [8] = "float8_e4m3",        [9] = "float8_e4m3b11fnuz",
        [10] = "float8_e4m3fn", [11] = "float8_e4m3fnuz",   [12] = "float8_e5m2",
        [13] = "float8_e5m2fnuz", [14] = "float8_e8m0fnu", [15] = "float6_e2m3fn",
        [16] = "float6_e3m2fn", [17] = "float4_e2m1fn",
    };
    const unsigned bits = dtype.bits;
    int ok = dtype.lanes == 1;
    switch (dtype.code) {
    case kDLFloat:
        *kind = bits == 16 ? KIND_F16 : bits == 32 ? KIND_F32 : KIND_F64;
        ok = ok && (bits == 16 || bits == 32 || bits == 64);
        snprintf(name, size, "float%u", bits);
        break;
    case kDLBfloat:
        *kind = KIND_BF16;
        ok = ok && bits == 16;
        snprintf(name, size, bits == 16 ? "bfloat16" : "bfloat%u", bits);
        break;
    case kDLInt:
    case kDLUInt: {
        const int u = dtype.code == kDLUInt;
        *kind = bits == 8 ? (u ? KIND_U8 : KIND_I8) : bits == 16 ? (u ? KIND_U16 : KIND_I16)
              : bits == 32 ? (u ? KIND_U32 : KIND_I32) : (u ? KIND_U64 : KIND_I64);
        ok = ok && (bits == 8 || bits == 16 || bits == 32 || bits == 64);
        snprintf(name, size, "%sint%u", u ? "u" : "", bits);
        break;
    }
    case kDLBool:
        *kind = KIND_BOOL;
        ok = ok && bits == 8;
        snprintf(name, size, "bool%s", bits == 8 ? "" : " (not 8 bits)");
        break;
    case kDLComplex:
        ok = 0;
        snprintf(name, size, "complex%u", bits);
        break;
    default:
        ok = 0;
        if (dtype.code < sizeof float8_names / sizeof float8_names[0] &&
            float8_names[dtype.code] != NULL) {
            snprintf(name, size, "%s", float8_names[dtype.code]);
        }
        else {
            snprintf(name, size, "DLPack type code %u of %u bits", dtype.code, bits);
        }
    }
    if (ok) {
        return 1;
    }
    if (dtype.lanes != 1) {
        size_t used = strlen(name);
        snprintf(name + used, size - used, " in vectors of %u lanes", dtype.lanes);
    }
    return 0;
}

/*
 * A torch tensor: its type derives from torch._C.TensorBase, a static type
 * (so no Python class can pose as it by name).  Read off the type alone:
 * torch is never imported, nor looked up, and other objects pay a short MRO
 * walk.
 */
static int
is_torch_tensor(PyObject *obj)
{
    PyObject *mro = Py_TYPE(obj)->tp_mro;
    for (Py_ssize_t i = 0; mro != NULL && i < PyTuple_GET_SIZE(mro); i++) {
        PyTypeObject *base = (PyTypeObject *)PyTuple_GET_ITEM(mro, i);
        if (!(base->tp_flags & Py_TPFLAGS_HEAPTYPE) &&
            strcmp(base->tp_name, "torch._C.TensorBase") == 0) {
            return 1;
        }
    }
    return 0;
}

/* obj.name() as a truth value: 1, 0, or -1 with an exception. */
static int
call_predicate(PyObject *obj, const char *name)
{
    PyObject *answer = PyObject_CallMethod(obj, name, NULL);
    int truth = answer != NULL ? PyObject_IsTrue(answer) : -1;
    Py_XDECREF(answer);
    return truth;
}

static int
call_predicate_named(PyObject *obj, PyObject *name)
{
    PyObject *answer = PyObject_CallMethodNoArgs(obj, name);
    int truth = answer != NULL ? PyObject_IsTrue(answer) : -1;
    Py_XDECREF(answer);
    return truth;
}

/*
 * What a torch tensor's DLPack export cannot say: torch exports a tensor
 * with the negative bit (torch._neg_view, a lazy negation) as its
 * un-negated memory.  An input gets it resolved (torch's resolve_neg(), a
 * copy); an out= gets refused, and so does an inference tensor outside
 * inference mode, as torch refuses in-place writes into one.  (Zero
 * tensors, exported with a NULL data pointer, are caught there, at no cost
 * here: dlpack_operand.)  *source: a new reference to what to export (obj
 * itself but for a resolved input).  0, or -1 with an exception.  Costs
 * the common path one (input) or two (out=) of torch's C methods.
 */
static int
torch_export_source(LeakyState *st, PyObject *obj, const char *fname, const char *argname,
                    int writable, PyObject **source)
{
    *source = NULL;
    int neg = call_predicate_named(obj, st->torch_names[TORCH_IS_NEG]);
    if (neg < 0) {
        return -1;
    }
    if (writable) {
        if (neg) {
            PyErr_Format(PyExc_TypeError,
                         "%s() argument 'out' has torch's negative bit set (a lazy negation, "
                         "as torch._neg_view makes), which DLPack does not carry: leaky would "
                         "store the negation of its results; write into a tensor without the "
                         "bit (`t.resolve_neg()` is a copy)",
                         fname);
            return -1;
        }
        int inference = call_predicate_named(obj, st->torch_names[TORCH_IS_INFERENCE]);
        if (inference < 0) {
            return -1;
        }
        if (inference) {
            PyObject *name = PyUnicode_FromString("torch");
            PyObject *torch = name != NULL ? PyImport_GetModule(name) : NULL;
            Py_XDECREF(name);
            PyObject *enabled = torch != NULL
                ? PyObject_CallMethod(torch, "is_inference_mode_enabled", NULL) : NULL;
            Py_XDECREF(torch);
            int inside = enabled != NULL ? PyObject_IsTrue(enabled) : -1;
            Py_XDECREF(enabled);
            if (inside < 0 && !PyErr_Occurred()) {  /* torch left sys.modules */
                inside = 0;
            }
            if (inside < 0) {
                return -1;
            }
            if (!inside) {
                PyErr_Format(PyExc_ValueError,
                             "%s() argument 'out' is an inference tensor, which torch lets no "
                             "in-place operation update outside torch.inference_mode(); write "
                             "inside it, or into `t.clone()`",
                             fname);
                return -1;
            }
        }
        *source = Py_NewRef(obj);
        return 0;
    }
    *source = neg ? PyObject_CallMethodNoArgs(obj, st->torch_names[TORCH_RESOLVE_NEG])
                  : Py_NewRef(obj);
    return *source != NULL ? 0 : -1;
}

static void dlpack_release(Operand *op);
static int dlpack_operand(LeakyState *st, PyObject *obj, Operand *op, const OperandRole *role);

/*
 * A tensor exported with a NULL data pointer but elements: torch's zero
 * tensors (torch._efficientzerotensor) are exported so.  As an input, one
 * is materialized (clone(), a copy) and taken instead; as out= it is
 * refused, as torch refuses in-place writes into one.  Anything else is a
 * broken export.  op holds obj's capsule, released here if it is replaced.
 * 1, or -1 with an exception.
 */
static int
null_data_operand(LeakyState *st, PyObject *obj, Operand *op, const OperandRole *role,
                  int torch)
{
    const char *fname = role->fname, *argname = role->argname;
    const int writable = role->writable;
    int zero = torch ? call_predicate_named(obj, st->torch_names[TORCH_IS_ZEROTENSOR]) : 0;
    if (zero < 0) {
        return -1;
    }
    if (zero && writable) {
        PyErr_Format(PyExc_ValueError,
                     "%s() argument 'out' is a zero tensor (torch._efficientzerotensor), "
                     "which torch keeps immutable; write into a materialized one: `t.clone()`",
                     fname);
        return -1;
    }
    if (zero) {
        PyObject *materialized = PyObject_CallMethodNoArgs(obj, st->torch_names[TORCH_CLONE]);
        if (materialized == NULL) {
            return -1;
        }
        dlpack_release(op);
        /* a clone has its own memory: this does not come back here */
        int done = dlpack_operand(st, materialized, op, role);
        Py_DECREF(materialized);
        return done;
    }
    PyErr_Format(PyExc_BufferError, "%s() argument '%s' exported a NULL data pointer for %zd bytes",
                 fname, argname, op->view.len);
    return -1;
}

/*
 * __dlpack__ (or __dlpack_device__) raised.  Say why where leaky knows a
 * common reason, with the original error as the cause; pass anything else
 * through.  Only on this error path, so the usual call pays nothing for it.
 */
static void
explain_export_failure(const char *fname, const char *argname, PyObject *obj)
{
    PyObject *exc = take_exception();
    PyObject *requires_grad = PyObject_GetAttrString(obj, "requires_grad");
    int grad = requires_grad != NULL ? PyObject_IsTrue(requires_grad) : 0;
    Py_XDECREF(requires_grad);
    PyErr_Clear();
    /* a device DLPack has no code for (torch's "meta"): tensor.device.type */
    PyObject *device = grad > 0 ? NULL : PyObject_GetAttrString(obj, "device");
    PyObject *device_type = device != NULL ? PyObject_GetAttrString(device, "type") : NULL;
    Py_XDECREF(device);
    PyErr_Clear();
    const char *type_name = device_type != NULL && PyUnicode_Check(device_type)
                                ? PyUnicode_AsUTF8(device_type) : NULL;
    PyErr_Clear();
    int conj = grad <= 0 && is_torch_tensor(obj) ? call_predicate(obj, "is_conj") : 0;
    if (grad > 0 && strcmp(argname, "out") == 0) {
        /* torch refuses in-place writes into a leaf that requires grad; a
           detached view shares the tensor's version counter, which
           dlpack_written bumps, so autograd still sees the write */
        PyErr_Format(PyExc_TypeError,
                     "%s() argument 'out' is a tensor that requires grad, and leaky writes "
                     "outside autograd (torch refuses in-place writes into a leaf that requires "
                     "grad too): write into `t.detach()`, whose version counter autograd checks",
                     fname);
    }
    else if (grad > 0) {
        PyErr_Format(PyExc_TypeError,
                     "%s() argument '%s' is a tensor that requires grad; leaky computes "
                     "outside autograd: call it on `t.detach()`",
                     fname, argname);
    }
    else if (conj > 0) {  /* torch sets the bit only on complex tensors */
        PyErr_Format(PyExc_TypeError,
                     "%s() argument '%s' is a complex tensor with torch's conjugate bit set; "
                     "leaky cannot compute complex dtypes (`t.resolve_conj()` would still be "
                     "complex)",
                     fname, argname);
    }
    else if (is_jax_tracer(obj)) {
        explain_jax_tracer(fname, argname, obj);
    }
    else if (type_name != NULL && strcmp(type_name, "cpu") != 0) {
        PyErr_Format(PyExc_TypeError,
                     "%s() argument '%s' is on device '%s', but leaky runs on the CPU; move "
                     "it with `.cpu()` first",
                     fname, argname, type_name);
    }
    else {
        Py_XDECREF(device_type);
        put_back_exception(exc);
        return;
    }
    Py_XDECREF(device_type);
    PyObject *explained = take_exception();
    PyException_SetCause(explained, exc);  /* steals exc */
    put_back_exception(explained);
}

/* obj.__dlpack_device__() is the CPU: 0; else -1 with an exception. */
static int
check_device(LeakyState *st, PyObject *obj, const char *fname, const char *argname)
{
    PyObject *device = PyObject_CallMethodNoArgs(obj, st->str_dlpack_device);
    if (device == NULL) {
        explain_export_failure(fname, argname, obj);
        return -1;
    }
    long type = -1, id = -1;
    if (PyTuple_Check(device) && PyTuple_GET_SIZE(device) == 2) {
        type = PyLong_AsLong(PyTuple_GET_ITEM(device, 0));
        id = PyLong_AsLong(PyTuple_GET_ITEM(device, 1));
    }
    Py_DECREF(device);
    if (PyErr_Occurred()) {
        return -1;
    }
    if (type == kDLCPU) {
        return 0;
    }
    if (type < 0) {
        PyErr_Format(PyExc_TypeError,
                     "%s() argument '%s': %.200s.__dlpack_device__() must return a pair "
                     "(device_type, device_id)",
                     fname, argname, Py_TYPE(obj)->tp_name);
        return -1;
    }
    PyErr_Format(PyExc_TypeError,
                 "%s() argument '%s' is on %s (DLPack device type %ld, id %ld), but leaky runs "
                 "on the CPU; move it with `.cpu()` (or your library's equivalent) first",
                 fname, argname, device_name((int32_t)type), type, id);
    return -1;
}

/*
 * The capsule source exports (obj, or what torch_export_source resolved it
 * to), versioned if it can; NULL with an exception, explained for obj.  For
 * out= (writable), copy=False: a write into a copy would be lost.  An
 * exporter that cannot share raises BufferError (the standard's answer),
 * passed on; one that knows neither keyword (TypeError) is asked with fewer.
 */
static PyObject *
export_capsule(LeakyState *st, PyObject *obj, PyObject *source, const char *fname,
               const char *argname, int writable)
{
    PyObject *args[3] = {source, st->dlpack_max_version, Py_False};
    PyObject *capsule = PyObject_VectorcallMethod(
        st->str_dlpack, args, 1 | PY_VECTORCALL_ARGUMENTS_OFFSET,
        writable ? st->dlpack_out_kwnames : st->dlpack_kwnames);
    if (capsule == NULL && writable && PyErr_ExceptionMatches(PyExc_TypeError)) {
        /* knows max_version but not copy (not the standard's 2023.12): the
           IS_COPIED flag still tells */
        PyErr_Clear();
        capsule = PyObject_VectorcallMethod(
            st->str_dlpack, args, 1 | PY_VECTORCALL_ARGUMENTS_OFFSET, st->dlpack_kwnames);
    }
    if (capsule == NULL && PyErr_ExceptionMatches(PyExc_TypeError)) {
        /* a pre-1.0 exporter, which knows no max_version: the older capsule */
        PyErr_Clear();
        capsule = PyObject_CallMethodNoArgs(source, st->str_dlpack);
    }
    if (capsule == NULL) {
        explain_export_failure(fname, argname, obj);
    }
    return capsule;
}

static void
dlpack_release(Operand *op)
{
    PyObject *capsule = op->dlpack;
    if (capsule == NULL) {
        return;
    }
    op->dlpack = NULL;
    /* release runs on error paths too: the deleter (which may be Python, as
       a ctypes exporter's is) must not see the pending exception */
    PyObject *pending = take_exception();
    const char *name = PyCapsule_GetName(capsule);
    if (name != NULL && strcmp(name, DLPACK_VERSIONED_CAPSULE_USED) == 0) {
        DLManagedTensorVersioned *managed = PyCapsule_GetPointer(capsule, name);
        if (managed != NULL && managed->deleter != NULL) {
            managed->deleter(managed);
        }
    }
    else {
        DLManagedTensor *managed = PyCapsule_GetPointer(capsule, name);
        if (managed != NULL && managed->deleter != NULL) {
            managed->deleter(managed);
        }
    }
    if (PyErr_Occurred()) {  /* a deleter cannot report failure: as CPython does */
        PyErr_WriteUnraisable(capsule);
    }
    Py_DECREF(capsule);
    if (pending != NULL) {
        put_back_exception(pending);
    }
}

static int take_capsule(LeakyState *st, PyObject *obj, PyObject *capsule, Operand *op,
                        const OperandRole *role, int torch, const InputKind *owner);

/*
 * obj, which has __dlpack__, as an Operand: op->dlpack then holds the used
 * capsule, and dlpack_release calls the deleter.  A writable role (out=)
 * refuses a tensor flagged read-only as a read-only buffer is refused.
 */
static int
dlpack_operand(LeakyState *st, PyObject *obj, Operand *op, const OperandRole *role)
{
    const char *fname = role->fname, *argname = role->argname;
    const int writable = role->writable;
    if (check_device(st, obj, fname, argname) < 0) {
        return -1;
    }
    const int torch = is_torch_tensor(obj);
    PyObject *source = NULL;
    if (torch && torch_export_source(st, obj, fname, argname, writable, &source) < 0) {
        return -1;
    }
    PyObject *capsule = export_capsule(st, obj, source ? source : obj, fname, argname, writable);
    Py_XDECREF(source);  /* a resolved copy lives on in its capsule */
    if (capsule == NULL) {
        return -1;
    }
    return take_capsule(st, obj, capsule, op, role, torch, &dlpack_input);
}

/*
 * The capsule obj exported (a reference handed over), taken as op: renamed
 * "used_..." and held by op for owner's release, or freed on an error.
 * 1, or -1 with an exception.
 */
static int
take_capsule(LeakyState *st, PyObject *obj, PyObject *capsule, Operand *op,
             const OperandRole *role, int torch, const InputKind *owner)
{
    const char *fname = role->fname, *argname = role->argname;
    const int writable = role->writable;
    DLTensor *t;
    uint64_t flags = 0;
    int versioned = 0;
    if (PyCapsule_IsValid(capsule, DLPACK_VERSIONED_CAPSULE)) {
        versioned = 1;
        DLManagedTensorVersioned *managed = PyCapsule_GetPointer(capsule, DLPACK_VERSIONED_CAPSULE);
        if (managed->version.major != DLPACK_MAJOR_VERSION) {
            /* not renamed: the exporter's capsule destructor frees it, and
               before the error is set, since a destructor may run Python */
            DLPackVersion version = managed->version;
            Py_DECREF(capsule);
            PyErr_Format(PyExc_BufferError,
                         "%s() argument '%s' exported DLPack %u.%u; leaky reads DLPack 1.x",
                         fname, argname, version.major, version.minor);
            return -1;
        }
        if (PyCapsule_SetName(capsule, DLPACK_VERSIONED_CAPSULE_USED) < 0) {
            Py_DECREF(capsule);
            return -1;
        }
        t = &managed->dl_tensor;
        flags = managed->flags;
    }
    else if (PyCapsule_IsValid(capsule, DLPACK_CAPSULE)) {
        DLManagedTensor *managed = PyCapsule_GetPointer(capsule, DLPACK_CAPSULE);
        if (PyCapsule_SetName(capsule, DLPACK_CAPSULE_USED) < 0) {
            Py_DECREF(capsule);
            return -1;
        }
        t = &managed->dl_tensor;
    }
    else {
        /* a capsule renamed "used_..." was consumed before: handed out twice */
        const char *name = PyCapsule_CheckExact(capsule) ? PyCapsule_GetName(capsule) : NULL;
        int used = name != NULL && strncmp(name, "used_", 5) == 0;
        PyTypeObject *type = (PyTypeObject *)Py_NewRef(Py_TYPE(capsule));
        Py_DECREF(capsule);  /* first: its destructor may run Python */
        PyErr_Clear();
        if (used) {
            PyErr_Format(PyExc_BufferError,
                         "%s() argument '%s': %.200s.__dlpack__() returned a capsule that was "
                         "already consumed (renamed 'used_...'); a capsule is good for one "
                         "consumer only",
                         fname, argname, Py_TYPE(obj)->tp_name);
        }
        else {
            PyErr_Format(PyExc_TypeError,
                         "%s() argument '%s': %.200s.__dlpack__() returned %.200s, not a "
                         "'dltensor' or 'dltensor_versioned' capsule",
                         fname, argname, Py_TYPE(obj)->tp_name, type->tp_name);
        }
        Py_DECREF(type);
        return -1;
    }
    op->dlpack = capsule;  /* ours now: from here on, dlpack_release frees it */
    op->owner = owner;

    if (t->device.device_type != kDLCPU) {  /* __dlpack_device__ said CPU */
        PyErr_Format(PyExc_TypeError,
                     "%s() argument '%s' exported a tensor on %s, but leaky runs on the CPU",
                     fname, argname, device_name(t->device.device_type));
        return -1;
    }
    char dtype_name[64];
    if (!kind_of_dtype(t->dtype, &op->kind, dtype_name, sizeof dtype_name)) {
        PyErr_Format(PyExc_TypeError,
                     "%s() argument '%s' has dtype %s, which leaky cannot compute; expected "
                     "float16, bfloat16, float32, float64, a signed or unsigned integer or bool",
                     fname, argname, dtype_name);
        return -1;
    }
    if (t->ndim < 0 || t->ndim > PyBUF_MAX_NDIM) {
        PyErr_Format(PyExc_ValueError, "%s() cannot handle a tensor with %d dimensions",
                     fname, (int)t->ndim);
        return -1;
    }
    if (writable && (flags & DLPACK_FLAG_BITMASK_READ_ONLY)) {
        PyErr_Format(PyExc_ValueError, "%s() argument '%s' is read-only", fname, argname);
        return -1;
    }
    if (writable && (flags & DLPACK_FLAG_BITMASK_IS_COPIED)) {
        PyErr_Format(PyExc_ValueError,
                     "%s() argument '%s' exported a copy (DLPACK_FLAG_BITMASK_IS_COPIED) though "
                     "asked for none: leaky's results would be lost in it",
                     fname, argname);
        return -1;
    }
    if (writable && !versioned && !torch) {
        /* a DLManagedTensor says nothing of read-only memory or copies; torch
           (whose older versions know no max_version) is the one producer
           known to share writable memory that way */
        PyErr_Format(PyExc_ValueError,
                     "%s() argument '%s' exported a pre-1.0 DLPack tensor, which cannot say "
                     "whether it is read-only or a copy, so leaky does not write into it; "
                     "pass a buffer, or a tensor of a library that speaks DLPack 1.0",
                     fname, argname);
        return -1;
    }
    const Py_ssize_t itemsize = t->dtype.bits / 8;
    Py_ssize_t stride = itemsize;
    for (int d = t->ndim - 1; d >= 0; d--) {
        if (t->shape[d] < 0 || (int64_t)(Py_ssize_t)t->shape[d] != t->shape[d]) {
            PyErr_Format(PyExc_ValueError, "%s() argument '%s' has a bad side length %lld",
                         fname, argname, (long long)t->shape[d]);
            return -1;
        }
        op->shape[d] = (Py_ssize_t)t->shape[d];
        if (t->strides == NULL) {  /* C-contiguous */
            op->strides[d] = stride;
            stride = outer_stride(stride, op->shape[d]);
        }
        else if ((int64_t)(Py_ssize_t)t->strides[d] != t->strides[d] ||
                 checked_mul((Py_ssize_t)t->strides[d], itemsize, &op->strides[d])) {
            PyErr_Format(PyExc_ValueError,
                         "%s() argument '%s' is too big: its shape and strides span more "
                         "than %zd bytes", fname, argname, PY_SSIZE_T_MAX);
            return -1;
        }
    }
    Py_buffer *v = &op->view;
    memset(v, 0, sizeof *v);
    v->buf = (char *)t->data + t->byte_offset;
    v->itemsize = itemsize;
    v->ndim = t->ndim;
    v->readonly = (flags & DLPACK_FLAG_BITMASK_READ_ONLY) != 0;
    v->shape = op->shape;
    v->strides = op->strides;
    if (checked_nbytes(t->ndim, op->shape, itemsize, &v->len)) {
        v->len = 0;  /* operand_check_size raises for it */
    }
    if (t->data == NULL && v->len > 0) {
        return null_data_operand(st, obj, op, role, torch);
    }
    return 1;
}

static int
dlpack_acquire(LeakyState *st, PyObject *obj, Operand *op, const OperandRole *role)
{
    int tensor = has_dlpack(st, obj);
    return tensor == 1 ? dlpack_operand(st, obj, op, role) : tensor;
}

/*
 * After leaky wrote into out_obj (the whole write or none: run_elementwise
 * fails only before it starts): a torch tensor's version counter is bumped,
 * as any in-place torch op does, so that autograd refuses a backward through
 * a graph that saved the old values ("modified by an inplace operation").
 * torch.autograd.graph.increment_version is the public way (it skips
 * inference tensors, which have no counter).  0, or -1 with an exception.
 */
static int
dlpack_written(LeakyState *st, PyObject *out_obj)
{
    if (!is_torch_tensor(out_obj)) {
        return 0;
    }
    PyObject *graph = PyImport_GetModule(st->torch_names[TORCH_GRAPH_MODULE]);
    if (graph == NULL) {
        /* torch imports it with itself; only a torch half torn down lacks it */
        return PyErr_Occurred() ? -1 : 0;
    }
    PyObject *done = PyObject_CallMethodOneArg(graph, st->torch_names[TORCH_INCREMENT_VERSION],
                                               out_obj);
    Py_DECREF(graph);
    Py_XDECREF(done);
    return done != NULL ? 0 : -1;
}

/* A ResultBuffer, for the tensor's own library's from_dlpack, or returned as it is. */
static int
dlpack_new_result(LeakyState *st, PyObject *source, ElemKind result_kind,
                  const Operand *const *inputs, int ninputs, NewResult *made)
{
    /* a tensor's result keeps its strides, as torch's own functions do */
    Py_ssize_t strides[PyBUF_MAX_NDIM];
    const int keep = result_k_strides(inputs, ninputs, itemsize_of_result(result_kind), strides);
    return result_from_containers(st, source, result_kind, inputs[0], keep ? strides : NULL,
                                  made, NULL);
}

const InputKind dlpack_input = {
    .name = "DLPack tensor",
    .acquire = dlpack_acquire,
    .release = dlpack_release,
    .new_result = dlpack_new_result,
    .written = dlpack_written,
};

/* ------------------------------------------------------------------ */
/* torch tensors, without the protocol                                */
/* ------------------------------------------------------------------ */

/*
 * torch's Python-level protocol methods cost most of a small call (measured:
 * __dlpack_device__ 1.7 us, __dlpack__ 2.2 us, torch.from_dlpack of a
 * ResultBuffer 1.4 us, against 1.2-1.6 us for the whole F.leaky_relu).  For
 * a tensor that dispatches to nobody, torch_input makes the same capsule
 * with torch.utils.dlpack.to_dlpack (torch's C function, 0.2 us) and its
 * result with torch._C._from_dlpack of a capsule (0.3 us), and runs the
 * checks __dlpack__ makes itself: requires_grad before the export, the
 * device and the dtype (the conjugate bit is on complex tensors only) on
 * the exported DLTensor.  Anything off that path (requires grad, another
 * device, a dtype leaky refuses, a failed export) is passed on (0) to the
 * DLPack kind, whose protocol route raises its own explained error; so
 * every message stays that route's.  The checks only torch needs (negative
 * bit, inference and zero tensors, the version counter) are the protocol
 * route's own functions, so both routes run the same ones.
 */

/* result: the ResultBuffer torch_input made; self: torch's from_dlpack for a capsule */
static PyObject *
torch_result(PyObject *from_dlpack, PyObject *result)
{
    PyObject *capsule = result_buffer_capsule(result);
    if (capsule == NULL) {
        return NULL;
    }
    /* a capsule torch did not take is still "dltensor": its destructor frees it */
    PyObject *tensor = PyObject_CallOneArg(from_dlpack, capsule);
    Py_DECREF(capsule);
    return tensor;
}

static PyMethodDef torch_result_def = {"_torch_result", torch_result, METH_O, NULL};

static PyObject *
module_attr(const char *module_name, const char *name)
{
    PyObject *key = PyUnicode_FromString(module_name);
    PyObject *module = key != NULL ? PyImport_GetModule(key) : NULL;
    Py_XDECREF(key);
    PyObject *attr = module != NULL ? PyObject_GetAttrString(module, name) : NULL;
    Py_XDECREF(module);
    return attr;
}

/* Fills st's torch_* fields from sys.modules (never importing torch): 1, or 0 if
   something is missing, with no exception either way (the protocol route remains). */
static int
load_torch_route(LeakyState *st)
{
    PyObject *tensor = module_attr("torch", "Tensor");
    PyObject *to_dlpack = module_attr("torch.utils.dlpack", "to_dlpack");
    /* torch._C's names are private: each has a public fallback, or the route is off */
    PyObject *from_dlpack = module_attr("torch._C", "_from_dlpack");
    if (from_dlpack == NULL) {
        PyErr_Clear();
        from_dlpack = module_attr("torch.utils.dlpack", "from_dlpack");
    }
    PyObject *dispatches = module_attr("torch._C", "_has_torch_function_unary");
    PyObject *bump = module_attr("torch._C", "_increment_version");
    PyErr_Clear();
    int usable = tensor != NULL && PyType_Check(tensor) && to_dlpack != NULL &&
                 from_dlpack != NULL && dispatches != NULL;
    PyObject *dlpack = usable ? PyObject_GetAttr(tensor, st->str_dlpack) : NULL;
    PyObject *dlpack_device = usable ? PyObject_GetAttr(tensor, st->str_dlpack_device) : NULL;
    PyObject *finish = usable ? PyCFunction_New(&torch_result_def, from_dlpack) : NULL;
    usable = usable && dlpack != NULL && dlpack_device != NULL && finish != NULL;
    PyErr_Clear();
    if (usable) {
        st->torch_tensor_type = (PyTypeObject *)Py_NewRef(tensor);
        st->torch_tensor_dlpack = Py_NewRef(dlpack);
        st->torch_tensor_dlpack_device = Py_NewRef(dlpack_device);
        st->torch_has_torch_function = Py_NewRef(dispatches);
        st->torch_to_dlpack = Py_NewRef(to_dlpack);
        st->torch_finish = Py_NewRef(finish);
        st->torch_increment_version = Py_XNewRef(bump);
    }
    Py_XDECREF(tensor);
    Py_XDECREF(to_dlpack);
    Py_XDECREF(from_dlpack);
    Py_XDECREF(dispatches);
    Py_XDECREF(bump);
    Py_XDECREF(dlpack);
    Py_XDECREF(dlpack_device);
    Py_XDECREF(finish);
    return usable;
}

/* type.name is torch.Tensor's own (the class attribute, not an override): 1 or 0. */
static int
inherits_torch_method(PyTypeObject *type, PyObject *name, PyObject *torchs)
{
    PyObject *found = PyObject_GetAttr((PyObject *)type, name);
    PyErr_Clear();
    Py_XDECREF(found);
    return found == torchs;
}

/*
 * Whether torch_input may take obj: a torch tensor that dispatches to nobody.
 * torch's own test decides (_has_torch_function_unary): an exact tensor or
 * a subclass whose __torch_function__ is torch's disabled one (nn.Parameter)
 * passes; a subclass with a __torch_function__ of its own (the default one
 * included, which re-wraps results) and any tensor under a torch function
 * mode expect to see the protocol calls, and get them.  A subclass must also
 * keep torch's __dlpack__ and __dlpack_device__.  The first torch tensor
 * looks the route up, once per module.  1 or 0, never an exception.
 */
static int
torch_route_takes(LeakyState *st, PyObject *obj)
{
    PyTypeObject *type = Py_TYPE(obj);
    if (ATOMIC_LOAD(&st->torch_route) != LOOKUP_READY &&
        !look_up_once(st, &st->torch_route, is_torch_tensor(obj), load_torch_route)) {
        return 0;
    }
    if (type != st->torch_tensor_type && !is_torch_tensor(obj)) {
        return 0;
    }
    PyObject *dispatches = PyObject_CallOneArg(st->torch_has_torch_function, obj);
    int plain = dispatches == Py_False;
    Py_XDECREF(dispatches);
    PyErr_Clear();
    if (plain && type != st->torch_tensor_type) {
        plain = inherits_torch_method(type, st->str_dlpack, st->torch_tensor_dlpack) &&
                inherits_torch_method(type, st->str_dlpack_device, st->torch_tensor_dlpack_device);
    }
    return plain;
}

/* What __dlpack_device__ and the dtype checks would let through: a CPU tensor of a
   dtype leaky computes.  The capsule is to_dlpack's, unversioned. */
static int
torch_capsule_computable(PyObject *capsule)
{
    DLManagedTensor *managed = PyCapsule_GetPointer(capsule, DLPACK_CAPSULE);
    if (managed == NULL) {
        PyErr_Clear();
        return 0;
    }
    ElemKind kind;
    char name[64];
    return managed->dl_tensor.device.device_type == kDLCPU &&
           kind_of_dtype(managed->dl_tensor.dtype, &kind, name, sizeof name);
}

static int
torch_acquire(LeakyState *st, PyObject *obj, Operand *op, const OperandRole *role)
{
    if (!torch_route_takes(st, obj)) {
        return 0;
    }
    PyObject *requires_grad = PyObject_GetAttr(obj, st->torch_names[TORCH_REQUIRES_GRAD]);
    int grad = requires_grad != NULL ? PyObject_IsTrue(requires_grad) : -1;
    Py_XDECREF(requires_grad);
    if (grad != 0) {  /* the protocol route explains it, with torch's refusal as the cause */
        PyErr_Clear();
        return 0;
    }
    PyObject *capsule = PyObject_CallOneArg(st->torch_to_dlpack, obj);
    if (capsule == NULL || !torch_capsule_computable(capsule)) {
        /* a meta, sparse or complex tensor, another device: the protocol route
           refuses it in its own words (before any export, for a device) */
        PyErr_Clear();
        Py_XDECREF(capsule);
        return 0;
    }
    PyObject *source;
    if (torch_export_source(st, obj, role->fname, role->argname, role->writable, &source) < 0) {
        Py_DECREF(capsule);  /* still "dltensor": torch's destructor frees it */
        return -1;
    }
    if (source != obj) {  /* a negative-bit input, resolved: export the copy instead */
        Py_DECREF(capsule);
        capsule = PyObject_CallOneArg(st->torch_to_dlpack, source);
    }
    Py_DECREF(source);
    if (capsule == NULL) {
        return -1;
    }
    return take_capsule(st, obj, capsule, op, role, 1, &torch_input);
}

/* The result of a tensor torch_input took: a ResultBuffer that torch_result wraps. */
static int
torch_new_result(LeakyState *st, PyObject *source, ElemKind result_kind,
                 const Operand *const *inputs, int ninputs, NewResult *made)
{
    (void)source;  /* what inputs[0] was acquired from: a plain tensor */
    Py_ssize_t strides[PyBUF_MAX_NDIM];
    const int keep = result_k_strides(inputs, ninputs, itemsize_of_result(result_kind), strides);
    return new_result_buffer(st, result_kind, inputs[0], keep ? strides : NULL, made,
                             st->torch_finish);
}

/* dlpack_written, without the Python wrapper where torch._C has the call itself */
static int
torch_written(LeakyState *st, PyObject *out_obj)
{
    if (st->torch_increment_version == NULL) {
        return dlpack_written(st, out_obj);
    }
    PyObject *tensors = PyTuple_Pack(1, out_obj);
    PyObject *done = tensors != NULL
        ? PyObject_CallOneArg(st->torch_increment_version, tensors) : NULL;
    Py_XDECREF(tensors);
    Py_XDECREF(done);
    return done != NULL ? 0 : -1;
}

const InputKind torch_input = {
    .name = "torch tensor",
    .acquire = torch_acquire,
    .release = dlpack_release,
    .new_result = torch_new_result,
    .written = torch_written,
};

/* ------------------------------------------------------------------ */
/* JAX tracers                                                        */
/* ------------------------------------------------------------------ */

/* A JAX tracer (inside jax.jit, grad, vmap): its class is a jax Tracer. */
int
is_jax_tracer(PyObject *obj)
{
    PyObject *mro = Py_TYPE(obj)->tp_mro;
    for (Py_ssize_t i = 0; mro != NULL && i < PyTuple_GET_SIZE(mro); i++) {
        PyTypeObject *base = (PyTypeObject *)PyTuple_GET_ITEM(mro, i);
        if (strcmp(base->tp_name, "Tracer") == 0 || strcmp(base->tp_name, "jax.core.Tracer") == 0) {
            PyObject *module = PyObject_GetAttrString((PyObject *)base, "__module__");
            const char *text = module != NULL && PyUnicode_Check(module)
                                   ? PyUnicode_AsUTF8(module) : NULL;
            int jax = text != NULL && strncmp(text, "jax", 3) == 0;
            Py_XDECREF(module);
            PyErr_Clear();
            if (jax) {
                return 1;
            }
        }
    }
    return 0;
}

void
explain_jax_tracer(const char *fname, const char *argname, PyObject *obj)
{
    PyErr_Format(PyExc_TypeError,
                 "%s() argument '%s' is a JAX tracer (%.200s): leaky computes on concrete "
                 "arrays in C and cannot be traced by jax.jit, grad or vmap; inside traced "
                 "code use jax.nn.leaky_relu, or call leaky through jax.pure_callback",
                 fname, argname, Py_TYPE(obj)->tp_name);
}

/* ------------------------------------------------------------------ */
/* Export                                                             */
/* ------------------------------------------------------------------ */

/* What a tensor leaky exports holds: a reference to its result's elements
   (result_buffer.c's shared block), never a Python object, so that its
   deleter may run on any thread without the GIL. */
typedef struct {
    union {
        DLManagedTensorVersioned versioned;
        DLManagedTensor plain;
    } managed;
    char *data;
    int64_t dims[];  /* shape, then strides (in elements) */
} ExportBlock;

static void
export_block_free(ExportBlock *block)
{
    shared_data_release(block->data);
    PyMem_RawFree(block);
}

static void
delete_versioned(DLManagedTensorVersioned *self)
{
    export_block_free((ExportBlock *)self->manager_ctx);
}

static void
delete_plain(DLManagedTensor *self)
{
    export_block_free((ExportBlock *)self->manager_ctx);
}

/* A capsule nobody consumed (still named "dltensor..."): free its tensor. */
static void
export_capsule_destructor(PyObject *capsule)
{
    if (PyCapsule_IsValid(capsule, DLPACK_VERSIONED_CAPSULE)) {
        DLManagedTensorVersioned *m = PyCapsule_GetPointer(capsule, DLPACK_VERSIONED_CAPSULE);
        m->deleter(m);
    }
    else if (PyCapsule_IsValid(capsule, DLPACK_CAPSULE)) {
        DLManagedTensor *m = PyCapsule_GetPointer(capsule, DLPACK_CAPSULE);
        m->deleter(m);
    }
}

static DLDataType
dtype_of_kind(ElemKind kind)
{
    DLDataType dtype = {kDLFloat, (uint8_t)(8 * itemsize_of_result(kind)), 1};
    if (kind == KIND_BF16) {
        dtype.code = kDLBfloat;
    }
    return dtype;
}

/*
 * A capsule of a tensor over `data`, a shared block of result_buffer.c whose
 * reference the caller hands over: the tensor's deleter drops it, and so
 * does this function if it fails.
 */
PyObject *
dlpack_export(char *data, ElemKind kind, int ndim, const Py_ssize_t *shape,
              const Py_ssize_t *byte_strides, int versioned, int copied)
{
    const Py_ssize_t itemsize = itemsize_of_result(kind);
    ExportBlock *block =
        PyMem_RawMalloc(sizeof(ExportBlock) + sizeof(int64_t) * 2 * (size_t)(ndim > 0 ? ndim : 1));
    if (block == NULL) {
        shared_data_release(data);
        return PyErr_NoMemory();
    }
    block->data = data;
    DLTensor tensor = {
        .data = data,
        .device = {kDLCPU, 0},
        .ndim = ndim,
        .dtype = dtype_of_kind(kind),
        .shape = block->dims,
        .strides = block->dims + ndim,
        .byte_offset = 0,
    };
    for (int d = 0; d < ndim; d++) {
        block->dims[d] = shape[d];
        block->dims[ndim + d] = byte_strides[d] / itemsize;
    }
    PyObject *capsule;
    if (versioned) {
        DLManagedTensorVersioned *m = &block->managed.versioned;
        m->version.major = DLPACK_MAJOR_VERSION;
        m->version.minor = DLPACK_MINOR_VERSION;
        m->manager_ctx = block;
        m->deleter = delete_versioned;
        m->flags = copied ? DLPACK_FLAG_BITMASK_IS_COPIED : 0;
        m->dl_tensor = tensor;
        capsule = PyCapsule_New(m, DLPACK_VERSIONED_CAPSULE, export_capsule_destructor);
    }
    else {
        DLManagedTensor *m = &block->managed.plain;
        m->dl_tensor = tensor;
        m->manager_ctx = block;
        m->deleter = delete_plain;
        capsule = PyCapsule_New(m, DLPACK_CAPSULE, export_capsule_destructor);
    }
    if (capsule == NULL) {
        export_block_free(block);
    }
    return capsule;
}
