"""Property fuzzing: arbitrary NumPy layouts over one byte buffer, against the oracle.

Every example lays out its operands inside a single ``uint8`` buffer of random
bytes: any supported dtype, 0-d to 5-d, strides that are zero, negative, not
multiples of the item size or larger than it, and byte offsets that leave the
views unaligned.  ``out`` is absent, separate, the input itself, or another
view into the same buffer that overlaps the inputs in any way; it may be
transposed, F-ordered or flipped, and it may overlap itself (stride 0,
sliding windows, strides below the item size), alone or as the input
itself.  The results must equal the pure-Python oracle bit for bit, and no
byte of the buffer outside ``out`` may change.  An ``out`` that overlaps
itself is checked as NumPy computes it: every element from the inputs as
they were, written through the view in C order, the last write winning.

Each call runs with ``threads`` unset, 1, 2 or 4; with 2 or 4 the size
thresholds are lowered (``_tune``) so that even these small arrays are split
across the pool and streamed.  ``.ci/run`` repeats the suite once per kernel
path (``LEAKY_KERNELS``).

The normal suite runs these with the "ci" profile (300 examples each);
``.ci/fuzz.sh`` runs them far longer (LEAKY_HYPOTHESIS_PROFILE=fuzz).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import oracle
from conftest import ALL_DTYPES, assert_matches, elements
from hypothesis import example, given
from hypothesis import strategies as st

import leaky
from leaky import leaky_relu, leaky_relu_backward, leaky_relu_grad

MAX_DIMS = 5
MAX_SIDE = 4

alphas = st.one_of(
    st.sampled_from([0.01, 0.0, -0.0, 1.0, 1.5, -0.3, 2.0, math.inf, -math.inf, math.nan]),
    st.floats(width=64),
)


@dataclass(frozen=True)
class Layout:
    """A view's place in the buffer: byte offset of element 0, shape, byte strides."""

    dtype: str
    shape: tuple[int, ...]
    strides: tuple[int, ...]
    offset: int

    @property
    def itemsize(self) -> int:
        return np.dtype(self.dtype).itemsize

    def extent(self) -> tuple[int, int]:
        """Lowest and one-past-highest byte the view touches, relative to offset."""
        lo = hi = 0
        for side, stride in zip(self.shape, self.strides, strict=True):
            if side == 0:
                return 0, 0
            span = stride * (side - 1)
            lo, hi = lo + min(span, 0), hi + max(span, 0)
        return lo, hi + self.itemsize

    def byte_offsets(self) -> Any:
        """Every byte the view covers, as absolute positions in the buffer."""
        if 0 in self.shape:
            return np.zeros(0, dtype=np.int64)
        starts = np.array([self.offset], dtype=np.int64)
        for side, stride in zip(self.shape, self.strides, strict=True):
            starts = (starts[:, None] + stride * np.arange(side, dtype=np.int64)).ravel()
        return (starts[:, None] + np.arange(self.itemsize)).ravel()

    def element_starts(self) -> Any:
        """The first byte of each element, in C order."""
        return self.byte_offsets().reshape(-1, self.itemsize)[:, 0] if self.itemsize else []

    def view(self, buffer: Any) -> Any:
        return np.ndarray(
            self.shape, self.dtype, buffer=buffer, offset=self.offset, strides=self.strides
        )


def shapes(min_dims: int = 0) -> st.SearchStrategy[tuple[int, ...]]:
    return st.lists(st.integers(0, MAX_SIDE), min_size=min_dims, max_size=MAX_DIMS).map(tuple)


