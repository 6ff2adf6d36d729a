"""Reference counts of z, alpha and out stay put across calls, errors included."""

from __future__ import annotations

import array
import pathlib
import sys
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import numpy as np
import pytest

import leaky._leaky as ext
from leaky import leaky_relu, leaky_relu_backward, leaky_relu_grad

REPEATS = 2000


def refcounts(objects: list[Any]) -> list[int]:
    return [sys.getrefcount(o) for o in objects]


def check_stable(
    call: Callable[[], object], objects: list[Any], exc: type[BaseException] | None = None
) -> None:
    def once() -> None:
        if exc is None:
            call()
        else:
            with pytest.raises(exc):
                call()

    once()  # warm up caches (interned names, NumPy dtype lookups)
    before = refcounts(objects)
    for _ in range(REPEATS):
        once()
    assert refcounts(objects) == before


def test_numbers() -> None:
    z, neg, alpha, big = 2.5, -2.5, 0.3, 10**30
    frac = Fraction(-1, 3)
    check_stable(lambda: leaky_relu(z), [z])
    check_stable(lambda: leaky_relu(neg, alpha), [neg, alpha])
    check_stable(lambda: leaky_relu(big, alpha=alpha), [big, alpha])
    check_stable(lambda: leaky_relu(frac, alpha), [frac, alpha])
    check_stable(lambda: leaky_relu_grad(neg, alpha), [neg, alpha])
    check_stable(lambda: leaky_relu_grad(frac, frac), [frac])
    check_stable(lambda: leaky_relu_backward(z, neg, alpha), [z, neg, alpha])
    values = [1.0, -2.0, frac]
    check_stable(lambda: leaky_relu(values, alpha), [values, alpha, frac])
    check_stable(lambda: leaky_relu_backward(values, values), [values, frac])


def test_buffers_and_out() -> None:
    x = np.linspace(-1, 1, 50)
    out = np.empty_like(x)
    alpha = 0.25
    check_stable(lambda: leaky_relu(x, alpha), [x, alpha])
    check_stable(lambda: leaky_relu(x, alpha, out=out), [x, alpha, out])
    check_stable(lambda: leaky_relu(x, out=x), [x])
    check_stable(lambda: leaky_relu(x[:-1], out=x[1:]), [x])
    check_stable(lambda: leaky_relu_grad(x, alpha, out=out), [x, alpha, out])
    check_stable(lambda: leaky_relu_backward(x, x, alpha, out=out), [x, alpha, out])
    scalar = np.float32(-2.0)
    check_stable(lambda: leaky_relu(scalar), [scalar])
    arr = array.array("i", [1, -2, 3])
    check_stable(lambda: leaky_relu(arr), [arr])
    view = memoryview(bytearray(16)).cast("d")
    check_stable(lambda: leaky_relu(view), [view])
    check_stable(lambda: leaky_relu(b"abc"), [])


def test_error_paths() -> None:
    x = np.linspace(-1, 1, 8)
    out = np.empty(8)
    wrong = np.empty(7)
    alpha = 0.5
    bad_alpha = "0.5"
    complex_z = np.zeros(8, complex)
    check_stable(lambda: leaky_relu(x, alpha, out=wrong), [x, alpha, wrong], ValueError)
    check_stable(
        lambda: leaky_relu(x, bad_alpha, out=out),  # type: ignore[call-overload]
        [x, bad_alpha, out],
        TypeError,
    )
    check_stable(lambda: leaky_relu(complex_z, out=out), [complex_z, out], TypeError)
    check_stable(lambda: leaky_relu_backward(x, wrong), [x, wrong], ValueError)
    check_stable(lambda: leaky_relu_backward(x, complex_z, out=out), [x, complex_z, out], TypeError)
    readonly = np.zeros(8)
    readonly.flags.writeable = False
    check_stable(lambda: leaky_relu(x, out=readonly), [x, readonly], ValueError)
    check_stable(lambda: leaky_relu(1.0, out=out), [out], TypeError)
    huge = -(10**400)
    check_stable(lambda: leaky_relu(huge), [huge], OverflowError)


