"""PyTorch tensors through DLPack: values against F.leaky_relu and the oracle, layouts,
out= on tensors, and leaky's own errors for what cannot work.

Needs the `frameworks` extra (torch==2.13.0, a CPU build); skips saying so where it
is absent, and fails instead under LEAKY_REQUIRE_OPTIONAL=1, as .ci/run sets.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import oracle
import oracle_bits
import pytest
from optional import require
from test_refcounts import check_stable

from leaky import leaky_relu, leaky_relu_backward, leaky_relu_grad

torch = require("torch", "frameworks")
F = torch.nn.functional
aten = torch.ops.aten

ALPHAS = [0.01, 0.2, 1.5, -0.3, 0.0]
FLOATS = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
INTS = [torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8, torch.bool]


def bits(t: Any) -> Any:
    """A float tensor's elements as integers (NaN payloads included)."""
    width = {2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()]
    return t.contiguous().view(width)


def assert_same(got: Any, expected: Any) -> None:
    """Same type, dtype, shape; bit for bit where expected is no NaN, NaN where it is."""
    assert isinstance(got, torch.Tensor)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    nan = expected.isnan()
    assert torch.equal(got.isnan(), nan)
    assert torch.equal(bits(got)[~nan], bits(expected)[~nan])


def values(dtype: Any, n: int = 4099) -> Any:
    """Every kind of value, in a length that leaves a ragged SIMD tail."""
    x = torch.linspace(-300, 300, n, dtype=torch.float64)
    x[::7] = torch.tensor([0.0, -0.0, float("inf"), -float("inf"), float("nan"), 1e-40, -1e-40])[
        : len(x[::7])
    ].repeat(len(x[::7]) // 7 + 1)[: len(x[::7])]
    return x.to(dtype)


@pytest.mark.parametrize("alpha", ALPHAS)
@pytest.mark.parametrize("dtype", FLOATS, ids=str)
def test_float_dtypes_match_pytorch(dtype: Any, alpha: float) -> None:
    x = values(dtype)
    g = values(dtype).flip(0)
    assert_same(leaky_relu(x, alpha), F.leaky_relu(x, alpha))
    assert_same(
        leaky_relu_grad(x, alpha), aten.leaky_relu_backward(torch.ones_like(x), x, alpha, False)
    )
    assert_same(leaky_relu_backward(g, x, alpha), aten.leaky_relu_backward(g, x, alpha, False))


def test_bfloat16_vectors_through_torch() -> None:
    """The vectors' own inputs, as torch bfloat16 tensors: every non-NaN bit matches."""
    with np.load(Path(__file__).parent / "data" / "bfloat16_pytorch.npz") as npz:
        x = torch.from_numpy(npz["x_bits"].astype(np.int16)).view(torch.bfloat16)
        for i, alpha in enumerate(npz["alphas"]):
            expected = torch.from_numpy(npz["leaky_relu_bits"][i].astype(np.int16))
            got = bits(leaky_relu(x, float(alpha)))
            nan = expected.view(torch.bfloat16).isnan()
            assert torch.equal(got[~nan], expected[~nan])
            # a NaN input comes back as itself, quieted (docs/semantics.md)
            assert torch.equal(got[nan & x.isnan()], bits(x)[nan & x.isnan()] | 0x0040)


@pytest.mark.parametrize("dtype", INTS, ids=str)
def test_integer_and_bool_tensors_compute_as_float64(dtype: Any) -> None:
    x = (torch.arange(-60, 60) * 3).to(dtype)
    alpha = 0.3
    got = leaky_relu(x, alpha)
    assert got.dtype == torch.float64
    expected = [oracle.forward_element("d", float(v), alpha) for v in x.tolist()]
    assert got.tolist() == expected
    assert leaky_relu_grad(x, alpha).tolist() == [
        oracle.grad_element("d", float(v), alpha) for v in x.tolist()
    ]


def layouts() -> dict[str, Callable[[], Any]]:
    base = torch.linspace(-3, 3, 120)
    return {
        "transposed": lambda: base.reshape(10, 12).t(),
        "steps": lambda: base.reshape(10, 12)[::2, ::3],
        "storage offset": lambda: base[17:90],
        "expanded": lambda: base[:12].expand(5, 12),
        "0-d": lambda: base[5].clone().reshape(()),
        "empty": lambda: base[:0].reshape(0, 4),
        "permuted 3-d": lambda: base.reshape(4, 5, 6).permute(2, 0, 1),
        "channels_last": lambda: base.reshape(1, 2, 6, 10).contiguous(
            memory_format=torch.channels_last
        ),
    }


@pytest.mark.parametrize("name", list(layouts()))
def test_layouts(name: str) -> None:
    x = layouts()[name]()
    got, expected = leaky_relu(x, 0.2), F.leaky_relu(x, 0.2)
    assert_same(got, expected)
    assert got.stride() == expected.stride()  # torch keeps a tensor's layout, and so does leaky
    got = leaky_relu_backward(x, x, 0.2)
    expected = aten.leaky_relu_backward(x, x, 0.2, False)
    assert_same(got, expected)
    assert got.stride() == expected.stride()


def test_zero_d_gives_a_zero_d_tensor() -> None:
    x = torch.tensor(-2.0)
    for got in (leaky_relu(x), leaky_relu_grad(x), leaky_relu_backward(x, x)):
        assert isinstance(got, torch.Tensor) and got.shape == ()


def test_out_and_in_place() -> None:
    x = values(torch.float32)
    expected = F.leaky_relu(x, 0.2)
    out = torch.empty_like(x)
    assert leaky_relu(x, 0.2, out=out) is out
    assert_same(out, expected)
    y = x.clone()
    assert leaky_relu(y, 0.2, out=y) is y
    assert_same(y, expected)
    # transposed out, in place on a transposed view
    m = torch.linspace(-2, 2, 30).reshape(5, 6)
    want = F.leaky_relu(m, 0.5)
    leaky_relu(m.t(), 0.5, out=m.t())
    assert_same(m, want)
    # overlapping: the output one element ahead of the input
    z = torch.linspace(-4, 4, 9, dtype=torch.float64)
    before = z.clone()
    leaky_relu(z[:-1], 0.5, out=z[1:])
    assert_same(z[1:], F.leaky_relu(before[:-1], 0.5))
    # a bfloat16 tensor into a bfloat16 out
    b = values(torch.bfloat16)
    out_b = torch.empty_like(b)
    leaky_relu_backward(b, b, 0.2, out=out_b)
    assert_same(out_b, aten.leaky_relu_backward(b, b, 0.2, False))


def test_out_errors_write_nothing() -> None:
    x = torch.tensor([-1.0, 2.0])
    cases: list[tuple[Any, type[BaseException], str]] = [
        (
            torch.zeros(2, dtype=torch.float64),
            TypeError,
            "has dtype float64 but the result is float32",
        ),
        (torch.zeros(3), ValueError, r"'out' has shape \(3,\) but the result has shape \(2,\)"),
        (torch.zeros(2, dtype=torch.bfloat16), TypeError, "has dtype bfloat16"),
        (torch.zeros(2, requires_grad=True), TypeError, r"'out' is a tensor that requires grad"),
    ]
    for out, exc, message in cases:
        before = out.detach().clone()
        with pytest.raises(exc, match=message):
            leaky_relu(x, out=out)
        assert torch.equal(out.detach(), before)


def test_requires_grad_is_a_type_error() -> None:
    x = torch.tensor([-1.0, 2.0], requires_grad=True)
    zero_d = torch.tensor(-1.0, requires_grad=True)  # used to record autograd by accident
    cases: list[tuple[Callable[[], Any], str]] = [
        (lambda: leaky_relu(x), "z"),
        (lambda: leaky_relu_grad(zero_d), "z"),
        (lambda: leaky_relu_backward(x.detach(), x), "z"),
        (lambda: leaky_relu_backward(x, x.detach()), "grad_output"),
    ]
    for call, where in cases:
        with pytest.raises(
            TypeError,
            match=rf"argument '{where}' is a tensor that requires "
            r"grad; .*call it on `t.detach\(\)`",
        ):
            call()
    assert isinstance(leaky_relu(x.detach()), torch.Tensor)


@pytest.mark.parametrize(
    ("dtype", "name"),
    [
        (torch.complex64, "complex64"),
        (torch.complex128, "complex128"),
        (torch.float8_e4m3fn, "float8_e4m3fn"),
        (torch.float8_e5m2, "float8_e5m2"),
    ],
    ids=str,
)
def test_unsupported_dtypes_are_named(dtype: Any, name: str) -> None:
    x = torch.zeros(3, dtype=dtype)
    with pytest.raises(TypeError, match=rf"argument 'z' has dtype {name}, which leaky cannot"):
        leaky_relu(x)


def test_a_device_that_is_not_the_cpu() -> None:
    """No CUDA here: "meta", which DLPack has no code for (test_dlpack.py covers CUDA's)."""
    with pytest.raises(
        TypeError,
        match=r"argument 'z' is on device 'meta', but leaky runs on "
        r"the CPU; move it with `.cpu\(\)`",
    ):
        leaky_relu(torch.zeros(3, device="meta"))


def test_mixing_tensors_with_numpy_and_back() -> None:
    g = torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64)
    z = np.array([-1.0, 1.0, -1.0])
    got = leaky_relu_backward(g, z, 0.5)
    assert isinstance(got, torch.Tensor) and got.tolist() == [0.5, -2.0, 1.5]
    back = leaky_relu_backward(z, g, 0.5)
    assert isinstance(back, np.ndarray) and back.tolist() == [-1.0, 0.5, -1.0]


