"""An input's buffer goes back to its exporter as the exporter lent it.

An input that overlaps out= is computed from a private copy
(detach_from_output); the exporter's buffer must still be released with its
own pointer.  Python 3.12+ hands the view to a class's ``__release_buffer__``
as a memoryview: it must show the exporter's own bytes, not leaky's copy
(freed by then: a heap pointer in its first bytes, or a use-after-free under
ASan).  Runs where Python is 3.12+ (CI's free-threaded 3.13t job).
"""

from __future__ import annotations

import struct
import sys
from typing import Any

import numpy as np
import oracle
import pytest

from leaky import leaky_relu, leaky_relu_backward, leaky_relu_grad

pytestmark = pytest.mark.skipif(
    sys.version_info < (3, 12), reason="__release_buffer__ is Python 3.12+ (PEP 688)"
)

ALPHA = 0.25


class Spy(bytearray):
    """A bytearray that records what each release of its buffer shows."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.released: list[bytes] = []

    def __release_buffer__(self, view: memoryview) -> None:
        self.released.append(view.tobytes())


def _stride0_out(spy: Spy, count: int) -> Any:
    """A float64 out= of count elements, all of them spy's first 8 bytes."""
    first = np.frombuffer(spy, np.float64, count=1)
    return np.lib.stride_tricks.as_strided(first, shape=(count,), strides=(0,))


@pytest.mark.parametrize("func", [leaky_relu, leaky_relu_grad])
def test_unary_input_is_released_with_its_own_bytes(func: Any) -> None:
    values = bytes([200, 3, 0, 255, 7, 1, 0, 90])  # uint8 z: its result is float64
    spy = Spy(values)
    out = _stride0_out(spy, len(values))
    spy.released.clear()
    func(spy, ALPHA, out=out)
    released = list(spy.released)  # before bytes(spy), itself a buffer export
    element = oracle.leaky_relu if func is leaky_relu else oracle.leaky_relu_grad
    # stride 0: the elements are written in C order, the last one wins
    assert bytes(spy) == struct.pack("=d", element(float(values[-1]), ALPHA))
    assert released == [bytes(spy)]


def test_backward_inputs_are_released_with_their_own_bytes() -> None:
    values = bytes([0, 9, 4, 0, 1, 2, 0, 5])
    spy = Spy(values)
    out = _stride0_out(spy, len(values))
    spy.released.clear()
    leaky_relu_backward(spy, spy, ALPHA, out=out)  # grad_output and z both detached
    released = list(spy.released)
    want = oracle.leaky_relu_backward(float(values[-1]), float(values[-1]), ALPHA)
    assert bytes(spy) == struct.pack("=d", want)
    assert released == [bytes(spy), bytes(spy)]
