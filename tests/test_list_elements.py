"""What leaky takes alone it takes inside a list: NumPy scalars and 0-d arrays.

Each element of a (nested) list gives what the call on it alone gives: a
NumPy scalar of the result's dtype for a NumPy scalar, a 0-d array for a
0-d array, with the oracle's value.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from conftest import (
    ALL_DTYPES,
    assert_matches,
    expected_backward,
    expected_forward,
    expected_grad,
    sample,
)

from leaky import leaky_relu, leaky_relu_backward, leaky_relu_grad

ALPHA = 0.25


def _elements(char: str, wrap: str, seed: int = 0) -> tuple[Any, list[Any]]:
    values = sample(char, (6,), seed=seed)
    if wrap == "scalar":
        return values, [v for v in values]  # iterating an array gives NumPy scalars
    return values, [np.array(v) for v in values]


def _nest(items: list[Any]) -> list[list[Any]]:
    return [items[:3], items[3:]]


def _check(got: Any, alone: list[Any], want: list[float], kind: str) -> None:
    assert isinstance(got, list) and [len(row) for row in got] == [3, 3]
    flat = [e for row in got for e in row]
    for element, single in zip(flat, alone, strict=True):
        assert type(element) is type(single)
        assert np.asarray(element).dtype == np.asarray(single).dtype
        assert np.shape(element) == ()
    assert_matches(np.array([np.asarray(e) for e in flat]), want, kind, ALPHA)


def _kind(char: str) -> str:
    return char if char in ("e", "f") else "d"


UNARY: list[tuple[Callable[..., Any], Callable[[Any, float], list[float]]]] = [
    (leaky_relu, expected_forward),
    (leaky_relu_grad, expected_grad),
]


@pytest.mark.parametrize("func,expected", UNARY, ids=["leaky_relu", "leaky_relu_grad"])
@pytest.mark.parametrize("wrap", ["scalar", "0-d"])
@pytest.mark.parametrize("char", ALL_DTYPES)
def test_numpy_elements_give_what_they_give_alone(
    char: str, wrap: str, func: Any, expected: Any
) -> None:
    values, items = _elements(char, wrap)
    got = func(_nest(items), ALPHA)
    _check(got, [func(x, ALPHA) for x in items], expected(values, ALPHA), _kind(char))
    assert isinstance(func(tuple(items), ALPHA), list)


@pytest.mark.parametrize("wrap", ["scalar", "0-d"])
@pytest.mark.parametrize("char", ALL_DTYPES)
def test_backward_numpy_elements_give_what_they_give_alone(char: str, wrap: str) -> None:
    grads, g_items = _elements(char, wrap, seed=1)
    zs, z_items = _elements("f", wrap, seed=2)
    got = leaky_relu_backward(_nest(g_items), _nest(z_items), ALPHA)
    alone = [leaky_relu_backward(g, z, ALPHA) for g, z in zip(g_items, z_items, strict=True)]
    _check(got, alone, expected_backward(grads, zs, ALPHA), _kind(char))


def test_the_issue_reproducer() -> None:
    got = leaky_relu(list(np.array([-1.0, 2.0], np.float32)))
    assert got == [np.float32(-1.0) * np.float32(0.01), np.float32(2.0)]
    assert [type(e) for e in got] == [np.float32, np.float32]


def test_numbers_and_numpy_scalars_mix_in_one_list() -> None:
    got = leaky_relu([-2.0, np.float32(-2.0), [np.int8(-3)][0]], ALPHA)
    assert got == [-0.5, np.float32(-0.5), np.float64(-0.75)]
    assert [type(e) for e in got] == [float, np.float32, np.float64]


@pytest.mark.parametrize(
    "z,fragment",
    [
        ([np.complex64(1)], "'Zf'"),
        ([1.0, "a"], "not str"),
        ([np.array([1.0, 2.0])], "numpy.ndarray with 1 dimensions"),
        ([[np.datetime64(1, "s")]], "datetime64[s]"),
    ],
)
def test_a_refused_element_is_named_once(z: Any, fragment: str) -> None:
    with pytest.raises(TypeError) as exc:
        leaky_relu(z)
    message = str(exc.value)
    assert message.count("leaky_relu()") == 1, message
    assert message.startswith("leaky_relu() at z["), message
    assert fragment in message, message


def test_backward_pairs_a_number_with_a_number() -> None:
    with pytest.raises(
        TypeError, match=r"^leaky_relu_backward\(\) at grad_output\[1\] and z\[1\]: "
    ):
        leaky_relu_backward([1.0, 1.0], [2.0, np.float32(-1)])
