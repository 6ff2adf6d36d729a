"""leaky.ufunc, the NumPy ufuncs, and the route from leaky's functions to them.

Every value is checked bit for bit against the pure-Python oracle (through
conftest's helpers); every type and piece of metadata (mask, subclass, dtype)
against what the equivalent NumPy ufunc expression, np.maximum(z, alpha * z),
returns.  CI runs this file once per kernel path (LEAKY_KERNELS) and once on
the oldest NumPy leaky supports, so the ufunc's loops are covered on each.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import oracle
import pytest
from conftest import (
    ALL_DTYPES,
    ALPHAS,
    FLOAT_DTYPES,
    INT_DTYPES,
    assert_matches,
    elements,
    expected_backward,
    expected_forward,
    expected_grad,
    sample,
)

import leaky
import leaky.ufunc as lu
from leaky import leaky_relu, leaky_relu_backward, leaky_relu_grad

NUMPY_2 = int(np.__version__.split(".")[0]) >= 2
# 1-element runs, SIMD widths and their ragged ends
SIZES = [1, 7, 33, 1000]
# one past the size from which leaky splits work across its thread pool (32,768)
POOL_SIZE = 70_001


def loop_input(z: Any, result: Any) -> Any:
    """z as the type loop that made result read it: integers and bool as they
    are (the oracle computes them in float64), floats in the result's type."""
    a = np.asarray(z)
    return a if a.dtype.kind in "biu" else a.astype(np.asarray(result).dtype)


def expected_dtype(z: Any, alpha: float) -> Any:
    """leaky's rule, which NumPy's promotion gives for floats: integers and bool
    give float64, float16 and float32 keep their type unless the slope cannot
    be one of theirs (NumPy 1.x's value-based casting of a huge slope)."""
    a = np.asarray(z)
    if a.dtype.kind in "biu":
        return np.dtype("d")
    return np.result_type(a, alpha)


