"""``python -m leaky``: the problem statement's examples and a short timing."""

from __future__ import annotations

import importlib.util
import timeit

from leaky import __version__, leaky_relu


def one_liner(z: float, alpha: float = 0.01) -> float:
    """The pure-Python definition from the problem statement."""
    return z if z > 0 else alpha * z


def per_call_ns(statement: str, namespace: dict[str, object], repeat: int = 5) -> float:
    timer = timeit.Timer(statement, globals=namespace)
    number, _ = timer.autorange()
    return min(timer.repeat(repeat, number)) / number * 1e9


def main() -> None:
    print(f"leaky {__version__}")
    print()
    print("print(leaky_relu(0))             #", leaky_relu(0))
    print("print(leaky_relu(1))             #", leaky_relu(1))
    print("print(leaky_relu(-1))            #", leaky_relu(-1))
    print("print(leaky_relu(-2, alpha=0.1)) #", leaky_relu(-2, alpha=0.1))
    print()
    print("Time per call (best of 5 runs; a quick look, not the benchmark):")
    namespace: dict[str, object] = {"leaky_relu": leaky_relu, "one_liner": one_liner, "x": -1.5}
    rows = [
        ("leaky_relu(x), x = -1.5", per_call_ns("leaky_relu(x)", namespace)),
        ("pure-Python one-liner", per_call_ns("one_liner(x)", namespace)),
    ]
    if importlib.util.find_spec("numpy") is not None:
        import numpy as np

        array = np.linspace(-1.0, 1.0, 1000)
        namespace.update(np=np, array=array)
        rows.append(
            ("leaky_relu(array), 1000 float64", per_call_ns("leaky_relu(array)", namespace))
        )
        rows.append(
            (
                "np.where(a > 0, a, 0.01 * a), same array",
                per_call_ns("np.where(array > 0, array, 0.01 * array)", namespace),
            )
        )
    width = max(len(name) for name, _ in rows)
    for name, ns in rows:
        print(f"  {name:<{width}}  {ns:10.1f} ns")


if __name__ == "__main__":
    main()
