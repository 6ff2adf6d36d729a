"""Bad input: each case raises its exact exception type and writes nothing."""

from __future__ import annotations

import ctypes
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np
import pytest

from leaky import leaky_relu, leaky_relu_backward, leaky_relu_grad


@dataclass
class Buffers:
    """Fresh arrays for one case; out must be unchanged after the error."""

    x: Any = field(default_factory=lambda: np.array([-1.0, 0.5, 2.0]))
    x32: Any = field(default_factory=lambda: np.array([-1.0, 0.5, 2.0], dtype="f"))
    xi: Any = field(default_factory=lambda: np.array([-1, 0, 2], dtype="i8"))
    out: Any = field(default_factory=lambda: np.full(3, 7.0))
    # a bytearray refuses to resize while exported: it shows a leaked buffer export
    ba: bytearray = field(default_factory=lambda: bytearray(np.array([-1.0, 0.5, 2.0]).tobytes()))


class RaisingFloat:
    def __float__(self) -> float:
        raise ValueError("no float for you")


class BadFloat:
    def __float__(self) -> Any:
        return "0.5"


class RaisingExporter:
    """A Python-level exporter (PEP 688, 3.12+) whose __buffer__ raises."""

    def __buffer__(self, flags: int) -> memoryview:
        raise ZeroDivisionError("no buffer for you")


def released_view() -> memoryview[float]:
    view = memoryview(bytearray(24)).cast("d")
    view.release()
    return view


