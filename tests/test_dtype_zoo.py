"""Every dtype NumPy and ml_dtypes can make, in every role and layout.

Each of z, grad_output and out= gets, in turn, every dtype in the zoo,
contiguous, strided, 0-d (and, as an input, as a NumPy scalar).  A dtype
leaky computes must give the oracle's answer; any other must give a
TypeError that names the argument and the dtype (or the buffer format NumPy
exports for it), with out= left as it was.  out= always lies inside a larger
byte array whose other bytes (guards around it, the gaps of a strided out)
are checked after every call: no byte outside out's elements may change.
Inputs have their own allocation, so that under the ASan build
(.ci/sanitize.sh) a read past their end is a heap-buffer-overflow.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from conftest import (
    ALL_DTYPES,
    FLOAT_DTYPES,
    assert_matches,
    expected_backward,
    expected_forward,
    expected_grad,
    sample,
)
from optional import require

from leaky import leaky_relu, leaky_relu_backward, leaky_relu_grad

ALPHA = 0.25
N = 7
GUARD = 32  # bytes before and after out
GUARD_BYTE = 0xA5

ML_DTYPES_NAMES = [
    "bfloat16",
    "int1",
    "int2",
    "int4",
    "uint1",
    "uint2",
    "uint4",
    "float4_e2m1fn",
    "float6_e2m3fn",
    "float6_e3m2fn",
    "float8_e3m4",
    "float8_e4m3",
    "float8_e4m3b11fnuz",
    "float8_e4m3fn",
    "float8_e4m3fnuz",
    "float8_e5m2",
    "float8_e5m2fnuz",
    "float8_e8m0fnu",
    "bcomplex32",
    "complex32",
]


def _ml_dtypes() -> Any:
    try:
        return importlib.import_module("ml_dtypes")
    except ImportError:  # the NumPy part of the zoo still runs (NumPy 1.x's CI job)
        return None


def _zoo() -> Iterator[tuple[str, np.dtype[Any], bool]]:
    """(id, dtype, computed by leaky) for every dtype in the zoo."""
    for char in ALL_DTYPES:
        dt = np.dtype(char)
        yield f"{char}:{dt}", dt, True
        if dt.itemsize > 1:
            swapped = dt.newbyteorder()
            yield f"{char}:{swapped.str}", swapped, False
    # a float32 that carries metadata is still float32
    yield "f:metadata", np.dtype(np.float32, metadata={"unit": "m"}), True
    others = ["g", "F", "D", "G", "M8[ns]", "m8[s]", "S4", "U2", "V4", "O", "?"]
    for spec in others[:-1]:
        dt = np.dtype(spec)
        yield f"{spec}:{dt}", dt, False
        if dt.itemsize > 1 and dt.byteorder in "=<>" and spec not in ("O",):
            yield f"{spec}:{dt.newbyteorder().str}", dt.newbyteorder(), False
    yield "structured", np.dtype([("a", "f4"), ("b", "i2")]), False
    yield "structured-f8", np.dtype([("x", "f8")]), False
    yield "subarray-field", np.dtype([("v", "f4", (2,))]), False
    string_dtype = getattr(getattr(np, "dtypes", None), "StringDType", None)
    if string_dtype is not None:  # NumPy 2
        yield "StringDType", np.dtype(string_dtype()), False
    ml = _ml_dtypes()
    for name in ML_DTYPES_NAMES:
        if ml is not None and hasattr(ml, name):
            yield f"ml_dtypes.{name}", np.dtype(getattr(ml, name)), False


ZOO = list(_zoo())
IDS = [case[0] for case in ZOO]


def test_ml_dtypes_are_in_the_zoo() -> None:
    ml = require("ml_dtypes", "test")
    present = {case[0] for case in ZOO}
    # the kinds the issue names, which every ml_dtypes >= 0.5 has
    for name in ("bfloat16", "int2", "int4", "uint2", "uint4", "float4_e2m1fn", "float8_e4m3fn"):
        assert hasattr(ml, name)
        assert f"ml_dtypes.{name}" in present


def _values(dt: np.dtype[Any], shape: tuple[int, ...]) -> Any:
    """An array of dtype dt in its own allocation."""
    if dt.kind in "biuf" and dt.isnative and dt.fields is None and dt.type.__module__ == "numpy":
        return sample(dt.char, shape).astype(dt)
    if dt.kind in "biufc" and dt.fields is None and dt.type.__module__ == "numpy":
        # swapped or complex: values of both signs
        return (np.arange(-3, -3 + int(np.prod(shape))).reshape(shape)).astype(dt)
    if dt.type.__module__.startswith("ml_dtypes") and dt.kind not in "V":
        try:
            return np.array(np.linspace(-1, 1, int(np.prod(shape))).reshape(shape)).astype(dt)
        except (TypeError, ValueError, OverflowError):
            pass
    return np.zeros(shape, dt)


def _layouts(dt: np.dtype[Any]) -> Iterator[tuple[str, Any]]:
    """Inputs: contiguous, strided, 0-d, a NumPy scalar (each its own allocation)."""
    yield "contiguous", _values(dt, (N,))
    yield "strided", _values(dt, (2 * N,))[::2]
    zero_d = _values(dt, ())
    yield "0-d", zero_d
    scalar = zero_d[()]
    # not object's or StringDType's Python items; a byte-swapped array's
    # items are native scalars, the native dtype's case
    if isinstance(scalar, np.generic) and scalar.dtype == dt:
        yield "scalar", scalar


def _names(dt: np.dtype[Any], operand: Any) -> list[str]:
    """What may name dt in a message: its name, str, or the buffer format NumPy exports."""
    names = [str(dt), dt.name]
    with contextlib.suppress(TypeError, ValueError, BufferError):
        names.append(memoryview(operand).format)
    return names


def _assert_refused(
    exc: pytest.ExceptionInfo[TypeError], argname: str, dt: np.dtype[Any], operand: Any
) -> None:
    message = str(exc.value)
    assert f"'{argname}'" in message, message
    names = _names(dt, operand)
    assert any(f"'{name}'" in message for name in names), (message, names)


Unary = Callable[..., Any]
UNARY: list[tuple[Unary, Callable[[Any, float], list[float]]]] = [
    (leaky_relu, expected_forward),
    (leaky_relu_grad, expected_grad),
]


def _result_char(kind: str) -> str:
    return kind if kind in ("e", "f") else "d"


@pytest.mark.parametrize("func,expected", UNARY, ids=["leaky_relu", "leaky_relu_grad"])
@pytest.mark.parametrize("case", ZOO, ids=IDS)
def test_z_of_every_dtype(case: Any, func: Unary, expected: Any) -> None:
    _, dt, computed = case
    for layout, z in _layouts(dt):
        if computed:
            got = func(z, ALPHA)
            assert np.shape(got) == np.shape(z), layout
            assert_matches(
                got, expected(np.asarray(z).astype(dt.char), ALPHA), _result_char(dt.char), ALPHA
            )
        else:
            with pytest.raises(TypeError) as exc:
                func(z, ALPHA)
            _assert_refused(exc, "z", dt, z)


@pytest.mark.parametrize("case", ZOO, ids=IDS)
@pytest.mark.parametrize("argname", ["grad_output", "z"])
def test_backward_operand_of_every_dtype(case: Any, argname: str) -> None:
    _, dt, computed = case
    for layout, odd in _layouts(dt):
        plain = sample("d", np.shape(odd), seed=3)
        if isinstance(odd, np.generic):
            plain = plain[()]
        grad, z = (odd, plain) if argname == "grad_output" else (plain, odd)
        if computed:
            got = leaky_relu_backward(grad, z, ALPHA)
            g = np.asarray(grad)
            zz = np.asarray(z)
            want = expected_backward(g.astype(g.dtype.char), zz.astype(zz.dtype.char), ALPHA)
            assert_matches(got, want, _result_char(g.dtype.char), ALPHA)
            assert np.shape(got) == np.shape(odd), layout
        else:
            with pytest.raises(TypeError) as exc:
                leaky_relu_backward(grad, z, ALPHA)
            _assert_refused(exc, argname, dt, odd)


def _guarded_out(dt: np.dtype[Any], layout: str) -> tuple[Any, Any]:
    """(backing bytes, out) with out inside backing, guard bytes around it."""
    count = {"contiguous": N, "strided": 2 * N, "0-d": 1}[layout]
    backing = np.full(2 * GUARD + count * dt.itemsize, GUARD_BYTE, np.uint8)
    out = backing[GUARD : GUARD + count * dt.itemsize].view(dt)
    if layout == "strided":
        out = out[::2]
    elif layout == "0-d":
        out = out.reshape(())
    return backing, out


def _out_bytes(backing: Any, out: Any) -> np.ndarray[Any, Any]:
    """A mask over backing: True on the bytes of out's elements."""
    mask = np.zeros(backing.size, bool)
    base = backing.__array_interface__["data"][0]
    start = out.__array_interface__["data"][0] - base
    stride = out.strides[0] if out.ndim else 0
    for i in range(out.size):
        first = start + i * stride
        mask[first : first + out.itemsize] = True
    return mask


