"""Coverage-guided fuzzing of the three C entry points with atheris.

Each input drives one call: a function, then operands made by a hostile
exporter (``memoryview.cast`` of a byte buffer with any shape and step,
ctypes arrays, structures and big-endian structures, NumPy arrays of
supported and unsupported dtypes giving formats such as ``'<d'``, ``'>f'``,
``'e'``, ``'Zd'``, ``'T{d:x:}'``, ``'8x'``, ``'3s'`` and very long struct
formats, strided views with negative and zero strides), a slope (floats,
NaN, infinities, huge ints, objects whose ``__float__`` raises or lies), an
``out`` (none, matching, the input itself, read-only, released, wrong) and a
``threads`` value.  Every call must either return what the pure-Python
oracle says, or raise TypeError, ValueError, OverflowError or BufferError
with ``out`` and the inputs untouched; a valid call must not raise at all.
Anything else, a crash, or a sanitizer report (under .ci/fuzz.sh's
sanitized build) is a finding.

    python tests/fuzz/fuzz_entry_points.py -runs=20000        # what CI runs (bounded)
    python tests/fuzz/fuzz_entry_points.py -max_total_time=0   # open-ended
"""

from __future__ import annotations

import ctypes
import math
import os
import sys
from typing import Any

import atheris

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import numpy as np  # not instrumented: too big, and not what is under test
from conftest import assert_matches, elements

with atheris.instrument_imports(include=["leaky", "oracle"]):
    import oracle

    import leaky
    from leaky import leaky_relu, leaky_relu_backward, leaky_relu_grad

SUPPORTED = ["e", "f", "d", "b", "B", "h", "H", "i", "I", "l", "L", "q", "Q", "?"]
UNSUPPORTED_NUMPY = [
    ">f4",
    ">f8",
    "<f8" if sys.byteorder == "big" else ">i4",
    "c16",
    "c8",
    "V8",
    "S3",
    "U1",
    "O",
    "g",
    "f8,f4",
    "(2,)f8,i1",
    "|b1,<f8",
]
CAST_FORMATS = ["d", "f", "b", "B", "h", "H", "i", "I", "l", "L", "q", "Q", "?", "c", "@d", "n"]
CTYPES = [
    ctypes.c_double,
    ctypes.c_float,
    ctypes.c_int8,
    ctypes.c_uint8,
    ctypes.c_int16,
    ctypes.c_uint16,
    ctypes.c_int32,
    ctypes.c_uint32,
    ctypes.c_int64,
    ctypes.c_uint64,
    ctypes.c_long,
    ctypes.c_bool,
    ctypes.c_char,
    ctypes.c_void_p,
    ctypes.c_longdouble,
    ctypes.c_wchar,
]
EXPECTED_ERRORS = (TypeError, ValueError, OverflowError, BufferError)


class RaisingFloat:
    def __float__(self) -> float:
        raise ValueError("boom")


class LyingFloat:
    def __float__(self) -> Any:
        return "0.5"


class BigEndianPoint(ctypes.BigEndianStructure):
    _fields_ = [("x", ctypes.c_double)]


class PaddedPoint(ctypes.Structure):
    _fields_ = [("x", ctypes.c_double), ("y", ctypes.c_char)]


def long_struct_dtype(fields: int) -> Any:
    return np.dtype([(f"field_{i}_{'x' * 20}", "<f8") for i in range(fields)])


class Built:
    """An operand and whether leaky must accept it (a supported native format)."""

    def __init__(self, obj: Any, valid: bool) -> None:
        self.obj = obj
        self.valid = valid


def numpy_operand(fdp: Any, count: int) -> Built:
    if fdp.ConsumeBool():
        dtype = np.dtype(fdp.PickValueInList(SUPPORTED))
        valid = True
    else:
        choice = fdp.ConsumeIntInRange(0, len(UNSUPPORTED_NUMPY))
        dtype = (
            long_struct_dtype(fdp.ConsumeIntInRange(1, 40))
            if choice == len(UNSUPPORTED_NUMPY)
            else np.dtype(UNSUPPORTED_NUMPY[choice])
        )
        valid = False
    raw = fdp.ConsumeBytes(count * dtype.itemsize + 16)
    raw += bytes(count * dtype.itemsize + 16 - len(raw))
    base = np.frombuffer(bytearray(raw), dtype=np.uint8)
    if dtype.char == "?":
        base &= 1
    offset = fdp.ConsumeIntInRange(0, 15)  # unaligned too
    if dtype.hasobject:  # no buffer of object pointers from raw bytes
        return Built(np.empty(count, dtype=object), False)
    flat = np.ndarray((count,), dtype, buffer=base, offset=offset)
    layout = fdp.ConsumeIntInRange(0, 3)
    if layout == 1 and count:
        flat = flat[:: -fdp.ConsumeIntInRange(1, 3)]
    elif layout == 2 and count >= 4:
        flat = flat[: count - count % 4].reshape(2, -1, 2).transpose(2, 0, 1)
    elif layout == 3 and count:
        # at most `count` columns: as_strided does no bounds check, and a view past the
        # buffer's end makes the harness itself read out of bounds
        shape = (fdp.ConsumeIntInRange(0, 3), fdp.ConsumeIntInRange(0, min(3, count)))
        flat = np.lib.stride_tricks.as_strided(flat, shape, (0, flat.strides[0]))  # zero stride
    return Built(flat, valid)


