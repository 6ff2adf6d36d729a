"""Shared helpers: run the pure-Python oracle over NumPy arrays and compare bits."""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
import oracle
from hypothesis import settings

settings.register_profile("ci", max_examples=300, deadline=None, derandomize=True)
settings.register_profile("dev", max_examples=100, deadline=None)
# for runs under valgrind, where every example costs ~50x
settings.register_profile("quick", max_examples=15, deadline=None, derandomize=True)
# open-ended fuzzing on demand: LEAKY_HYPOTHESIS_PROFILE=fuzz (see .ci/fuzz.sh)
settings.register_profile(
    "fuzz",
    max_examples=int(os.environ.get("LEAKY_FUZZ_EXAMPLES", "20000")),
    deadline=None,
)
settings.load_profile(os.environ.get("LEAKY_HYPOTHESIS_PROFILE", "ci"))

# Every element format leaky accepts, as NumPy dtype characters.
FLOAT_DTYPES = ["e", "f", "d"]
INT_DTYPES = ["b", "B", "h", "H", "i", "I", "l", "L", "q", "Q", "?"]
ALL_DTYPES = FLOAT_DTYPES + INT_DTYPES

ALPHAS = [0.01, 0.2, 1.5, -0.3, 0.0, 2.0, 1e-40, 3.4e38 * 2, math.inf, math.nan]


def elements(array: Any) -> list[float]:
    """Elements in C order as oracle inputs: float16 as bit patterns."""
    a = np.asarray(array)
    if a.dtype.char == "e":
        return [int(b) for b in a.view(np.uint16).ravel(order="C").tolist()]
    if a.dtype.char == "?":
        return [float(v) for v in a.ravel(order="C").tolist()]
    return list(a.ravel(order="C").tolist())


def assert_matches(actual: Any, expected: list[float], kind: str, alpha: float) -> None:
    """actual (any buffer) equals the oracle's expected elements bit for bit."""
    a = np.asarray(actual)
    assert a.dtype.char == kind, (a.dtype, kind)
    got = elements(a)
    assert len(got) == len(expected)
    strict = not math.isnan(alpha)
    bad = [
        (i, g, e)
        for i, (g, e) in enumerate(zip(got, expected, strict=True))
        if not oracle.same_result(kind, g, e, strict_nan=strict)
    ]
    assert not bad, f"{len(bad)} mismatches, first: {bad[:5]}"


def expected_forward(x: Any, alpha: float) -> list[float]:
    kind = np.asarray(x).dtype.char
    return [oracle.forward_element(kind, v, alpha) for v in elements(x)]


def expected_grad(x: Any, alpha: float) -> list[float]:
    kind = np.asarray(x).dtype.char
    return [oracle.grad_element(kind, v, alpha) for v in elements(x)]


def expected_backward(g: Any, z: Any, alpha: float) -> list[float]:
    gk, zk = np.asarray(g).dtype.char, np.asarray(z).dtype.char
    return [
        oracle.backward_element(gk, gv, zk, zv, alpha)
        for gv, zv in zip(elements(g), elements(z), strict=True)
    ]


def sample(dtype: str, shape: tuple[int, ...], seed: int = 0) -> Any:
    """Values that exercise every branch: both signs, zeros, specials, extremes."""
    rng = np.random.default_rng(seed)
    count = int(np.prod(shape, dtype=np.int64))
    dt = np.dtype(dtype)
    if dt.kind == "f":
        info = np.finfo(dt)
        specials = np.array(
            [
                0.0,
                -0.0,
                1.0,
                -1.0,
                np.inf,
                -np.inf,
                np.nan,
                -np.nan,
                info.max,
                -info.max,
                info.tiny,
                -info.tiny,
                info.smallest_subnormal,
                -info.smallest_subnormal,
            ],
            dtype=dt,
        )
        values = (rng.standard_normal(count) * 10).astype(dt)
        values[: min(count, specials.size)] = specials[: min(count, specials.size)]
        rng.shuffle(values)
    elif dt.kind == "b":
        values = rng.integers(0, 2, count).astype(dt)
    else:
        iinfo = np.iinfo(dt)
        values = rng.integers(iinfo.min, iinfo.max, count, dtype=dt, endpoint=True)
        extremes = np.array([0, iinfo.min, iinfo.max, 1], dtype=dt)
        values[: min(count, 4)] = extremes[: min(count, 4)]
    return values.reshape(shape)


def assert_same_layout(actual: Any, expected: Any) -> None:
    """actual is laid out in memory as expected (NumPy's own result for the same operands).

    Strides are compared in elements, so a float64 result of an int16 input can
    be held against NumPy's; the order of the axes by stride and NumPy's
    contiguity flags are compared too, for a message that says what differs.
    """
    a, e = np.asarray(actual), np.asarray(expected)
    assert a.shape == e.shape
    if a.size == 0:  # strides of an empty array are arbitrary; both flags are set
        assert a.flags.c_contiguous and a.flags.f_contiguous
        return
    order_a = np.argsort([abs(s) for s in a.strides], kind="stable").tolist()
    order_e = np.argsort([abs(s) for s in e.strides], kind="stable").tolist()
    assert order_a == order_e, (a.strides, e.strides)
    assert (a.flags.c_contiguous, a.flags.f_contiguous) == (
        e.flags.c_contiguous,
        e.flags.f_contiguous,
    ), (a.strides, e.strides)
    assert [s // a.itemsize for s in a.strides] == [s // e.itemsize for s in e.strides]
