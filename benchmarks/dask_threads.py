"""leaky.dask on a LocalCluster: leaky's own threads= inside Dask's worker threads.

    python benchmarks/dask_threads.py [--size 67108864] [--chunk 4194304] [--repeat 5]

For each cluster shape (worker processes x threads per worker) it persists a
float32 array on the workers, then times ``leaky.dask.leaky_relu(x,
threads=t).persist()`` for t = 1, 2 and None (leaky's automatic choice: its
pool, one thread per CPU, in every worker process), the variants taking
turns round by round, and NumPy's ``da.where(x > 0, x, a * x)`` beside them.
It also reports how many OS threads each worker process has before and after
leaky's pool has started.  Needs the 'dask' extra.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import time
from typing import Any

import dask.array as da
from distributed import Client, LocalCluster, wait

import leaky
import leaky.dask


def os_threads() -> int:
    return len(os.listdir("/proc/self/task"))


def run_shape(workers: int, threads_per_worker: int, size: int, chunk: int, repeat: int) -> None:
    with (
        LocalCluster(
            n_workers=workers,
            threads_per_worker=threads_per_worker,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.ERROR,
        ) as cluster,
        Client(cluster) as client,
    ):
        client.wait_for_workers(workers)
        x = (da.random.default_rng(0).random(size, chunks=chunk, dtype="f4") - 0.5).persist()
        wait(x)
        before = sorted(client.run(os_threads).values())
        variants: dict[str, Any] = {
            "threads=1": lambda: leaky.dask.leaky_relu(x, 0.01, threads=1),
            "threads=2": lambda: leaky.dask.leaky_relu(x, 0.01, threads=2),
            "threads=None (auto)": lambda: leaky.dask.leaky_relu(x, 0.01, threads=None),
            "da.where": lambda: da.where(x > 0, x, x * 0.01),
        }
        times: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(repeat + 1):  # the first round warms up, not counted
            for name, make in variants.items():
                start = time.perf_counter()
                y = make().persist()
                wait(y)
                times[name].append(time.perf_counter() - start)
                del y
        after = sorted(client.run(os_threads).values())
        print(
            f"\n{workers} worker process(es) x {threads_per_worker} thread(s), "
            f"{size:,} float32 in chunks of {chunk:,} ({-(-size // chunk)} chunks); "
            f"OS threads per worker before {before}, after {after}"
        )
        for name, ts in times.items():
            print(f"  {name:22s} median {statistics.median(ts[1:]) * 1e3:8.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=2**26)
    parser.add_argument("--chunk", type=int, default=2**22)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"{cpus} CPUs, leaky's pool size {leaky._leaky._max_threads}")
    for workers, per_worker in ((cpus or 1, 1), (1, cpus or 1)):
        run_shape(workers, per_worker, args.size, args.chunk, args.repeat)


if __name__ == "__main__":
    main()
