"""leaky.ufunc against leaky's own function, NumPy's idioms and PyTorch's PReLU.

    python benchmarks/ufunc.py --quick     # seconds; what CI runs so this cannot rot
    python benchmarks/ufunc.py             # float32 10 .. 10**7, transposed, per-channel

Rows, each the median of several rounds in which the contenders take turns
(run.py's side_by_side):

- exact float32 arrays: leaky.ufunc.leaky_relu(x, a) against
  leaky.leaky_relu(x, a) (the target: within 1.3x from 10**4 elements on;
  below that NumPy's ufunc dispatch, about a microsecond, is the difference),
  np.maximum(x, a * x) and np.where(x > 0, x, a * x) (the target: faster at
  every size);
- x.T of a square float32 array: the ufunc gives NumPy's K order (an
  F-ordered result), leaky's function a C-ordered one;
- per-channel slopes, alpha of shape (C, 1, 1) against x of (N, C, H, W):
  the ufunc against np.where with the same broadcast and against PyTorch's
  F.prelu (on torch.from_numpy views of the same memory), when PyTorch is
  importable; without it that column is skipped with a note.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from run import machine, optional, side_by_side

ALPHA = 0.01


def fmt(seconds: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:7.2f} {unit}"
    return f"{seconds / 1e-9:7.1f} ns"


def bench_sizes(np: Any, sizes: list[int], repeats: int, budget: float) -> None:
    import leaky
    import leaky.ufunc as lu

    rng = np.random.default_rng(0)
    print("exact float32 arrays (ufunc / leaky: the ufunc's cost over leaky's own function)")
    print(
        f"  {'size':>9s} {'leaky':>10s} {'ufunc':>10s} {'ufunc/leaky':>11s}"
        f" {'np.maximum/ufunc':>16s} {'np.where/ufunc':>14s}"
    )
    a = ALPHA
    for size in sizes:
        x = rng.standard_normal(size, dtype=np.float32)
        t = side_by_side(
            {
                "leaky": lambda x=x: leaky.leaky_relu(x, a),
                "ufunc": lambda x=x: lu.leaky_relu(x, a),
                "np.maximum": lambda x=x: np.maximum(x, a * x),
                "np.where": lambda x=x: np.where(x > 0, x, a * x),
            },
            repeats,
            budget,
        )
        print(
            f"  {size:9d} {fmt(t['leaky'])} {fmt(t['ufunc'])} {t['ufunc'] / t['leaky']:10.2f}x"
            f" {t['np.maximum'] / t['ufunc']:15.2f}x {t['np.where'] / t['ufunc']:13.2f}x",
            flush=True,
        )


def bench_transposed(np: Any, side: int, repeats: int, budget: float) -> None:
    import leaky
    import leaky.ufunc as lu

    x = np.random.default_rng(1).standard_normal((side, side), dtype=np.float32).T
    t = side_by_side(
        {
            "leaky (C-ordered result)": lambda: leaky.leaky_relu(x, ALPHA),
            "ufunc (K order: F-ordered result)": lambda: lu.leaky_relu(x, ALPHA),
            "np.maximum": lambda: np.maximum(x, ALPHA * x),
        },
        repeats,
        budget,
    )
    print(f"x.T, {side}x{side} float32:")
    for name, seconds in t.items():
        print(f"  {name:36s} {fmt(seconds)}")


def bench_per_channel(
    np: Any, torch: Any, shape: tuple[int, int, int, int], repeats: int, budget: float
) -> None:
    import leaky.ufunc as lu

    rng = np.random.default_rng(2)
    x = rng.standard_normal(shape, dtype=np.float32)
    channels = shape[1]
    slopes = rng.uniform(0.0, 0.3, channels).astype(np.float32)
    broadcast = slopes.reshape(channels, 1, 1)
    calls = {
        "ufunc": lambda: lu.leaky_relu(x, broadcast),
        "np.where": lambda: np.where(x > 0, x, broadcast * x),
    }
    if torch is not None:
        tx, tw = torch.from_numpy(x), torch.from_numpy(slopes)
        prelu = torch.nn.functional.prelu
        calls["torch F.prelu"] = lambda: prelu(tx, tw)
        same = np.array_equal(lu.leaky_relu(x, broadcast), prelu(tx, tw).numpy())
    t = side_by_side(calls, repeats, budget)
    print(f"per-channel slopes: alpha {(channels, 1, 1)} against x {shape} float32:")
    for name, seconds in t.items():
        print(f"  {name:14s} {fmt(seconds)}  ({seconds / t['ufunc']:.2f}x the ufunc's time)")
    if torch is None:
        print("  torch F.prelu: skipped, PyTorch is not importable")
    else:
        print(f"  ufunc and F.prelu give the same bits: {same}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="few sizes, short timings")
    args = parser.parse_args()
    np, torch = optional("numpy"), optional("torch")
    if np is None:
        sys.exit("benchmarks/ufunc.py needs NumPy")
    if args.quick:
        sizes, repeats, budget, side = [10, 10_000, 100_000], 3, 0.02, 300
        shape = (2, 8, 16, 16)
    else:
        sizes, repeats, budget, side = [10**k for k in range(1, 8)], 7, 0.2, 2000
        shape = (32, 64, 56, 56)
    print(f"machine: {machine()}")
    print(f"NumPy {np.__version__}" + (f", PyTorch {torch.__version__}" if torch else ""))
    bench_sizes(np, sizes, repeats, budget)
    bench_transposed(np, side, repeats, budget)
    bench_per_channel(np, torch, shape, repeats, budget)


if __name__ == "__main__":
    main()