Case = Callable[[Buffers], object]
CASES: list[tuple[str, Case, type[BaseException]]] = [
    # argument parsing
    ("no arguments", lambda b: leaky_relu(), TypeError),  # type: ignore[call-overload]
    ("three positional", lambda b: leaky_relu(1.0, 0.1, 0.2), TypeError),  # type: ignore[call-overload]
    ("unknown keyword", lambda b: leaky_relu(1.0, beta=1), TypeError),  # type: ignore[call-overload]
    ("alpha twice", lambda b: leaky_relu(1.0, 0.1, alpha=0.2), TypeError),  # type: ignore[call-overload]
    ("z twice", lambda b: leaky_relu(1.0, z=2.0), TypeError),  # type: ignore[call-overload]
    ("out positional", lambda b: leaky_relu(b.x, 0.1, b.out), TypeError),  # type: ignore[call-overload]
    ("grad without z", lambda b: leaky_relu_backward(b.x), TypeError),  # type: ignore[call-overload]
    ("grad without args", lambda b: leaky_relu_grad(), TypeError),  # type: ignore[call-overload]
    # alpha
    ("alpha str", lambda b: leaky_relu(1.0, "0.1"), TypeError),  # type: ignore[call-overload]
    ("alpha None", lambda b: leaky_relu(b.x, None, out=b.out), TypeError),  # type: ignore[call-overload]
    ("alpha complex", lambda b: leaky_relu(b.x, 1j, out=b.out), TypeError),  # type: ignore[call-overload]
    ("alpha list", lambda b: leaky_relu(b.x, [0.1], out=b.out), TypeError),  # type: ignore[call-overload]
    ("alpha array", lambda b: leaky_relu(b.x, np.array([0.1, 0.2]), out=b.out), TypeError),
    ("alpha __float__ raises", lambda b: leaky_relu(b.x, RaisingFloat(), out=b.out), ValueError),
    ("alpha __float__ non-float", lambda b: leaky_relu(b.x, BadFloat(), out=b.out), TypeError),
    ("alpha huge int", lambda b: leaky_relu(b.x, 10**400, out=b.out), OverflowError),
    ("grad alpha str", lambda b: leaky_relu_grad(b.x, "a", out=b.out), TypeError),  # type: ignore[call-overload]
    ("backward alpha str", lambda b: leaky_relu_backward(b.x, b.x, "a", out=b.out), TypeError),  # type: ignore[call-overload]
    # z that is no number, sequence of numbers or supported buffer
    ("z str", lambda b: leaky_relu("abc"), TypeError),
    ("z None", lambda b: leaky_relu(None), TypeError),
    ("z complex", lambda b: leaky_relu(1j), TypeError),
    ("z dict", lambda b: leaky_relu({1: 2}), TypeError),
    ("list with str", lambda b: leaky_relu([1.0, "a"]), TypeError),
    ("ragged nested list", lambda b: leaky_relu([[1.0, 2.0], [3.0]]), TypeError),
    ("nested list with str", lambda b: leaky_relu([[1.0], ["a"]]), TypeError),
    ("huge negative int", lambda b: leaky_relu(-(10**400)), OverflowError),
    ("grad z str", lambda b: leaky_relu_grad("abc"), TypeError),
    ("complex array", lambda b: leaky_relu(np.zeros(3, complex), out=b.out), TypeError),
    ("big-endian array", lambda b: leaky_relu(np.zeros(3, ">f8"), out=b.out), TypeError),
    ("big-endian int array", lambda b: leaky_relu(np.zeros(3, ">i4"), out=b.out), TypeError),
    ("long double array", lambda b: leaky_relu(np.zeros(3, np.longdouble), out=b.out), TypeError),
    ("structured array", lambda b: leaky_relu(np.zeros(3, "f8,f8"), out=b.out), TypeError),
    ("object array", lambda b: leaky_relu(np.zeros(3, object), out=b.out), TypeError),
    ("unicode array", lambda b: leaky_relu(np.zeros(3, "U1"), out=b.out), TypeError),
    ("ctypes chars", lambda b: leaky_relu((ctypes.c_char * 3)(), out=b.out), TypeError),
    ("ctypes pointers", lambda b: leaky_relu((ctypes.c_void_p * 3)(), out=b.out), TypeError),
    ("memoryview chars", lambda b: leaky_relu(memoryview(b"abc").cast("c"), out=b.out), TypeError),
    ("released memoryview z", lambda b: leaky_relu(released_view(), out=b.out), ValueError),
    # out
    ("out with float", lambda b: leaky_relu(1.0, out=b.out), TypeError),
    ("out with int", lambda b: leaky_relu(-3, out=b.out), TypeError),
    ("out with list", lambda b: leaky_relu([1.0, 2.0, 3.0], out=b.out), TypeError),
    ("grad out with float", lambda b: leaky_relu_grad(2.0, out=b.out), TypeError),
    ("out a list", lambda b: leaky_relu(b.x, out=[0.0, 0.0, 0.0]), TypeError),
    ("out a float", lambda b: leaky_relu(b.x, out=1.0), TypeError),
    ("out too long", lambda b: leaky_relu(b.out[:2], out=b.out), ValueError),
    ("out wrong rank", lambda b: leaky_relu(b.x.reshape(3, 1), out=b.out), ValueError),
    ("out float32 for float64", lambda b: leaky_relu(b.x, out=b.out.astype("f")), TypeError),
    ("out float64 for float32", lambda b: leaky_relu(b.x32, out=b.out), TypeError),
    ("out int for int input", lambda b: leaky_relu(b.xi, out=np.zeros(3, "i8")), TypeError),
    ("out is the int input", lambda b: leaky_relu(b.xi, out=b.xi), TypeError),
    ("out read-only array", lambda b: leaky_relu(b.x, out=readonly(b.out)), ValueError),
    ("out bytes", lambda b: leaky_relu(b.x, out=bytes(24)), ValueError),
    (
        "out read-only view",
        lambda b: leaky_relu(b.x, out=memoryview(b.out).toreadonly()),
        ValueError,
    ),
    ("out released view", lambda b: leaky_relu(b.x, out=released_view()), ValueError),
    ("out big-endian", lambda b: leaky_relu(b.x, out=np.zeros(3, ">f8")), TypeError),
    ("grad out wrong shape", lambda b: leaky_relu_grad(b.x, out=b.out[:1]), ValueError),
    # backward pairs
    ("backward shape mismatch", lambda b: leaky_relu_backward(b.x, b.out[:2]), ValueError),
    (
        "backward rank mismatch",
        lambda b: leaky_relu_backward(b.x, b.x.reshape(1, 3), out=b.out),
        ValueError,
    ),
    ("backward buffer and float", lambda b: leaky_relu_backward(b.x, 1.0), TypeError),
    ("backward float and buffer", lambda b: leaky_relu_backward(1.0, b.x), TypeError),
    ("backward list and float", lambda b: leaky_relu_backward([1.0], 1.0), TypeError),
    ("backward list lengths", lambda b: leaky_relu_backward([1.0, 2.0], [1.0]), ValueError),
    ("backward numbers with out", lambda b: leaky_relu_backward(1.0, 2.0, out=b.out), TypeError),
    (
        "backward complex z",
        lambda b: leaky_relu_backward(b.x, np.zeros(3, complex), out=b.out),
        TypeError,
    ),
    (
        "backward complex grad",
        lambda b: leaky_relu_backward(np.zeros(3, complex), b.x, out=b.out),
        TypeError,
    ),
    (
        "backward out wrong format",
        lambda b: leaky_relu_backward(b.x32, b.x32, out=b.out),
        TypeError,
    ),
    ("backward str z", lambda b: leaky_relu_backward(1.0, "a"), TypeError),
    # each argument's wrong type, and more wrong outs
    ("threads str", lambda b: leaky_relu(b.x, threads="2", out=b.out), TypeError),  # type: ignore[call-overload]
    ("threads float", lambda b: leaky_relu_grad(b.x, threads=2.0, out=b.out), TypeError),  # type: ignore[call-overload]
    ("threads zero", lambda b: leaky_relu_backward(b.x, b.x, threads=0, out=b.out), ValueError),
    ("threads bool", lambda b: leaky_relu(b.x, threads=True, out=b.out), TypeError),
    ("threads numpy zero", lambda b: leaky_relu(b.x, threads=np.int64(0), out=b.out), ValueError),
    ("threads huge negative", lambda b: leaky_relu(b.x, threads=-(10**40), out=b.out), ValueError),
    ("backward grad_output str", lambda b: leaky_relu_backward("g", -1.0), TypeError),
    ("backward grad_output None", lambda b: leaky_relu_backward(None, b.x, out=b.out), TypeError),
    (
        "backward alpha huge int",
        lambda b: leaky_relu_backward(b.x, b.x, 10**400, out=b.out),
        OverflowError,
    ),
    ("out a tuple", lambda b: leaky_relu(b.x, out=(0.0, 0.0, 0.0)), TypeError),
    ("out a dict", lambda b: leaky_relu_grad(b.x, out={}), TypeError),
    ("out ctypes ints", lambda b: leaky_relu(b.x, out=(ctypes.c_int64 * 3)()), TypeError),
    ("out memoryview bytes", lambda b: leaky_relu(b.x, out=memoryview(b.ba)), TypeError),
    ("out bytearray for float32", lambda b: leaky_relu(b.x32, out=b.ba), TypeError),
    ("backward released grad", lambda b: leaky_relu_backward(released_view(), b.x), ValueError),
    (
        "backward out released",
        lambda b: leaky_relu_backward(b.x, b.x, out=released_view()),
        ValueError,
    ),
    ("bytearray z wrong out shape", lambda b: leaky_relu(b.ba, out=b.out[:2]), ValueError),
    ("bytearray z with alpha raising", lambda b: leaky_relu(b.ba, RaisingFloat()), ValueError),
    (
        "bytearray z and complex",
        lambda b: leaky_relu_backward(b.ba, np.zeros(24, complex)),
        TypeError,
    ),
]
if sys.version_info >= (3, 12):
    CASES += [
        (
            "__buffer__ raises",
            lambda b: leaky_relu(RaisingExporter(), out=b.out),
            ZeroDivisionError,
        ),
        (
            "out __buffer__ raises",
            lambda b: leaky_relu(b.x, out=RaisingExporter()),
            ZeroDivisionError,
        ),
    ]


