"""NaN bits, payloads included, are the same on every path (issue 11).

With a NaN slope and a NaN z, the product alpha * z has two NaN operands and
the CPU returns one of them: x86 the first source operand, arm64 a
signalling one before a quiet one, and a compiler may swap the operands of
a multiply. leaky's rule (docs/semantics.md, "NaN payloads") fixes the
answer: the data operand's NaN (z, or grad_output for backward), quieted.

Every result here is compared, bit for bit, with oracle_bits.py, which
writes the rule out on bit patterns and never calls leaky. The suite runs
once per kernel path (.ci/run sets LEAKY_KERNELS), and
`test_every_path_gives_the_same_bytes` also runs each supported path in a
subprocess and compares their bytes directly.
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import oracle_bits as ob
import pytest
from hypothesis import given
from hypothesis import strategies as st

import leaky._leaky as ext
from leaky import leaky_relu, leaky_relu_backward, leaky_relu_grad

FLOAT_KINDS = ["e", "f", "d"]
INT_KINDS = ["b", "B", "h", "H", "i", "I", "q", "Q", "?"]


# ---------------------------------------------------------------- values


def from_bits(kind: str, bits: list[int]) -> Any:
    """A 1-d float array of kind holding exactly these bit patterns."""
    return np.array(bits, dtype=ob.unsigned(kind)).view(kind)


def double_of(bits: int) -> float:
    return float(struct.unpack("<d", struct.pack("<Q", bits))[0])


def hexes(bits: list[int], kind: str) -> list[str]:
    digits = ob.WIDTH[kind] // 4
    return [f"0x{b:0{digits}x}" for b in bits]


def nan_patterns(kind: str) -> st.SearchStrategy[int]:
    """Any NaN of kind: either sign, quiet or signalling, any payload."""
    m = ob.MANTISSA[kind]

    def build(negative: bool, is_quiet: bool, payload: int) -> int:
        if not is_quiet and payload == 0:
            payload = 1  # all-zero fraction would be infinity
        sign = ob.sign_bit(kind) if negative else 0
        return sign | ob.exponent_mask(kind) | (ob.quiet_bit(kind) if is_quiet else 0) | payload

    payloads = st.one_of(st.integers(0, (1 << (m - 1)) - 1), st.sampled_from([0, 1, 0x2A]))
    return st.builds(build, st.booleans(), st.booleans(), payloads)


def specials(kind: str) -> list[int]:
    s, e, m = ob.sign_bit(kind), ob.exponent_mask(kind), ob.MANTISSA[kind]
    top = (1 << m) - 1
    one_bits = ob.ONE[kind]
    return [
        0,
        s,  # +-0
        e,
        s | e,  # +-inf
        1,
        s | 1,
        top,
        s | top,  # subnormals, smallest and largest
        1 << m,  # smallest normal
        e - 1,
        s | (e - 1),  # +-max
        one_bits,
        s | one_bits,
    ]


def float_elements(kind: str) -> st.SearchStrategy[int]:
    return st.one_of(
        nan_patterns(kind),
        st.sampled_from(specials(kind)),
        st.integers(0, (1 << ob.WIDTH[kind]) - 1),  # any bits, subnormals included
    )


def int_elements(kind: str) -> st.SearchStrategy[int]:
    if kind == "?":
        return st.integers(0, 1)
    info = np.iinfo(kind)
    edges = [v for v in (0, 1, -1, 2, int(info.min), int(info.max)) if info.min <= v <= info.max]
    return st.one_of(st.integers(int(info.min), int(info.max)), st.sampled_from(edges))


def elements_of(kind: str) -> st.SearchStrategy[int]:
    return float_elements(kind) if kind in FLOAT_KINDS else int_elements(kind)


@dataclass(frozen=True)
class Slope:
    """alpha as passed, and the bits of the double leaky computes with (float(obj))."""

    obj: Any
    label: str

    @property
    def bits(self) -> int:
        return ob.bits_of_double(float(self.obj))

    def __repr__(self) -> str:
        return f"Slope({self.label}, double 0x{self.bits:016x})"


def slope_from(kind: str, bits: int, as_numpy: bool) -> Slope:
    label = f"{'np.' if as_numpy else ''}{kind}:0x{bits:x}"
    if kind == "d":
        value = double_of(bits)
        return Slope(np.float64(value) if as_numpy else value, label)
    return Slope(from_bits(kind, [bits])[0], label)


@st.composite
def nan_slopes(draw: st.DrawFn) -> Slope:
    """A NaN alpha: a Python float or np.float64 with any payload, or a float32/float16 NaN."""
    kind = draw(st.sampled_from(["d", "d", "f", "e"]))
    return slope_from(kind, draw(nan_patterns(kind)), as_numpy=draw(st.booleans()))


ORDINARY_SLOPES = [0.01, -0.3, 0.0, -0.0, 1.5, float("inf"), float("-inf"), 5e-324, 3e38, 1e300]


def slopes() -> st.SearchStrategy[Slope]:
    """Mostly NaN slopes; ordinary ones too, so NaN data is pinned down for them as well."""
    ordinary = st.sampled_from(ORDINARY_SLOPES).map(lambda a: Slope(a, repr(a)))
    return st.one_of(nan_slopes(), nan_slopes(), ordinary)


# ---------------------------------------------------------------- layouts


def laid_out(array: Any, layout: str) -> Any:
    """The same elements as a contiguous, strided, offset or unaligned view."""
    n, size = array.shape[0], array.itemsize
    if layout == "strided":
        wide = np.zeros(2 * n, dtype=array.dtype)
        wide[::2] = array
        return wide[::2]
    if layout == "unaligned" and size > 1:
        raw = np.zeros(n * size + 1, dtype=np.uint8)
        view = np.ndarray((n,), array.dtype, buffer=raw, offset=1)
        view[...] = array
        return view
    if layout == "offset":
        longer = np.zeros(n + 1, dtype=array.dtype)
        longer[1:] = array
        return longer[1:]
    return array.copy()


@contextlib.contextmanager
def tuned(**values: int) -> Iterator[None]:
    old = ext._tune()
    ext._tune(**values)
    try:
        yield
    finally:
        ext._tune(**old)


@contextlib.contextmanager
def run_mode(threads: int | None, streaming: bool) -> Iterator[None]:
    """threads=N: force even tiny arrays across the pool; streaming: every out= streams."""
    values: dict[str, int] = {}
    if threads is not None and threads > 1:
        values.update(gil_threshold=0, parallel_threshold=0)
    if streaming:
        values.update(stream_bytes=0)
    with tuned(**values):
        yield


def assert_bits(actual: Any, expected: list[int], kind: str, what: str) -> None:
    got = ob.result_bits(actual)
    assert len(got) == len(expected)
    bad = [i for i, (g, e) in enumerate(zip(got, expected, strict=True)) if g != e]
    if bad:
        i = bad[0]
        pytest.fail(
            f"{what}: {len(bad)} of {len(got)} elements differ; first at {i}: "
            f"got {hexes([got[i]], kind)[0]}, expected {hexes([expected[i]], kind)[0]}"
        )


# ---------------------------------------------------------------- buffers


@st.composite
def arrays(draw: st.DrawFn, kind: str, size: int | None = None) -> tuple[Any, list[int]]:
    n = draw(st.integers(0, 80)) if size is None else size
    values = draw(st.lists(elements_of(kind), min_size=n, max_size=n))
    array = from_bits(kind, values) if kind in FLOAT_KINDS else np.array(values, dtype=kind)
    return array, values


@given(
    kind=st.sampled_from(FLOAT_KINDS + INT_KINDS),
    data=st.data(),
    slope=slopes(),
    layout=st.sampled_from(["contiguous", "strided", "offset", "unaligned"]),
    threads=st.sampled_from([None, 1, 2, 4]),
    out_mode=st.sampled_from(["new", "out", "streaming out"]),
)
def test_unary_bits(
    kind: str, data: st.DataObject, slope: Slope, layout: str, threads: int | None, out_mode: str
) -> None:
    array, values = data.draw(arrays(kind))
    z = laid_out(array, layout)
    rk = ob.result_kind(kind)
    for name, function, element in [
        ("leaky_relu", leaky_relu, ob.forward),
        ("leaky_relu_grad", leaky_relu_grad, ob.grad),
    ]:
        expected = [element(kind, v, slope.bits) for v in values]
        out = laid_out(np.zeros(len(values), dtype=rk), layout) if out_mode != "new" else None
        with run_mode(threads, out_mode == "streaming out"):
            result = function(z, slope.obj, out=out, threads=threads)
        assert_bits(result, expected, rk, f"{name}({kind} {layout}, {slope})")


@given(
    kinds=st.one_of(
        st.sampled_from(FLOAT_KINDS).map(lambda k: (k, k)),  # the SIMD loops
        st.tuples(
            st.sampled_from(FLOAT_KINDS + INT_KINDS), st.sampled_from(FLOAT_KINDS + INT_KINDS)
        ),
    ),
    data=st.data(),
    slope=slopes(),
    layout=st.sampled_from(["contiguous", "strided", "offset", "unaligned"]),
    threads=st.sampled_from([None, 1, 2, 4]),
    out_mode=st.sampled_from(["new", "out", "streaming out"]),
)
def test_backward_bits(
    kinds: tuple[str, str],
    data: st.DataObject,
    slope: Slope,
    layout: str,
    threads: int | None,
    out_mode: str,
) -> None:
    grad_kind, z_kind = kinds
    g_array, g_values = data.draw(arrays(grad_kind))
    z_array, z_values = data.draw(arrays(z_kind, size=len(g_values)))
    rk = ob.result_kind(grad_kind)
    expected = [
        ob.backward(grad_kind, g, z_kind, z, slope.bits)
        for g, z in zip(g_values, z_values, strict=True)
    ]
    out = laid_out(np.zeros(len(g_values), dtype=rk), layout) if out_mode != "new" else None
    with run_mode(threads, out_mode == "streaming out"):
        result = leaky_relu_backward(
            laid_out(g_array, layout),
            laid_out(z_array, layout),
            slope.obj,
            out=out,
            threads=threads,
        )
    assert_bits(result, expected, rk, f"leaky_relu_backward({grad_kind}, {z_kind}, {slope})")


# ---------------------------------------------------------------- numbers


@given(
    values=st.lists(float_elements("d"), min_size=1, max_size=20),
    grads=st.lists(float_elements("d"), min_size=20, max_size=20),
    slope=slopes(),
)
def test_numbers_give_the_buffer_bits(values: list[int], grads: list[int], slope: Slope) -> None:
    # Python floats in, alone and in lists: the oracle's float64 bits, which the
    # float64 buffer path gives too (test_unary_bits)
    floats = [double_of(b) for b in values]
    gs = [double_of(b) for b in grads[: len(values)]]
    forward = [ob.forward("d", v, slope.bits) for v in values]
    grad = [ob.grad("d", v, slope.bits) for v in values]
    backward = [
        ob.backward("d", g, "d", v, slope.bits)
        for g, v in zip(grads[: len(values)], values, strict=True)
    ]
    assert_bits([leaky_relu(x, slope.obj) for x in floats], forward, "d", "leaky_relu(float)")
    assert_bits(leaky_relu(floats, slope.obj), forward, "d", "leaky_relu(list)")
    assert_bits(leaky_relu(tuple(floats), alpha=slope.obj), forward, "d", "leaky_relu(tuple)")
    assert_bits([leaky_relu_grad(x, slope.obj) for x in floats], grad, "d", "grad(float)")
    assert_bits(leaky_relu_grad(floats, slope.obj), grad, "d", "leaky_relu_grad(list)")
    assert_bits(
        [leaky_relu_backward(g, x, slope.obj) for g, x in zip(gs, floats, strict=True)],
        backward,
        "d",
        "leaky_relu_backward(float, float)",
    )
    assert_bits(leaky_relu_backward(gs, floats, slope.obj), backward, "d", "backward(list)")
    buffer = from_bits("d", values)
    assert_bits(leaky_relu(buffer, slope.obj), forward, "d", "leaky_relu(float64 array)")


@given(
    ints=st.lists(st.integers(-(2**63), 2**63 - 1), min_size=1, max_size=10),
    slope=nan_slopes(),
)
def test_negative_ints_give_the_int64_buffer_bits(ints: list[int], slope: Slope) -> None:
    # a negative int gives the float alpha * z: alpha's NaN, quieted
    negatives = [-abs(i) - 1 for i in ints if -abs(i) - 1 >= -(2**63)]
    expected = [ob.forward("q", i, slope.bits) for i in negatives]
    assert_bits([leaky_relu(i, slope.obj) for i in negatives], expected, "d", "leaky_relu(int)")
    assert_bits(leaky_relu(np.array(negatives, dtype="q"), slope.obj), expected, "d", "int64")


# ---------------------------------------------------------------- the issue's case


def test_issue_11_case() -> None:
    # NaN alpha with payload 0xabc, NaN z (negative, payload 0x123): z's NaN on
    # every element and every path; before, AVX2 float64 gave alpha's NaN in
    # the vector body and z's in the ragged end, AVX-512 alpha's throughout
    alpha = double_of(0x7FF8000000000ABC)
    z = from_bits("d", [0xFFF8000000000123] * 11)
    want = [0xFFF8000000000123] * 11
    assert_bits(leaky_relu(z, alpha), want, "d", "leaky_relu(float64)")
    assert_bits(leaky_relu_backward(z, -z, alpha), want, "d", "leaky_relu_backward(float64)")
    assert_bits(leaky_relu(double_of(want[0]), alpha), want[:1], "d", "leaky_relu(float)")
    z32 = from_bits("f", [0xFFC00123] * 11)
    assert_bits(leaky_relu(z32, alpha), [0xFFC00123] * 11, "f", "leaky_relu(float32)")


@pytest.mark.parametrize("kind", FLOAT_KINDS)
@pytest.mark.parametrize("layout", ["contiguous", "strided"])
def test_signalling_grad_output_is_quieted_at_any_length(kind: str, layout: str) -> None:
    # g * 1.0 where z > 0: a compiler may fold it to g, which leaves a signalling
    # NaN unquieted; main did so in the scalar code of strided runs, single
    # elements and the AVX2 tail, and quieted it in the SIMD body
    signalling = ob.exponent_mask(kind) | 1
    for n in range(1, 40):
        g = laid_out(from_bits(kind, [signalling] * n), layout)
        z = laid_out(from_bits(kind, [ob.ONE[kind]] * n), layout)
        want = [signalling | ob.quiet_bit(kind)] * n
        assert_bits(leaky_relu_backward(g, z, 0.01), want, kind, f"backward, n={n}")
    scalar = leaky_relu_backward(double_of(ob.exponent_mask("d") | 1), 1.0)
    assert_bits([scalar], [ob.exponent_mask("d") | ob.quiet_bit("d") | 1], "d", "number")


@pytest.mark.parametrize(
    "slope_bits", [0x7FF4000000000ABC, 0xFFF8000000000001, 0x7FF0000000000001], ids=hex
)
def test_every_half_with_a_nan_slope(slope_bits: int) -> None:
    # all 65,536 float16 patterns, 2,046 of them NaN, against a NaN slope
    halves = list(range(65536))
    x = from_bits("e", halves)
    g = from_bits("e", halves[::-1])
    alpha = double_of(slope_bits)
    assert_bits(
        leaky_relu(x, alpha), [ob.forward("e", h, slope_bits) for h in halves], "e", "forward"
    )
    assert_bits(
        leaky_relu_grad(x, alpha), [ob.grad("e", h, slope_bits) for h in halves], "e", "grad"
    )
    assert_bits(
        leaky_relu_backward(g, x, alpha),
        [
            ob.backward("e", a, "e", b, slope_bits)
            for a, b in zip(halves[::-1], halves, strict=True)
        ],
        "e",
        "backward",
    )


# ---------------------------------------------------------------- every path, compared


PATH_SCRIPT = r"""
import json, sys
import numpy as np
import leaky._leaky as ext
from leaky import leaky_relu, leaky_relu_backward, leaky_relu_grad

