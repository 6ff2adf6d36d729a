"""Property tests: random arrays, layouts and slopes against the oracle."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from conftest import ALL_DTYPES, assert_matches, expected_backward, expected_forward, expected_grad
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from leaky import leaky_relu, leaky_relu_backward, leaky_relu_grad

alphas = st.one_of(
    st.sampled_from([0.01, 0.0, -0.0, 1.0, 1.5, -0.3, 2.0, math.inf, -math.inf]),
    st.floats(allow_nan=False, width=64),
    st.floats(min_value=-4, max_value=4),
)
shapes = hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=6)


@st.composite
def arrays(draw: st.DrawFn, dtype: str | None = None) -> Any:
    """An array, then a random view of it: steps, reversals, transposes."""
    dt = np.dtype(dtype or draw(st.sampled_from(ALL_DTYPES)))
    base = draw(
        hnp.arrays(
            dt, shapes, elements=hnp.from_dtype(dt, allow_nan=True) if dt.kind == "f" else None
        )
    )
    if base.ndim == 0:
        return base
    index = tuple(
        slice(None, None, draw(st.sampled_from([1, 2, -1, -2]))) for _ in range(base.ndim)
    )
    view = base[index]
    if draw(st.booleans()):
        view = view.transpose(draw(st.permutations(range(view.ndim))))
    return view


def result_char(array: Any) -> str:
    char: str = array.dtype.char
    return char if char in ("e", "f") else "d"


@given(arrays(), alphas)
def test_forward(x: Any, alpha: float) -> None:
    assert_matches(leaky_relu(x, alpha), expected_forward(x, alpha), result_char(x), alpha)


@given(arrays(), alphas)
def test_grad(x: Any, alpha: float) -> None:
    assert_matches(leaky_relu_grad(x, alpha), expected_grad(x, alpha), result_char(x), alpha)


@given(st.data(), alphas)
def test_backward(data: st.DataObject, alpha: float) -> None:
    z = data.draw(arrays())
    g_dtype = data.draw(st.sampled_from(ALL_DTYPES))
    g = data.draw(hnp.arrays(np.dtype(g_dtype), z.shape))
    assert_matches(
        leaky_relu_backward(g, z, alpha), expected_backward(g, z, alpha), result_char(g), alpha
    )


@given(arrays(dtype="f"), alphas, st.data())
def test_out_views_and_in_place(x: Any, alpha: float, data: st.DataObject) -> None:
    expected = expected_forward(x, alpha)
    out = np.full(x.shape, -7.0, dtype="f")
    if x.ndim and data.draw(st.booleans()):
        out = np.full(x.shape[::-1], -7.0, dtype="f").T
    assert leaky_relu(x, alpha, out=out) is out
    assert_matches(out, expected, "f", alpha)
    assert leaky_relu(x, alpha, out=x) is x
    assert_matches(x, expected, "f", alpha)


@given(st.integers(1, 60), st.integers(-59, 59), st.sampled_from(["e", "f", "d"]), alphas)
def test_overlapping_shifted_windows(size: int, shift: int, dtype: str, alpha: float) -> None:
    buffer = (np.arange(size + abs(shift)) - size / 2).astype(dtype)
    src = buffer[max(0, -shift) : max(0, -shift) + size]
    dst = buffer[max(0, shift) : max(0, shift) + size]
    expected = expected_forward(src.copy(), alpha)
    leaky_relu(src, alpha, out=dst)
    assert_matches(dst, expected, dtype, alpha)
