"""Buffers of every kind, format and layout, against the oracle."""

from __future__ import annotations

import array
import ctypes
import math
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from conftest import (
    ALL_DTYPES,
    ALPHAS,
    FLOAT_DTYPES,
    assert_matches,
    assert_same_layout,
    expected_backward,
    expected_forward,
    expected_grad,
    sample,
)

import leaky
from leaky import leaky_relu, leaky_relu_backward, leaky_relu_grad

Unary = Callable[..., Any]
UNARY = [
    pytest.param(leaky_relu, expected_forward, id="forward"),
    pytest.param(leaky_relu_grad, expected_grad, id="grad"),
]


def as_buffer(array: Any) -> Any:
    """NumPy's stubs declare __buffer__ only for Python >= 3.12."""
    return array


def result_char(dtype: str) -> str:
    return dtype if dtype in ("e", "f") else "d"


@pytest.mark.parametrize("alpha", ALPHAS)
@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize(("func", "expect"), UNARY)
def test_every_format_and_alpha(func: Unary, expect: Unary, dtype: str, alpha: float) -> None:
    x = sample(dtype, (257,), seed=len(dtype) + ord(dtype))
    result = func(x, alpha)
    assert isinstance(result, np.ndarray) and result.shape == x.shape
    assert_matches(result, expect(x, alpha), result_char(dtype), alpha)


@pytest.mark.parametrize("alpha", ALPHAS)
@pytest.mark.parametrize("z_dtype", ALL_DTYPES)
@pytest.mark.parametrize("g_dtype", ALL_DTYPES)
def test_backward_every_format_pair(g_dtype: str, z_dtype: str, alpha: float) -> None:
    g = sample(g_dtype, (67,), seed=1)
    z = sample(z_dtype, (67,), seed=2)
    result = leaky_relu_backward(g, z, alpha)
    assert_matches(result, expected_backward(g, z, alpha), result_char(g_dtype), alpha)


def layouts(dtype: str) -> list[Any]:
    """Views of every shape the buffer protocol can describe."""
    base = sample(dtype, (6, 8, 10), seed=3)
    unaligned_bytes = bytearray(base.nbytes + 1)
    unaligned = np.frombuffer(unaligned_bytes, dtype=dtype, count=base.size, offset=1)
    unaligned[:] = base.ravel()
    return [
        base,
        base[2, 3, 4],  # a 0-d view
        np.array(base[0, 0, 0]),  # a 0-d array
        base[:, :0],  # empty
        base.reshape(-1)[:0],
        base.T,  # Fortran order
        base[::2, 1::3, ::-1],  # steps and a negative stride
        base[::-1, ::-1, ::-1],
        base[:, 3],  # non-contiguous 2-d
        base.transpose(1, 0, 2)[:, ::2],
        np.broadcast_to(base[0, 0], (4, 10)),  # zero strides
        unaligned.reshape(base.shape),
        unaligned[4:].reshape(-1, 7)[:, ::3],
        base.reshape(2, 3, 2, 4, 5, 2)[:, ::-1, :, 1:, :, ::-1],
    ]


@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize(("func", "expect"), UNARY)
def test_every_layout(func: Unary, expect: Unary, dtype: str) -> None:
    for i, x in enumerate(layouts(dtype)):
        alpha = [0.01, -0.3, 1.5][i % 3]
        result = func(x, alpha)
        # NumPy scalars (base[2, 3, 4]) give scalars, arrays arrays laid out as NumPy's
        assert type(result) is (np.ndarray if isinstance(x, np.ndarray) else result.dtype.type), i
        assert result.shape == x.shape, i
        assert_same_layout(result, np.multiply(x, 1.0))
        assert_matches(result, expect(x, alpha), result_char(dtype), alpha)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_backward_every_layout(dtype: str) -> None:
    for x in layouts(dtype):
        g = sample(dtype, x.shape, seed=5)[..., ::-1] if x.ndim else sample(dtype, (), seed=5)
        result = leaky_relu_backward(g, x, 0.2)
        assert isinstance(result, np.ndarray) and result.shape == x.shape
        with np.errstate(over="ignore"):  # NumPy's layout is the oracle, not its sums
            assert_same_layout(result, np.add(g, x))
        assert_matches(result, expected_backward(g, x, 0.2), dtype, 0.2)


