"""Every method of leaky.ufunc's ufuncs keeps NumPy's ufunc contract.

NumPy builds `reduce`, `accumulate`, `reduceat`, `outer` and `at` on a ufunc's
inner loop, and its inner-loop contract lets operands alias: a reduction hands
the loop an output of step 0 that is also its first input, `accumulate` a
first input that is the output one element back.  The oracle is the scalar
formula made a ufunc with `np.frompyfunc` and run through the same method, so
NumPy's own generic machinery decides what each method means; the scalar
formula computes in the loop's dtype (tests/oracle.py's per-element functions,
which round float32 and float16 as leaky does), so results compare bit for bit
(a NaN matches any NaN, as conftest's assert_matches does for a NaN slope:
float16 NaN payloads are test_nan_bits.py's business).

The pool is forced on for the whole module (every run splits across leaky's
threads, however short), and the data come in runs of equal values, since
runs of equal slopes are what the loops vectorize and split; one test per
method also crosses the default pool threshold.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import oracle
import pytest

import leaky._leaky as ext
import leaky.ufunc as lu

NAMES = ["leaky_relu", "leaky_relu_grad", "leaky_relu_backward"]
BINARY = NAMES[:2]
# every z (grad_output for backward) leaky.ufunc has a loop for: bool, the
# integers, float16, float32, float64
DTYPES = [t[0] for t in lu.leaky_relu.types]
POOL_THRESHOLD = ext._tune()["parallel_threshold"]
ROWS, COLS = 5, 67  # a row: four AVX-512 float32 vectors and a ragged end


@pytest.fixture(autouse=True, scope="module")
def pool_forced_on() -> Iterator[None]:
    saved = ext._tune()
    ext._tune(parallel_threshold=0)
    try:
        yield
    finally:
        ext._tune(**saved)


# ---------------------------------------------------------------- the oracle


def loop_kind(dtype: str) -> str:
    """The dtype leaky's type loop computes and returns: integers and bool in float64."""
    return dtype if dtype in "efd" else "d"


def slope_dtype(kind: str) -> str:
    return "f" if kind in "ef" else "d"


def _element(kind: str, value: float) -> float:
    """oracle.py's element form: float16 as its bit pattern."""
    return oracle.f16_bits_of(value) if kind == "e" else value


def _value(kind: str, element: float) -> float:
    return oracle.f16_value(int(element)) if kind == "e" else float(element)


def scalar_formula(name: str, kind: str) -> Callable[..., float]:
    """The formula on Python floats holding values of the loop's types."""
    if name == "leaky_relu":
        return lambda z, a: _value(kind, oracle.forward_element(kind, _element(kind, z), a))
    if name == "leaky_relu_grad":
        return lambda z, a: _value(kind, oracle.grad_element(kind, _element(kind, z), a))
    return lambda g, z, a: _value(
        kind, oracle.backward_element(kind, _element(kind, g), kind, _element(kind, z), a)
    )


class OracleUfunc:
    """np.frompyfunc of the formula, its methods run with NumPy's floating-point
    warnings off: Python's float arithmetic leaves the flags NumPy reads after
    an object loop (inf * 0), and leaky's loops never warn."""

    def __init__(self, name: str, kind: str) -> None:
        self.ufunc = np.frompyfunc(scalar_formula(name, kind), 3 if name == NAMES[2] else 2, 1)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with np.errstate(all="ignore"):
            return self.ufunc(*args, **kwargs)

    def __getattr__(self, method: str) -> Any:
        def quietly(*args: Any, **kwargs: Any) -> Any:
            with np.errstate(all="ignore"):
                return getattr(self.ufunc, method)(*args, **kwargs)

        return quietly


def oracle_ufunc(name: str, kind: str) -> Any:
    return OracleUfunc(name, kind)


def as_objects(a: Any, dtype: str) -> Any:
    """a's values as the loop reads them (cast to dtype), as Python floats."""
    return np.asarray(a).astype(dtype).astype(object)


def assert_same_bits(actual: Any, expected: Any, kind: str) -> None:
    got = np.asarray(actual)
    assert got.dtype.char == kind, (got.dtype, kind)
    want = np.asarray(expected, dtype=object).astype("d").astype(kind)
    assert got.shape == want.shape
    width = f"u{got.dtype.itemsize}"
    both_nan = np.isnan(got) & np.isnan(want)
    bad = ~both_nan & (got.view(width) != want.view(width))
    assert not bad.any(), (
        f"{int(bad.sum())} of {bad.size} differ, first at {np.argwhere(bad)[0]}: "
        f"{got[bad][:3]} against {want[bad][:3]}"
    )


