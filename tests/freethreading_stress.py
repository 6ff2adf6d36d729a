"""Free-threading stress: 16 Python threads on every path at once, checked against the oracle.

    python -W error tests/freethreading_stress.py --seconds 60 --races 24

Runs on any build; on a free-threaded one (3.13t and up) it also asserts
that the GIL is still off after `import leaky`, after NumPy's import and
after every call, fork and race.  For --seconds, 16 threads call all three
functions on inputs they share (never written) and on private ones (out=,
in place): numbers, lists, NumPy arrays of five dtypes and array.array,
with threads= varied, while one more thread keeps changing the size
thresholds through `_tune` (so a call may take any path: GIL held or not,
one thread or the pool, streaming stores or not, changing mid-run) and one
more forks while a pool job runs, the child computing with a pool of its
own.  Every result is compared bit for bit with what tests/oracle.py says
(float32/64 NaN payloads excepted, as in the rest of the suite).
Separately, --races fresh interpreters each start 16 threads that make
their first NumPy call at the same moment: the one-time lookup of NumPy's
C API raced, every thread's answer checked, the fast path ready after.

Prints one JSON line of figures; exits 1 if any result was wrong, any call
raised, a warning was raised (under -W error) or the GIL came back on.
tests/test_freethreading.py runs it briefly; .ci/freethreaded.sh runs it
for a minute on the free-threaded build.
"""

from __future__ import annotations

import argparse
import array
import json
import math
import os
import platform
import random
import subprocess
import sys
import sysconfig
import threading
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import leaky._leaky as ext
from leaky import leaky_relu, leaky_relu_backward, leaky_relu_grad

FREE_THREADED = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))


def gil_enabled() -> bool:
    """sys._is_gil_enabled() where it exists (3.13+); a GIL build always has one."""
    probe: Callable[[], bool] | None = getattr(sys, "_is_gil_enabled", None)
    return True if probe is None else probe()


def check_gil(where: str) -> None:
    if FREE_THREADED and gil_enabled():
        raise AssertionError(f"the GIL is enabled after {where}")


check_gil("import leaky")

import conftest  # noqa: E402
import numpy as np  # noqa: E402  (after the check: leaky alone must keep the GIL off)
import oracle  # noqa: E402
from conftest import elements, expected_backward, expected_forward, expected_grad  # noqa: E402

check_gil("import numpy")

# Forking a process with threads is what this script does on purpose (the
# child makes a pool of its own); every other warning stays an error.
warnings.filterwarnings(
    "ignore", message=r"This process .* is multi-threaded, use of fork", category=DeprecationWarning
)


def qemu_user() -> str | None:
    """Why this looks like an arm64 program under qemu-user on an x86-64 kernel; None if not.

    qemu-user (7.2) passes the host kernel's /proc/cpuinfo through, so an
    aarch64 process that reads an x86 CPU there ("vendor_id") is emulated.
    """
    if platform.machine() not in ("aarch64", "arm64"):
        return None
    try:
        with open("/proc/cpuinfo") as file:
            x86_kernel = any(line.startswith("vendor_id") for line in file)
    except OSError:
        return None
    return "an aarch64 process on an x86-64 kernel: qemu-user" if x86_kernel else None


NTHREADS = 16
THREADS = [None, 1, 2, 3, 8, 64]
ALPHAS = [0.01, 0.3, 1.5, -0.5]
# The default thresholds, and values that send every call down one path:
# 0 = the GIL released / the pool / streaming stores always, huge = never.
TUNE_VALUES = {
    "gil_threshold": [0, 1, 1000, 10**12],
    "parallel_threshold": [0, 64, 5000, 10**12],
    "stream_bytes": [0, 4096, 10**12],
}
FUNCTIONS = ["forward", "grad", "backward"]


def sample(kind: str, size: int, seed: int) -> Any:
    """Both signs, zeros, infinities, NaNs and extremes: conftest's sample, one-dimensional."""
    return conftest.sample(kind, (size,), seed=seed)


def result_bytes(kind: str, values: list[float]) -> bytes:
    """The oracle's elements (float16 as bits) as the result buffer's bytes."""
    if kind == "e":
        return np.array(values, dtype=np.uint16).tobytes()
    return np.array(values, dtype=kind).tobytes()