@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_numpy_scalars_give_numpy_scalars(dtype: str) -> None:
    for value in (3, 0, -5):
        x = np.array(value).astype(dtype)[()]
        result = leaky_relu(x, 0.5)
        assert isinstance(result, np.generic) and not isinstance(result, np.ndarray)
        assert result.dtype.char == result_char(dtype)
        assert_matches(
            np.asarray(result), expected_forward(np.asarray(x), 0.5), result_char(dtype), 0.5
        )
        grad = leaky_relu_grad(x, 0.5)
        assert isinstance(grad, np.generic) and grad.dtype.char == result_char(dtype)
        back = leaky_relu_backward(x, x, 0.5)
        assert isinstance(back, np.generic) and back.dtype.char == result_char(dtype)


def test_number_and_buffer_paths_agree() -> None:
    values = [1.5, -1.5, 0.0, -0.0, math.inf, -math.inf, 5e-324, -5e-324, -1e308, 0.1, -0.1]
    for alpha in (0.01, 0.2, 1.5, -0.3, 0.0, 1e300):
        from_buffer = leaky_relu(np.array(values), alpha).tolist()
        from_numbers = [leaky_relu(v, alpha) for v in values]
        assert np.array(from_buffer).tobytes() == np.array(from_numbers).tobytes()
        assert (
            leaky_relu_grad(np.array(values), alpha).tobytes()
            == np.array([leaky_relu_grad(v, alpha) for v in values]).tobytes()
        )
        g = np.linspace(-3, 3, len(values))
        assert (
            leaky_relu_backward(g, np.array(values), alpha).tobytes()
            == np.array(
                [leaky_relu_backward(a, b, alpha) for a, b in zip(g.tolist(), values, strict=True)]
            ).tobytes()
        )


ARRAY_TYPECODES = ["b", "B", "h", "H", "i", "I", "l", "L", "q", "Q", "f", "d"]


@pytest.mark.parametrize("typecode", ARRAY_TYPECODES)
def test_array_array(typecode: str) -> None:
    values = [0, 1, 5, 100] if typecode.isupper() else [0, 1, -1, 5, -100]
    source = array.array(typecode, values)
    result = leaky_relu(source, 0.5)
    assert isinstance(result, array.array)
    assert result.typecode == (typecode if typecode in "fd" else "d")
    expected = expected_forward(np.asarray(source), 0.5)
    assert_matches(np.frombuffer(result, dtype=result.typecode), expected, result.typecode, 0.5)
    grad = leaky_relu_grad(source, 0.5)
    assert isinstance(grad, array.array)
    assert list(grad) == [1.0 if v > 0 else 0.5 for v in values]
    assert leaky_relu(array.array(typecode), 0.5) == array.array(result.typecode)


def test_memoryview_results() -> None:
    raw = bytearray(np.array([1.0, -2.0, 3.0, -4.0, 5.0, -6.0]).tobytes())
    view = memoryview(raw).cast("d")
    result = leaky_relu(view, 0.5)
    assert isinstance(result, memoryview)
    assert result.format == "d" and result.shape == (6,) and not result.readonly
    assert result.tolist() == [1.0, -1.0, 3.0, -2.0, 5.0, -3.0]
    assert leaky_relu(view[::2], 0.5).tolist() == [1.0, 3.0, 5.0]
    assert leaky_relu(view[::-1], 0.5).tolist() == [-3.0, 5.0, -2.0, 3.0, -1.0, 1.0]
    shaped = leaky_relu(view.cast("B").cast("d", [2, 3]), 0.5)
    assert shaped.shape == (2, 3) and shaped.tolist() == [[1.0, -1.0, 3.0], [-2.0, 5.0, -3.0]]
    assert leaky_relu_grad(view, 0.5).tolist() == [1.0, 0.5, 1.0, 0.5, 1.0, 0.5]


def test_memoryview_zero_dim_empty_and_float16() -> None:
    zero_dim = leaky_relu(memoryview(as_buffer(np.array(-2.0))), 0.5)
    assert isinstance(zero_dim, memoryview) and zero_dim.ndim == 0 and zero_dim[()] == -1.0
    empty = leaky_relu(memoryview(as_buffer(np.zeros((3, 0, 2)))), 0.5)
    assert empty.shape == (3, 0, 2) and empty.format == "d"
    half = leaky_relu(memoryview(as_buffer(np.array([-2.0, 4.0], dtype="e"))), 0.5)
    assert half.format == "e" and half.shape == (2,)
    assert np.frombuffer(half, dtype="e").tolist() == [-1.0, 4.0]
    # the result keeps its memory alive after the memoryview is gone
    inner = memoryview(half.obj)
    del half
    assert np.frombuffer(inner, dtype="e").tolist() == [-1.0, 4.0]