@st.composite
def input_strides(draw: st.DrawFn, shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    """Any byte strides: zero (broadcast), negative, odd, or plain C order."""
    if draw(st.booleans()):
        strides, step = [], itemsize
        for side in reversed(shape):
            strides.append(step)
            step *= max(side, 1)
        return tuple(reversed(strides))
    return tuple(
        draw(st.integers(-3 * itemsize * MAX_SIDE, 3 * itemsize * MAX_SIDE)) for _ in shape
    )


@st.composite
def injective_strides(draw: st.DrawFn, shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    """Strides where no two elements share a byte (a writable out): C order of a
    permutation of the axes, each axis stepped by 1 or 2 and maybe reversed."""
    order = draw(st.permutations(range(len(shape))))
    strides = [0] * len(shape)
    step = itemsize
    for axis in reversed(order):
        stride = step * draw(st.sampled_from([1, 2]))
        strides[axis] = stride * draw(st.sampled_from([1, -1]))
        step = stride * max(shape[axis], 1)
    return tuple(strides)


@st.composite
def aliasing_strides(draw: st.DrawFn, shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    """A writable out that may overlap itself: stride 0 on some axis, a sliding
    window (an axis stepping less than the axes inside it span), a stride below
    the item size, or any of input_strides' strides."""
    how = draw(st.sampled_from(["zero", "window", "small", "any"]))
    if how == "any" or not shape:
        return tuple(draw(input_strides(shape, itemsize)))
    strides = list(draw(injective_strides(shape, itemsize)))
    axis = draw(st.integers(0, len(shape) - 1))
    if how == "zero":
        strides[axis] = 0
    elif how == "window":
        strides[axis] = draw(st.sampled_from([1, -1])) * itemsize * draw(st.integers(1, 3))
    else:
        strides[axis] = draw(st.integers(-itemsize + 1, itemsize - 1))
    return tuple(strides)


STRIDES_OF = {"input": input_strides, "out": injective_strides, "aliasing": aliasing_strides}


@dataclass
class Arena:
    buffer: Any
    layouts: list[Layout]


@st.composite
def arena(draw: st.DrawFn, specs: list[tuple[str, tuple[int, ...], Any]]) -> Arena:
    """One buffer holding a view per spec (dtype, shape, role), anywhere in it.

    The role picks the strides: "input" any, "out" (or True) a writable out
    that never overlaps itself, "aliasing" one that may; False is "input".

    Views are placed at random byte positions in a buffer just large enough
    for all of them, so they overlap each other often and by any amount.
    """
    shapes_and_strides = []
    for dtype, shape, role in specs:
        itemsize = np.dtype(dtype).itemsize
        strat = STRIDES_OF[{True: "out", False: "input"}.get(role, role)]
        shapes_and_strides.append((dtype, shape, draw(strat(shape, itemsize))))
    spans = []
    for dtype, shape, strides in shapes_and_strides:
        lo, hi = Layout(dtype, shape, strides, 0).extent()
        spans.append((lo, hi))
    size = max([hi - lo for lo, hi in spans] + [1]) + draw(st.integers(0, 24))
    layouts = []
    for (dtype, shape, strides), (lo, hi) in zip(shapes_and_strides, spans, strict=True):
        start = draw(st.integers(0, size - (hi - lo)))  # unaligned positions included
        layouts.append(Layout(dtype, shape, strides, start - lo))
    raw = draw(st.binary(min_size=size, max_size=size))
    buffer = np.frombuffer(bytearray(raw), dtype=np.uint8).copy()
    for layout in layouts:
        if layout.dtype == "?":  # a bool byte other than 0 or 1 is no bool
            covered = layout.byte_offsets()
            buffer[covered] &= 1  # before any snapshot: the inputs as leaky sees them
    return Arena(buffer, layouts)


def result_char(dtype: str) -> str:
    return dtype if dtype in ("e", "f") else "d"


def snapshot(view: Any) -> Any:
    """A C-order copy that owns its memory: the input as it was before the call."""
    return np.array(view, copy=True, order="C")


def check_untouched(before: Any, after: Any, out: Layout | None) -> None:
    keep = np.ones(before.size, dtype=bool)
    if out is not None:
        keep[out.byte_offsets()] = False
    assert before[keep].tobytes() == after[keep].tobytes(), "bytes outside out changed"


def pack(kind: str, value: float) -> bytes:
    """A result element's bytes (float16 values are bit patterns)."""
    if kind == "e":
        return bytes(np.array(int(value), dtype=np.uint16).tobytes())
    return bytes(np.array(value, dtype=kind).tobytes())


def check_written_through(
    before: Any, after: Any, out: Layout, expected: list[float], kind: str, alpha: float
) -> None:
    """The separate-out oracle for an out that may overlap itself: the expected
    elements written into a copy of the buffer through out's view in C order, the
    last write winning (what NumPy gives), against the whole buffer, bit for bit.
    NaN bytes whose payload is the CPU's business (float32/64, or float16 with a
    NaN alpha: oracle.same_result) only need to be a NaN where one element owns them.
    """
    want = before.copy()
    owner = np.full(before.size, -1, dtype=np.int64)
    loose = np.zeros(before.size, dtype=bool)
    size = out.itemsize
    starts = out.element_starts()
    for index, (start, value) in enumerate(zip(starts, expected, strict=True)):
        want[start : start + size] = np.frombuffer(pack(kind, value), dtype=np.uint8)
        owner[start : start + size] = index
        nan = math.isnan(value) if kind != "e" else oracle.f16_is_nan(int(value))
        loose[start : start + size] = nan and (kind != "e" or math.isnan(alpha))
    mismatch = np.flatnonzero((want != after) & ~loose)
    assert mismatch.size == 0, (
        f"{mismatch.size} bytes differ, first at {mismatch[:8].tolist()}: "
        f"got {after[mismatch[:8]].tolist()}, want {want[mismatch[:8]].tolist()}"
    )
    for index, start in enumerate(starts):
        if loose[start] and (owner[start : start + size] == index).all():
            got = np.frombuffer(after[start : start + size].tobytes(), dtype=kind)[0]
            assert np.isnan(got), (start, got)


@contextlib.contextmanager
def pool_split(threads: int | None) -> Iterator[dict[str, Any]]:
    """Call kwargs for `threads`; for 2 or more, small arrays are split and streamed."""
    if threads is None or threads == 1:
        yield {} if threads is None else {"threads": 1}
        return
    ext = leaky._leaky
    saved = ext._tune()
    ext._tune(gil_threshold=1, parallel_threshold=1, stream_bytes=0)
    try:
        yield {"threads": threads}
    finally:
        ext._tune(**saved)


thread_counts = st.sampled_from([None, 1, 2, 4])

OUT_MODES = ["none", "anywhere", "in place", "aliasing", "in place aliasing"]
INPUT_ROLE = {"in place": "out", "in place aliasing": "aliasing"}


@st.composite
def unary_case(draw: st.DrawFn) -> tuple[Arena, str]:
    dtype = draw(st.sampled_from(ALL_DTYPES))
    shape = draw(shapes())
    mode = draw(st.sampled_from(OUT_MODES))
    if mode.startswith("in place") and dtype not in ("e", "f", "d"):
        mode = "anywhere"  # integer inputs have float64 results: no in-place
    specs = [(dtype, shape, INPUT_ROLE.get(mode, "input"))]
    if mode in ("anywhere", "aliasing"):
        specs.append((result_char(dtype), shape, "out" if mode == "anywhere" else "aliasing"))
    made = draw(arena(specs))
    return made, mode


def check_out(
    before: Any, made: Arena, out: Layout, result: Any, expected: list[float], alpha: float
) -> None:
    """A separate out's elements, or, for an out that overlaps itself, the buffer."""
    kind = np.dtype(out.dtype).char
    covered = out.byte_offsets()
    if len(np.unique(covered)) == covered.size:
        assert_matches(result, expected, kind, alpha)
        check_untouched(before, made.buffer, out)
    else:
        check_written_through(before, made.buffer, out, expected, kind, alpha)


def run_unary(
    func: Any, element: Any, made: Arena, mode: str, alpha: float, threads: int | None
) -> None:
    layout = made.layouts[0]
    x = layout.view(made.buffer)
    kind = x.dtype.char
    expected = [element(kind, v, alpha) for v in elements(snapshot(x))]
    before = made.buffer.copy()
    with pool_split(threads) as kwargs:
        if mode == "none":
            result = func(x, alpha, **kwargs)
        else:
            out_layout = made.layouts[-1]
            out = out_layout.view(made.buffer)
            assert func(x, alpha, out=out, **kwargs) is out
    if mode == "none":
        assert_matches(result, expected, result_char(kind), alpha)
        check_untouched(before, made.buffer, None)
    else:
        check_out(before, made, out_layout, out, expected, alpha)


def stride_zero_in_place(value: float) -> tuple[Arena, str]:
    """Issue 11's case, pinned for the derandomized ci profile: one float64
    read and written twice through a stride-0 view, in place."""
    buffer = np.frombuffer(np.array([value]).tobytes(), dtype=np.uint8).copy()
    return Arena(buffer, [Layout("d", (2,), (0,), 0)]), "in place aliasing"


@given(unary_case(), alphas, thread_counts)
@example(stride_zero_in_place(-2.0), 3.0, None)  # once -6; applied twice it was -18
def test_forward_any_layout(case: tuple[Arena, str], alpha: float, threads: int | None) -> None:
    run_unary(leaky_relu, oracle.forward_element, *case, alpha, threads)


@given(unary_case(), alphas, thread_counts)
@example(stride_zero_in_place(-2.0), 2.0, 2)  # alpha; applied twice it was grad(2.0) = 1
def test_grad_any_layout(case: tuple[Arena, str], alpha: float, threads: int | None) -> None:
    run_unary(leaky_relu_grad, oracle.grad_element, *case, alpha, threads)


@st.composite
def backward_case(draw: st.DrawFn) -> tuple[Arena, str]:
    g_dtype = draw(st.sampled_from(ALL_DTYPES))
    z_dtype = draw(st.sampled_from(ALL_DTYPES))
    shape = draw(shapes())
    mode = draw(st.sampled_from(OUT_MODES))
    if mode.startswith("in place") and g_dtype not in ("e", "f", "d"):
        mode = "anywhere"
    specs = [(g_dtype, shape, INPUT_ROLE.get(mode, "input")), (z_dtype, shape, "input")]
    if mode in ("anywhere", "aliasing"):
        specs.append((result_char(g_dtype), shape, "out" if mode == "anywhere" else "aliasing"))
    return draw(arena(specs)), mode


@given(backward_case(), alphas, thread_counts)
def test_backward_any_layout(case: tuple[Arena, str], alpha: float, threads: int | None) -> None:
    made, mode = case
    g_layout, z_layout = made.layouts[0], made.layouts[1]
    g, z = g_layout.view(made.buffer), z_layout.view(made.buffer)
    gk, zk = g.dtype.char, z.dtype.char
    expected = [
        oracle.backward_element(gk, gv, zk, zv, alpha)
        for gv, zv in zip(elements(snapshot(g)), elements(snapshot(z)), strict=True)
    ]
    before = made.buffer.copy()
    with pool_split(threads) as kwargs:
        if mode == "none":
            result = leaky_relu_backward(g, z, alpha, **kwargs)
        else:
            out_layout = g_layout if mode.startswith("in place") else made.layouts[2]
            out = out_layout.view(made.buffer)
            assert leaky_relu_backward(g, z, alpha, out=out, **kwargs) is out
    if mode == "none":
        assert_matches(result, expected, result_char(gk), alpha)
        check_untouched(before, made.buffer, None)
    else:
        check_out(before, made, out_layout, out, expected, alpha)


@given(st.data())
def test_layouts_are_what_they_claim(data: st.DataObject) -> None:
    """The generator itself: views land inside the buffer, outs never self-overlap."""
    dtype = data.draw(st.sampled_from(ALL_DTYPES))
    shape = data.draw(shapes(min_dims=1))
    made = data.draw(arena([(dtype, shape, True), (dtype, shape, False)]))
    out_bytes = made.layouts[0].byte_offsets()
    assert len(np.unique(out_bytes)) == len(out_bytes)
    for layout in made.layouts:
        covered = layout.byte_offsets()
        if covered.size:
            assert covered.min() >= 0 and covered.max() < made.buffer.size
        assert layout.view(made.buffer).shape == shape
