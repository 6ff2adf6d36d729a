"""How leaky's thread pool scales with cores, side by side with PyTorch.

    python benchmarks/scaling.py                      # 10**8 float32, 1..all cores
    python benchmarks/scaling.py --size 10000000 --json scaling.json --markdown scaling.md

For each thread count (1, 2, 4, ... up to the CPUs this process may use) it
times, interleaved as benchmarks/run.py does, leaky with `threads=n` and
PyTorch with `torch.set_num_threads(n)` on the same memory:

- in place: `leaky_relu(x, 1.0, out=x)` against `torch.nn.functional.leaky_relu_`
  (alpha = 1 so repeated calls leave the data as it was);
- out=: `leaky_relu(x, alpha, out=y)` against `torch._C._nn.leaky_relu(.., out=)`;
- out-of-place: `leaky_relu(x, alpha)` against `torch.nn.functional.leaky_relu`.

Throughput counts bytes read and written (2 x the array's bytes), the way
PyTorch's own figure of ~114 GB/s on a 16-core machine is counted.  It also
reports both at their defaults ("auto": leaky's `threads=None`, PyTorch's
default thread count).  Without PyTorch installed, leaky's columns alone.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import numpy as np
from run import machine, optional, side_by_side

from leaky import leaky_relu

ALPHA = 0.01


def thread_counts(cpus: int) -> list[int]:
    counts = [1]
    while counts[-1] * 2 < cpus:
        counts.append(counts[-1] * 2)
    if counts[-1] != cpus:
        counts.append(cpus)
    return counts


def contenders(torch: Any, mode: str, x: Any, y: Any, n: int | None) -> dict[str, Any]:
    """name -> zero-argument callable; PyTorch's only when it is installed."""
    c: dict[str, Any] = {}
    if mode == "in place":
        c["leaky"] = lambda: leaky_relu(x, 1.0, out=x, threads=n)
    elif mode == "out=":
        c["leaky"] = lambda: leaky_relu(x, ALPHA, out=y, threads=n)
    else:
        c["leaky"] = lambda: leaky_relu(x, ALPHA, threads=n)
    if torch is not None:
        tx, ty = torch.from_numpy(x), torch.from_numpy(y)
        fn = torch.nn.functional
        if mode == "in place":
            c["torch"] = lambda: fn.leaky_relu_(tx, 1.0)
        elif mode == "out=":
            c["torch"] = lambda: torch._C._nn.leaky_relu(tx, ALPHA, out=ty)
        else:
            c["torch"] = lambda: fn.leaky_relu(tx, ALPHA)
    return c


def cells(times: dict[str, float], gbytes: float) -> tuple[str, str, str]:
    """leaky GB/s, torch GB/s and leaky's speed over torch, as text."""
    leaky_rate = f"{gbytes / times['leaky']:.1f}"
    if "torch" not in times:
        return leaky_rate, "-", "-"
    return leaky_rate, f"{gbytes / times['torch']:.1f}", f"{times['torch'] / times['leaky']:.2f}x"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=10**8, help="float32 elements")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--budget", type=float, default=0.2, help="seconds per timeit loop")
    parser.add_argument("--json", help="write every timing as JSON")
    parser.add_argument("--markdown", help="write the table as Markdown")
    args = parser.parse_args()

    torch = optional("torch")
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    counts: list[int | None] = [*thread_counts(cpus or 1), None]  # None: both at their defaults
    default_torch_threads = torch.get_num_threads() if torch is not None else 0
    versions = (
        f"torch {torch.__version__} ({default_torch_threads} threads)"
        if torch is not None
        else "torch not installed"
    )
    print(f"machine: {machine()}")
    print(f"{versions}, numpy {np.__version__}")

    rng = np.random.default_rng(0)
    x = rng.standard_normal(args.size, dtype=np.float32)
    y = np.empty_like(x)
    y.fill(0)  # touch every page before timing
    gbytes = 2 * x.nbytes / 1e9
    rows: list[dict[str, Any]] = []
    for mode in ("in place", "out=", "out-of-place"):
        for n in counts:
            if torch is not None:
                torch.set_num_threads(n or default_torch_threads)
            times = side_by_side(contenders(torch, mode, x, y, n), args.repeats, args.budget)
            rows.append({"mode": mode, "threads": n or "auto", "seconds": times})
            leaky_rate, torch_rate, speed = cells(times, gbytes)
            print(
                f"{mode:12s} threads={n or 'auto':>4}  leaky {leaky_rate:>6} GB/s"
                f"  torch {torch_rate:>6} GB/s  -> leaky {speed} torch",
                flush=True,
            )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine(), "size": args.size, "rows": rows}, f, indent=1)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(f"Machine: {machine()}; {versions}; ")
            f.write(f"{args.size:,} float32 elements; GB/s count bytes read and written.\n\n")
            f.write("| mode | threads | leaky GB/s | torch GB/s | leaky / torch speed |\n")
            f.write("|---|---:|---:|---:|---:|\n")
            for r in rows:
                f.write(
                    f"| {r['mode']} | {r['threads']} | " + " | ".join(cells(r["seconds"], gbytes))
                )
                f.write(" |\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