def test_backward_mixed_dtypes_follow_the_oracle() -> None:
    g = torch.tensor([1.5, -2.0, 3.0, 0.25], dtype=torch.bfloat16)
    z = torch.tensor([-1.0, 1.0, float("nan"), 0.0], dtype=torch.float16)
    alpha = 0.3
    got = leaky_relu_backward(g, z, alpha)
    assert got.dtype == torch.bfloat16
    alpha_bits = oracle_bits.bits_of_double(alpha)
    want = [
        oracle_bits.backward("bf16", int(gb) & 0xFFFF, "e", int(zb) & 0xFFFF, alpha_bits)
        for gb, zb in zip(bits(g).tolist(), bits(z).tolist(), strict=True)
    ]
    assert [b & 0xFFFF for b in bits(got).tolist()] == want


def test_refcounts_stay_put() -> None:
    x = torch.linspace(-1, 1, 50)
    out = torch.empty(50)
    bad = torch.zeros(3, dtype=torch.complex64)
    alpha = 0.25
    check_stable(lambda: leaky_relu(x, alpha), [x, alpha])
    check_stable(lambda: leaky_relu(x, alpha, out=out), [x, alpha, out])
    check_stable(lambda: leaky_relu_backward(x, x, alpha, out=out), [x, out])
    check_stable(lambda: leaky_relu(bad), [bad], TypeError)
    check_stable(lambda: leaky_relu(x, out=bad), [x, bad], TypeError)