def test_ufunc_and_its_routes() -> None:
    # leaky.ufunc itself, and what leaky's functions send through it
    import leaky.ufunc as lu

    x = np.linspace(-1, 1, 50)
    out = np.empty_like(x)
    alpha = 0.25
    slopes = np.linspace(0.1, 0.5, 50)
    check_stable(lambda: lu.leaky_relu(x, alpha), [x, alpha])
    check_stable(lambda: lu.leaky_relu(x, slopes, out=out), [x, slopes, out])
    check_stable(lambda: lu.leaky_relu_backward(x, x, alpha), [x, alpha])
    masked = np.ma.masked_array(x, mask=x > 0.5)
    check_stable(lambda: leaky_relu(masked, alpha), [masked, alpha])
    check_stable(lambda: leaky_relu(masked), [masked])
    check_stable(lambda: leaky_relu_grad(masked, alpha), [masked, alpha])
    check_stable(lambda: leaky_relu_backward(masked, x, alpha), [masked, x, alpha])
    masked_out = np.ma.masked_array(np.empty_like(x))
    check_stable(lambda: leaky_relu(masked, alpha, out=masked_out), [masked, masked_out])

    class OnlyArray:
        def __array__(self, dtype: Any = None, copy: Any = None) -> Any:
            return x

    wrapped = OnlyArray()
    check_stable(lambda: leaky_relu(wrapped, alpha), [wrapped, alpha, x])
    check_stable(lambda: leaky_relu_backward(wrapped, x, alpha), [wrapped, x, alpha])


def test_nested_lists_and_their_errors() -> None:
    frac = Fraction(-1, 3)
    nested = [[1.0, -2.0], [frac, 4]]
    alpha = 0.5
    check_stable(lambda: leaky_relu(nested, alpha), [nested, alpha, frac])
    check_stable(lambda: leaky_relu_grad(nested, alpha), [nested, alpha, frac])
    check_stable(lambda: leaky_relu_backward(nested, nested, alpha), [nested, alpha, frac])
    ragged = [[1.0, 2.0], [3.0]]
    check_stable(lambda: leaky_relu(ragged), [ragged], TypeError)
    text = "a"
    with_text = [[1.0], [text]]
    check_stable(lambda: leaky_relu(with_text), [with_text, text], TypeError)
    pair = [[1.0], [2.0]]
    check_stable(lambda: leaky_relu_backward(with_text, pair), [with_text, pair], TypeError)
    short = [[1.0]]
    check_stable(lambda: leaky_relu_backward(nested, short), [nested, short], ValueError)
    loop: list[Any] = []
    loop.append(loop)
    check_stable(lambda: leaky_relu(loop), [loop], TypeError)


def test_array_alpha_errors() -> None:
    x = np.linspace(-1, 1, 8)
    slopes = np.ones(8)
    check_stable(lambda: leaky_relu(x, slopes), [x, slopes], TypeError)
    check_stable(lambda: leaky_relu([1.0], slopes), [slopes], TypeError)


def test_dlpack_paths() -> None:
    """DLPack tensors in (ctypes exporter) and out (ResultBuffer.__dlpack__), errors included."""
    from dlpack_exporter import COMPLEX, Exporter, consume, exporter_of

    x = np.linspace(-1, 1, 50)
    tensor = exporter_of(x)
    out = exporter_of(np.empty(50))
    read_only = exporter_of(np.empty(50), read_only=True)
    bad = Exporter(bytearray(16), (COMPLEX, 64), (2,))
    alpha = 0.25
    check_stable(lambda: leaky_relu(tensor, alpha), [tensor, x, alpha])
    check_stable(lambda: leaky_relu(tensor, alpha, out=out), [tensor, out])
    check_stable(lambda: leaky_relu(tensor, out=tensor), [tensor])
    check_stable(lambda: leaky_relu_backward(tensor, x, alpha, out=out), [tensor, x, out])
    check_stable(lambda: leaky_relu(bad), [bad], TypeError)
    check_stable(lambda: leaky_relu(x, out=read_only), [x, read_only], ValueError)
    check_stable(lambda: leaky_relu(tensor, out=bad), [tensor, bad], TypeError)
    result = leaky_relu(tensor)
    check_stable(lambda: consume(result, max_version=(1, 0)), [result])
    check_stable(lambda: consume(result), [result])
    check_stable(lambda: result.__dlpack__(max_version=(1, 0), copy=True), [result])
    check_stable(lambda: result.__dlpack__(stream=3), [result], BufferError)
    assert tensor.deleter_calls == tensor.exports


def test_number_path_refusals() -> None:
    class FloatWithLen:
        def __float__(self) -> float:
            return 1.0

        def __len__(self) -> int:
            return 1

    odd = FloatWithLen()
    items = [1.0, odd]
    check_stable(lambda: leaky_relu(odd), [odd], TypeError)
    check_stable(lambda: leaky_relu(items), [items, odd], TypeError)
    check_stable(lambda: leaky_relu_backward(odd, 1.0), [odd], TypeError)


def test_default_thread_count_root() -> None:
    """The private _default_thread_count(root) releases its path on every path."""
    root, path, bad = "/nonexistent-root", pathlib.Path("/nonexistent-root"), "a\0b"
    check_stable(lambda: ext._default_thread_count(root), [root])
    check_stable(lambda: ext._default_thread_count(path), [path])
    check_stable(lambda: ext._default_thread_count(bad), [bad], ValueError)