rng = np.random.default_rng(11)
nans = {
    "e": [0x7C01, 0x7E00, 0xFD55, 0x7DFF, 0xFFFF],
    "f": [0x7F800001, 0x7FC00000, 0xFFA00ABC, 0x7FFFFFFF, 0xFFC12345],
    "d": [0x7FF0000000000001, 0x7FF8000000000000, 0xFFF4000000000ABC, 0x7FFFFFFFFFFFFFFF],
}
alphas = [0x7FF8000000000ABC, 0xFFF0000000012345, 0x7FF4000000000001, 0x3F847AE147AE147B]
out = {}
old = ext._tune()
for threads in (1, 4):
    if threads > 1:
        ext._tune(gil_threshold=0, parallel_threshold=0)
    for kind, unsigned in (("e", np.uint16), ("f", np.uint32), ("d", np.uint64)):
        for n in (1, 7, 8, 15, 16, 17, 33, 67):
            bits = rng.integers(0, np.iinfo(unsigned).max, n, dtype=unsigned, endpoint=True)
            bits[::2] = rng.choice(np.array(nans[kind], dtype=unsigned), (n + 1) // 2)
            z = bits.view(kind)
            g = bits[::-1].copy().view(kind)
            for a in alphas:
                alpha = float(np.array([a], np.uint64).view(np.float64)[0])
                key = f"{threads}/{kind}/{n}/{a:x}"
                for name, r in (
                    ("forward", leaky_relu(z, alpha, threads=threads)),
                    ("grad", leaky_relu_grad(z, alpha, threads=threads)),
                    ("backward", leaky_relu_backward(g, z, alpha, threads=threads)),
                ):
                    out[f"{key}/{name}"] = r.view(unsigned).tolist()
    ext._tune(**old)
json.dump({"kernels": ext._kernels, "results": out}, sys.stdout)
"""


def test_every_path_gives_the_same_bytes(tmp_path: Path) -> None:
    runs = {}
    for kernels in ext._supported_kernels:
        done = subprocess.run(
            [sys.executable, "-c", PATH_SCRIPT],
            env={**os.environ, "LEAKY_KERNELS": kernels, "LEAKY_NUM_THREADS": "4"},
            capture_output=True,
            text=True,
            check=True,
        )
        runs[kernels] = json.loads(done.stdout)
        assert runs[kernels]["kernels"] == kernels
    first, *others = ext._supported_kernels
    for other in others:
        for key, bits in runs[first]["results"].items():
            theirs = runs[other]["results"][key]
            kind = key.split("/")[1]
            assert theirs == bits, (
                f"{other} differs from {first} at {key}: "
                f"{hexes(theirs, kind)} vs {hexes(bits, kind)}"
            )
