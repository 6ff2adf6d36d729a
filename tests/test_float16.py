"""float16, bit for bit, against PyTorch's CPU results for all 65,536 half values.

tests/data/float16_pytorch.npz holds torch.nn.functional.leaky_relu,
aten.leaky_relu_backward(ones, x, alpha) and aten.leaky_relu_backward(grad_output,
x, alpha) for every float16 bit pattern at five slopes (see the README beside it).
The pure-Python oracle is checked against the same vectors, so both leaky and
the oracle that the other tests use are anchored to PyTorch.

The vectors were made on x86-64. A NaN that the arithmetic creates from
non-NaN inputs (-inf * 0 at alpha = 0) is the CPU's default NaN, whose sign
bit x86 sets and arm64 clears: PyTorch, NumPy and leaky all give the local
one. `reference()` gives those elements this CPU's default NaN; on x86-64 it
changes nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import oracle
import pytest

from leaky import leaky_relu, leaky_relu_backward, leaky_relu_grad

VECTORS = np.load(Path(__file__).parent / "data" / "float16_pytorch.npz")
X: Any = VECTORS["x"]
GRAD_OUTPUT: Any = VECTORS["grad_output"]
ALPHAS = [float(a) for a in VECTORS["alphas"]]


def bits(array: Any) -> Any:
    return np.asarray(array).view(np.uint16)


def default_nan_sign() -> int:
    """0x8000 where this CPU's invalid operations give a negative NaN (x86), else 0."""
    with np.errstate(invalid="ignore"):
        made = np.array([np.inf], np.float32) * np.array([0.0], np.float32)
    return 0x8000 if np.signbit(made[0]) else 0


def reference(name: str, index: int, *inputs: Any) -> Any:
    """PyTorch's bits, with NaNs created from non-NaN inputs given the local sign."""
    expected = bits(VECTORS[name][index]).copy()
    created = np.isnan(VECTORS[name][index])
    for array in inputs:
        created &= ~np.isnan(array)
    expected[created] = (expected[created] & 0x7FFF) | default_nan_sign()
    return expected


def test_created_nans_exist_only_where_alpha_is_zero() -> None:
    # the adjustment above touches -inf * 0 and nothing else
    for index, alpha in enumerate(ALPHAS):
        touched = reference("leaky_relu", index, X) != bits(VECTORS["leaky_relu"][index])
        if default_nan_sign() == 0x8000:
            assert not touched.any()
        assert set(bits(X)[touched].tolist()) <= ({0xFC00} if alpha == 0.0 else set())


def test_vectors_cover_every_half() -> None:
    assert sorted(bits(X).tolist()) == list(range(65536))


@pytest.mark.parametrize("index", range(len(ALPHAS)))
def test_forward_matches_pytorch(index: int) -> None:
    result = leaky_relu(X, ALPHAS[index])
    assert result.dtype == np.float16
    np.testing.assert_array_equal(bits(result), reference("leaky_relu", index, X))


@pytest.mark.parametrize("index", range(len(ALPHAS)))
def test_grad_matches_pytorch(index: int) -> None:
    result = leaky_relu_grad(X, ALPHAS[index])
    np.testing.assert_array_equal(bits(result), reference("leaky_relu_grad", index, X))


@pytest.mark.parametrize("index", range(len(ALPHAS)))
def test_backward_matches_pytorch(index: int) -> None:
    result = leaky_relu_backward(GRAD_OUTPUT, X, ALPHAS[index])
    np.testing.assert_array_equal(
        bits(result), reference("leaky_relu_backward", index, GRAD_OUTPUT, X)
    )


@pytest.mark.parametrize("index", range(len(ALPHAS)))
def test_oracle_matches_pytorch(index: int) -> None:
    alpha = ALPHAS[index]
    xs = bits(X).tolist()
    gs = bits(GRAD_OUTPUT).tolist()
    assert [oracle.forward_element("e", x, alpha) for x in xs] == reference(
        "leaky_relu", index, X
    ).tolist()
    assert [oracle.grad_element("e", x, alpha) for x in xs] == reference(
        "leaky_relu_grad", index, X
    ).tolist()
    assert [
        oracle.backward_element("e", g, "e", x, alpha) for g, x in zip(gs, xs, strict=True)
    ] == reference("leaky_relu_backward", index, GRAD_OUTPUT, X).tolist()


def test_numpy_rounds_alpha_first_and_differs() -> None:
    # Documented difference: NumPy's float16(alpha) * x rounds the slope to
    # float16 before multiplying; leaky (like PyTorch) keeps it in float32.
    with np.errstate(invalid="ignore"):  # NaN inputs
        numpy_idiom = np.where(X > 0, X, np.float16(0.01) * X)
    differ = bits(numpy_idiom) != bits(leaky_relu(X, 0.01))
    finite = np.isfinite(X)
    assert int((differ & finite).sum()) > 1000