def quiet(call: Any) -> Any:
    """A call whose slope NumPy casts with an overflow warning (6.8e38 to float32)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return call()


# ---------------------------------------------------------------- the ufuncs


def test_they_are_ufuncs_made_on_first_access() -> None:
    for name, nin in [("leaky_relu", 2), ("leaky_relu_grad", 2), ("leaky_relu_backward", 3)]:
        func = getattr(leaky.ufunc, name)
        assert isinstance(func, np.ufunc)
        assert func.__name__ == name and func.nin == nin and func.nout == 1
    assert leaky.ufunc is lu
    assert lu.leaky_relu.types[-3:] == ["ef->e", "ff->f", "dd->d"]
    assert lu.leaky_relu_backward.types[-3:] == ["eef->e", "fff->f", "ddd->d"]


def test_import_leaky_still_does_not_import_numpy() -> None:
    code = (
        "import sys, leaky; print('numpy' in sys.modules); "
        "leaky.ufunc; print('numpy' in sys.modules, type(leaky.ufunc.leaky_relu).__name__)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "True", "ufunc"]


def test_other_attributes_are_still_missing() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        leaky.nope  # noqa: B018


def forward_and_grad_cases() -> list[tuple[str, int, list[float]]]:
    cases = [(dtype, size, ALPHAS) for dtype in ALL_DTYPES for size in SIZES]
    return cases + [(dtype, POOL_SIZE, [0.2, math.nan]) for dtype in [*FLOAT_DTYPES, "q"]]


@pytest.mark.parametrize(("dtype", "size", "alphas"), forward_and_grad_cases())
def test_forward_and_grad_against_the_oracle(dtype: str, size: int, alphas: list[float]) -> None:
    z = sample(dtype, (size,), seed=size)
    for alpha in alphas:
        for func, own, expect in [
            (lu.leaky_relu, leaky_relu, expected_forward),
            (lu.leaky_relu_grad, leaky_relu_grad, expected_grad),
        ]:
            got = quiet(lambda f=func, a=alpha: f(z, a))
            assert type(got) is np.ndarray and got.shape == z.shape
            assert got.dtype == expected_dtype(z, alpha), (func, dtype, alpha)
            assert_matches(got, expect(loop_input(z, got), alpha), got.dtype.char, alpha)
            if got.dtype == np.asarray(own(z, alpha)).dtype:
                # leaky's own function on the same input: the same bits
                same = own(z, alpha)
                width = f"u{got.dtype.itemsize}"
                assert np.array_equal(got.view(width), np.asarray(same).view(width))


@pytest.mark.parametrize("size", [1, 33, 1000])
@pytest.mark.parametrize(
    ("grad_dtype", "z_dtype"),
    [("e", "e"), ("f", "f"), ("d", "d"), ("f", "e"), ("e", "d")]
    + [(k, "f") for k in INT_DTYPES]
    + [("i", "i"), ("?", "e")],
)
def test_backward_against_the_oracle(grad_dtype: str, z_dtype: str, size: int) -> None:
    g = sample(grad_dtype, (size,), seed=1)
    z = sample(z_dtype, (size,), seed=2)
    for alpha in ALPHAS:
        got = quiet(lambda a=alpha: lu.leaky_relu_backward(g, z, a))
        want_dtype = np.dtype("d") if g.dtype.kind in "biu" else np.result_type(g, z, alpha)
        assert got.dtype == want_dtype, (grad_dtype, z_dtype, alpha)
        # the loop's inputs: integer grad_output as it is, everything else in
        # the loop's type (a float z keeps its sign in any wider float)
        g_in = loop_input(g, got)
        z_in = z.astype(got.dtype)
        assert_matches(got, expected_backward(g_in, z_in, alpha), got.dtype.char, alpha)


def test_float16_slope_is_float32_of_alpha_rounded_once() -> None:
    # 0.1 as float16 is 0.0999755859375, as float32 0.100000001490116: the product
    # of -1000 rounds to different halves, so this tells the two apart
    z = np.array([-1000.0, -3.0, 2.0], dtype=np.float16)
    got = lu.leaky_relu(z, 0.1)
    assert got.dtype == np.float16
    want = [oracle.forward_element("e", b, 0.1) for b in elements(z)]
    assert elements(got) == want
    assert elements(got) == elements(leaky_relu(z, 0.1))


def test_slopes_that_broadcast_per_channel() -> None:
    # (N, C, H, W) against (C, 1, 1): the PReLU layout, slope stride 0 in the inner run
    z = sample("f", (2, 3, 4, 5), seed=3)
    slopes = np.array([0.1, -0.5, 2.0], dtype=np.float32).reshape(3, 1, 1)
    got = lu.leaky_relu(z, slopes)
    assert got.dtype == np.float32 and got.shape == z.shape
    for c in range(3):
        alpha = float(slopes[c, 0, 0])
        assert_matches(got[:, c], expected_forward(z[:, c], alpha), "f", alpha)
    # a slope per element of the inner axis: the strided loop
    per_column = np.linspace(-1, 2, 5).astype(np.float32)
    got = lu.leaky_relu(z, per_column)
    for w in range(5):
        alpha = float(per_column[w])
        assert_matches(got[..., w], expected_forward(z[..., w], alpha), "f", alpha)
        grads = lu.leaky_relu_grad(z, per_column)
        assert_matches(grads[..., w], expected_grad(z[..., w], alpha), "f", alpha)
        back = lu.leaky_relu_backward(z, z, per_column)
        assert_matches(back[..., w], expected_backward(z[..., w], z[..., w], alpha), "f", alpha)


def test_float16_with_float32_slopes_stays_float16() -> None:
    z = sample("e", (4, 6), seed=4)
    slopes = np.array([0.1, 0.3, -2.0, 0.5], dtype=np.float32).reshape(4, 1)
    got = lu.leaky_relu(z, slopes)
    assert got.dtype == np.float16
    for row in range(4):
        alpha = float(slopes[row, 0])
        assert_matches(got[row], expected_forward(z[row], alpha), "e", alpha)
    # float64 slopes cannot be float32 safely: NumPy's promotion gives float64
    assert lu.leaky_relu(z, slopes.astype("d")).dtype == np.float64


def test_where_and_out() -> None:
    z = sample("d", (50,), seed=5)
    mask = np.arange(50) % 3 != 0
    out = np.full(50, 7.25)
    got = lu.leaky_relu(z, 0.2, out=out, where=mask)
    assert got is out
    assert_matches(out[mask], expected_forward(z[mask], 0.2), "d", 0.2)
    assert (out[~mask] == 7.25).all()
    # in place, into z itself
    inplace = z.copy()
    lu.leaky_relu(inplace, 0.2, out=inplace)
    assert_matches(inplace, expected_forward(z, 0.2), "d", 0.2)
    # out of another float type: NumPy casts (same_kind)
    out32 = np.empty(50, np.float32)
    quiet(lambda: lu.leaky_relu(z, 0.2, out=out32))  # float64's extremes overflow float32
    want = quiet(lambda: np.asarray(leaky_relu(z, 0.2)).astype(np.float32))
    assert np.array_equal(out32, want, equal_nan=True)


def test_backward_on_the_pool() -> None:
    g = sample("f", (POOL_SIZE,), seed=13)
    z = sample("f", (POOL_SIZE,), seed=14)
    got = lu.leaky_relu_backward(g, z, 0.3)
    assert_matches(got, expected_backward(g, z, 0.3), "f", 0.3)


def test_broadcasting_z_against_grad_output() -> None:
    g = sample("f", (3, 1), seed=6)
    z = sample("f", (1, 4), seed=7)
    got = lu.leaky_relu_backward(g, z, 0.3)
    gb, zb = np.broadcast_arrays(g, z)
    assert got.shape == (3, 4)
    assert_matches(got, expected_backward(gb, zb, 0.3), "f", 0.3)


def test_transposed_input_gives_numpys_k_order() -> None:
    # the ufunc follows NumPy's rules (K order), and leaky's own functions the
    # same order, so x.T comes back F-contiguous from both, with the same values
    x = sample("f", (64, 48), seed=8)
    got = lu.leaky_relu(x.T, 0.1)
    assert got.flags.f_contiguous and not got.flags.c_contiguous
    assert_matches(got, expected_forward(x.T, 0.1), "f", 0.1)
    own = np.asarray(leaky_relu(x.T, 0.1))
    assert own.strides == got.strides and np.array_equal(own.view("u4"), got.view("u4"))


def test_dtype_and_casting_keywords() -> None:
    z = np.array([-3, 0, 5], dtype=np.int32)
    got = lu.leaky_relu(z, 0.5, dtype=np.float32, casting="unsafe")
    assert got.dtype == np.float32
    assert_matches(got, expected_forward(z.astype("f"), 0.5), "f", 0.5)


def test_the_loops_raise_no_floating_point_warnings() -> None:
    # leaky's functions never warn; the ufunc's loops leave the flags alone
    z = np.array([-1e308, -np.inf, 3.0, np.nan])
    with np.errstate(all="raise"):
        got = lu.leaky_relu(z, 2.0)
        assert_matches(got, expected_forward(z, 2.0), "d", 2.0)
        big = np.full(40_000, -1e308)  # the pool's workers too
        assert (lu.leaky_relu(big, 2.0) == -np.inf).all()


def test_reduce_has_no_identity() -> None:
    with pytest.raises(ValueError):
        lu.leaky_relu.reduce(np.array([], dtype="d"))


# ---------------------------------------------------------------- the route


class Wrapped(np.ndarray):
    """An ndarray subclass that must come back as itself (__array_wrap__)."""


class OnlyArray:
    def __init__(self, values: Any) -> None:
        self.values = np.asarray(values)

    def __array__(self, dtype: Any = None, copy: Any = None) -> Any:
        return self.values if dtype is None else self.values.astype(dtype)


class OnlyInterface:
    def __init__(self, values: Any) -> None:
        self.values = np.ascontiguousarray(values)
        self.__array_interface__ = self.values.__array_interface__


def test_masked_arrays_keep_their_mask() -> None:
    data = sample("d", (40,), seed=9)
    mask = np.arange(40) % 4 == 1
    m = np.ma.masked_array(data, mask=mask)
    for func, ufunc, expect in [
        (leaky_relu, lu.leaky_relu, expected_forward),
        (leaky_relu_grad, lu.leaky_relu_grad, expected_grad),
    ]:
        got = func(m, 0.3)
        reference = np.maximum(m, 0.3 * m)  # what a NumPy ufunc does with a masked array
        assert type(got) is type(reference) is np.ma.MaskedArray
        assert np.array_equal(np.ma.getmaskarray(got), np.ma.getmaskarray(reference))
        assert np.array_equal(np.ma.getmaskarray(got), mask)
        assert_matches(got.compressed(), expect(data[~mask], 0.3), "d", 0.3)
        direct = ufunc(m, 0.3)
        assert type(direct) is np.ma.MaskedArray
        assert np.array_equal(got.data.view("u8"), direct.data.view("u8"))
    got = leaky_relu_backward(m, data, 0.3)
    assert type(got) is np.ma.MaskedArray and np.array_equal(got.mask, mask)
    assert_matches(got.compressed(), expected_backward(data[~mask], data[~mask], 0.3), "d", 0.3)


def test_masked_arrays_with_out() -> None:
    m = np.ma.masked_array([-1.0, 2.0, -3.0], mask=[False, True, False])
    out = np.ma.masked_array(np.zeros(3), mask=False)
    got = leaky_relu(m, 0.5, out=out)
    assert got is out
    assert out[0] == -0.5 and out[2] == -1.5


@pytest.mark.parametrize(
    "make",
    [
        lambda v: v.view(Wrapped),
        lambda v: np.asmatrix(v.reshape(1, -1)),
        lambda v: np.rec.array(v),  # recarray of a plain float dtype
    ],
    ids=["subclass", "matrix", "recarray"],
)
def test_ndarray_subclasses_come_back_as_the_ufunc_gives(make: Any) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PendingDeprecationWarning)  # np.matrix
        z = make(sample("f", (12,), seed=10))
        reference = np.maximum(z, np.float32(0.2) * z)
        for func, expect in [(leaky_relu, expected_forward), (leaky_relu_grad, expected_grad)]:
            got = func(z, 0.2)
            assert type(got) is type(reference), (type(got), type(reference))
            assert got.shape == reference.shape and got.dtype == np.float32
            assert_matches(np.asarray(got), expect(np.asarray(z), 0.2), "f", 0.2)
        got = leaky_relu_backward(z, z, 0.2)
        assert type(got) is type(reference)


@pytest.mark.parametrize("wrap", [OnlyArray, OnlyInterface], ids=["__array__", "interface"])
def test_objects_numpy_converts_give_ndarrays(wrap: Any) -> None:
    values = sample("f", (3, 5), seed=11)
    z = wrap(values)
    got = leaky_relu(z, 0.1)
    assert type(got) is np.ndarray and got.dtype == np.float32 and got.shape == (3, 5)
    assert_matches(got, expected_forward(values, 0.1), "f", 0.1)
    got = leaky_relu_backward(z, values, 0.1)
    assert_matches(got, expected_backward(values, values, 0.1), "f", 0.1)


def test_default_alpha_on_the_route() -> None:
    m = np.ma.masked_array([-1.0, 2.0], mask=[False, False])
    assert_matches(leaky_relu(m).data, expected_forward(m.data, 0.01), "d", 0.01)


def test_nested_lists_give_nested_lists() -> None:
    z = [[-1, 2.5], [3, -4.0], [0, -0.0]]
    got = leaky_relu(z, 0.5)
    assert got == [[-0.5, 2.5], [3, -2.0], [0, -0.0]]
    assert math.copysign(1.0, got[2][1]) == -1.0
    assert type(got[0][0]) is float and type(got[1][0]) is int  # number rules per element
    reference = np.maximum(np.array(z), 0.5 * np.array(z))
    assert np.asarray(got).shape == reference.shape
    assert leaky_relu_grad(((1.0,), (-1.0,)), 0.5) == [[1.0], [0.5]]
    assert leaky_relu_backward([[2.0, 2.0]], [[1.0, -1.0]], 0.5) == [[2.0, 1.0]]
    deep = [[[[-2.0]]]]
    assert leaky_relu(deep) == [[[[oracle.leaky_relu(-2.0)]]]]
    assert leaky_relu([[], []]) == [[], []]


@pytest.mark.parametrize(
    ("z", "message"),
    [
        ([[1.0, 2.0], [3.0]], r"z is ragged: z\[1\] has 1 elements, but z\[0\] has 2"),
        ([[1.0], 2.0], r"z is ragged: z\[1\] is a number, but z\[0\] is a sequence"),
        ([1.0, [2.0]], r"z is ragged: z\[1\] is a sequence, but z\[0\] is a number"),
        ([[[1.0]], [[2.0, 3.0]]], r"z\[1\]\[0\] has 2 elements, but z\[0\]\[0\] has 1"),
        ([[1.0, "a"]], r"leaky_relu\(\) at z\[0\]\[1\]: .* must be a real number.* not str"),
        ([[1.0], [None]], r"at z\[1\]\[0\]"),
    ],
)
def test_ragged_and_non_numbers_name_the_position(z: Any, message: str) -> None:
    with pytest.raises(TypeError, match=message):
        leaky_relu(z)


def test_nesting_past_numpys_limit_and_self_reference() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(TypeError, match="nests deeper than 64 levels"):
        leaky_relu(loop)


def test_backward_nested_mismatches() -> None:
    with pytest.raises(ValueError, match=r"grad_output\[0\] and z\[0\] must have the same length"):
        leaky_relu_backward([[1.0, 2.0]], [[1.0]])
    with pytest.raises(TypeError, match=r"grad_output\[0\] and z\[0\] must both be sequences"):
        leaky_relu_backward([[1.0]], [1.0])
    with pytest.raises(TypeError, match=r"at grad_output\[1\] and z\[1\]"):
        leaky_relu_backward([1.0, "x"], [1.0, 2.0])


@pytest.mark.parametrize(
    "alpha",
    [np.array([0.1, 0.2]), np.ones((3, 1, 1))],
    ids=["1-d", "per-channel"],
)
def test_array_alpha_points_at_the_ufunc(alpha: Any) -> None:
    z = np.zeros(3)
    calls: list[Callable[[], object]] = [
        lambda: leaky_relu(z, alpha),
        lambda: leaky_relu_grad([1.0], alpha),
        lambda: leaky_relu_backward(z, z, alpha),
        lambda: leaky_relu(np.ma.masked_array(z), alpha),
    ]
    for call in calls:
        with pytest.raises(TypeError, match=r"use leaky\.ufunc\.leaky_relu"):
            call()


def test_fast_paths_stay_fast_paths() -> None:
    # exact ndarrays keep leaky's result in the input's order; numbers and buffers their types
    x = sample("d", (4, 3), seed=12)
    assert type(leaky_relu(x.T)) is np.ndarray and leaky_relu(x.T).flags.f_contiguous
    assert type(leaky_relu(np.float32(-2.0))) is np.float32
    assert type(leaky_relu(memoryview(b"ab"))) is memoryview


@pytest.mark.skipif(not NUMPY_2, reason="NumPy 1.x casts Python scalars by value (NEP 50: 2.0)")
def test_python_float_slopes_are_weak() -> None:
    # NEP 50: a Python float slope never widens float16 or float32 data
    assert lu.leaky_relu.resolve_dtypes((np.dtype("e"), float, None))[-1] == np.dtype("e")
    assert lu.leaky_relu.resolve_dtypes((np.dtype("f"), float, None))[-1] == np.dtype("f")


def test_ufunc_uses_leakys_kernel_path() -> None:
    forced = os.environ.get("LEAKY_KERNELS")
    import leaky._leaky as ext
    import leaky._ufunc as ufunc_ext

    assert ufunc_ext._leaky is ext  # type: ignore[attr-defined]
    if forced:
        assert ext._kernels == forced