@dataclass
class Data:
    """A shared input (never written) and the oracle's three answers for it."""

    kind: str
    x: Any
    g: Any  # grad_output for backward: a float array shaped like x
    alpha: float
    expected: dict[str, tuple[str, list[float], bytes]] = field(default_factory=dict)
    as_array: array.array[Any] | None = None
    g_array: array.array[Any] | None = None

    def __post_init__(self) -> None:
        for name, values, kind in (
            ("forward", expected_forward(self.x, self.alpha), oracle.result_kind(self.kind)),
            ("grad", expected_grad(self.x, self.alpha), oracle.result_kind(self.kind)),
            ("backward", expected_backward(self.g, self.x, self.alpha), self.g.dtype.char),
        ):
            self.expected[name] = (kind, values, result_bytes(kind, values))
        if self.kind in ("f", "d", "h"):
            self.as_array = array.array(self.kind, self.x.tobytes())
            self.g_array = array.array("d", self.g.astype("d").tobytes())
            values = expected_backward(self.g.astype("d"), self.x, self.alpha)
            self.expected["backward d"] = ("d", values, result_bytes("d", values))


PAIRS = [("e", "e"), ("f", "f"), ("d", "d"), ("h", "d"), ("?", "f")]  # (z, grad_output)


def make_data(sizes: list[int], pairs: list[tuple[str, str]] = PAIRS) -> list[Data]:
    data = []
    seed = 100
    for size in sizes:
        for kind, g_kind in pairs:
            seed += 1
            alpha = ALPHAS[seed % len(ALPHAS)]
            data.append(
                Data(kind, sample(kind, size, seed), sample(g_kind, size, seed + 50), alpha)
            )
    return data


def bad_elements(kind: str, got: Any, expected: list[float], alpha: float) -> str | None:
    """None if got matches the oracle (NaN payloads as conftest.assert_matches allows)."""
    a = np.asarray(got)
    if a.dtype.char != kind:
        return f"dtype {a.dtype.char!r}, expected {kind!r}"
    values = elements(a)
    if len(values) != len(expected):
        return f"{len(values)} elements, expected {len(expected)}"
    strict = not math.isnan(alpha)
    for i, (g, e) in enumerate(zip(values, expected, strict=True)):
        if not oracle.same_result(kind, g, e, strict_nan=strict):
            return f"element {i}: {g!r}, expected {e!r}"
    return None


def check_buffer(got: Any, want: tuple[str, list[float], bytes], alpha: float) -> str | None:
    kind, values, raw = want
    a = np.asarray(got)
    if a.dtype.char == kind and a.tobytes() == raw:
        return None
    return bad_elements(kind, a, values, alpha)  # differing NaN payloads may still be right


def same_number(got: Any, want: Any) -> bool:
    if type(got) is not type(want):
        return False
    if isinstance(want, float):
        if math.isnan(want):
            return math.isnan(got)
        return got == want and math.copysign(1.0, got) == math.copysign(1.0, want)
    return bool(got == want)


# Numbers and lists of them: floats with the specials, ints, bools.
NUMBERS: list[Any] = [
    0.0, -0.0, 1.5, -2.25, math.inf, -math.inf, math.nan, 1e-310, -1e-310, 1e308, -1e308,
    0, 1, -1, 7, -123456789, 2**52 + 1, -(2**52) - 1, True, False,
]  # fmt: skip


def number_oracle(fn: str, z: Any, alpha: float, g: Any = 1.0) -> Any:
    if fn == "forward":
        if not isinstance(z, float) and z >= 0:
            return z  # docs/semantics.md: an int or bool >= 0 comes back itself
        return oracle.leaky_relu(z, alpha)
    if fn == "grad":
        return oracle.leaky_relu_grad(z, alpha)
    return oracle.leaky_relu_backward(g, z, alpha)


CALL: dict[str, Callable[..., Any]] = {
    "forward": leaky_relu,
    "grad": leaky_relu_grad,
    "backward": leaky_relu_backward,
}


@dataclass
class Tally:
    calls: int = 0
    by_path: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def fail(self, what: str) -> None:
        if len(self.failures) < 20:
            self.failures.append(what)


