"""An independent, pure-Python oracle for leaky's three functions.

It shares no code with the C extension: rounding to float32 and float16 goes
through the struct module, float16 NaNs are handled on their bit patterns,
and the formulas are written out from the problem statement.  The float16
results of this oracle are themselves checked against PyTorch's vectors in
test_float16.py, so the oracle is anchored to an outside reference.

Element kinds are NumPy-style dtype characters: 'e', 'f', 'd' for the float
formats, anything else for integers and bool (computed in float64).
"""

from __future__ import annotations

import math
import struct

# ---------------------------------------------------------------- rounding


def round_to_f32(value: float) -> float:
    """Round a double to the nearest float32 (ties to even), overflowing to inf."""
    try:
        return float(struct.unpack("<f", struct.pack("<f", value))[0])
    except OverflowError:
        return math.copysign(math.inf, value)


def f16_bits_of(value: float) -> int:
    """The float16 bit pattern nearest to a non-NaN double (ties to even)."""
    try:
        return int(struct.unpack("<H", struct.pack("<e", value))[0])
    except OverflowError:
        return 0xFC00 if value < 0 else 0x7C00


def f16_value(bits: int) -> float:
    """The exact value of a float16 bit pattern (NaNs lose their payload here)."""
    return float(struct.unpack("<e", struct.pack("<H", bits))[0])


def f16_is_nan(bits: int) -> bool:
    return (bits & 0x7C00) == 0x7C00 and (bits & 0x03FF) != 0


def f16_quiet(bits: int) -> int:
    """A float16 NaN after float32 arithmetic: quiet bit set, payload kept."""
    return bits | 0x0200


# ---------------------------------------------------------------- numbers


def leaky_relu(z: float, alpha: float = 0.01) -> float:
    """The problem statement's definition, in double precision."""
    return z if z > 0 else alpha * z


def leaky_relu_grad(z: float, alpha: float = 0.01) -> float:
    return 1.0 if z > 0 else alpha


def leaky_relu_backward(grad: float, z: float, alpha: float = 0.01) -> float:
    return grad * (1.0 if z > 0 else alpha)


# ---------------------------------------------------------------- elements
#
# Element values are Python floats or ints, except float16, which is its bit
# pattern (an int) so that NaN payloads survive.


def result_kind(kind: str) -> str:
    return kind if kind in ("e", "f") else "d"


def forward_element(kind: str, x: float, alpha: float) -> float:
    if kind == "e":
        bits = int(x)
        if f16_is_nan(bits):
            return f16_quiet(bits)
        value = f16_value(bits)
        if value > 0:
            return bits
        return f16_bits_of(round_to_f32(value * round_to_f32(alpha)))
    if kind == "f":
        return x if x > 0 else round_to_f32(x * round_to_f32(alpha))
    z = float(x)
    return z if z > 0 else alpha * z


def grad_element(kind: str, x: float, alpha: float) -> float:
    if kind == "e":
        bits = int(x)
        positive = not f16_is_nan(bits) and f16_value(bits) > 0
        if positive:
            return 0x3C00
        slope = round_to_f32(alpha)
        return 0x7E00 if math.isnan(slope) else f16_bits_of(slope)
    if kind == "f":
        return 1.0 if x > 0 else round_to_f32(alpha)
    return 1.0 if x > 0 else alpha


def _positive(kind: str, z: float) -> bool:
    if kind == "e":
        bits = int(z)
        return not f16_is_nan(bits) and f16_value(bits) > 0
    return z > 0


def backward_element(grad_kind: str, g: float, z_kind: str, z: float, alpha: float) -> float:
    positive = _positive(z_kind, z)
    if grad_kind == "e":
        bits = int(g)
        if f16_is_nan(bits):
            return f16_quiet(bits)
        factor = 1.0 if positive else round_to_f32(alpha)
        return f16_bits_of(round_to_f32(f16_value(bits) * factor))
    if grad_kind == "f":
        return round_to_f32(g * (1.0 if positive else round_to_f32(alpha)))
    return float(g) * (1.0 if positive else alpha)


def float_bits(kind: str, value: float) -> int:
    """Bit pattern of a result element, for exact comparison."""
    if kind == "e":
        return int(value)
    if kind == "f":
        return int(struct.unpack("<I", struct.pack("<f", value))[0])
    return int(struct.unpack("<Q", struct.pack("<d", value))[0])


def same_result(kind: str, actual: float, expected: float, *, strict_nan: bool = True) -> bool:
    """Bit-for-bit equality.

    float32/64 NaNs match any NaN: their payloads are the CPU's business.
    float16 NaN payloads are compared too (PyTorch's vectors pin them down),
    unless strict_nan is False, for a NaN alpha, whose payload wins.
    """
    if kind == "e":
        if not strict_nan and f16_is_nan(int(expected)):
            return f16_is_nan(int(actual))
        return int(actual) == int(expected)
    if math.isnan(expected):
        return math.isnan(actual)
    return float_bits(kind, actual) == float_bits(kind, expected)