def test_bytes_and_bytearray_give_float64_memoryviews() -> None:
    for source in (bytes([0, 1, 255]), bytearray([0, 1, 255])):
        result = leaky_relu(source)
        assert isinstance(result, memoryview) and result.format == "d"
        assert result.tolist() == [0.0, 1.0, 255.0]
    assert leaky_relu(b"").tolist() == []


def test_ctypes_arrays() -> None:
    doubles = (ctypes.c_double * 4)(1.0, -2.0, 0.0, -4.0)
    result = leaky_relu(doubles, 0.25)
    assert isinstance(result, memoryview) and result.tolist() == [1.0, -0.5, 0.0, -1.0]
    floats = (ctypes.c_float * 2)(-8.0, 8.0)
    assert np.frombuffer(leaky_relu(floats, 0.25), dtype="f").tolist() == [-2.0, 8.0]
    longs = (ctypes.c_long * 3)(-4, 0, 4)  # ctypes says '<l' with an 8-byte itemsize
    assert leaky_relu(longs, 0.25).tolist() == [-1.0, 0.0, 4.0]
    shorts = (ctypes.c_short * 2)(-4, 4)
    assert leaky_relu(shorts, 0.25).tolist() == [-1.0, 4.0]
    flags = (ctypes.c_bool * 2)(True, False)
    assert leaky_relu_grad(flags, 0.25).tolist() == [1.0, 0.25]
    row = ctypes.c_double * 3
    matrix = (row * 2)(row(1.0, -1.0, 2.0), row(-2.0, 3.0, -3.0))
    assert leaky_relu(matrix, 0.5).tolist() == [[1.0, -0.5, 2.0], [-1.0, 3.0, -1.5]]


@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize(("func", "expect"), UNARY)
def test_out_receives_result_and_is_returned(func: Unary, expect: Unary, dtype: str) -> None:
    x = sample(dtype, (5, 7), seed=9)
    out = np.full(x.shape, 99, dtype=result_char(dtype))
    assert func(x, 0.3, out=out) is out
    assert_matches(out, expect(x, 0.3), result_char(dtype), 0.3)
    fortran_out = np.asfortranarray(np.zeros(x.shape, dtype=result_char(dtype)))
    assert func(x, -0.3, out=fortran_out) is fortran_out
    assert_matches(fortran_out, expect(x, -0.3), result_char(dtype), -0.3)
    strided_out = np.zeros((10, 14), dtype=result_char(dtype))[::2, ::-2]
    func(x, 0.3, out=strided_out)
    assert_matches(strided_out, expect(x, 0.3), result_char(dtype), 0.3)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize(("func", "expect"), UNARY)
def test_in_place(func: Unary, expect: Unary, dtype: str) -> None:
    x = sample(dtype, (4, 33), seed=11)
    expected = expect(x, 0.2)
    assert func(x, 0.2, out=x) is x
    assert_matches(x, expected, dtype, 0.2)
    y = sample(dtype, (4, 33), seed=12)
    view = y[:, ::-3]
    expected = expect(view, 0.2)
    func(view, 0.2, out=view)
    assert_matches(view, expected, dtype, 0.2)


def overlapping_pairs(dtype: str) -> list[tuple[Any, Any]]:
    """(source, out) pairs over one buffer that overlap without coinciding."""

    def fresh() -> Any:
        return sample(dtype, (40,), seed=13)

    makers: list[Callable[[Any], tuple[Any, Any]]] = [
        lambda a: (a[:-1], a[1:]),
        lambda a: (a[1:], a[:-1]),
        lambda a: (a[::-1], a),
        lambda a: (a[:20], a[10:30]),
        lambda a: (a[::2], a[1::2]),  # interleaved: the extents overlap
        lambda a: (a.reshape(8, 5), a.reshape(5, 8).T),
    ]
    return [make(fresh()) for make in makers]


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize(("func", "expect"), UNARY)
def test_partially_overlapping_out_matches_separate_out(
    func: Unary, expect: Unary, dtype: str
) -> None:
    for source, out in overlapping_pairs(dtype):
        expected = expect(source.copy(), 0.25)
        assert func(source, 0.25, out=out) is out
        assert_matches(out, expected, dtype, 0.25)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_backward_out_overlapping_either_input(dtype: str) -> None:
    for which in ("grad", "z"):
        for source, out in overlapping_pairs(dtype):
            other = sample(dtype, source.shape, seed=17)
            g, z = (source, other) if which == "grad" else (other, source)
            expected = expected_backward(g.copy(), z.copy(), 0.25)
            assert leaky_relu_backward(g, z, 0.25, out=out) is out
            assert_matches(out, expected, dtype, 0.25)
    x = sample(dtype, (50,), seed=19)
    g = sample(dtype, (50,), seed=20)
    expected = expected_backward(g, x, 0.1)
    leaky_relu_backward(g, x, 0.1, out=g)
    assert_matches(g, expected, dtype, 0.1)