class Worker:
    """One of the 16 threads: its private buffers and what it counted."""

    def __init__(self, seed: int, data: list[Data], numbers: list[Any], tally: Tally) -> None:
        self.rng = random.Random(seed)
        self.data = data
        self.numbers = numbers
        self.tally = tally
        self.private: dict[tuple[int, str], Any] = {}

    def buffer(self, index: int, what: str, make: Callable[[], Any]) -> Any:
        key = (index, what)
        if key not in self.private:
            self.private[key] = make()
        return self.private[key]

    def one_call(self) -> None:
        rng = self.rng
        fn = rng.choice(FUNCTIONS)
        threads = rng.choice(THREADS)
        index = rng.randrange(len(self.data))
        d = self.data[index]
        want = d.expected[fn]
        args: tuple[Any, ...] = (d.g, d.x) if fn == "backward" else (d.x,)
        call = CALL[fn]
        path = rng.choice(["numbers", "list", "ndarray", "ndarray out=", "ndarray in place",
                           "array.array", "array.array in place"])  # fmt: skip
        if path == "numbers":
            z = rng.choice(self.numbers)
            g = rng.choice(self.numbers)
            got = call(*((g, z) if fn == "backward" else (z,)), d.alpha, threads=threads)
            expected = number_oracle(fn, z, d.alpha, g)
            if not same_number(got, expected):
                self.tally.fail(f"{fn}({z!r}, {d.alpha!r}) = {got!r}, expected {expected!r}")
        elif path == "list":
            zs = self.numbers
            gs = self.numbers[::-1]
            got = call(*((gs, zs) if fn == "backward" else (zs,)), d.alpha, threads=threads)
            expected_list = [number_oracle(fn, z, d.alpha, g) for g, z in zip(gs, zs, strict=True)]
            if not (
                type(got) is list
                and len(got) == len(expected_list)
                and all(same_number(a, b) for a, b in zip(got, expected_list, strict=True))
            ):
                self.tally.fail(f"{fn} on a list: {got!r}, expected {expected_list!r}")
        elif path == "ndarray":
            got = call(*args, d.alpha, threads=threads)
            if type(got) is not np.ndarray:
                self.tally.fail(f"{fn} on an ndarray gave {type(got).__name__}")
            self.expect(got, want, d, fn, path)
        elif path == "ndarray out=":
            out = self.buffer(index, f"out {fn}", lambda: np.empty(d.x.shape, dtype=want[0]))
            out.fill(0)
            got = call(*args, d.alpha, out=out, threads=threads)
            if got is not out:
                self.tally.fail(f"{fn} out=: the result is not out")
            self.expect(out, want, d, fn, path)
        elif path == "ndarray in place":
            # the input that has the result's format is overwritten by it
            source = d.g if fn == "backward" else d.x
            if source.dtype.char != want[0]:
                return
            work = self.buffer(index, f"work {fn}", lambda: np.empty_like(source))
            np.copyto(work, source)
            if fn == "backward":
                got = call(work, d.x, d.alpha, out=work, threads=threads)
            else:
                got = call(work, d.alpha, out=work, threads=threads)
            if got is not work:
                self.tally.fail(f"{fn} in place: the result is not the input")
            self.expect(work, want, d, fn, path)
        elif d.as_array is not None and d.g_array is not None:
            # array.array: grad_output is a float64 copy of g, so backward's
            # answer is the float64 one
            g_want = d.expected["backward d"] if fn == "backward" else want
            if path == "array.array":
                shared = (d.g_array, d.as_array) if fn == "backward" else (d.as_array,)
                got = call(*shared, d.alpha, threads=threads)
                if type(got) is not array.array:
                    self.tally.fail(f"{fn} on array.array gave {type(got).__name__}")
                self.expect(got, g_want, d, fn, path)
            else:
                source = d.g_array if fn == "backward" else d.as_array
                if source.typecode != g_want[0]:
                    return  # an int16 array cannot hold its float64 result
                work = self.buffer(index, f"array {fn}", lambda: array.array(source.typecode))
                work[:] = source
                if fn == "backward":
                    got = call(work, d.as_array, d.alpha, out=work, threads=threads)
                else:
                    got = call(work, d.alpha, out=work, threads=threads)
                if got is not work:
                    self.tally.fail(f"{fn} in place on array.array: the result is not the input")
                self.expect(work, g_want, d, fn, path)
        else:
            return
        check_gil(f"{fn} via {path}")
        self.tally.calls += 1
        self.tally.by_path[path] = self.tally.by_path.get(path, 0) + 1

    def expect(
        self, got: Any, want: tuple[str, list[float], bytes], d: Data, fn: str, path: str
    ) -> None:
        problem = check_buffer(got, want, d.alpha)
        if problem is not None:
            self.tally.fail(f"{fn} via {path} on {d.kind}[{d.x.size}], alpha {d.alpha}: {problem}")


def run_workers(worker: Worker, deadline: float, minimum: int) -> None:
    tally = worker.tally
    while tally.calls < minimum or time.monotonic() < deadline:
        try:
            worker.one_call()
        except BaseException:  # an exception is a wrong answer too, a warning included
            tally.fail(traceback.format_exc(limit=4))
            tally.calls += 1
        if len(tally.failures) >= 20:
            return


