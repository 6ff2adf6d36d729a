/*
 * What tests/c/python_stub.c (the stand-in python313.dll) and
 * tests/c/windows_pool.c share: the object layouts the stub hands out, as
 * CPython 3.13's GIL build lays them out on 64-bit Windows (PyObject_HEAD,
 * then ob_size for a tuple), so that the real headers' PyTuple_SET_ITEM,
 * used by csrc/pool.c, writes where the stub expects.
 */
#ifndef LEAKY_PYTHON_STUB_H
#define LEAKY_PYTHON_STUB_H

typedef struct StubObject {
    long long refcnt;
    void *type;
} StubObject;

typedef struct {
    StubObject head;
    long long size;
    StubObject *items[];
} StubTuple;

typedef struct {
    StubObject head;
    long long value;
} StubInt;

#ifdef LEAKY_PYTHON_STUB_DLL
#define STUB_API __declspec(dllexport)
#else
#define STUB_API __declspec(dllimport)
#endif

/* Times PyEval_SaveThread and PyEval_RestoreThread ran, and exceptions raised. */
STUB_API void stub_counts(long *save_count, long *restore_count, long *error_count);
/* The type PyTuple_New gives its tuples: the harness's, with the tuple flag
   (csrc/pool.c's PyTuple_SET_ITEM asserts PyTuple_Check in a C-asserts build). */
STUB_API void stub_set_tuple_type(void *type);

#endif
