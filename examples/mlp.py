"""A small multilayer perceptron in NumPy, with leaky's Leaky ReLU in both passes.

Trains a 64-128-64-10 network on scikit-learn's bundled handwritten digits
(``load_digits``: 1,797 8x8 images, shipped with scikit-learn, nothing is
downloaded) with ``leaky_relu`` in the forward pass and
``leaky_relu_backward`` in the backward pass, and prints the test accuracy
and the time it took::

    pip install "leaky[examples]"     # numpy and scikit-learn
    python examples/mlp.py

Everything but the activation is plain NumPy: He initialisation, softmax
cross-entropy, mini-batch Adam.  ``loss_and_grads`` is the part to copy; the
test suite checks its gradients against finite differences.
"""

from __future__ import annotations

import argparse
import itertools
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from leaky import leaky_relu, leaky_relu_backward

Array = NDArray[np.float64]


@dataclass
class Layer:
    w: Array
    b: Array


def init_layers(sizes: list[int], alpha: float, rng: np.random.Generator) -> list[Layer]:
    """He initialisation for Leaky ReLU: variance 2 / ((1 + alpha**2) * fan_in)."""
    layers = []
    for fan_in, fan_out in itertools.pairwise(sizes):
        std = np.sqrt(2.0 / ((1.0 + alpha**2) * fan_in))
        layers.append(Layer(rng.normal(0.0, std, (fan_in, fan_out)), np.zeros(fan_out)))
    return layers


def forward(layers: list[Layer], x: Array, alpha: float) -> tuple[Array, list[Array]]:
    """The logits, and the inputs and pre-activations the backward pass needs.

    Every layer but the last is ``leaky_relu(h @ w + b)``; the last is linear.
    """
    saved = [x]  # h0, z1, h1, z2, h2, ...
    h = x
    for i, layer in enumerate(layers):
        z = h @ layer.w + layer.b
        if i == len(layers) - 1:
            return z, saved
        h = leaky_relu(z, alpha)
        saved += [z, h]
    raise ValueError("no layers")


def loss_and_grads(
    layers: list[Layer], x: Array, y: NDArray[np.intp], alpha: float
) -> tuple[float, list[Layer]]:
    """Mean softmax cross-entropy of the batch, and its gradient for every layer."""
    logits, saved = forward(layers, x, alpha)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    n = x.shape[0]
    loss = -float(log_p[np.arange(n), y].mean())

    grad = np.exp(log_p)  # d loss / d logits = (softmax - one_hot) / n
    grad[np.arange(n), y] -= 1.0
    grad /= n
    grads: list[Layer] = []
    for i in range(len(layers) - 1, -1, -1):
        h_in = saved[2 * i]  # the layer's input: x, or the previous activation
        grads.append(Layer(h_in.T @ grad, grad.sum(axis=0)))
        if i > 0:
            grad = grad @ layers[i].w.T  # d loss / d h_in
            z_in = saved[2 * i - 1]
            # d loss / d z_in = grad * (1 if z_in > 0 else alpha), in place
            leaky_relu_backward(grad, z_in, alpha, out=grad)
    grads.reverse()
    return loss, grads


class Adam:
    def __init__(self, layers: list[Layer], lr: float = 1e-3) -> None:
        self.lr, self.beta1, self.beta2, self.eps, self.t = lr, 0.9, 0.999, 1e-8, 0
        self.m = [Layer(np.zeros_like(p.w), np.zeros_like(p.b)) for p in layers]
        self.v = [Layer(np.zeros_like(p.w), np.zeros_like(p.b)) for p in layers]

    def step(self, layers: list[Layer], grads: list[Layer]) -> None:
        self.t += 1
        scale = self.lr * np.sqrt(1 - self.beta2**self.t) / (1 - self.beta1**self.t)
        for p, g, m, v in zip(layers, grads, self.m, self.v, strict=True):
            for name in ("w", "b"):
                pv, gv, mv, vv = (getattr(o, name) for o in (p, g, m, v))
                mv *= self.beta1
                mv += (1 - self.beta1) * gv
                vv *= self.beta2
                vv += (1 - self.beta2) * gv * gv
                pv -= scale * mv / (np.sqrt(vv) + self.eps)


def accuracy(layers: list[Layer], x: Array, y: NDArray[np.intp], alpha: float) -> float:
    logits, _ = forward(layers, x, alpha)
    return float((logits.argmax(axis=1) == y).mean())


def load_data(
    seed: int = 0, test_fraction: float = 0.25
) -> tuple[Array, NDArray[np.intp], Array, NDArray[np.intp]]:
    """The digits, shuffled and split, standardised with the training set's statistics."""
    from sklearn.datasets import load_digits

    digits: Any = load_digits()
    x = np.asarray(digits.data, dtype=np.float64)
    y = np.asarray(digits.target, dtype=np.intp)
    order = np.random.default_rng(seed).permutation(len(y))
    n_test = round(len(y) * test_fraction)
    test, train = order[:n_test], order[n_test:]
    mean, std = x[train].mean(axis=0), x[train].std(axis=0) + 1e-8
    return (x[train] - mean) / std, y[train], (x[test] - mean) / std, y[test]


def train(
    epochs: int = 30,
    hidden: tuple[int, ...] = (128, 64),
    alpha: float = 0.01,
    batch: int = 32,
    lr: float = 1e-3,
    seed: int = 0,
    verbose: bool = True,
) -> tuple[list[Layer], float]:
    """Train on the digits; return the layers and the test accuracy."""
    x_train, y_train, x_test, y_test = load_data(seed)
    rng = np.random.default_rng(seed)
    layers = init_layers([x_train.shape[1], *hidden, 10], alpha, rng)
    opt = Adam(layers, lr)
    for epoch in range(1, epochs + 1):
        order = rng.permutation(len(y_train))
        total = 0.0
        for start in range(0, len(order), batch):
            idx = order[start : start + batch]
            loss, grads = loss_and_grads(layers, x_train[idx], y_train[idx], alpha)
            opt.step(layers, grads)
            total += loss * len(idx)
        if verbose and (epoch % 5 == 0 or epoch == 1):
            print(
                f"epoch {epoch:3d}  train loss {total / len(order):.4f}  "
                f"test accuracy {accuracy(layers, x_test, y_test, alpha):.4f}"
            )
    return layers, accuracy(layers, x_test, y_test, alpha)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--alpha", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    start = time.perf_counter()
    _, acc = train(epochs=args.epochs, alpha=args.alpha, seed=args.seed)
    elapsed = time.perf_counter() - start
    print(f"test accuracy {acc:.4f} ({acc * 100:.1f}%) after {args.epochs} epochs, {elapsed:.1f} s")


if __name__ == "__main__":
    main()