def race_tune(deadline: float, tally: Tally) -> None:
    """Keep changing the thresholds while the workers run, then put them back."""
    rng = random.Random(7)
    defaults = ext._tune()
    try:
        while time.monotonic() < deadline:
            name = rng.choice(list(TUNE_VALUES))
            ext._tune(**{name: rng.choice(TUNE_VALUES[name])})
            now = ext._tune()
            for key, value in now.items():
                if value not in TUNE_VALUES[key] and value != defaults[key]:
                    tally.fail(f"_tune() reads {key}={value}, which nobody set")
            tally.calls += 1
            check_gil("_tune")
            time.sleep(0.0005)
    except BaseException:
        tally.fail(traceback.format_exc(limit=4))
    finally:
        ext._tune(**defaults)


def fork_child(d: Data, out: Any) -> int:
    """In the fork child: compute across a pool of its own; the exit status says how it went."""
    try:
        check_gil("fork (child)")
        if len(ext._worker_parts()) != 0:
            return 4  # the parent's pool must be forgotten here
        ext._tune(gil_threshold=0, parallel_threshold=0)  # every call splits
        for threads in (8, 3):
            out.fill(0)
            leaky_relu(d.x, d.alpha, out=out, threads=threads)
            if out.tobytes() != d.expected["forward"][2]:
                return 5
        if len(ext._worker_parts()) == 0:
            return 6  # no pool of its own was made (which workers wake in time is the OS's call)
        check_gil("a call in the fork child")
        return 0
    except BaseException:
        traceback.print_exc()
        return 7


def race_fork(deadline: float, big: Data, tally: Tally) -> dict[str, int]:
    """Fork while a pool job runs on another thread; the child must not inherit it."""
    figures = {"forks": 0, "forks_during_a_pool_call": 0}
    x = np.tile(big.x, 100)
    expected = big.expected["forward"][2] * 100
    child_out = np.empty_like(big.x)
    in_call = threading.Event()
    stop = threading.Event()

    def hog() -> None:
        out = np.empty_like(x)
        while not stop.is_set():
            in_call.set()
            leaky_relu(x, big.alpha, out=out, threads=8)
            in_call.clear()
            # every 8th result is checked, so that the hog spends its time in calls
            if tally.calls % 8 == 0 and out.tobytes() != expected:
                tally.fail("the 100-tile forward under forks is wrong")
            tally.calls += 1

    hogger = threading.Thread(target=hog)
    hogger.start()
    try:
        while time.monotonic() < deadline:
            in_call.wait(1.0)
            time.sleep(0.0005)
            during = in_call.is_set()
            pid = os.fork()
            if pid == 0:
                os._exit(fork_child(big, child_out))
            figures["forks"] += 1
            figures["forks_during_a_pool_call"] += during
            status = wait_child(pid, 60.0)
            if status != 0:
                tally.fail(f"the fork child ended with {status}")
            check_gil("fork (parent)")
            time.sleep(0.05)
    except BaseException:
        tally.fail(traceback.format_exc(limit=4))
    finally:
        stop.set()
        hogger.join()
    return figures


def wait_child(pid: int, timeout: float) -> int | str:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.005)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    return f"a hang, killed after {timeout} s"


def first_call() -> None:
    """In a fresh interpreter: 16 threads make the process's first NumPy calls at once."""
    if ext._numpy_fast_path() != "untried":
        raise AssertionError(
            f"NumPy's C API was looked up before the race: {ext._numpy_fast_path()}"
        )
    data = make_data([97], PAIRS[:3])
    cases = [(data[i % 3], FUNCTIONS[i % 3]) for i in range(NTHREADS)]
    barrier = threading.Barrier(NTHREADS)
    tally = Tally()

    def racer(d: Data, fn: str) -> None:
        args = (d.g, d.x) if fn == "backward" else (d.x,)
        out = np.empty(d.x.shape, dtype=d.expected[fn][0])
        try:
            barrier.wait()
            got = CALL[fn](*args, d.alpha)  # the first call: the lookup, or the buffer route
            CALL[fn](*args, d.alpha, out=out)
            if type(got) is not np.ndarray:
                tally.fail(f"the first {fn} call gave {type(got).__name__}, not an ndarray")
            for result in (got, out):
                problem = check_buffer(result, d.expected[fn], d.alpha)
                if problem is not None:
                    tally.fail(f"{fn} on {d.kind}: {problem}")
            check_gil(f"the first {fn} call")
        except BaseException:
            tally.fail(traceback.format_exc(limit=4))

    racers = [threading.Thread(target=racer, args=case) for case in cases]
    for t in racers:
        t.start()
    for t in racers:
        t.join()
    state = ext._numpy_fast_path()
    if state != "ready":
        tally.fail(f"after the race the NumPy fast path is {state!r}, not 'ready'")
    print(json.dumps({"calls": 2 * NTHREADS, "failures": tally.failures}))