def runs_of(dtype: str, n: int, seed: int) -> Any:
    """Values in runs of equal ones (1 to 39 long), every sign and both branches,
    with the float specials sprinkled in; slopes near 1 keep long recurrences
    (reduce, accumulate) finite for a while."""
    rng = np.random.default_rng(seed)
    dt = np.dtype(dtype)
    if dt.kind == "f":
        pool: list[Any] = [0.5, 2.0, 1.25, 0.75, -1.5, -0.5, 1.0, 0.0, -0.0, 3.0, -1.0]
    elif dt.kind == "b":
        pool = [False, True]
    elif dt.kind == "u":
        pool = [0, 1, 2, 3, int(np.iinfo(dt).max)]
    else:
        pool = [-2, -1, 0, 1, 2, 3, int(np.iinfo(dt).min), int(np.iinfo(dt).max)]
    values = np.array([pool[i] for i in rng.integers(0, len(pool), n)], dtype=dt)
    x = np.repeat(values, rng.integers(1, 40, n))[:n]
    if dt.kind == "f":
        info = np.finfo(dt)
        specials = [np.inf, -np.inf, np.nan, info.max, -info.tiny, info.smallest_subnormal]
        spots = rng.integers(0, n, max(1, n // 100))
        x[spots] = np.array(specials, dtype=dt)[rng.integers(0, len(specials), spots.size)]
    return x


def slopes_of(kind: str, n: int, seed: int) -> Any:
    """Per-element slopes of the loop's slope type, in runs, NaN and inf included."""
    rng = np.random.default_rng(seed)
    pool = [0.25, 0.5, -0.5, 2.0, 1.5, 0.0, -1.0, 1e-40, math.inf, math.nan]
    values = np.array([pool[i] for i in rng.integers(0, len(pool), n)])
    return np.repeat(values, rng.integers(1, 40, n))[:n].astype(slope_dtype(kind))


# ---------------------------------------------------------------- __call__

# Each layout takes the operands' bases (z, or grad_output and z; the slope;
# a spare the size of the output) and the ufunc, and returns what to compare:
# the result, and for the aliased ones the memory they wrote.
CallLayout = Callable[[Any, list[Any], Any, Any], list[Any]]


def _c(f: Any, data: list[Any], alpha: Any, spare: Any) -> list[Any]:
    return [f(*[d[: ROWS * COLS].reshape(ROWS, COLS) for d in data], alpha)]


def _strided(f: Any, data: list[Any], alpha: Any, spare: Any) -> list[Any]:
    return [f(*[d[::2].reshape(ROWS, COLS) for d in data], alpha)]


def _transposed(f: Any, data: list[Any], alpha: Any, spare: Any) -> list[Any]:
    return [f(*[d[: ROWS * COLS].reshape(COLS, ROWS).T for d in data], alpha)]


def _reversed(f: Any, data: list[Any], alpha: Any, spare: Any) -> list[Any]:
    return [f(*[d[ROWS * COLS - 1 :: -1].reshape(ROWS, COLS) for d in data], alpha)]


def _out_is_an_input(f: Any, data: list[Any], alpha: Any, spare: Any) -> list[Any]:
    out = spare[: ROWS * COLS].reshape(ROWS, COLS)
    out[...] = data[-1][: out.size].reshape(out.shape)  # the last input, in out's dtype
    f(*[d[: ROWS * COLS].reshape(ROWS, COLS) for d in data[:-1]], out, alpha, out=out)
    return [spare]


def _out_overlaps_shifted(f: Any, data: list[Any], alpha: Any, spare: Any) -> list[Any]:
    spare[...] = data[-1][: spare.size]
    last = spare[: ROWS * COLS].reshape(ROWS, COLS)
    out = spare[3 : 3 + ROWS * COLS].reshape(ROWS, COLS)  # three elements on
    f(*[d[: ROWS * COLS].reshape(ROWS, COLS) for d in data[:-1]], last, alpha, out=out)
    return [spare]


def _where(f: Any, data: list[Any], alpha: Any, spare: Any) -> list[Any]:
    spare[...] = data[-1][: spare.size]
    out = spare[: ROWS * COLS].reshape(ROWS, COLS)
    mask = (np.arange(out.size) % 3 != 1).reshape(out.shape)
    f(*[d[: ROWS * COLS].reshape(ROWS, COLS) for d in data], alpha, out=out, where=mask)
    return [spare]


CALL_LAYOUTS: dict[str, CallLayout] = {
    "C": _c,
    "strided": _strided,
    "transposed": _transposed,
    "reversed": _reversed,
    "out is an input": _out_is_an_input,
    "out overlaps an input shifted": _out_overlaps_shifted,
    "where": _where,
}


@pytest.mark.parametrize("layout", CALL_LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", NAMES)
def test_call(name: str, dtype: str, layout: str) -> None:
    kind = loop_kind(dtype)
    nin = 3 if name == NAMES[2] else 2
    size = 2 * ROWS * COLS
    data = [runs_of(dtype, size, seed) for seed in range(nin - 1)]
    if CALL_LAYOUTS[layout] in (_out_is_an_input, _out_overlaps_shifted, _where):
        # out's dtype is the loop's: where out is an input, the input is too
        data = [d.astype(kind) for d in data]
    slopes = slopes_of(kind, ROWS * COLS, seed=7)
    # a scalar slope, one per column (it moves along the inner axis), one per row
    for alpha in [0.3, slopes[:COLS], slopes[:ROWS].reshape(ROWS, 1)]:
        spare = np.zeros(ROWS * COLS + 3, kind)
        got = CALL_LAYOUTS[layout](getattr(lu, name), data, alpha, spare)
        want = CALL_LAYOUTS[layout](
            oracle_ufunc(name, kind),
            [as_objects(d, kind) for d in data],
            as_objects(alpha, slope_dtype(kind)),
            as_objects(spare, kind),
        )
        for g, w in zip(got, want, strict=True):
            assert_same_bits(g, w, kind)


# ---------------------------------------------------------------- reduce and friends

# float16's loop takes a float32 slope; accumulate and reduceat need a loop
# whose operands all have one dtype, so NumPy refuses them there.
UNIFORM_ONLY = {"accumulate", "reduceat"}


def refused(method: str, kind: str) -> bool:
    return method in UNIFORM_ONLY and kind == "e"


def both(
    name: str,
    dtype: str,
    call: Callable[[Any, Any], Any],
    x: Any,
    *,
    writes: bool = False,
    method: str = "",
    repeat: int = 1,
) -> None:
    """call(ufunc, x) on leaky's ufunc and on the oracle's, compared bit for bit;
    an error from one must be the other's (type and message, up to the name).
    writes: call writes into x, which is then compared too (in the loop's dtype:
    an integer array cannot take a float64 result under same_kind casting).
    repeat: leaky's side again, for a race that shows only now and then."""
    kind = loop_kind(dtype)
    mine = x.astype(kind) if writes else x
    if refused(method, kind):
        with pytest.raises(TypeError, match="not compatible"):
            call(getattr(lu, name), mine)
        return
    theirs = as_objects(x, kind)
    errors: list[BaseException] = []
    results = []
    for f, a in [(getattr(lu, name), mine), (oracle_ufunc(name, kind), theirs)]:
        try:
            results.append(call(f, a))
        except (TypeError, ValueError) as e:
            errors.append(e)
    if errors:
        assert len(errors) == 2, f"only one side raised: {errors}"
        assert type(errors[0]) is type(errors[1])
        # NumPy names a frompyfunc ufunc after the function: "<lambda> (vectorized)"
        assert str(errors[0]).replace(name, "F") == str(errors[1]).replace(
            "<lambda> (vectorized)", "F"
        )
        return
    assert_same_bits(results[0], results[1], kind)
    if writes:
        assert_same_bits(mine, theirs, kind)
    for _ in range(repeat - 1):
        assert_same_bits(call(getattr(lu, name), mine), results[1], kind)


def method_call(method: str, **kwargs: Any) -> Callable[[Any, Any], Any]:
    return lambda f, a: getattr(f, method)(a, **kwargs)


def layouts_3d(dtype: str, seed: int) -> dict[str, Any]:
    base = runs_of(dtype, 2 * 3 * ROWS * COLS, seed)
    c = base[: 3 * ROWS * COLS]
    return {
        "C": c.reshape(3, ROWS, COLS),
        "transposed": c.reshape(COLS, ROWS, 3).T,
        "reversed": c[::-1].reshape(3, ROWS, COLS),
        "strided": base[::2].reshape(3, ROWS, COLS),
    }


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", BINARY)
def test_reduce(name: str, dtype: str) -> None:
    kind = loop_kind(dtype)
    init = float(np.array(-1.5).astype(kind))
    for layout, x in layouts_3d(dtype, seed=1).items():
        mask = (np.arange(x.size) % 4 != 1).reshape(x.shape)
        variants: list[dict[str, Any]] = [
            {"axis": 0},
            {"axis": 1},
            {"axis": 2},
            {"axis": -1, "keepdims": True},
            {"axis": (1,), "keepdims": True},
            {"axis": None},  # refused: not reorderable
            {"axis": (0, 2)},  # likewise
            {"axis": 2, "initial": init},
            {"axis": 0, "initial": init, "where": mask},
            {"axis": 1, "where": mask},  # refused: no identity and no initial
        ]
        for kwargs in variants:
            both(name, dtype, method_call("reduce", **kwargs), x)
        both(name, dtype, lambda f, a: f.reduce(a[0, 0]), x)  # one axis: axis=None too
        both(name, dtype, lambda f, a: f.reduce(a[0, 0], axis=None), x)
        both(name, dtype, lambda f, a: f.reduce(a[:, :0], axis=1), x)  # empty: no identity
        if layout == "C":  # into memory the input lives in
            both(name, dtype, lambda f, a: f.reduce(a, axis=0, out=a[0]), x, writes=True)
            both(name, dtype, lambda f, a: f.reduce(a, axis=2, out=a[:, :, 0]), x, writes=True)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", BINARY)
def test_accumulate(name: str, dtype: str) -> None:
    acc = "accumulate"
    for layout, x in layouts_3d(dtype, seed=2).items():
        for axis in [0, 1, 2, -1]:
            both(name, dtype, method_call(acc, axis=axis), x, method=acc)
        both(name, dtype, lambda f, a: f.accumulate(a[1, 2]), x, method=acc)
        if layout == "C":
            for call in [
                lambda f, a: f.accumulate(a, axis=2, out=a),
                lambda f, a: f.accumulate(a, axis=0, out=a),
                lambda f, a: f.accumulate(a.reshape(-1)[:-5], out=a.reshape(-1)[5:]),
                lambda f, a: f.accumulate(a.reshape(-1)[5:], out=a.reshape(-1)[:-5]),
            ]:
                both(name, dtype, call, x, writes=True, method=acc)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", BINARY)
def test_reduceat(name: str, dtype: str) -> None:
    at = "reduceat"
    # rising indices reduce a slice; one not below the next gives its element
    indices = [0, 3, 3, 40, 2, 60, COLS - 1]
    for x in layouts_3d(dtype, seed=3).values():
        both(name, dtype, lambda f, a: f.reduceat(a, indices, axis=2), x, method=at)
        both(name, dtype, lambda f, a: f.reduceat(a, [0, 2, 1], axis=1), x, method=at)
        both(name, dtype, lambda f, a: f.reduceat(a[0, 0], [0, 10, 66]), x, method=at)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", BINARY)
def test_outer(name: str, dtype: str) -> None:
    kind = loop_kind(dtype)
    z = runs_of(dtype, 2 * COLS, seed=4)
    slopes = slopes_of(kind, 2 * ROWS, seed=5)
    for zz, aa in [
        (z[:COLS], slopes[:ROWS]),
        (z[::-2], slopes[::2]),
        (z[:6].reshape(2, 3), slopes),
    ]:
        got = getattr(lu, name).outer(zz, aa)
        want = oracle_ufunc(name, kind).outer(
            as_objects(zz, kind), as_objects(aa, slope_dtype(kind))
        )
        assert_same_bits(got, want, kind)
    # the same array on both sides, as reduce-like methods feed it
    both(name, dtype, lambda f, a: f.outer(a[:20], a[5:13]), z)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", BINARY)
def test_at(name: str, dtype: str) -> None:
    """ufunc.at applies the loop in place, once per index, repeats included;
    NumPy casts the float64 result back into an integer array unsafely (it
    truncates), which the oracle does with the array's own type."""
    kind = loop_kind(dtype)
    dt = np.dtype(dtype)
    formula = scalar_formula(name, kind)
    if dt.kind in "biu":

        def cast_back(z: Any, a: Any) -> Any:
            return dt.type(int(formula(float(z), a)) if dt.kind != "b" else formula(float(z), a))

        py = np.frompyfunc(cast_back, 2, 1)
        pool = [0, 1, 2, 3] if dt.kind != "i" else [-3, -1, 0, 1, 2, 3]
        x = np.array(pool * 10, dtype=dt)[: 4 * len(pool)]
        # results that fit the type: a negative float64 into an unsigned one is undefined
        slopes = np.array([-1.0, 0.0, 2.0, 3.0, 1.0] if dt.kind == "i" else [2.0, 0.0, 3.0, 1.0])
        theirs = x.astype(object)
    else:
        py = oracle_ufunc(name, kind)
        x = runs_of(dtype, 64, seed=6)
        slopes = slopes_of(kind, 20, seed=8)
        theirs = as_objects(x, kind)
    indices = np.array([0, 3, 3, 5, 0, -1, 7, 3, 2, 0])
    mine = x.copy()
    getattr(lu, name).at(mine, indices, slopes[0])  # one slope for every index
    py.at(theirs, indices, as_objects(slopes, slope_dtype(kind))[0])
    getattr(lu, name).at(mine, indices, np.resize(slopes, indices.size))
    py.at(theirs, indices, as_objects(np.resize(slopes, indices.size), slope_dtype(kind)))
    if dt.kind in "biu":
        assert mine.tolist() == np.array(theirs.tolist(), dtype=dt).tolist()
    else:
        assert_same_bits(mine, theirs, kind)


def test_methods_numpy_refuses_a_three_input_ufunc() -> None:
    g = runs_of("d", 12, 0)
    py = oracle_ufunc(NAMES[2], "d")
    f = lu.leaky_relu_backward
    calls: list[tuple[str, Callable[[Any, Any], Any]]] = [
        ("reduce", lambda u, a: u.reduce(a)),
        ("accumulate", lambda u, a: u.accumulate(a)),
        ("reduceat", lambda u, a: u.reduceat(a, [0, 2])),
        ("outer", lambda u, a: u.outer(a, a)),
        ("at", lambda u, a: u.at(a, [0, 1], a[:2], 0.5)),
    ]
    for method, call in calls:
        with pytest.raises(ValueError) as theirs:
            call(py, g.astype(object))
        with pytest.raises(ValueError) as mine:
            call(f, g.copy())
        assert str(mine.value) == str(theirs.value), method


# ---------------------------------------------------------------- past the threshold


LONG_CALLS: dict[str, Callable[[Any, Any], Any]] = {
    "reduce": lambda f, a: f.reduce(a),
    "accumulate": lambda f, a: f.accumulate(a),
    "call": lambda f, a: f(a[::-1], a),
}


@pytest.mark.parametrize("method", LONG_CALLS)
@pytest.mark.parametrize("dtype", ["e", "f", "d"])
@pytest.mark.parametrize("forced", [True, False], ids=["forced", "default"])
def test_long_runs_past_the_pool_threshold(method: str, dtype: str, forced: bool) -> None:
    """One run of equal slopes longer than the default pool threshold: the
    reduction's step-0 output (issue 19's reproducer), accumulate's output one
    element back, and the same run as an ordinary call, which may split."""
    x = np.full(POOL_THRESHOLD + 4097, 1.00001 if dtype != "e" else 1.001, dtype=dtype)
    x[0] = -1.0
    saved = ext._tune()
    if not forced:
        ext._tune(parallel_threshold=POOL_THRESHOLD)
    try:
        both("leaky_relu", dtype, LONG_CALLS[method], x, method=method, repeat=10)
    finally:
        ext._tune(**saved)


def test_issue_19_accumulate_reproducer() -> None:
    got = lu.leaky_relu.accumulate(np.array([-1.0, 2, 2, 2, 2]))
    assert got.tolist() == [-1.0, -2.0, -4.0, -8.0, -16.0]


def test_issue_19_reduce_reproducer() -> None:
    x = np.full(200_000, 1.00001)
    x[0] = -1.0
    expected = float(x[0])
    for slope in x[1:].tolist():
        expected = oracle.leaky_relu(expected, slope)
    for _ in range(30):  # the race gave a different value from one run to the next
        assert lu.leaky_relu.reduce(x) == expected
