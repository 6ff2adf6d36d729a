"""leaky's three functions on ``dask.array`` arrays, block by block.

This module imports Dask (``pip install "leaky[dask]"``); ``import leaky``
alone never does.  Each function returns a lazy ``dask.array.Array`` with
the chunks of its input, built with ``map_blocks`` and an explicit ``dtype``
and ``meta``, so Dask never has to call leaky to guess the result's type.
Leaky ReLU works element by element, so the blockwise result equals leaky's
result on the whole NumPy array, bit for bit, whatever the chunking.

The plain ``map_blocks`` form does the same for one array::

    y = x.map_blocks(leaky.leaky_relu, 0.2, dtype=x.dtype, threads=1)

(for integer and bool ``x``, ``dtype="float64"``).

``threads`` defaults to 1 here (leaky's own default is automatic): Dask
already runs one chunk per worker thread, and leaky's pool on top of that
would put more threads on the CPUs than there are CPUs.  Pass
``threads=None`` for leaky's automatic choice when a worker has fewer
threads than CPUs and little else to do; docs/dask-processes-example.md
gives the measurements.
"""

from __future__ import annotations

import array
from typing import Any, SupportsFloat, SupportsIndex

import dask.array as da
import numpy as np

import leaky

__all__ = ["leaky_relu", "leaky_relu_backward", "leaky_relu_grad", "result_dtype"]

_Alpha = SupportsFloat | SupportsIndex


def result_dtype(dtype: Any) -> np.dtype[Any]:
    """The dtype of leaky's result for an input of ``dtype``.

    float16, float32 and float64 stay as they are; integers and bool give
    float64.  Other dtypes (complex, long double, non-native byte order, ...)
    raise ``TypeError``, as leaky itself does on such a chunk.
    """
    dt: np.dtype[Any] = np.dtype(dtype)
    if dt.isnative:
        if dt.char in "efd":
            return dt
        if dt.kind in "biu":
            return np.dtype(np.float64)
    raise TypeError(f"leaky does not compute on dtype {dt.str!r} ({dt})")


def _as_numpy_backed(x: Any, what: str) -> da.Array:
    arr: da.Array = da.asarray(x)
    if type(arr._meta) is not np.ndarray:
        raise TypeError(
            f"{what}: leaky computes on NumPy chunks, not {type(arr._meta).__module__}."
            f"{type(arr._meta).__qualname__}"
        )
    return arr


def _check_args(func: Any, alpha: _Alpha, threads: int | None) -> None:
    # Raise bad alpha and threads here, where the call is, rather than from a
    # worker at compute time: leaky checks both on an empty buffer.
    empty = array.array("d")
    if func is leaky.leaky_relu_backward:
        func(empty, empty, alpha, threads=threads)
    else:
        func(empty, alpha, threads=threads)


def _unary(func: Any, z: Any, alpha: _Alpha, threads: int | None) -> da.Array:
    _check_args(func, alpha, threads)
    z = _as_numpy_backed(z, "z")
    dtype = result_dtype(z.dtype)
    meta = np.empty((0,) * z.ndim, dtype=dtype)
    result: da.Array = da.map_blocks(func, z, alpha, dtype=dtype, meta=meta, threads=threads)
    return result


def leaky_relu(z: Any, alpha: _Alpha = 0.01, *, threads: int | None = 1) -> da.Array:
    """``leaky.leaky_relu`` on each block of ``z`` (a Dask array or anything
    ``dask.array.asarray`` takes): ``z`` where ``z > 0``, ``alpha * z`` elsewhere."""
    return _unary(leaky.leaky_relu, z, alpha, threads)


def leaky_relu_grad(z: Any, alpha: _Alpha = 0.01, *, threads: int | None = 1) -> da.Array:
    """``leaky.leaky_relu_grad`` on each block of ``z``: 1 where ``z > 0``, ``alpha`` elsewhere."""
    return _unary(leaky.leaky_relu_grad, z, alpha, threads)


def leaky_relu_backward(
    grad_output: Any, z: Any, alpha: _Alpha = 0.01, *, threads: int | None = 1
) -> da.Array:
    """``leaky.leaky_relu_backward`` block by block: ``grad_output * (1 if z > 0 else alpha)``.

    ``grad_output`` and ``z`` must have the same shape; ``z`` is rechunked
    to ``grad_output``'s chunks where they differ.  The result has
    ``grad_output``'s chunks and leaky's result dtype for ``grad_output``.
    """
    _check_args(leaky.leaky_relu_backward, alpha, threads)
    g = _as_numpy_backed(grad_output, "grad_output")
    z = _as_numpy_backed(z, "z")
    if g.shape != z.shape:
        raise ValueError(f"grad_output and z must have the same shape, got {g.shape} and {z.shape}")
    result_dtype(z.dtype)  # z only decides the sign test, but must be a dtype leaky takes
    dtype = result_dtype(g.dtype)
    if z.chunks != g.chunks:
        z = z.rechunk(g.chunks)
    meta = np.empty((0,) * g.ndim, dtype=dtype)
    result: da.Array = da.map_blocks(
        leaky.leaky_relu_backward, g, z, alpha, dtype=dtype, meta=meta, threads=threads
    )
    return result