def run_races(count: int) -> tuple[int, list[str]]:
    """`count` fresh interpreters running first_call, four at a time."""
    calls, failures = 0, []
    command = [sys.executable, "-W", "error", "-X", "faulthandler", __file__, "--first-call"]
    for start in range(0, count, 4):
        batch = [
            subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(min(4, count - start))
        ]
        for child in batch:
            out, err = child.communicate(timeout=120)
            if child.returncode != 0:
                failures.append(f"a race child ended with {child.returncode}: {err[-2000:]}")
                continue
            report = json.loads(out)
            calls += report["calls"]
            failures += report["failures"]
    return calls, failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--races", type=int, default=4)
    parser.add_argument(
        "--big", action="store_true", help="40,000-element inputs of every dtype, not only float64"
    )
    parser.add_argument("--first-call", action="store_true", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.first_call:
        first_call()
        return 0

    start = time.monotonic()
    race_calls, race_failures = run_races(options.races)

    # The pool's size and the 40,000-element inputs (above the default
    # parallel threshold) are what make threads= and the pool matter.
    data = make_data([1, 7, 333, 4099, *([40_000] if options.big else [])])
    if not options.big:
        data += make_data([40_000], [("d", "d")])
    numbers = NUMBERS + [float(v) for v in sample("d", 40, 9)]
    setup = time.monotonic() - start
    t0 = time.monotonic()
    deadline = t0 + options.seconds
    tallies = [Tally() for _ in range(NTHREADS + 2)]
    workers = [Worker(seed, data, numbers, tallies[seed]) for seed in range(NTHREADS)]
    big = next(d for d in data if d.kind == "d" and d.x.size == 40_000)
    fork_figures: dict[str, int] = {}
    # the racers first, so that they run from the start, then the 16 workers
    threads = [threading.Thread(target=race_tune, args=(deadline, tallies[NTHREADS]))]
    forker = threading.Thread(
        target=lambda: fork_figures.update(race_fork(deadline, big, tallies[NTHREADS + 1]))
    )
    # Under qemu-user the forker starts after the other threads: qemu 7.2
    # holds a lock of its own while it creates a thread and does not take it
    # around fork, so a child forked while another thread was being started
    # inherits it held and hangs at its first thread (its pool's): qemu's
    # bug, shown without leaky by tests/c/fork_threads.c (docs/platforms.md).
    # Natively it starts with the others, so forks also meet thread starts.
    emulated = qemu_user()
    if hasattr(os, "fork") and emulated is None:
        threads.append(forker)
    threads += [threading.Thread(target=run_workers, args=(w, deadline, 50)) for w in workers]
    if hasattr(os, "fork") and emulated is not None:
        threads.append(forker)
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t0
    check_gil("the stress run")
    by_path: dict[str, int] = {}
    for tally in tallies[:NTHREADS]:
        for path, n in tally.by_path.items():
            by_path[path] = by_path.get(path, 0) + n
    failures = race_failures + [f for tally in tallies for f in tally.failures]
    figures = {
        "free_threaded": FREE_THREADED,
        "gil_enabled": gil_enabled(),
        "python": sys.version.split()[0],
        "kernels": ext._kernels,
        "pool_threads": ext._max_threads,
        "threads": NTHREADS,
        "seconds": round(elapsed, 1),
        "setup_seconds": round(setup, 1),
        "calls": sum(t.calls for t in tallies[:NTHREADS]),
        "by_path": by_path,
        "tune_calls": tallies[NTHREADS].calls,
        "pool_calls_under_forks": tallies[NTHREADS + 1].calls,
        **fork_figures,
        "worker_parts": sum(ext._worker_parts()),
        "first_call_races": options.races,
        "qemu_user": emulated,
        "first_call_race_calls": race_calls,
        "failures": len(failures),
    }
    print(json.dumps(figures))
    for failure in failures[:20]:
        print("FAILURE:", failure, file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
