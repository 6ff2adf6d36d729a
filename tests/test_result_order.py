"""Fresh results keep their inputs' memory order (issue 20, part 1).

NumPy is the oracle for the layout: an ndarray result must be laid out as
``np.multiply(x, 1.0)`` is (``np.add(g, z)`` for backward's two operands),
which is NumPy's order='K'; the values are checked bit for bit against the
pure-Python oracle.  A DLPack tensor's result (a ResultBuffer) keeps the same
order through its buffer and its ``__dlpack__``; other buffers give C order.
"""

from __future__ import annotations

import ctypes
import itertools
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from conftest import (
    assert_matches,
    assert_same_layout,
    expected_backward,
    expected_forward,
    expected_grad,
    sample,
)
from dlpack_exporter import consume, exporter_of
from numpy.lib.stride_tricks import as_strided

from leaky import leaky_relu, leaky_relu_backward, leaky_relu_grad

DTYPES = ["e", "f", "d", "h"]  # float16/32/64 and an integer, whose result is float64


def result_char(dtype: str) -> str:
    return dtype if dtype in ("e", "f", "d") else "d"


def layouts(dtype: str) -> dict[str, Any]:
    """Every kind of layout an ndarray can have, each of shape-compatible size."""
    base = sample(dtype, (4, 5, 6), seed=11)
    row = sample(dtype, (6,), seed=12)
    cases: dict[str, Any] = {
        "C": base,
        "F": np.ascontiguousarray(base.T).T,  # over C-ordered memory, for exporter_of
        "reversed": base[::-1, ::-1, ::-1],
        "negative-inner": base[:, :, ::-1],
        "negative-outer": base[::-1],
        "sliced": base[::2, 1:, ::3],
        "broadcast": np.broadcast_to(row, (4, 5, 6)),
        "broadcast-transposed": np.broadcast_to(base[0].T[None], (3, 6, 5)),
        "sliding-window": as_strided(row, (3, 4), (row.itemsize, row.itemsize)),
        # overlaps itself, yet its strides order its axes: NumPy gives F order
        "overlapping-ordered": as_strided(row, (3, 2), (row.itemsize, 2 * row.itemsize)),
        "0-d": np.array(base[1, 2, 3]),
        "empty": base[:, :0],
        "empty-transposed": base[:, :0].T,
        "size-1": base[:1, :, :1],
        "size-1-transposed": base[:, :1].transpose(2, 1, 0),
        "2-d transposed": base[0].T,
        "2-d F sliced": np.ascontiguousarray(base[0].T).T[1:, ::2],
    }
    for perm in itertools.permutations(range(3)):
        if perm != (0, 1, 2):
            cases["permuted-" + "".join(map(str, perm))] = base.transpose(perm)
    return cases


UNARY = [
    pytest.param(leaky_relu, expected_forward, id="forward"),
    pytest.param(leaky_relu_grad, expected_grad, id="grad"),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("func", "expect"), UNARY)
def test_unary_result_in_numpys_order(
    func: Callable[..., Any], expect: Callable[..., Any], dtype: str
) -> None:
    for name, x in layouts(dtype).items():
        result = func(x, 0.3)
        assert isinstance(result, np.ndarray), name
        assert_same_layout(result, np.multiply(x, 1.0))
        assert all(s >= 0 for s in result.strides), name
        assert_matches(result, expect(x, 0.3), result_char(dtype), 0.3)


def test_transposed_results_are_f_ordered() -> None:
    """The issue's reproducer: W.T gives an F-ordered result, as np.multiply(W.T, a) does."""
    w = sample("d", (300, 200), seed=3)
    for func in (leaky_relu, leaky_relu_grad):
        result = func(w.T)
        assert result.flags.f_contiguous and not result.flags.c_contiguous
        assert result.strides == (8, 8 * 200)
    assert leaky_relu_backward(w.T, w.T).flags.f_contiguous