def test_results_are_wrapped_without_a_copy() -> None:
    from dlpack_exporter import consume, exporter_of

    result = leaky_relu(exporter_of(np.zeros(1000, np.float32)))  # a ResultBuffer
    address = consume(result, max_version=(1, 0)).data
    assert torch.from_dlpack(result).data_ptr() == address


# ---------------------------------------------------------------- PyTorch's semantics
#
# What a torch tensor carries beyond its memory, with torch itself as the oracle:
# its version counter, the negative and conjugate bits, zero tensors, inference
# tensors, leaves that require grad.  DLPack says none of it, so leaky must.


def bumps(write: Callable[[Any], Any], out: Any) -> int:
    """How far write(out) moves out's version counter."""
    before = out._version
    write(out)
    return int(out._version - before)


def test_out_bumps_the_version_counter_as_torch_out_does() -> None:
    x = values(torch.float32, 64)
    g = values(torch.float32, 64).flip(0)
    leaky_writes: list[Callable[[Any], Any]] = [
        lambda o: leaky_relu(x, 0.2, out=o),
        lambda o: leaky_relu_grad(x, 0.2, out=o),
        lambda o: leaky_relu_backward(g, x, 0.2, out=o),
    ]
    for write in leaky_writes:
        expected = bumps(lambda o: torch._C._nn.leaky_relu(x, 0.2, out=o), torch.empty(64))
        assert expected >= 1
        assert bumps(write, torch.empty(64)) == expected
    # in place, and through a view: the counter is shared with the base, as torch's is
    y = x.clone()
    assert bumps(lambda o: leaky_relu(o, 0.2, out=o), y) == 1
    m = torch.zeros(8, 8)
    before = m._version
    leaky_relu(x.reshape(8, 8), 0.2, out=m.t())
    twin = torch.zeros(8, 8)
    torch._C._nn.leaky_relu(x.reshape(8, 8), 0.2, out=twin.t())
    assert m._version - before == twin._version
    assert_same(m, twin)
    # an error before the write moves nothing
    out = torch.empty(3)
    before = out._version
    with pytest.raises(ValueError, match="has shape"):
        leaky_relu(x, out=out)
    assert out._version == before


