"""Issue 11's reproducers, each pinned down: sizes that overflow, outs that
overlap themselves, and transposed, F-ordered and flipped layouts.

The overflow cases run in a subprocess each, so that a crash (the old
behaviour: rc -11) is a failure of that one test and not of the session.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from numpy.lib.stride_tricks import as_strided

import leaky
from leaky import leaky_relu, leaky_relu_backward, leaky_relu_grad

MAX = sys.maxsize

# ---------------------------------------------------------------- sizes

PRELUDE = """
import numpy as np
from numpy.lib.stride_tricks import as_strided
from leaky import leaky_relu, leaky_relu_backward, leaky_relu_grad
"""

TOO_BIG = [
    pytest.param(
        "leaky_relu(memoryview(np.broadcast_to(np.int8(-1), (2**61,))), threads=1)",
        f"ValueError: leaky_relu() result is too big: shape (2305843009213693952,) of float64 "
        f"takes more than {MAX} bytes",
        id="result-int8-memoryview",
    ),
    pytest.param(
        "leaky_relu(memoryview(np.broadcast_to(np.uint16(3), (2**60, 2))), threads=1)",
        "ValueError: leaky_relu() result is too big: shape (1152921504606846976, 2) of float64",
        id="result-uint16-memoryview",
    ),
    pytest.param(
        "leaky_relu_grad(np.broadcast_to(np.bool_(True), (2**61,)))",
        "ValueError: leaky_relu_grad() result is too big: shape (2305843009213693952,) of float64",
        id="result-bool-ndarray",
    ),
    pytest.param(
        "leaky_relu_backward(memoryview(np.broadcast_to(np.int8(1), (2**61,))), "
        "np.broadcast_to(np.int8(1), (2**61,)))",
        "ValueError: leaky_relu_backward() result is too big",
        id="result-backward",
    ),
    pytest.param(
        "leaky_relu(memoryview(as_strided(np.zeros(4), (2**40,), (2**40,))))",
        "ValueError: leaky_relu() argument 'z' is too big: its shape and strides span more than",
        id="extent-input",
    ),
    pytest.param(
        "leaky_relu(as_strided(np.zeros(4), (3, 2**20), (-(2**62), 8)))",
        "ValueError: leaky_relu() argument 'z' is too big",
        id="extent-input-negative",
    ),
    pytest.param(
        "leaky_relu(np.zeros(3), out=as_strided(np.zeros(4), (3,), (2**62,), writeable=True))",
        "ValueError: leaky_relu() argument 'out' is too big",
        id="extent-out",
    ),
    pytest.param(
        "leaky_relu_backward(np.zeros(3), as_strided(np.zeros(4), (3,), (2**62,)))",
        "ValueError: leaky_relu_backward() argument 'z' is too big",
        id="extent-backward-z",
    ),
]


def run_isolated(statement: str) -> subprocess.CompletedProcess[str]:
    code = PRELUDE + textwrap.dedent(f"""
        try:
            {statement}
        except Exception as e:
            print(f"{{type(e).__name__}}: {{e}}")
        else:
            print("no error")
        """)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(("statement", "message"), TOO_BIG)
def test_too_big_is_a_value_error_not_a_crash(statement: str, message: str) -> None:
    done = run_isolated(statement)
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    assert done.stdout.startswith(message), done.stdout


def test_empty_results_follow_numpys_rule() -> None:
    """As in NumPy, the nonzero sides must fit even when a 0 empties the array."""
    done = run_isolated(
        "r = leaky_relu(memoryview(np.broadcast_to(np.float64(-1), (2**59, 0)))); "
        "print(r.shape, r.format, r.nbytes)"
    )
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    assert done.stdout == "(576460752303423488, 0) d 0\nno error\n"
    for source in ("memoryview(np.broadcast_to(np.int8(-1), (2**61, 0)))",
                   "np.broadcast_to(np.int8(-1), (0, 2**61))"):  # fmt: skip
        done = run_isolated(f"leaky_relu({source})")
        assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
        assert done.stdout.startswith("ValueError: leaky_relu() result is too big"), done.stdout


# ---------------------------------------------------------------- outs that overlap themselves


@pytest.fixture(params=[None, 1, 2, 4], ids=lambda t: f"threads={t}")
def call_threads(request: Any) -> Iterator[int | None]:
    """threads as given; with 2 or 4, thresholds low enough to split tiny arrays."""
    threads = request.param
    if threads is None or threads == 1:
        yield threads
        return
    ext = leaky._leaky
    saved = ext._tune()
    ext._tune(gil_threshold=1, parallel_threshold=1, stream_bytes=0)
    try:
        yield threads
    finally:
        ext._tune(**saved)


def test_stride_zero_in_place(call_threads: int | None) -> None:
    x = as_strided(np.array([-1.0, 5.0]), (4,), (0,), writeable=True)
    leaky_relu(x, 0.5, out=x, threads=call_threads)
    assert x[0] == -0.5  # was -0.0625: alpha applied four times


def test_sliding_window_in_place(call_threads: int | None) -> None:
    base = np.full(4, -16.0)
    v = as_strided(base, (3, 2), (8, 8), writeable=True)
    leaky_relu(v, 0.5, out=v, threads=call_threads)
    assert base.tolist() == [-8.0] * 4  # was [-8, -4, -4, -8]


def test_sliding_window_backward_in_place(call_threads: int | None) -> None:
    base = np.full(4, -16.0)
    g = as_strided(base, (3, 2), (8, 8), writeable=True)
    z = -np.ones((3, 2))
    leaky_relu_backward(g, z, 0.5, out=g, threads=call_threads)
    assert base.tolist() == [-8.0] * 4


def test_grad_in_place_stride_zero(call_threads: int | None) -> None:
    x = as_strided(np.array([-2.0]), (2,), (0,), writeable=True)
    leaky_relu_grad(x, 2.0, out=x, threads=call_threads)
    assert x[0] == 2.0  # grad(-2) = alpha; applied twice it was grad(2) = 1


def test_forward_in_place_stride_zero_float32(call_threads: int | None) -> None:
    w = as_strided(np.array([-2.0], dtype=np.float32), (2,), (0,), writeable=True)
    leaky_relu(w, 3.0, out=w, threads=call_threads)
    assert w[0] == -6.0  # applied twice it was -18


@pytest.mark.parametrize(
    ("shape", "strides", "size"),
    [((4,), (0,), 1), ((3, 3), (8, 8), 5), ((3, 3), (0, 8), 3), ((3, 3), (8, 0), 3),
     ((3, 3), (8, 16), 7), ((2, 3, 2), (8, 0, 16), 4), ((5,), (4,), 3),
     ((600,), (4,), 301), ((40, 30), (16, 8), 108), ((2, 700), (0, 16), 1400)],
)  # fmt: skip
def test_last_write_in_c_order_wins_as_in_numpy(
    shape: tuple[int, ...], strides: tuple[int, ...], size: int, call_threads: int | None
) -> None:
    """A separate input written through an aliasing out: NumPy's answer (checked
    here against np.multiply, which writes such outs the same way)."""
    n = int(np.prod(shape))
    a = (np.arange(n, dtype=np.float64) - n / 2).reshape(shape) * 1.5
    ours, theirs = np.zeros(size + 1), np.zeros(size + 1)
    out = as_strided(ours, shape, strides, writeable=True)
    leaky_relu(a, 1.0, out=out, threads=call_threads)
    np.multiply(a, 1.0, out=as_strided(theirs, shape, strides, writeable=True))
    assert ours.tobytes() == theirs.tobytes()


def test_numpy_write_order_stride_zero() -> None:
    x = as_strided(np.zeros(1), (4,), (0,), writeable=True)
    leaky_relu(np.array([1.0, 2.0, 3.0, 4.0]), out=x)
    assert x[0] == 4.0  # NumPy: np.multiply(a, 1, out=x) leaves the last element


# ---------------------------------------------------------------- layouts


def layouts(x: Any) -> dict[str, Any]:
    """Views of the same 3-d data in other memory orders (same logical values)."""
    f = np.asfortranarray(x)
    flipped = np.ascontiguousarray(x[:, ::-1, ::-1])[:, ::-1, ::-1]
    permuted = np.ascontiguousarray(x.transpose(2, 0, 1)).transpose(1, 2, 0)
    # every axis reversed: merges into one run walked backwards, which is flipped whole
    reversed_ = np.ascontiguousarray(x[::-1, ::-1, ::-1])[::-1, ::-1, ::-1]
    return {
        "C": x,
        "F": f,
        "flipped": flipped,
        "reversed": reversed_,
        "permuted": permuted,
        "T": x.T.copy().T,
    }


@pytest.mark.parametrize("dtype", ["e", "f", "d"])
@pytest.mark.parametrize("out_order", ["C", "F", "flipped", "reversed", "permuted", "same"])
def test_every_layout_gives_the_c_order_bits(
    dtype: str, out_order: str, call_threads: int | None
) -> None:
    rng = np.random.default_rng(11)
    x = (rng.standard_normal((5, 7, 9)) * 4).astype(dtype)
    z = (rng.standard_normal((5, 7, 9))).astype(dtype)
    want_f = leaky_relu(x, 0.3).tobytes()
    want_g = leaky_relu_grad(x, 0.3).tobytes()
    want_b = leaky_relu_backward(x, z, 0.3).tobytes()
    views = layouts(x)
    zviews = layouts(z)
    for name, xv in views.items():
        zv = zviews[name]
        assert leaky_relu(xv, 0.3, threads=call_threads).tobytes() == want_f, name
        assert leaky_relu_grad(xv, 0.3, threads=call_threads).tobytes() == want_g, name
        assert leaky_relu_backward(xv, zv, 0.3, threads=call_threads).tobytes() == want_b, name
        cases: list[tuple[Any, bytes, tuple[Any, ...]]] = [
            (leaky_relu, want_f, (xv,)),
            (leaky_relu_grad, want_g, (xv,)),
            (leaky_relu_backward, want_b, (xv, zv)),
        ]
        for func, want, args in cases:
            out = (
                layouts(np.zeros_like(x))[out_order]
                if out_order != "same"
                else layouts(np.zeros_like(x))[name]
            )
            assert func(*args, 0.3, out=out, threads=call_threads) is out
            assert np.ascontiguousarray(out).tobytes() == want, (name, out_order, func)
        inplace = xv.copy(order="K")
        leaky_relu(inplace, 0.3, out=inplace, threads=call_threads)
        assert np.ascontiguousarray(inplace).tobytes() == want_f, name


def test_transposed_in_place_large(call_threads: int | None) -> None:
    x = np.random.default_rng(3).standard_normal((300, 200))
    want = leaky_relu(x, 0.25)
    t = x.T
    leaky_relu(t, 0.25, out=t, threads=call_threads)
    assert x.tobytes() == want.tobytes()
    y = np.random.default_rng(3).standard_normal((300, 200))[:, ::-1]
    want = leaky_relu(np.ascontiguousarray(y), 0.25)
    leaky_relu(y, 0.25, out=y, threads=call_threads)
    assert np.ascontiguousarray(y).tobytes() == want.tobytes()


@pytest.mark.parametrize("dtype", ["e", "f", "d", "b", "H"])
def test_mixed_layouts_in_chunks(dtype: str, call_threads: int | None) -> None:
    """Inner runs where some operand does not step by its item size (reversed
    against the rest, transposed against the rest, broadcast) go through
    contiguous scratch in chunks: long runs with a ragged last chunk here."""
    rng = np.random.default_rng(7)
    x = (rng.standard_normal((37, 700)) * 50).astype(dtype)
    z = (rng.standard_normal((37, 700))).astype(dtype)
    res = "d" if dtype not in ("e", "f") else dtype
    cases: list[tuple[Any, tuple[Any, ...], Any]] = []
    for xv, zv in (
        (x[:, ::-1], z),  # reversed input, C out
        (np.ascontiguousarray(x.T).T, z),  # F input, C out
        (x, np.broadcast_to(z[:1], z.shape)),  # broadcast z
        (x[:, ::2], z[:, ::2]),  # every other element
    ):
        cases += [
            (leaky_relu, (xv,), None),
            (leaky_relu_grad, (xv,), None),
            (leaky_relu_backward, (xv, zv), None),
        ]
    for func, args, _ in cases:
        contiguous = tuple(np.ascontiguousarray(a) for a in args)
        want = func(*contiguous, 0.3).tobytes()
        assert func(*args, 0.3, threads=call_threads).tobytes() == want
        for out in (
            np.zeros(args[0].shape, res),
            np.zeros(args[0].shape[::-1], res).T,
            np.zeros(args[0].shape, res)[::-1, ::-1],
        ):
            func(*args, 0.3, out=out, threads=call_threads)
            assert np.ascontiguousarray(out).tobytes() == want