def backward_pairs(dtype: str) -> list[tuple[str, Any, Any]]:
    """Pairs of operands of one shape in every mix of layouts."""
    base = sample(dtype, (4, 5, 6), seed=21)
    other = sample(dtype, (4, 5, 6), seed=22)

    def views(a: Any) -> dict[str, Any]:
        return {
            "C": a,
            "F": np.asfortranarray(a),
            "permuted-102": np.ascontiguousarray(a.transpose(1, 0, 2)).transpose(1, 0, 2),
            "permuted-201": np.ascontiguousarray(a.transpose(2, 0, 1)).transpose(1, 2, 0),
            "reversed": a[::-1, :, ::-1].copy()[::-1, :, ::-1],
            "broadcast": np.broadcast_to(a[:1], a.shape),
            "broadcast-F": np.broadcast_to(np.asfortranarray(a[0])[None], a.shape),
            "sliced": np.pad(a, 1)[1:-1, 1:-1, 1:-1],
            "size-1": np.broadcast_to(a[:, :1, :1], a.shape),
        }

    gs, zs = views(base), views(other)
    pairs = [(f"{gn}+{zn}", g, z) for (gn, g), (zn, z) in itertools.product(gs.items(), zs.items())]
    zero = sample(dtype, (), seed=23)
    pairs.append(("0-d", zero, np.array(zero)))
    pairs.append(("empty", base[:0].T, other[:0].T))
    pairs.append(("empty+C", base[:, :0], other[:, :0].copy()))
    return pairs


@pytest.mark.parametrize("dtype", DTYPES)
def test_backward_result_in_numpys_order(dtype: str) -> None:
    for name, g, z in backward_pairs(dtype):
        result = leaky_relu_backward(g, z, 0.3)
        assert isinstance(result, np.ndarray), name
        with np.errstate(over="ignore"):
            assert_same_layout(result, np.add(g, z))
        assert_matches(result, expected_backward(g, z, 0.3), result_char(dtype), 0.3)


def test_backward_mixed_dtypes_follow_both_operands() -> None:
    g = sample("f", (5, 7), seed=1).T  # F-ordered
    z = sample("h", (7, 5), seed=2)  # C-ordered: C order wins the conflict
    result = leaky_relu_backward(g, z, 0.2)
    assert_same_layout(result, np.add(g, z))
    assert_matches(result, expected_backward(g, z, 0.2), "f", 0.2)
    z_f = np.asfortranarray(z)  # both F-ordered: F order
    result = leaky_relu_backward(g, z_f, 0.2)
    assert result.flags.f_contiguous and not result.flags.c_contiguous
    assert_same_layout(result, np.add(g, z_f))


def test_out_is_written_in_its_own_layout() -> None:
    """out= is unchanged: it keeps whatever layout the caller gave it."""
    x = sample("d", (6, 9), seed=4)
    out = np.empty((9, 6))
    assert leaky_relu(x.T, out=out) is out
    assert out.flags.c_contiguous
    assert_matches(out, expected_forward(x.T, 0.01), "d", 0.01)


# ---------------------------------------------------------------- other buffers


@pytest.mark.parametrize("dtype", ["f", "d"])
def test_memoryview_results_stay_c_ordered(dtype: str) -> None:
    for name, x in layouts(dtype).items():
        if x.ndim == 0 or 0 in x.shape:
            continue
        result = leaky_relu(memoryview(x), 0.3)
        assert isinstance(result, memoryview), name
        assert result.c_contiguous, (name, result.strides)
        assert_matches(result, expected_forward(x, 0.3), dtype, 0.3)


# ---------------------------------------------------------------- DLPack tensors


def dlpack_layouts() -> dict[str, Any]:
    return {
        name: x
        for name, x in layouts("f").items()
        if all(s % x.itemsize == 0 for s in x.strides) and name != "0-d"
    }


