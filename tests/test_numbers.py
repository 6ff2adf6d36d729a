"""Python numbers, sequences and other real numbers, against the oracle."""

from __future__ import annotations

import math
import struct
import sys
from decimal import Decimal
from fractions import Fraction
from typing import Any

import oracle
import pytest

from leaky import leaky_relu, leaky_relu_backward, leaky_relu_grad

FLOATS = [
    1.5,
    -1.5,
    0.0,
    -0.0,
    math.inf,
    -math.inf,
    math.nan,
    -math.nan,
    5e-324,
    -5e-324,
    1e308,
    -1e308,
    2.5e-300,
    sys.float_info.max,
    -sys.float_info.max,
    0.1,
    -0.1,
]
NUMBER_ALPHAS = [0.01, 0.2, 1.5, -0.3, 0.0, 2.0, 1e300, -math.inf, math.inf, math.nan]


def bits(value: float) -> int:
    return int(struct.unpack("<Q", struct.pack("<d", value))[0])


def same_float(actual: object, expected: float) -> bool:
    assert type(actual) is float
    if math.isnan(expected):
        return math.isnan(actual)
    return bits(actual) == bits(expected)


def test_problem_statement_examples_print_exactly() -> None:
    assert repr(leaky_relu(0)) == "0"
    assert repr(leaky_relu(1)) == "1"
    assert repr(leaky_relu(-1)) == "-0.01"
    assert repr(leaky_relu(-2, alpha=0.1)) == "-0.2"


@pytest.mark.parametrize("alpha", NUMBER_ALPHAS)
@pytest.mark.parametrize("z", FLOATS)
def test_float_forward(z: float, alpha: float) -> None:
    assert same_float(leaky_relu(z, alpha), oracle.leaky_relu(z, alpha))
    assert same_float(leaky_relu(z, alpha=alpha), oracle.leaky_relu(z, alpha))


@pytest.mark.parametrize("z", FLOATS)
def test_float_forward_default_alpha(z: float) -> None:
    assert same_float(leaky_relu(z), oracle.leaky_relu(z, 0.01))
    assert same_float(leaky_relu(z=z), oracle.leaky_relu(z, 0.01))


@pytest.mark.parametrize("alpha", NUMBER_ALPHAS)
@pytest.mark.parametrize("z", FLOATS)
def test_float_grad_and_backward(z: float, alpha: float) -> None:
    assert same_float(leaky_relu_grad(z, alpha), oracle.leaky_relu_grad(z, alpha))
    for g in (1.0, -2.5, 0.0, math.inf, 3e-320):
        assert same_float(leaky_relu_backward(g, z, alpha), oracle.leaky_relu_backward(g, z, alpha))


def test_positive_float_is_returned_itself() -> None:
    z = 12345.678
    assert leaky_relu(z) is z


def test_negative_zero_and_nan() -> None:
    assert bits(leaky_relu(-0.0)) == bits(-0.0)
    assert bits(leaky_relu(-0.0, -1.0)) == bits(0.0)
    assert math.isnan(leaky_relu(math.nan))
    assert leaky_relu(math.inf) == math.inf
    assert leaky_relu(-math.inf) == -math.inf
    assert leaky_relu_grad(math.nan, 0.25) == 0.25
    assert leaky_relu_grad(0.0, 0.25) == 0.25
    assert leaky_relu_grad(-0.0, 0.25) == 0.25


def test_alpha_above_one_and_negative_follow_the_formula() -> None:
    # max(z, alpha * z) would give -1.0 here; the formula gives -2.0.
    assert leaky_relu(-1.0, 2.0) == -2.0
    assert leaky_relu(-1.0, -0.5) == 0.5
    assert leaky_relu(3.0, -0.5) == 3.0
    assert leaky_relu_grad(-1.0, 2.0) == 2.0


INTS = [
    0,
    1,
    7,
    -1,
    -7,
    # either side of one 30-bit digit, where CPython's compact ints end
    2**30 - 1,
    -(2**30) + 1,
    2**30,
    -(2**30),
    2**31,
    -(2**31) - 1,
    2**62,
    -(2**62),
    2**63,
    -(2**63),
    2**64 + 1,
    -(2**64) - 1,
    10**100,
    -(10**100),
    2**53 + 1,
    -(2**53) - 1,
]


@pytest.mark.parametrize("alpha", [0.01, 0.2, 1.5, -0.3, 0.0])
@pytest.mark.parametrize("z", INTS)
def test_int_forward(z: int, alpha: float) -> None:
    result = leaky_relu(z, alpha)
    if z >= 0:
        assert result is z
    else:
        assert same_float(result, alpha * z)


@pytest.mark.parametrize("z", INTS)
def test_int_grad_and_backward(z: int) -> None:
    assert same_float(leaky_relu_grad(z, 0.5), 1.0 if z > 0 else 0.5)
    assert same_float(leaky_relu_backward(3, z, 0.5), 3.0 * (1.0 if z > 0 else 0.5))
    assert same_float(leaky_relu_backward(-2.0, z, 0.5), -2.0 * (1.0 if z > 0 else 0.5))


