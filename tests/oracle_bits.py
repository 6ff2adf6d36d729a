"""A second oracle, on bit patterns, that pins down every NaN leaky returns.

oracle.py computes on Python floats and lets a float32/float64 NaN match any
NaN. This one takes and returns bit patterns (ints), so NaN payloads, signs
and the quiet bit are all compared, and it writes leaky's NaN rule out by
hand (docs/semantics.md, "NaN payloads"):

- a product whose data operand (z for leaky_relu, grad_output for
  leaky_relu_backward) is NaN is that NaN, quieted, whatever the slope;
- otherwise a NaN slope gives the slope's NaN, quieted;
- leaky_relu_grad moves bits and multiplies nothing: the slope's own bits
  (float32(alpha) and float16(float32(alpha)) are conversions, which quiet);
- float conversions of a NaN keep its sign and the top of its payload and
  set the quiet bit (x86 and arm64 hardware both do this).

Only products of two non-NaN numbers are left to the CPU's arithmetic
(Python's float multiply, rounded through struct), which IEEE 754 pins down
apart from the default NaN of inf * 0, whose sign differs between x86 and
arm64: `default_nan()` asks this CPU. Nothing here calls leaky.

Kinds are NumPy dtype characters: 'e', 'f', 'd', and the integer and bool
characters, whose elements are Python ints (bool: 0 or 1) computed in float64;
and "bf16" for bfloat16, which NumPy lacks (so no character: 'b' is int8),
computed in float32 as float16 is and rounded to it by `round_double`'s own
arithmetic (Python's round(), ties to even, on the value scaled to its
quantum), not by shifting bits as leaky does.
"""

from __future__ import annotations

import math
import struct
from typing import Any

import numpy as np

# ---------------------------------------------------------------- formats

WIDTH = {"e": 16, "f": 32, "d": 64, "bf16": 16}
MANTISSA = {"e": 10, "f": 23, "d": 52, "bf16": 7}
FLOAT_KINDS = ("e", "f", "d", "bf16")


def result_kind(kind: str) -> str:
    return kind if kind in FLOAT_KINDS else "d"


def sign_bit(kind: str) -> int:
    return 1 << (WIDTH[kind] - 1)


def exponent_mask(kind: str) -> int:
    return ((1 << (WIDTH[kind] - 1)) - 1) & ~((1 << MANTISSA[kind]) - 1)


def quiet_bit(kind: str) -> int:
    return 1 << (MANTISSA[kind] - 1)


def is_nan(kind: str, bits: int) -> bool:
    m = (1 << MANTISSA[kind]) - 1
    return (bits & exponent_mask(kind)) == exponent_mask(kind) and (bits & m) != 0


def quiet(kind: str, bits: int) -> int:
    return bits | quiet_bit(kind)


def convert_nan(src: str, dst: str, bits: int) -> int:
    """A NaN converted between formats: sign kept, payload's top bits, quieted."""
    sign = sign_bit(dst) if bits & sign_bit(src) else 0
    fraction = bits & ((1 << MANTISSA[src]) - 1)
    shift = MANTISSA[src] - MANTISSA[dst]
    fraction = fraction >> shift if shift >= 0 else fraction << -shift
    return sign | exponent_mask(dst) | quiet_bit(dst) | fraction


_PACK = {"e": ("<e", "<H"), "f": ("<f", "<I"), "d": ("<d", "<Q")}


def value_of(kind: str, bits: int) -> float:
    """The value of a non-NaN bit pattern."""
    if kind == "bf16":  # the top half of a float32
        return value_of("f", bits << 16)
    fmt, ufmt = _PACK[kind]
    return float(struct.unpack(fmt, struct.pack(ufmt, bits))[0])


def bits_of_double(value: float) -> int:
    return int(struct.unpack("<Q", struct.pack("<d", value))[0])


def default_nan(kind: str) -> int:
    """This CPU's NaN for an invalid operation (inf * 0): negative on x86, positive on arm64."""
    dtype = {"e": np.float32, "f": np.float32, "bf16": np.float32, "d": np.float64}[kind]
    with np.errstate(invalid="ignore"):
        made = np.array([np.inf], dtype) * np.array([0.0], dtype)
    negative = bool(np.signbit(made[0]))
    return (sign_bit(kind) if negative else 0) | exponent_mask(kind) | quiet_bit(kind)


def round_double(kind: str, value: float) -> int:
    """A double rounded once to kind (to nearest, ties to even), as bits; NaN is the default."""
    if math.isnan(value):
        return default_nan(kind)
    if kind == "d":
        return bits_of_double(value)
    if kind == "bf16":
        return _round_bfloat16(value)
    fmt, ufmt = _PACK[kind]
    try:
        return int(struct.unpack(ufmt, struct.pack(fmt, value))[0])
    except OverflowError:
        return (sign_bit(kind) if value < 0 else 0) | exponent_mask(kind)