def readonly(array: Any) -> Any:
    array.flags.writeable = False
    return array


@pytest.mark.parametrize(
    ("case", "exc"), [(c, e) for _, c, e in CASES], ids=[name for name, _, _ in CASES]
)
def test_bad_input_raises_and_writes_nothing(case: Case, exc: type[BaseException]) -> None:
    buffers = Buffers()
    before = {name: getattr(buffers, name).copy() for name in ("x", "x32", "xi", "out")}
    with pytest.raises(exc) as info:
        case(buffers)
    assert type(info.value) is exc
    for name, copy in before.items():
        assert getattr(buffers, name).tobytes() == copy.tobytes(), name
    resized = bytes(buffers.ba)
    buffers.ba.extend(b"12345678")  # BufferError here would be a leaked export
    assert bytes(buffers.ba[:24]) == resized == np.array([-1.0, 0.5, 2.0]).tobytes()


def test_case_table_is_large() -> None:
    assert len(CASES) >= 60
    assert len({name for name, _, _ in CASES}) == len(CASES)


def message(call: Callable[[], object]) -> str:
    with pytest.raises(TypeError) as info:
        call()
    return str(info.value)


def test_argument_errors_read_like_cpython() -> None:
    assert message(lambda: leaky_relu()) == (  # type: ignore[call-overload]
        "leaky_relu() missing required argument 'z' (pos 1)"
    )
    assert message(lambda: leaky_relu_backward(1.0)) == (  # type: ignore[call-overload]
        "leaky_relu_backward() missing required argument 'z' (pos 2)"
    )
    assert message(lambda: leaky_relu(1.0, 0.1, 0.2)) == (  # type: ignore[call-overload]
        "leaky_relu() takes from 1 to 2 positional arguments but 3 were given"
    )
    assert message(lambda: leaky_relu_grad(1.0, beta=2)) == (  # type: ignore[call-overload]
        "leaky_relu_grad() got an unexpected keyword argument 'beta'"
    )
    assert message(lambda: leaky_relu(1.0, 0.1, alpha=0.2)) == (  # type: ignore[call-overload]
        "argument for leaky_relu() given by name ('alpha') and position (2)"
    )