def cast_operand(fdp: Any, count: int) -> Built:
    fmt = fdp.PickValueInList(CAST_FORMATS)
    size = ctypes.sizeof(ctypes.c_char)  # one byte, for the bytes cast below
    itemsize = memoryview(bytes(8)).cast(fmt.lstrip("@") or "B").itemsize // size
    raw = bytearray(fdp.ConsumeBytes(count * itemsize).ljust(count * itemsize, b"\0"))
    if fmt == "?":
        raw = bytearray(b & 1 for b in raw)
    view = memoryview(raw).cast(fmt)
    if count and fdp.ConsumeBool():
        view = view[:: fdp.PickValueInList([1, 2, -1, -3])]
    elif count >= 6 and fdp.ConsumeBool():
        view = view[:6].cast("B").cast(fmt, (2, 3) if fdp.ConsumeBool() else (3, 2))
    return Built(view, fmt not in ("c",))


def ctypes_operand(fdp: Any, count: int) -> Built:
    kind = fdp.ConsumeIntInRange(0, 3)
    if kind == 0:
        ctype = fdp.PickValueInList(CTYPES)
        array = (ctype * count)()
        raw = fdp.ConsumeBytes(ctypes.sizeof(array))
        if ctype is ctypes.c_bool:
            raw = bytes(b & 1 for b in raw)
        ctypes.memmove(array, raw, len(raw))
        ok = ctype not in (ctypes.c_char, ctypes.c_void_p, ctypes.c_longdouble, ctypes.c_wchar)
        return Built(array, ok)
    if kind == 1:
        rows = max(count // 2, 0)
        return Built(((ctypes.c_double * 2) * rows)(), True)
    if kind == 2:
        return Built((BigEndianPoint * count)(), False)
    return Built((PaddedPoint * count)(), False)


def operand(fdp: Any, count: int) -> Built:
    source = fdp.ConsumeIntInRange(0, 2)
    if source == 0:
        return numpy_operand(fdp, count)
    if source == 1:
        return cast_operand(fdp, count)
    return ctypes_operand(fdp, count)


def slope(fdp: Any) -> tuple[Any, float | None]:
    """alpha as passed, and its float value (None: leaky must refuse it)."""
    kind = fdp.ConsumeIntInRange(0, 6)
    if kind == 0:
        value = fdp.ConsumeRegularFloat()
        return value, value
    if kind == 1:
        value = fdp.PickValueInList([math.nan, math.inf, -math.inf, 0.0, -0.0, 1e-45, 3.5e38])
        return value, value
    if kind == 2:
        number = fdp.ConsumeInt(fdp.ConsumeIntInRange(1, 200))
        try:
            return number, float(number)
        except OverflowError:
            return number, None
    if kind == 3:
        return fdp.PickValueInList([RaisingFloat(), LyingFloat(), "0.1", None, 1j, [0.1]]), None
    if kind == 4:
        with np.errstate(over="ignore"):
            return np.float32(fdp.ConsumeRegularFloat()), None  # value computed below
    return 0.01, 0.01


def released() -> memoryview[float]:
    view = memoryview(bytearray(64)).cast("d")
    view.release()
    return view


def make_out(fdp: Any, z: Built, kind: str | None) -> tuple[Any, bool]:
    """out as passed, and whether leaky must accept it."""
    choice = fdp.ConsumeIntInRange(0, 5)
    if choice == 0 or kind is None:
        return None, True
    shape = np.asarray(z.obj).shape
    if choice == 1:
        return np.full(shape, 7, dtype=kind), True
    if choice == 2:  # in place, where the input can take its own result
        if z.valid and np.asarray(z.obj).dtype.char == kind and _writable_distinct(z):
            return z.obj, True
        return None, True
    if choice == 3:
        return bytes(8 * max(1, int(np.prod(shape)))), False
    if choice == 4:
        return released(), False
    return np.zeros((*shape, 1), dtype=kind), False


def _writable_distinct(z: Built) -> bool:
    """Writable, and no two elements share memory (no zero strides)."""
    view = memoryview(z.obj)
    return not view.readonly and (view.strides is None or 0 not in view.strides)


def shape_of(obj: Any) -> tuple[int, ...] | None:
    try:
        return tuple(memoryview(obj).shape or ())
    except (TypeError, ValueError):
        return None


def result_char(obj: Any) -> str:
    char: str = np.asarray(obj).dtype.char
    return char if char in ("e", "f") else "d"


def snapshot(obj: Any) -> bytes | None:
    try:
        return bytes(memoryview(obj).tobytes())
    except (TypeError, ValueError, NotImplementedError):
        return None


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    func = fdp.ConsumeIntInRange(0, 2)
    count = fdp.ConsumeIntInRange(0, 12)
    z = operand(fdp, count)
    g = operand(fdp, count) if func == 2 else None
    alpha, alpha_value = slope(fdp)
    if isinstance(alpha, np.float32):
        alpha_value = float(alpha)
    lead = g if g is not None else z
    kind = result_char(lead.obj) if lead.valid else None
    out, out_ok = make_out(fdp, lead, kind)
    threads = fdp.PickValueInList([None, None, 1, 2, 64, 10**20, 0, -1])
    kwargs: dict[str, Any] = {} if threads is None else {"threads": threads}
    if out is not None:
        kwargs["out"] = out
    shapes_match = g is None or shape_of(g.obj) == shape_of(z.obj)
    valid = (
        z.valid
        and (g is None or g.valid)
        and alpha_value is not None
        and out_ok
        and shapes_match
        and (threads is None or threads >= 1)
    )
    inputs = [z.obj] if g is None else [g.obj, z.obj]
    before = [snapshot(x) for x in inputs]
    out_before = snapshot(out) if out is not None else None
    try:
        if func == 0:
            result = leaky_relu(z.obj, alpha, **kwargs)
        elif func == 1:
            result = leaky_relu_grad(z.obj, alpha, **kwargs)
        else:
            assert g is not None
            result = leaky_relu_backward(g.obj, z.obj, alpha, **kwargs)
    except EXPECTED_ERRORS as exc:
        if valid:
            raise AssertionError(f"valid call raised {exc!r}") from exc
        if out is not None and out_before is not None:
            assert snapshot(out) == out_before, "out changed by a failed call"
        if out is None or not any(out is x for x in inputs):
            assert [snapshot(x) for x in inputs] == before, "input changed by a failed call"
        return
    assert valid, "an invalid call succeeded"
    assert alpha_value is not None
    if out is not None:
        assert result is out
    zs = (
        elements(
            np.frombuffer(before[-1] or b"", np.asarray(z.obj).dtype).reshape(
                np.asarray(z.obj).shape
            )
        )
        if before[-1] is not None
        else elements(z.obj)
    )
    zk = np.asarray(z.obj).dtype.char
    if func == 0:
        expected = [oracle.forward_element(zk, v, alpha_value) for v in zs]
    elif func == 1:
        expected = [oracle.grad_element(zk, v, alpha_value) for v in zs]
    else:
        assert g is not None and before[0] is not None
        gk = np.asarray(g.obj).dtype.char
        gs = elements(np.frombuffer(before[0], np.asarray(g.obj).dtype))
        expected = [
            oracle.backward_element(gk, a, zk, b, alpha_value) for a, b in zip(gs, zs, strict=True)
        ]
    assert_matches(result, expected, result_char(lead.obj), alpha_value)


# The harness's own branches are coverage too: they are the paths through
# exporter kinds, layouts, slopes and outs, which the C code branches on.  (The
# C extension itself is not instrumented: that needs clang's
# -fsanitize-coverage=trace-pc-guard, and CI has gcc only.)
numpy_operand = atheris.instrument_func(numpy_operand)
cast_operand = atheris.instrument_func(cast_operand)
ctypes_operand = atheris.instrument_func(ctypes_operand)
operand = atheris.instrument_func(operand)
slope = atheris.instrument_func(slope)
make_out = atheris.instrument_func(make_out)
test_one_input = atheris.instrument_func(test_one_input)


def main() -> None:
    print(f"fuzzing leaky {leaky.__version__}, kernels {leaky._leaky._kernels}", flush=True)
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
