"""float16, bit for bit, against PyTorch's CPU results for all 65,536 half values.

tests/data/float16_pytorch.npz holds torch.nn.functional.leaky_relu,
aten.leaky_relu_backward(ones, x, alpha) and aten.leaky_relu_backward(grad_output,
x, alpha) for every float16 bit pattern at five slopes (see the README beside it).
The pure-Python oracle is checked against the same vectors, so both leaky and
the oracle that the other tests use are anchored to PyTorch.
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


def test_vectors_cover_every_half() -> None:
    assert sorted(bits(X).tolist()) == list(range(65536))


@pytest.mark.parametrize("index", range(len(ALPHAS)))
def test_forward_matches_pytorch(index: int) -> None:
    result = leaky_relu(X, ALPHAS[index])
    assert result.dtype == np.float16
    np.testing.assert_array_equal(bits(result), bits(VECTORS["leaky_relu"][index]))


@pytest.mark.parametrize("index", range(len(ALPHAS)))
def test_grad_matches_pytorch(index: int) -> None:
    result = leaky_relu_grad(X, ALPHAS[index])
    np.testing.assert_array_equal(bits(result), bits(VECTORS["leaky_relu_grad"][index]))


@pytest.mark.parametrize("index", range(len(ALPHAS)))
def test_backward_matches_pytorch(index: int) -> None:
    result = leaky_relu_backward(GRAD_OUTPUT, X, ALPHAS[index])
    np.testing.assert_array_equal(bits(result), bits(VECTORS["leaky_relu_backward"][index]))


@pytest.mark.parametrize("index", range(len(ALPHAS)))
def test_oracle_matches_pytorch(index: int) -> None:
    alpha = ALPHAS[index]
    xs = bits(X).tolist()
    gs = bits(GRAD_OUTPUT).tolist()
    assert [oracle.forward_element("e", x, alpha) for x in xs] == bits(
        VECTORS["leaky_relu"][index]
    ).tolist()
    assert [oracle.grad_element("e", x, alpha) for x in xs] == bits(
        VECTORS["leaky_relu_grad"][index]
    ).tolist()
    assert [
        oracle.backward_element("e", g, "e", x, alpha) for g, x in zip(gs, xs, strict=True)
    ] == bits(VECTORS["leaky_relu_backward"][index]).tolist()


def test_numpy_rounds_alpha_first_and_differs() -> None:
    # Documented difference: NumPy's float16(alpha) * x rounds the slope to
    # float16 before multiplying; leaky (like PyTorch) keeps it in float32.
    with np.errstate(invalid="ignore"):  # NaN inputs
        numpy_idiom = np.where(X > 0, X, np.float16(0.01) * X)
    differ = bits(numpy_idiom) != bits(leaky_relu(X, 0.01))
    finite = np.isfinite(X)
    assert int((differ & finite).sum()) > 1000
