"""examples/mlp.py: its gradients against finite differences, and its training run."""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from optional import require

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "mlp.py"


@pytest.fixture(scope="module")
def mlp() -> ModuleType:
    spec = importlib.util.spec_from_file_location("leaky_example_mlp", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def loss_only(mlp: ModuleType, layers: list[Any], x: Any, y: Any, alpha: float) -> float:
    loss, _ = mlp.loss_and_grads(layers, x, y, alpha)
    return float(loss)


@pytest.mark.parametrize("alpha", [0.01, 0.3, 1.7, -0.2])
def test_gradients_match_finite_differences(mlp: ModuleType, alpha: float) -> None:
    rng = np.random.default_rng(42)
    layers = mlp.init_layers([7, 6, 5, 4], alpha, rng)
    for layer in layers:  # non-zero biases, so they matter too
        layer.b[:] = rng.normal(0, 0.5, layer.b.shape)
    x = rng.normal(0, 1, (5, 7))
    y = np.array([0, 1, 2, 3, 1], dtype=np.intp)

    # both branches of every hidden layer are taken, and no pre-activation is
    # so close to the kink at 0 that a finite-difference step would cross it
    _, saved = mlp.forward(layers, x, alpha)
    for z in saved[1::2]:
        assert (z > 0).any() and (z < 0).any()
        assert np.abs(z).min() > 1e-4

    _, grads = mlp.loss_and_grads(layers, x, y, alpha)
    eps = 1e-6
    checked = 0
    for layer, grad in zip(layers, grads, strict=True):
        for name in ("w", "b"):
            param, analytic = getattr(layer, name), getattr(grad, name)
            assert analytic.shape == param.shape
            numeric = np.empty_like(param)
            for index in np.ndindex(param.shape):
                saved_value = param[index]
                param[index] = saved_value + eps
                up = loss_only(mlp, layers, x, y, alpha)
                param[index] = saved_value - eps
                down = loss_only(mlp, layers, x, y, alpha)
                param[index] = saved_value
                numeric[index] = (up - down) / (2 * eps)
                checked += 1
            np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-8)
    assert checked == 7 * 6 + 6 + 6 * 5 + 5 + 5 * 4 + 4


def test_backward_uses_alpha(mlp: ModuleType) -> None:
    # the gradient for the first layer depends on alpha through the hidden
    # layers' negative side: a backward pass that ignored alpha would not
    rng = np.random.default_rng(1)
    x, y = rng.normal(0, 1, (5, 7)), np.array([0, 1, 2, 3, 1], dtype=np.intp)
    layers = mlp.init_layers([7, 6, 4], 0.3, rng)
    _, saved = mlp.forward(layers, x, 0.3)
    z1 = saved[1]
    _, grads = mlp.loss_and_grads(layers, x, y, 0.3)
    # by hand: d loss / d z1 = (d loss / d h1) * where(z1 > 0, 1, alpha)
    logits = saved[2] @ layers[1].w + layers[1].b
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    p[np.arange(5), y] -= 1
    d_h1 = (p / 5) @ layers[1].w.T
    d_z1 = d_h1 * np.where(z1 > 0, 1.0, 0.3)
    np.testing.assert_allclose(grads[0].w, x.T @ d_z1, rtol=1e-12, atol=1e-15)


def test_training_reaches_the_stated_accuracy(mlp: ModuleType) -> None:
    require("sklearn.datasets", "examples")
    start = time.perf_counter()
    _, accuracy = mlp.train(epochs=30, seed=0, verbose=False)
    elapsed = time.perf_counter() - start
    # docs/dask-processes-example.md states 97.1% for seed 0
    # (a different BLAS may move a test image or two)
    assert accuracy >= 0.95, accuracy
    assert elapsed < 60, elapsed
