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
reports leaky with `threads=None` (its automatic choice) at the largest count.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import numpy as np
from run import machine, side_by_side

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
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    fn = torch.nn.functional
    if mode == "in place":
        return {
            "leaky": lambda: leaky_relu(x, 1.0, out=x, threads=n),
            "torch": lambda: fn.leaky_relu_(tx, 1.0),
        }
    if mode == "out=":
        return {
            "leaky": lambda: leaky_relu(x, ALPHA, out=y, threads=n),
            "torch": lambda: torch._C._nn.leaky_relu(tx, ALPHA, out=ty),
        }
    return {
        "leaky": lambda: leaky_relu(x, ALPHA, threads=n),
        "torch": lambda: fn.leaky_relu(tx, ALPHA),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=10**8, help="float32 elements")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--budget", type=float, default=0.2, help="seconds per timeit loop")
    parser.add_argument("--json", help="write every timing as JSON")
    parser.add_argument("--markdown", help="write the table as Markdown")
    args = parser.parse_args()

    import torch

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    counts = thread_counts(cpus or 1)
    default_torch_threads = torch.get_num_threads()
    print(f"machine: {machine()}")
    print(f"torch {torch.__version__} ({default_torch_threads} threads), numpy {np.__version__}")

    rng = np.random.default_rng(0)
    x = rng.standard_normal(args.size, dtype=np.float32)
    y = np.empty_like(x)
    y.fill(0)  # touch every page before timing
    gbytes = 2 * x.nbytes / 1e9
    rows: list[dict[str, Any]] = []
    for mode in ("in place", "out=", "out-of-place"):
        for n in counts:
            torch.set_num_threads(n)
            times = side_by_side(contenders(torch, mode, x, y, n), args.repeats, args.budget)
            rows.append({"mode": mode, "threads": n, "seconds": times})
            print(
                f"{mode:12s} threads={n:3d}  leaky {gbytes / times['leaky']:7.1f} GB/s"
                f"  torch {gbytes / times['torch']:7.1f} GB/s"
                f"  -> leaky {times['torch'] / times['leaky']:.2f}x torch",
                flush=True,
            )
        # leaky's automatic thread count against PyTorch's default
        torch.set_num_threads(default_torch_threads)
        times = side_by_side(contenders(torch, mode, x, y, None), args.repeats, args.budget)
        rows.append({"mode": mode, "threads": "auto", "seconds": times})
        print(
            f"{mode:12s} threads=auto  leaky {gbytes / times['leaky']:7.1f} GB/s"
            f"  torch({default_torch_threads}) {gbytes / times['torch']:7.1f} GB/s"
            f"  -> leaky {times['torch'] / times['leaky']:.2f}x torch",
            flush=True,
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine(), "size": args.size, "rows": rows}, f, indent=1)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(f"Machine: {machine()}; torch {torch.__version__}; ")
            f.write(f"{args.size:,} float32 elements; GB/s count bytes read and written.\n\n")
            f.write("| mode | threads | leaky GB/s | torch GB/s | leaky / torch speed |\n")
            f.write("|---|---:|---:|---:|---:|\n")
            for r in rows:
                t = r["seconds"]
                f.write(
                    f"| {r['mode']} | {r['threads']} | {gbytes / t['leaky']:.1f} "
                    f"| {gbytes / t['torch']:.1f} | {t['torch'] / t['leaky']:.2f}x |\n"
                )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