def test_out_with_array_array_and_memoryview() -> None:
    source = array.array("d", [-1.0, 2.0, -3.0])
    target = array.array("d", [0.0, 0.0, 0.0])
    assert leaky_relu(source, 0.5, out=target) is target
    assert list(target) == [-0.5, 2.0, -1.5]
    assert leaky_relu(source, 0.5, out=source) is source
    assert list(source) == [-0.5, 2.0, -1.5]
    raw = bytearray(24)
    out_view = memoryview(raw).cast("d")
    assert leaky_relu(np.array([-2.0, 0.0, 2.0]), 0.5, out=out_view) is out_view
    assert out_view.tolist() == [-1.0, 0.0, 2.0]
    ints = array.array("i", [-2, 2])
    float_out = array.array("d", [0.0, 0.0])
    leaky_relu(ints, 0.5, out=float_out)
    assert list(float_out) == [-1.0, 2.0]


@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_empty_inputs(dtype: str) -> None:
    for shape in ((0,), (3, 0), (0, 4, 5)):
        x = np.zeros(shape, dtype=dtype)
        for func in (leaky_relu, leaky_relu_grad):
            result = func(x)
            assert result.shape == shape and result.dtype.char == result_char(dtype)
        assert leaky_relu_backward(x, x).shape == shape
        out = np.zeros(shape, dtype=result_char(dtype))
        assert leaky_relu(x, out=out) is out


def test_high_rank() -> None:
    x = sample("f", (2,) * 20, seed=21)[..., ::-1]
    assert_matches(leaky_relu(x, 0.5), expected_forward(x, 0.5), "f", 0.5)
    # the buffer protocol's limit, 64 dimensions, where memoryview stops too
    max_ndim = leaky._leaky.PYBUF_MAX_NDIM
    deep_view = memoryview(array.array("d", [-2.0])).cast("B").cast("d", (1,) * max_ndim)
    deep_result = leaky_relu(deep_view, 0.5)
    nested: Any = -1.0
    for _ in range(max_ndim):
        nested = [nested]
    assert deep_result.ndim == max_ndim and deep_result.tolist() == nested
    # NumPy's own limit: 64 dimensions since 2.0, 32 before
    numpy_max_ndim = 64 if int(np.__version__.split(".")[0]) >= 2 else 32
    deep = np.full((1,) * numpy_max_ndim, -2.0)
    assert leaky_relu(deep, 0.5).reshape(()) == -1.0


def test_ndarray_subclass_gives_the_subclass() -> None:
    # through leaky.ufunc, as a NumPy ufunc gives it (tests/test_ufunc.py has the rest)
    class Sub(np.ndarray):
        pass

    x = np.array([-1.0, 1.0]).view(Sub)
    result = leaky_relu(x)
    assert type(result) is Sub is type(np.maximum(x, 0.01 * x))
    assert result.tolist() == [-0.01, 1.0]


def test_exact_ndarrays_are_read_off_numpys_own_structs() -> None:
    """The NumPy fast path is taken, not silently declined, on this NumPy.

    It reads ndarray and dtype structs whose layout changed in NumPy 2.0; CI
    runs the suite on NumPy 2 and on the oldest NumPy supported (1.x), so
    this proves the layout probe accepts both.
    """
    code = (
        "import numpy, leaky, leaky._leaky as ext\n"
        "before = ext._numpy_fast_path()\n"
        "leaky.leaky_relu(numpy.zeros(3))\n"
        "print(before, ext._numpy_fast_path())\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["untried", "ready"], np.__version__