def test_huge_ints() -> None:
    huge = 10**400
    assert leaky_relu(huge) is huge
    with pytest.raises(OverflowError):
        leaky_relu(-huge)
    with pytest.raises(OverflowError):
        _ = 0.01 * -huge  # the same error Python's own formula raises
    assert leaky_relu_grad(huge) == 1.0
    assert leaky_relu_grad(-huge) == 0.01
    with pytest.raises(OverflowError):
        leaky_relu_backward(huge, 1.0)


def test_bool_behaves_as_int() -> None:
    assert leaky_relu(True) is True
    assert leaky_relu(False) is False
    assert leaky_relu_grad(True) == 1.0
    assert leaky_relu_grad(False, 0.3) == 0.3
    assert leaky_relu_backward(True, False, 0.5) == 0.5


def test_int_alpha_gives_float() -> None:
    result = leaky_relu(-2, 1)
    assert type(result) is float and result == -2.0
    assert same_float(leaky_relu(-2.0, 3), -6.0)


class Real:
    """A user-defined real number: comparisons and products by Python's operators."""

    def __init__(self, value: float) -> None:
        self.value = value

    def __gt__(self, other: object) -> bool:
        assert other == 0
        return self.value > 0

    def __rmul__(self, other: object) -> Real:
        assert isinstance(other, float)
        return Real(other * self.value)

    def __mul__(self, other: object) -> Real:
        assert isinstance(other, (int, float))
        return Real(self.value * other)

    def __float__(self) -> float:
        return self.value


def test_fraction_uses_python_operators() -> None:
    assert leaky_relu(Fraction(-1, 3), Fraction(1, 10)) == Fraction(-1, 30)
    assert type(leaky_relu(Fraction(-1, 3), Fraction(1, 10))) is Fraction
    half = Fraction(1, 2)
    assert leaky_relu(half) is half
    assert leaky_relu(Fraction(-1, 3), 0.5) == -1 / 6
    assert leaky_relu_grad(half) == 1
    assert leaky_relu_grad(Fraction(-1, 2), Fraction(1, 7)) == Fraction(1, 7)
    assert leaky_relu_backward(Fraction(3), Fraction(-1), Fraction(1, 3)) == Fraction(1)
    assert leaky_relu_backward(Fraction(3), Fraction(1), Fraction(1, 3)) == Fraction(3)


def test_decimal_and_user_classes() -> None:
    assert leaky_relu(Decimal("-2"), Decimal("0.5")) == Decimal("-1.0")
    with pytest.raises(TypeError):
        leaky_relu(Decimal("-2"))  # float * Decimal is Python's own TypeError
    neg = leaky_relu(Real(-4.0), 0.25)
    assert isinstance(neg, Real) and neg.value == -1.0
    pos = Real(4.0)
    assert leaky_relu(pos) is pos
    assert leaky_relu_backward(Real(2.0), Real(-1.0), 0.5).value == 1.0


class FloatSubclass(float):
    pass


def test_float_subclass_uses_python_operators() -> None:
    z = FloatSubclass(3.0)
    assert leaky_relu(z) is z
    assert leaky_relu(FloatSubclass(-3.0), 0.5) == -1.5


class IndexOnly:
    def __index__(self) -> int:
        return 2


class FloatOnly:
    def __float__(self) -> float:
        return 0.25


def test_alpha_accepts_real_number_objects() -> None:
    assert leaky_relu(-4.0, IndexOnly()) == -8.0
    assert leaky_relu(-4.0, FloatOnly()) == -1.0
    assert leaky_relu(-4.0, Fraction(1, 4)) == -1.0
    assert leaky_relu(-4.0, True) == -4.0
    assert leaky_relu_grad(-4.0, FloatOnly()) == 0.25


def test_sequences_give_lists() -> None:
    values: list[Any] = [1, -2, 0, 2.5, -2.5, Fraction(-1, 2), True, 10**30]
    expected = [1, -0.02, 0, 2.5, -0.025, -0.005, True, 10**30]  # 0.01 * Fraction is a float
    assert leaky_relu(values) == expected
    assert leaky_relu(tuple(values)) == expected
    assert leaky_relu([]) == []
    assert leaky_relu(()) == []
    assert leaky_relu_grad([1, -1, 0.0, math.nan], 0.5) == [1.0, 0.5, 0.5, 0.5]
    assert leaky_relu_backward([2.0, 2.0, 4], [1.0, -1.0, -3], 0.25) == [2.0, 0.5, 1.0]
    assert leaky_relu_backward((), ()) == []


def test_sequence_results_match_numbers_bit_for_bit() -> None:
    for alpha in NUMBER_ALPHAS:
        got = leaky_relu(FLOATS, alpha)
        assert all(
            same_float(g, oracle.leaky_relu(z, alpha)) for g, z in zip(got, FLOATS, strict=True)
        )


def test_sequence_survives_mutation_during_iteration() -> None:
    values: list[Any] = []

    class Shrinker:
        """A real number (it has __float__) whose comparison empties the list."""

        def __float__(self) -> float:
            return 1.0

        def __gt__(self, other: object) -> bool:
            values.clear()
            return True

    values.extend([Shrinker(), -1.0, -2.0])
    result = leaky_relu(values)
    assert len(result) == 3 and result[1:] == [-0.01, -0.02]