def test_autograd_sees_a_write_into_a_saved_tensor() -> None:
    """The issue's reproducer: torch's own in-place op and leaky's out= both make
    backward() refuse, instead of a gradient computed from the overwritten w."""
    message = "modified by an inplace operation"
    w = torch.tensor([-1.0, 2.0, -3.0], requires_grad=True)
    y = (w * w).sum()
    F.leaky_relu_(w.detach(), 0.5)
    with pytest.raises(RuntimeError, match=message):
        y.backward()
    w = torch.tensor([-1.0, 2.0, -3.0], requires_grad=True)
    y = (w * w).sum()
    leaky_relu(w.detach(), 0.5, out=w.detach())
    with pytest.raises(RuntimeError, match=message):
        y.backward()
    assert w.grad is None


@pytest.mark.parametrize("dtype", FLOATS, ids=str)
def test_negative_bit_inputs_are_resolved(dtype: Any) -> None:
    x = values(dtype, 257)
    n = torch._neg_view(x)
    g = torch._neg_view(values(dtype, 257).flip(0))
    assert n.is_neg() and g.is_neg()
    assert_same(leaky_relu(n, 0.2), F.leaky_relu(n, 0.2))
    assert_same(
        leaky_relu_grad(n, 0.2), aten.leaky_relu_backward(torch.ones_like(n), n, 0.2, False)
    )
    assert_same(leaky_relu_backward(g, n, 0.2), aten.leaky_relu_backward(g, n, 0.2, False))
    assert_same(leaky_relu_backward(g, x, 0.2), aten.leaky_relu_backward(g, x, 0.2, False))
    assert n.is_neg() and torch.equal(bits(torch._neg_view(n)), bits(x))  # untouched
    # as out= of a normal tensor, and in place from a view of a neg view
    out = torch.empty_like(x)
    leaky_relu(n[::2], 0.2, out=out[::2])
    assert_same(out[::2], F.leaky_relu(n[::2], 0.2))


def test_negative_bit_out_is_refused() -> None:
    """Written through DLPack, a neg view would store the negated results; torch's own
    out= writes the true values.  leaky refuses and writes nothing."""
    x = torch.tensor([-2.0, 1.0, -4.0])
    memory = torch.tensor([7.0, 7.0, 7.0])
    n = torch._neg_view(memory)
    twin = torch._neg_view(memory.clone())
    torch._C._nn.leaky_relu(x, 0.1, out=twin)
    assert_same(twin.resolve_neg(), F.leaky_relu(x, 0.1))  # what torch makes of it
    before = n._version
    with pytest.raises(
        TypeError,
        match=r"argument 'out' has torch's negative bit set .*"
        r"`t\.resolve_neg\(\)`",
    ):
        leaky_relu(x, 0.1, out=n)
    assert memory.tolist() == [7.0, 7.0, 7.0] and n._version == before
    with pytest.raises(TypeError, match="negative bit"):
        leaky_relu_backward(x, x, out=n)
    assert memory.tolist() == [7.0, 7.0, 7.0]