def test_messages_name_what_is_wrong() -> None:
    assert "'alpha'" in message(lambda: leaky_relu(1.0, "x"))  # type: ignore[call-overload]
    assert "'Zd'" in message(lambda: leaky_relu(np.zeros(2, complex)))
    assert "byte order" in message(lambda: leaky_relu(np.zeros(2, ">f4")))
    text = message(lambda: leaky_relu(np.zeros(2), out=np.zeros(2, "f")))
    assert "'out'" in text and "float64" in text
    with pytest.raises(ValueError, match=r"shape \(3,\) but the result has shape \(2,\)"):
        leaky_relu(np.zeros(2), out=np.zeros(3))
    with pytest.raises(ValueError, match="read-only"):
        leaky_relu(np.zeros(2), out=bytes(16))


def test_keyword_names_compare_by_value() -> None:
    # kwnames are usually interned, but a dict-built name is not necessarily
    key = "".join(["al", "pha"])
    kwargs: dict[str, Any] = {key: 0.5}
    assert leaky_relu(-1.0, **kwargs) == -0.5


def test_bytearray_can_resize_after_errors() -> None:
    # a leaked buffer export would make the resize raise BufferError
    data = bytearray(np.array([-1.0, 1.0]).tobytes())
    with pytest.raises(ValueError):
        leaky_relu(data, out=np.zeros(3))
    with pytest.raises(TypeError):
        leaky_relu(np.zeros(2), out=data)
    with pytest.raises(TypeError):
        leaky_relu_backward(data, np.zeros(2, complex))
    data.extend(b"12345678")
    assert len(data) == 24


@pytest.mark.parametrize("grad", ["g", b"g", 1j, None, ["g"]])
@pytest.mark.parametrize("z", [1.0, -1.0, 2, Fraction(1, 3)])
def test_backward_rejects_a_grad_output_that_is_no_real_number(grad: Any, z: Any) -> None:
    # 'g' * 1 is 'g': the generic path must not multiply whatever it is given
    with pytest.raises(TypeError):
        leaky_relu_backward(grad, z)
    with pytest.raises(TypeError):
        leaky_relu_backward([grad], [z])


def test_threads_accepts_any_integer_with_index() -> None:
    x = np.linspace(-3.0, 3.0, 50_000)
    expected = np.where(x > 0, x, 0.25 * x)
    for count in (np.int64(2), np.uint8(3), np.intp(1)):
        assert np.array_equal(leaky_relu(x, 0.25, threads=count), expected)


@pytest.mark.parametrize("dtype", ["datetime64[s]", "timedelta64[ns]"])
@pytest.mark.parametrize("where", ["z", "out", "grad_output"])
def test_dtypes_without_a_buffer_format_name_the_dtype(dtype: str, where: str) -> None:
    """NumPy refuses to export these (a ValueError); leaky says which dtype it cannot compute."""
    odd = np.zeros(4, dtype)
    plain = np.zeros(4)
    calls: dict[str, Callable[[], Any]] = {
        "z": lambda: leaky_relu(odd),
        "out": lambda: leaky_relu(plain, out=odd),
        "grad_output": lambda: leaky_relu_backward(odd, plain),
    }
    before = odd.copy()
    named = rf"argument '{where}' has dtype '{re.escape(dtype)}'"
    with pytest.raises(TypeError, match=named) as info:
        calls[where]()
    assert isinstance(info.value.__cause__, ValueError)  # NumPy's own refusal, kept
    assert np.array_equal(odd, before)
