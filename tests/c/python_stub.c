/*
 * A stand-in python313.dll for tests/c/windows_pool.c: the few C-API
 * functions that csrc/pool.c and csrc/driver.c import, so that those files
 * link on Windows unchanged, importing them from a DLL of CPython's name as
 * the real .pyd does.  No Python.h: its declarations are dllimport, and
 * these are the definitions.  Only pointer-sized and integer arguments
 * matter to the Windows x64 ABI, so plain C types stand in for Python's.
 *
 * The pool and the driver run without an interpreter here: "releasing the
 * GIL" only counts (Py_BEGIN/END_ALLOW_THREADS must pair), the raw
 * allocator is the C runtime's, and a tuple of ints is a plain array (the
 * harness reads it back through tests/c/python_stub.h).  Anything that
 * would need a real interpreter (an exception set) is a failure: the
 * harness's calls never raise.
 */
#include <stdio.h>
#include <stdlib.h>
#include <windows.h>

#define LEAKY_PYTHON_STUB_DLL
#include "python_stub.h"

#define EXPORT __declspec(dllexport)

static StubObject value_error = {1, NULL};
EXPORT StubObject *PyExc_ValueError = &value_error;
/* Py_SIZE asserts that its argument is no int: only their addresses are read. */
EXPORT char PyLong_Type[512], PyBool_Type[512];

static volatile LONG saves, restores, errors;
static void *tuple_type;

EXPORT void
stub_set_tuple_type(void *type)
{
    tuple_type = type;
}

EXPORT void *
PyEval_SaveThread(void)
{
    InterlockedIncrement(&saves);
    return (void *)&saves;  /* the "thread state" RestoreThread must get back */
}

EXPORT void
PyEval_RestoreThread(void *state)
{
    if (state != (void *)&saves) {
        fprintf(stderr, "python_stub: PyEval_RestoreThread got a thread state it never gave\n");
        abort();
    }
    InterlockedIncrement(&restores);
}

EXPORT void *
PyErr_Format(void *type, const char *format, ...)
{
    InterlockedIncrement(&errors);
    fprintf(stderr, "python_stub: an exception was raised: %s\n", format);
    return NULL;
}

EXPORT void
PyErr_SetString(void *type, const char *message)
{
    InterlockedIncrement(&errors);
    fprintf(stderr, "python_stub: an exception was raised: %s\n", message);
}

EXPORT void *
PyErr_NoMemory(void)
{
    InterlockedIncrement(&errors);
    fprintf(stderr, "python_stub: MemoryError\n");
    return NULL;
}

EXPORT void *
PyMem_Malloc(size_t size)
{
    return malloc(size ? size : 1);
}

EXPORT void
PyMem_Free(void *p)
{
    free(p);
}

EXPORT void *
PyMem_RawCalloc(size_t n, size_t size)
{
    return calloc(n ? n : 1, size ? size : 1);
}

EXPORT void
PyMem_RawFree(void *p)
{
    free(p);
}

EXPORT StubObject *
PyTuple_New(long long n)
{
    StubTuple *tuple = calloc(1, sizeof(StubTuple) + (size_t)n * sizeof(StubObject *));
    if (tuple != NULL) {
        tuple->head.refcnt = 1;
        tuple->head.type = tuple_type;
        tuple->size = n;
    }
    return (StubObject *)tuple;
}

EXPORT StubObject *
PyLong_FromLongLong(long long value)
{
    StubInt *number = calloc(1, sizeof(StubInt));
    if (number != NULL) {
        number->head.refcnt = 1;
        number->value = value;
    }
    return (StubObject *)number;
}

EXPORT void
_Py_Dealloc(StubObject *object)
{
    free(object);  /* the harness frees what it reads; nothing else gets here */
}

EXPORT void
stub_counts(long *save_count, long *restore_count, long *error_count)
{
    *save_count = saves;
    *restore_count = restores;
    *error_count = errors;
}