def test_conjugate_bit_is_refused_as_torch_refuses_complex() -> None:
    c = torch.tensor([1 - 2j, -3 + 1j], dtype=torch.complex64).conj()
    assert c.is_conj()
    with pytest.raises(NotImplementedError):
        F.leaky_relu(c, 0.1)  # torch computes no complex leaky_relu either
    with pytest.raises(
        TypeError,
        match=r"argument 'z' is a complex tensor with torch's "
        r"conjugate bit set; leaky cannot compute complex",
    ) as info:
        leaky_relu(c, 0.1)
    assert isinstance(info.value.__cause__, BufferError)
    out = torch.zeros(2, dtype=torch.complex64).conj()
    with pytest.raises(TypeError, match=r"argument 'out' is a complex tensor with torch's"):
        leaky_relu(torch.zeros(2), out=out)


def test_zero_tensors() -> None:
    """torch._efficientzerotensor exports a NULL data pointer: as an input it is
    materialized (F.leaky_relu's values); as out= it is refused, as torch refuses
    any in-place write into one."""
    z = torch._efficientzerotensor(5)
    x = torch.tensor([-1.0, 2.0, -3.0, 0.5, -0.0])
    assert_same(leaky_relu(z, 0.2), F.leaky_relu(z, 0.2))
    assert_same(leaky_relu_grad(z, 0.2), aten.leaky_relu_backward(torch.ones(5), z, 0.2, False))
    assert_same(leaky_relu_backward(z, x, 0.2), aten.leaky_relu_backward(z, x, 0.2, False))
    with pytest.raises(RuntimeError, match="ZeroTensors are immutable"):
        F.leaky_relu_(torch._efficientzerotensor(5), 0.2)
    with pytest.raises(ValueError, match=r"argument 'out' is a zero tensor .*`t\.clone\(\)`"):
        leaky_relu(x, 0.2, out=torch._efficientzerotensor(5))


def test_inference_tensors_follow_torchs_in_place_rule() -> None:
    x = torch.tensor([-1.0, 2.0, -3.0])
    with torch.inference_mode():
        it = torch.tensor([7.0, 7.0, 7.0])
    assert it.is_inference()
    # as an input, anywhere
    assert_same(leaky_relu(it * -1, 0.5), F.leaky_relu(it * -1, 0.5))
    # as out= outside inference mode: refused, as torch refuses its in-place ops
    with pytest.raises(RuntimeError, match="Inplace update to inference tensor outside"):
        F.leaky_relu_(it, 0.5)
    with pytest.raises(
        ValueError,
        match=r"argument 'out' is an inference tensor, .*"
        r"outside torch\.inference_mode\(\)",
    ):
        leaky_relu(x, 0.5, out=it)
    assert it.tolist() == [7.0, 7.0, 7.0]
    # inside inference mode: written, as torch writes it (it has no version counter)
    with torch.inference_mode():
        twin = it.clone()
        torch._C._nn.leaky_relu(x, 0.5, out=twin)
        assert leaky_relu(x, 0.5, out=it) is it
    assert_same(it, twin)
    # a normal tensor written inside inference mode still has its counter bumped
    plain, plain_twin = torch.empty(3), torch.empty(3)
    with torch.inference_mode():
        expected = bumps(lambda o: torch._C._nn.leaky_relu(x, 0.5, out=o), plain_twin)
        assert bumps(lambda o: leaky_relu(x, 0.5, out=o), plain) == expected == 1


