"""ml_dtypes' NumPy dtypes (bfloat16, float8_*): no buffer format, so a TypeError naming them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from optional import require

from leaky import leaky_relu, leaky_relu_backward, leaky_relu_grad

ml_dtypes = require("ml_dtypes", "test")


@pytest.mark.parametrize("name", ["bfloat16", "float8_e4m3fn", "float8_e5m2", "int4"])
def test_ml_dtypes_arrays_are_a_type_error_naming_the_dtype(name: str) -> None:
    odd = np.zeros(5, getattr(ml_dtypes, name))
    plain = np.zeros(5)
    cases: list[tuple[Callable[[], Any], str]] = [
        (lambda: leaky_relu(odd, 0.5), "z"),
        (lambda: leaky_relu_grad(odd), "z"),
        (lambda: leaky_relu_backward(plain, odd), "z"),
        (lambda: leaky_relu(plain, out=odd), "out"),
    ]
    for call, where in cases:
        with pytest.raises(TypeError, match=f"argument '{where}' has dtype '{name}'"):
            call()