@pytest.mark.parametrize("func", [leaky_relu, leaky_relu_grad])
def test_tensor_results_keep_the_tensors_order(func: Callable[..., Any]) -> None:
    """A DLPack tensor's result (a ResultBuffer) is laid out as NumPy lays out its own,
    and says so through its buffer, its __dlpack__ and what NumPy reads from either."""
    for name, x in dlpack_layouts().items():
        result = func(exporter_of(x), 0.3)
        expected = np.multiply(x, 1.0)
        view = memoryview(result)
        assert view.shape == x.shape, name
        assert_same_layout(np.asarray(view), expected)
        assert_same_layout(np.from_dlpack(result), expected)
        assert_matches(np.from_dlpack(result), expect_of(func)(x, 0.3), "f", 0.3)
        assert_matches(view, expect_of(func)(x, 0.3), "f", 0.3)
        consumed = consume(result, max_version=(1, 0))
        expected_strides = tuple(s // 4 for s in expected.strides)
        # DLPack allows NULL strides for C order; leaky always writes them
        if x.size:  # an empty tensor's strides are arbitrary
            assert consumed.strides == expected_strides, name
        assert consumed.payload == np.from_dlpack(result).tobytes(order="C"), name


def expect_of(func: Callable[..., Any]) -> Callable[..., Any]:
    return expected_forward if func is leaky_relu else expected_grad


def test_tensor_backward_result_follows_both_operands() -> None:
    g, z = sample("d", (6, 4), seed=1).T, sample("d", (6, 4), seed=2).T
    result = leaky_relu_backward(exporter_of(g), exporter_of(z), 0.2)
    assert memoryview(result).f_contiguous and not memoryview(result).c_contiguous
    assert_same_layout(np.from_dlpack(result), np.add(g, z))
    assert_matches(np.from_dlpack(result), expected_backward(g, z, 0.2), "d", 0.2)


# PyBUF_* flags of CPython's buffer protocol (Include/pybuffer.h)
PYBUF_ND, PYBUF_STRIDES = 0x0008, 0x0010 | 0x0008
PYBUF_C_CONTIGUOUS, PYBUF_F_CONTIGUOUS = 0x0020 | PYBUF_STRIDES, 0x0040 | PYBUF_STRIDES
PYBUF_ANY_CONTIGUOUS = 0x0080 | PYBUF_STRIDES


def get_buffer(obj: Any, flags: int) -> None:
    """PyObject_GetBuffer(obj, flags) and its release: raises what the exporter raises."""
    view = ctypes.create_string_buffer(256)  # larger than any Py_buffer
    get = ctypes.pythonapi.PyObject_GetBuffer
    get.argtypes = [ctypes.py_object, ctypes.c_void_p, ctypes.c_int]
    get.restype = ctypes.c_int
    release = ctypes.pythonapi.PyBuffer_Release
    release.argtypes = [ctypes.c_void_p]
    release.restype = None
    if get(obj, ctypes.addressof(view), flags) == 0:
        release(ctypes.addressof(view))


@pytest.mark.parametrize(
    ("layout", "granted"),
    [
        ("C", {PYBUF_ND, PYBUF_STRIDES, PYBUF_C_CONTIGUOUS, PYBUF_ANY_CONTIGUOUS}),
        ("F", {PYBUF_STRIDES, PYBUF_F_CONTIGUOUS, PYBUF_ANY_CONTIGUOUS}),
        ("permuted-102", {PYBUF_STRIDES}),
    ],
)
def test_tensor_result_buffer_grants_only_its_own_contiguity(
    layout: str, granted: set[int]
) -> None:
    """A consumer that asks for no strides assumes C order, so a non-C result refuses it."""
    x = layouts("f")[layout]
    result = leaky_relu(exporter_of(x))
    for flags in (
        PYBUF_ND,
        PYBUF_STRIDES,
        PYBUF_C_CONTIGUOUS,
        PYBUF_F_CONTIGUOUS,
        PYBUF_ANY_CONTIGUOUS,
    ):
        if flags in granted:
            get_buffer(result, flags)
        else:
            with pytest.raises(BufferError, match="not"):
                get_buffer(result, flags)