def test_out_a_leaf_that_requires_grad() -> None:
    """torch refuses in-place ops on a leaf that requires grad; so does leaky.  Its
    detached view is written, and the leaf's version counter says so, as torch's
    in-place op on the detached view does."""
    x = torch.tensor([-1.0, 2.0, -3.0])
    w = torch.tensor([5.0, 5.0, 5.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="a leaf Variable that requires grad"):
        F.leaky_relu_(w, 0.5)
    with pytest.raises(RuntimeError, match="don't support automatic differentiation"):
        torch._C._nn.leaky_relu(x, 0.5, out=w)
    with pytest.raises(
        TypeError,
        match=r"argument 'out' is a tensor that requires grad.*"
        r"`t\.detach\(\)`, whose version counter autograd checks",
    ):
        leaky_relu(x, 0.5, out=w)
    assert w.tolist() == [5.0, 5.0, 5.0] and w._version == 0
    twin = torch.tensor([5.0, 5.0, 5.0], requires_grad=True)
    torch._C._nn.leaky_relu(x, 0.5, out=twin.detach())
    leaky_relu(x, 0.5, out=w.detach())
    assert_same(w.detach(), twin.detach())
    assert w._version == twin._version == 1


def test_flag_checks_keep_refcounts() -> None:
    n = torch._neg_view(torch.linspace(-1, 1, 10))
    z = torch._efficientzerotensor(10)
    out = torch.empty(10)
    with torch.inference_mode():
        it = torch.empty(10)
    check_stable(lambda: leaky_relu(n, 0.5), [n])
    check_stable(lambda: leaky_relu(z, 0.5), [z])
    check_stable(lambda: leaky_relu(n, 0.5, out=out), [n, out])
    check_stable(lambda: leaky_relu(out, 0.5, out=n), [n, out], TypeError)
    check_stable(lambda: leaky_relu(out, 0.5, out=z), [z, out], ValueError)
    check_stable(lambda: leaky_relu(out, 0.5, out=it), [it, out], ValueError)


def old_torch_dlpack(self: Any, **kwargs: Any) -> Any:
    """The __dlpack__ of a torch that knew no max_version: always unversioned."""
    if kwargs:
        raise TypeError(f"__dlpack__() got an unexpected keyword argument {next(iter(kwargs))!r}")
    return torch.utils.dlpack.to_dlpack(self.as_subclass(torch.Tensor))


def test_unversioned_torch_out_is_written() -> None:
    """A pre-1.0 capsule cannot say read-only or copied, so out= refuses it (see the
    producer zoo), except from torch, whose unversioned export always shares."""
    x = torch.tensor([-1.0, 2.0, -3.0])
    old_torch_tensor = type("OldTorchTensor", (torch.Tensor,), {"__dlpack__": old_torch_dlpack})
    out = torch.zeros(3).as_subclass(old_torch_tensor)
    assert out.__dlpack__().__class__.__name__ == "PyCapsule"
    twin = torch.zeros(3)
    torch._C._nn.leaky_relu(x, 0.5, out=twin)
    before = out._version
    assert leaky_relu(x, 0.5, out=out) is out
    assert_same(out.as_subclass(torch.Tensor), twin)
    assert out._version == before + 1


# ---------------------------------------------------------------- the C-level route
#
# A tensor that dispatches to nobody is exported with torch.utils.dlpack.to_dlpack
# and its result made from a capsule, skipping torch's Python-level protocol
# methods; every other torch tensor still gets those calls.


def test_a_plain_tensor_skips_the_protocol_methods(monkeypatch: pytest.MonkeyPatch) -> None:
    """The route's whole point: no Python-level __dlpack__ for a plain tensor, in or out."""
    calls: list[int] = []
    original = torch.Tensor.__dlpack__

    def counting(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "__dlpack__", counting)
    x = torch.tensor([-2.0, 0.5, 3.0])
    out = torch.empty(3)
    assert torch.equal(leaky_relu(x, 0.1), F.leaky_relu(x, 0.1))
    leaky_relu(x, 0.1, out=out)
    assert torch.equal(out, F.leaky_relu(x, 0.1))
    assert calls == []
    # the same class with the default __torch_function__ (which re-wraps results)
    # dispatches, so it still gets the protocol call
    sub = x.as_subclass(type("Sub", (torch.Tensor,), {}))
    assert torch.equal(leaky_relu(sub, 0.1), F.leaky_relu(x, 0.1))
    assert calls  # (twice: once more from torch's own dispatch)


def test_a_subclass_with_its_own_torch_function_sees_the_calls() -> None:
    seen: list[str] = []

    def log(cls: Any, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        seen.append(getattr(func, "__name__", str(func)))
        return torch.Tensor.__torch_function__.__func__(cls, func, types, args, kwargs or {})

    logged = type("Logged", (torch.Tensor,), {"__torch_function__": classmethod(log)})
    x = torch.tensor([-2.0, 0.5, 3.0]).as_subclass(logged)
    got = leaky_relu(x, 0.1)
    assert "__dlpack__" in seen
    plain = x.as_subclass(torch.Tensor)
    assert torch.equal(got.as_subclass(torch.Tensor), F.leaky_relu(plain, 0.1))


def test_a_torch_function_mode_sees_the_calls() -> None:
    seen: list[str] = []

    def log(self: Any, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        seen.append(getattr(func, "__name__", str(func)))
        return func(*args, **(kwargs or {}))

    mode = type("Mode", (torch.overrides.TorchFunctionMode,), {"__torch_function__": log})
    x = torch.tensor([-2.0, 0.5, 3.0])
    expected = F.leaky_relu(x, 0.1)
    with mode():
        got = leaky_relu(x, 0.1)
    assert "__dlpack__" in seen
    assert torch.equal(got, expected)


def test_a_subclass_that_dispatches_to_nobody_keeps_its_own_dlpack() -> None:
    """torch's disabled __torch_function__ (nn.Parameter's) lets the C-level route take a
    subclass, but only one that keeps torch's __dlpack__ and __dlpack_device__."""
    calls: list[str] = []

    def own_dlpack(self: Any, **kwargs: Any) -> Any:
        calls.append("__dlpack__")
        return torch.Tensor.__dlpack__(self.as_subclass(torch.Tensor), **kwargs)

    quiet = torch._C._disabled_torch_function_impl
    own = type("Own", (torch.Tensor,), {"__torch_function__": quiet, "__dlpack__": own_dlpack})
    x = torch.tensor([-2.0, 0.5, 3.0])
    assert torch.equal(leaky_relu(x.as_subclass(own), 0.1), F.leaky_relu(x, 0.1))
    assert calls == ["__dlpack__"]
    frozen = torch.nn.Parameter(x.clone(), requires_grad=False)
    got = leaky_relu(frozen, 0.1)
    assert type(got) is torch.Tensor and torch.equal(got, F.leaky_relu(x, 0.1))
    with pytest.raises(TypeError, match="argument 'z' is a tensor that requires grad"):
        leaky_relu(torch.nn.Parameter(x.clone()), 0.1)


def test_refused_tensors_keep_torchs_refusal_as_the_cause() -> None:
    """What the C-level route passes on, the protocol route explains, with torch's
    __dlpack__ refusal as the cause (to_dlpack would have exported these silently)."""
    for bad, where in [
        (torch.tensor([1.0], requires_grad=True), "requires grad"),
        (torch.zeros(2, dtype=torch.complex64).conj(), "conjugate bit"),
    ]:
        with pytest.raises(TypeError, match=where) as info:
            leaky_relu(bad)
        assert isinstance(info.value.__cause__, (BufferError, RuntimeError))


def test_the_c_level_route_keeps_refcounts() -> None:
    x = torch.linspace(-1, 1, 50)
    sub = x.as_subclass(type("Sub", (torch.Tensor,), {}))
    frozen = torch.nn.Parameter(x.clone(), requires_grad=False)
    needs_grad = torch.ones(3, requires_grad=True)
    out = torch.empty(50)
    check_stable(lambda: leaky_relu(x, 0.5), [x])
    check_stable(lambda: leaky_relu(sub, 0.5), [sub])
    check_stable(lambda: leaky_relu(frozen, 0.5), [frozen])
    check_stable(lambda: leaky_relu(x, 0.5, out=out), [x, out])
    check_stable(lambda: leaky_relu_backward(x, x, 0.5), [x])
    check_stable(lambda: leaky_relu(needs_grad), [needs_grad], TypeError)
