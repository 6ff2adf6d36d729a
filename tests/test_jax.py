"""JAX arrays: a jax.Array back (not a memoryview), bfloat16 through DLPack, values
against jax.nn.leaky_relu, read-only out=, and tracers refused with a clear error.

Needs the `frameworks` extra (jax[cpu]); skips saying so where it is absent, and
fails instead under LEAKY_REQUIRE_OPTIONAL=1, as .ci/run sets.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import oracle_bits
import pytest
from optional import require
from test_refcounts import check_stable

from leaky import leaky_relu, leaky_relu_backward, leaky_relu_grad

jax = require("jax", "frameworks")
jnp = jax.numpy

ALPHAS = [0.01, 0.2, 1.5, -0.3, 0.0]
DTYPES = ["float16", "bfloat16", "float32"]  # float64 needs jax_enable_x64


def bits(a: Any) -> Any:
    a = np.asarray(a) if a.dtype != jnp.bfloat16 else np.asarray(a.view(jnp.uint16))
    return a.view({2: np.uint16, 4: np.uint32, 8: np.uint64}[a.itemsize])


def values(dtype: str) -> Any:
    x = np.linspace(-300, 300, 1031)
    x[::9] = np.resize([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-40, -1e-40], len(x[::9]))
    return jnp.asarray(x, dtype=dtype)


@pytest.mark.parametrize("alpha", ALPHAS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_values_match_jax_and_come_back_as_jax_arrays(dtype: str, alpha: float) -> None:
    x = values(dtype)
    got = leaky_relu(x, alpha)
    assert isinstance(got, jax.Array) and got.dtype == x.dtype and got.shape == x.shape
    expected = jax.nn.leaky_relu(x, alpha)
    nan = np.asarray(jnp.isnan(expected))
    assert np.array_equal(np.asarray(jnp.isnan(got)), nan)
    if dtype == "float32":
        # XLA computes float32 as leaky does (z * float32(alpha)), so bit for bit, but for
        # zeros and subnormals: jax.nn.leaky_relu is where(x >= 0, x, alpha * x), so a
        # zero comes back as itself (leaky, like PyTorch, tests z > 0: alpha * z, whose
        # sign follows alpha's), and XLA's CPU code treats subnormals as zero (found in
        # NumPy: JAX's own x != 0 is False for them)
        host = np.asarray(x)
        zero_or_subnormal = np.abs(host) < np.finfo(np.float32).tiny
        same = ~nan & ~zero_or_subnormal
        assert np.array_equal(bits(got)[same], bits(expected)[same])
    # every element, subnormals and NaN payloads included, by the bit oracle
    kind = {"float16": "e", "bfloat16": "bf16", "float32": "f"}[dtype]
    alpha_bits = oracle_bits.bits_of_double(alpha)
    want = [oracle_bits.forward(kind, int(b), alpha_bits) for b in bits(x)]
    assert bits(got).tolist() == want


@pytest.mark.parametrize("dtype", DTYPES)
def test_grad_and_backward_are_jax_arrays(dtype: str) -> None:
    x = values(dtype)
    g = x[::-1]
    alpha = 0.2
    kind = {"float16": "e", "bfloat16": "bf16", "float32": "f"}[dtype]
    alpha_bits = oracle_bits.bits_of_double(alpha)
    grad = leaky_relu_grad(x, alpha)
    assert isinstance(grad, jax.Array) and grad.dtype == x.dtype
    assert bits(grad).tolist() == [oracle_bits.grad(kind, int(b), alpha_bits) for b in bits(x)]
    back = leaky_relu_backward(g, x, alpha)
    assert isinstance(back, jax.Array) and back.dtype == x.dtype
    want = [
        oracle_bits.backward(kind, int(gb), kind, int(zb), alpha_bits)
        for gb, zb in zip(bits(g), bits(x), strict=True)
    ]
    assert bits(back).tolist() == want


def test_zero_d_and_empty() -> None:
    zero_d = leaky_relu(jnp.float32(-2.0), 0.5)
    assert isinstance(zero_d, jax.Array) and zero_d.shape == () and float(zero_d) == -1.0
    b = leaky_relu(jnp.asarray(-2.0, dtype=jnp.bfloat16), 0.5)
    assert isinstance(b, jax.Array) and b.shape == () and b.dtype == jnp.bfloat16
    empty = leaky_relu(jnp.zeros((0, 3)))
    assert isinstance(empty, jax.Array) and empty.shape == (0, 3)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_jax_arrays_are_read_only_as_out(dtype: str) -> None:
    x = jnp.asarray([-1.0, 2.0], dtype=dtype)
    out = jnp.zeros(2, dtype=dtype)
    with pytest.raises(ValueError, match=r"leaky_relu\(\) argument 'out' is read-only"):
        leaky_relu(x, out=out)
    assert bits(out).tolist() == [0, 0]


def test_tracers_are_refused_with_what_to_do() -> None:
    x = jnp.asarray([-1.0, 2.0])
    message = (
        r"leaky_relu\(\) argument 'z' is a JAX tracer .*cannot be traced by jax.jit.*"
        r"use jax.nn.leaky_relu, or call leaky through jax.pure_callback"
    )
    with pytest.raises(TypeError, match=message):
        jax.jit(lambda v: leaky_relu(v))(x)
    with pytest.raises(TypeError, match=message):
        jax.vmap(lambda v: leaky_relu(v))(x)
    with pytest.raises(
        TypeError,
        match=message.replace("'z'", "'grad_output'").replace(
            "leaky_relu", "leaky_relu_backward", 1
        ),
    ):
        jax.jit(lambda v: leaky_relu_backward(v, x))(x)

    def loss(v: Any) -> Any:
        return leaky_relu(v).sum()

    with pytest.raises(TypeError, match="JAX tracer"):
        jax.grad(loss)(x)


def test_pure_callback_is_the_way_inside_jit() -> None:
    x = jnp.linspace(-2, 2, 9)

    def host(v: Any) -> Any:
        return np.asarray(leaky_relu(np.asarray(v), 0.1))

    call: Callable[[Any], Any] = jax.jit(
        lambda v: jax.pure_callback(host, jax.ShapeDtypeStruct(v.shape, v.dtype), v)
    )
    assert np.array_equal(np.asarray(call(x)), np.asarray(jax.nn.leaky_relu(x, 0.1)))


def test_refcounts_stay_put() -> None:
    x = jnp.linspace(-1, 1, 50)
    xb = x.astype(jnp.bfloat16)
    check_stable(lambda: leaky_relu(x, 0.25), [x])
    check_stable(lambda: leaky_relu(xb, 0.25), [xb])
    check_stable(lambda: leaky_relu(x, out=xb), [x, xb], ValueError)


def test_results_are_wrapped_without_a_copy() -> None:
    """XLA wraps a DLPack tensor in place only if it is 64-byte aligned: leaky's are."""
    from dlpack_exporter import consume, exporter_of

    for n in (1, 10, 1000, 100_003):
        result = leaky_relu(exporter_of(np.zeros(n, np.float32)))  # a ResultBuffer
        address = consume(result, max_version=(1, 0)).data
        assert address % 64 == 0
        assert jnp.from_dlpack(result).unsafe_buffer_pointer() == address