def _round_bfloat16(value: float) -> int:
    """A non-NaN double rounded once to bfloat16 (8 significant bits, float32's range)."""
    sign = 0x8000 if math.copysign(1.0, value) < 0 else 0
    magnitude = abs(value)
    if magnitude == 0:
        return sign
    if math.isinf(magnitude):
        return sign | 0x7F80
    _, exponent = math.frexp(magnitude)  # magnitude = m * 2**exponent, 0.5 <= m < 1
    quantum = max(exponent - 8, -133)  # 2**-133: the smallest subnormal bfloat16
    units = round(magnitude / 2.0**quantum)  # exact division; round() ties to even
    rounded = units * 2.0**quantum
    if rounded >= 2.0**128:
        return sign | 0x7F80
    return sign | (int(struct.unpack("<I", struct.pack("<f", rounded))[0]) >> 16)


def narrow(src: str, dst: str, bits: int) -> int:
    """A conversion to a narrower float format (double -> float32 -> float16)."""
    if is_nan(src, bits):
        return convert_nan(src, dst, bits)
    return round_double(dst, value_of(src, bits))


def positive(kind: str, element: int) -> bool:
    """z > 0 for an element (float kinds: bits; others: the integer)."""
    if kind in FLOAT_KINDS:
        return not is_nan(kind, element) and value_of(kind, element) > 0
    return element > 0


# ---------------------------------------------------------------- slopes


def slopes(alpha_bits: int) -> dict[str, int]:
    """The slope in each result precision, from the double alpha leaky was given."""
    a32 = narrow("d", "f", alpha_bits)
    return {"d": alpha_bits, "f": a32, "e": a32, "bf16": a32}


# ---------------------------------------------------------------- products


def product(kind: str, data: int, slope: int) -> int:
    """data * slope in kind's arithmetic (float16: in float32, rounded once), as bits.

    data is a bit pattern of `kind`; slope is a float32 pattern for 'e' and 'f',
    a double pattern for 'd'.
    """
    arith = "f" if kind in ("e", "bf16") else kind
    if is_nan(kind, data):
        return quiet(kind, data)  # the data operand's NaN wins
    if is_nan(arith, slope):
        q = quiet(arith, slope)
        return convert_nan(arith, kind, q) if kind in ("e", "bf16") else q
    exact = value_of(kind, data) * value_of(arith, slope)
    if kind in ("e", "bf16"):
        # float16 (bfloat16) x float32 is exact in double; round to float32, then once more
        return narrow("f", kind, round_double("f", exact))
    if kind == "f":
        return round_double("f", exact)  # exact in double: one rounding
    return round_double("d", exact)


def as_result_element(kind: str, element: int) -> int:
    """An input element as bits of its result kind (integers and bool become float64)."""
    if kind in FLOAT_KINDS:
        return element
    return bits_of_double(float(element))


ONE = {"e": 0x3C00, "f": 0x3F800000, "d": 0x3FF0000000000000, "bf16": 0x3F80}


def forward(kind: str, z: int, alpha_bits: int) -> int:
    rk = result_kind(kind)
    x = as_result_element(kind, z)
    if positive(kind, z):
        return x
    return product(rk, x, slopes(alpha_bits)[rk])


def grad(kind: str, z: int, alpha_bits: int) -> int:
    rk = result_kind(kind)
    if positive(kind, z):
        return ONE[rk]
    a = slopes(alpha_bits)[rk]
    return narrow("f", rk, a) if rk in ("e", "bf16") else a


def backward(grad_kind: str, g: int, z_kind: str, z: int, alpha_bits: int) -> int:
    rk = result_kind(grad_kind)
    gb = as_result_element(grad_kind, g)
    arith = "f" if rk in ("e", "bf16") else rk
    factor = ONE[arith] if positive(z_kind, z) else slopes(alpha_bits)[rk]
    return product(rk, gb, factor)


# ---------------------------------------------------------------- arrays


def unsigned(kind: str) -> type:
    return {"e": np.uint16, "f": np.uint32, "d": np.uint64}[kind]


def result_bits(array: Any) -> list[int]:
    """A result's elements (any buffer, list or number) as bit patterns, in C order."""
    a = np.ascontiguousarray(np.asarray(array))
    values: list[int] = a.view(unsigned(a.dtype.char)).ravel().tolist()
    return [int(v) for v in values]
