"""What a round trip through leaky costs a PyTorch or JAX user, against their own leaky_relu.

    python benchmarks/frameworks.py             # 10, 10**4 and 10**7 elements
    python benchmarks/frameworks.py --quick     # seconds; what CI runs so this cannot rot
    python benchmarks/frameworks.py --threads 1 # one thread each: leaky's threads=, torch's

Each leaky row is the whole round trip: the tensor in through DLPack (JAX float32
through its buffer), the kernel, and the result back as the caller's own type
through ResultBuffer.__dlpack__ and torch.from_dlpack / jax.numpy.from_dlpack.
PyTorch's row is torch.nn.functional.leaky_relu (its default thread count); JAX's
is jax.jit(jax.nn.leaky_relu), compiled before timing, with block_until_ready.
The bfloat16 rows give leaky's time per element against its own float32 time.
Each timing is the median of the rounds of benchmarks/run.py's side_by_side.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from run import fmt_time, machine, side_by_side

from leaky import leaky_relu

ALPHA = 0.01
LEAKY: dict[str, int] = {}  # leaky's keyword arguments: threads=, when --threads says


def optional(name: str) -> Any:
    try:
        return __import__(name)
    except ImportError:
        return None


def torch_rows(torch: Any, sizes: list[int], repeats: int, budget: float) -> list[str]:
    F = torch.nn.functional
    rows = []
    for n in sizes:
        x = torch.randn(n)
        t = side_by_side(
            {
                "leaky": lambda x=x: leaky_relu(x, ALPHA, **LEAKY),
                "torch": lambda x=x: F.leaky_relu(x, ALPHA),
            },
            repeats,
            budget,
        )
        rows.append(row("torch float32", n, t["leaky"], t["torch"], "F.leaky_relu"))
        xb = x.to(torch.bfloat16)
        tb = side_by_side(
            {
                "leaky": lambda xb=xb: leaky_relu(xb, ALPHA, **LEAKY),
                "torch": lambda xb=xb: F.leaky_relu(xb, ALPHA),
            },
            repeats,
            budget,
        )
        rows.append(row("torch bfloat16", n, tb["leaky"], tb["torch"], "F.leaky_relu"))
        rows.append(f"| bfloat16 / float32, leaky | {n:,} | {tb['leaky'] / t['leaky']:.2f}x | | |")
    return rows


def jax_rows(jax: Any, sizes: list[int], repeats: int, budget: float) -> list[str]:
    jnp = jax.numpy
    compiled = jax.jit(jax.nn.leaky_relu, static_argnames=())
    rows = []
    for dtype in ("float32", "bfloat16"):
        for n in sizes:
            x = jax.random.normal(jax.random.key(0), (n,), dtype=dtype)
            compiled(x, ALPHA).block_until_ready()  # compile outside the timing
            t = side_by_side(
                {
                    "leaky": lambda x=x: leaky_relu(x, ALPHA, **LEAKY),
                    "jax": lambda x=x: compiled(x, ALPHA).block_until_ready(),
                },
                repeats,
                budget,
            )
            rows.append(row(f"jax {dtype}", n, t["leaky"], t["jax"], "jit(nn.leaky_relu)"))
    assert isinstance(leaky_relu(jnp.ones(3)), jax.Array)
    return rows


def row(name: str, n: int, leaky: float, other: float, other_name: str) -> str:
    return (
        f"| {name} | {n:,} | {fmt_time(leaky)} | {fmt_time(other)} ({other_name}) "
        f"| {other / leaky:.2f}x |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, short timings")
    parser.add_argument(
        "--threads",
        type=int,
        help="threads for leaky (threads=) and PyTorch (torch.set_num_threads); "
        "default: each one's own",
    )
    args = parser.parse_args()
    sizes = [10, 1000] if args.quick else [10, 10**4, 10**7]
    repeats, budget = (1, 0.002) if args.quick else (7, 0.2)
    torch, jax = optional("torch"), optional("jax")
    if args.threads is not None:
        LEAKY["threads"] = args.threads
        if torch is not None:
            torch.set_num_threads(args.threads)
    print(f"# {machine()}")
    print("| input | elements | leaky round trip | theirs | theirs / leaky |")
    print("|---|---:|---:|---:|---:|")
    if torch is not None:
        print("\n".join(torch_rows(torch, sizes, repeats, budget)), flush=True)
    if jax is not None:
        print("\n".join(jax_rows(jax, sizes, repeats, budget)), flush=True)
    if torch is None and jax is None:
        print('neither PyTorch nor JAX is installed (pip install ".[frameworks]")')


if __name__ == "__main__":
    main()