OUT_CALLS: list[tuple[str, Callable[[Any, Any], Any], Callable[[Any], list[float]]]] = [
    (
        "leaky_relu",
        lambda x, out: leaky_relu(x, ALPHA, out=out),
        lambda x: expected_forward(x, ALPHA),
    ),
    (
        "leaky_relu_grad",
        lambda x, out: leaky_relu_grad(x, ALPHA, out=out),
        lambda x: expected_grad(x, ALPHA),
    ),
    (
        "leaky_relu_backward",
        lambda x, out: leaky_relu_backward(x, sample("d", x.shape, seed=5), ALPHA, out=out),
        lambda x: expected_backward(x, sample("d", x.shape, seed=5), ALPHA),
    ),
]


@pytest.mark.parametrize("call", OUT_CALLS, ids=[c[0] for c in OUT_CALLS])
@pytest.mark.parametrize("case", ZOO, ids=IDS)
def test_out_of_every_dtype(case: Any, call: Any) -> None:
    _, dt, computed = case
    _, func, expected = call
    # an input whose result is out's dtype when leaky computes out's dtype;
    # float32 otherwise (and float16 for one-byte and two-byte dtypes, the
    # sizes an element taken for float16 would write)
    in_char = dt.char if computed else ("e" if dt.itemsize <= 2 else "f")
    for layout in ("contiguous", "strided", "0-d"):
        if dt.hasobject or dt.kind == "T":  # no byte view: a plain array, checked whole
            out = np.zeros((N,) if layout != "0-d" else (), dt)
            before = out.copy()
            x = sample(in_char, out.shape)
            with pytest.raises(TypeError) as exc:
                func(x, out)
            _assert_refused(exc, "out", dt, out)
            assert (out == before).all(), layout
            continue
        backing, out = _guarded_out(dt, layout)
        before = backing.copy()
        outside = ~_out_bytes(backing, out)
        x = sample(in_char, out.shape)
        if computed and dt.char in FLOAT_DTYPES:
            got = func(x, out)
            assert got is out
            assert_matches(out.astype(dt.char), expected(x), dt.char, ALPHA)
        else:
            with pytest.raises(TypeError) as exc:
                func(x, out)
            _assert_refused(exc, "out", dt, out)
            outside[:] = True  # refused: nothing at all is written
        changed = np.flatnonzero((backing != before) & outside)
        assert changed.size == 0, f"{layout}: bytes {changed.tolist()} written outside out"
