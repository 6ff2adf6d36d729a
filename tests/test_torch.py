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
