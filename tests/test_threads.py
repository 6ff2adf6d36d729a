"""Large arrays: the GIL released, the thread pool, streaming stores, fork and exit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from conftest import assert_matches, expected_backward, expected_forward, sample

import leaky._leaky as ext
from leaky import leaky_relu, leaky_relu_backward, leaky_relu_grad

GIL = ext._tune()["gil_threshold"]
PARALLEL = ext._tune()["parallel_threshold"]
STREAM_BYTES = ext._tune()["stream_bytes"]


def numpy_forward(x: Any, alpha: float) -> Any:
    """A vectorised oracle for big arrays, checked against the pure one below."""
    a = np.asarray(alpha, dtype=x.dtype)
    with np.errstate(all="ignore"):
        return np.where(x > 0, x, x * a)


def test_numpy_forward_agrees_with_the_pure_oracle() -> None:
    x = sample("f", (4096,), seed=40)
    assert_matches(numpy_forward(x, 0.3), expected_forward(x, 0.3), "f", 0.3)


@pytest.mark.parametrize("size", [GIL - 1, GIL, GIL + 1, PARALLEL - 1, PARALLEL, PARALLEL + 63])
@pytest.mark.parametrize("threads", [None, 1, 2, 3, 64])
def test_both_sides_of_the_thresholds(size: int, threads: int | None) -> None:
    x = sample("f", (size,), seed=size)
    expected = numpy_forward(x, 0.2)
    np.testing.assert_array_equal(leaky_relu(x, 0.2, threads=threads), expected)
    out = np.empty_like(x)
    leaky_relu(x, 0.2, out=out, threads=threads)
    np.testing.assert_array_equal(out, expected)
    leaky_relu(x, 0.2, out=x, threads=threads)
    np.testing.assert_array_equal(x, expected)


@pytest.mark.parametrize("threads", [None, 1, 2])
def test_parallel_views_and_backward(threads: int | None) -> None:
    base = sample("d", (3, 300, 200), seed=41)
    for view in (base, base[:, ::-2, 1::3], base.transpose(2, 0, 1), base[0]):
        assert_matches(
            leaky_relu(view, 0.5, threads=threads), expected_forward(view, 0.5), "d", 0.5
        )
    g = sample("e", (PARALLEL * 2 + 5,), seed=42)
    z = sample("e", g.shape, seed=43)
    assert_matches(
        leaky_relu_backward(g, z, 0.1, threads=threads), expected_backward(g, z, 0.1), "e", 0.1
    )
    grad = leaky_relu_grad(z, 0.1, threads=threads)
    assert_matches(
        grad,
        [
            0x3C00 if v else int(np.float16(np.float32(0.1)).view(np.uint16))
            for v in (z > 0).tolist()
        ],
        "e",
        0.1,
    )


def test_threads_argument_is_checked() -> None:
    x = np.zeros(10)
    for bad in (0, -1, -(10**30)):
        with pytest.raises(ValueError, match="'threads' must be at least 1"):
            leaky_relu(x, threads=bad)
    for wrong in ("2", 1.5, True):
        with pytest.raises(TypeError, match="'threads' must be an int or None"):
            leaky_relu(x, threads=wrong)  # type: ignore[arg-type]
    assert leaky_relu(x, threads=10**30).shape == (10,)  # capped, not an error
    assert leaky_relu_backward(x, x, threads=None).shape == (10,)


def progress_during(call: Callable[[], object]) -> int:
    """How far a pure-Python counter thread gets while `call` runs.

    A huge switch interval stops the interpreter from handing the GIL over
    on its own; the counter yields it with sleep(0) on every step.  So the
    counter can advance during `call` only if `call` releases the GIL.
    """
    count = 0
    stop = False
    started = threading.Event()

    def spin() -> None:
        nonlocal count
        started.set()
        while not stop:
            count += 1
            time.sleep(0)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(100.0)
    thread = threading.Thread(target=spin)
    try:
        thread.start()
        started.wait()
        before = count
        call()
        return count - before
    finally:
        stop = True
        sys.setswitchinterval(interval)
        thread.join()


def test_other_threads_run_during_a_large_call() -> None:
    x = np.ones(3 * 10**7, dtype="f")
    out = np.empty_like(x)
    assert progress_during(lambda: leaky_relu(x, out=out, threads=1)) > 100
    small = np.ones(GIL // 2, dtype="f")
    small_out = np.empty_like(small)  # made here: NumPy's copy itself releases the GIL
    # below the threshold the GIL stays held: the counter cannot move
    assert progress_during(lambda: leaky_relu(small, out=small_out)) == 0


def test_concurrent_callers_share_the_pool() -> None:
    arrays = [sample("f", (PARALLEL * 4 + i,), seed=i) for i in range(8)]
    expected = [numpy_forward(a, 0.3) for a in arrays]
    shared = sample("f", (PARALLEL * 4,), seed=99)
    shared_expected = numpy_forward(numpy_forward(shared, 0.3), 0.3)
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def work(i: int) -> None:
        try:
            barrier.wait()
            for _ in range(20):
                np.testing.assert_array_equal(leaky_relu(arrays[i], 0.3), expected[i])
            # all threads read the shared array; none writes it
            np.testing.assert_array_equal(leaky_relu(shared, 0.3), numpy_forward(shared, 0.3))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors[0]
    leaky_relu(shared, 0.3, out=shared)
    leaky_relu(shared, 0.3, out=shared)
    np.testing.assert_array_equal(shared, shared_expected)


def run_script(code: str, **env: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


# Tiny jobs through the pool, back to back from several Python threads, with
# threads= changing the part count from one job to the next: what a late
# worker holding an old job's ticket would meet.  In place with alpha = 0.5,
# so a part run twice gives 0.25 * z and a part written after the call
# returned shows up in the next check; every product is exact, so numpy's
# where() is an exact oracle.  LEAKY_POOL_STRESS_SECONDS sets the run time
# (.ci/tsan.sh runs it longer under ThreadSanitizer).
POOL_STRESS = """
import sys, threading, time
import numpy as np
import leaky._leaky as ext
from leaky import leaky_relu, leaky_relu_backward

seconds, nthreads = float(sys.argv[1]), int(sys.argv[2])
assert ext._max_threads == 8, ext._max_threads
ext._tune(gil_threshold=0, parallel_threshold=0)  # every call splits, however small
ALPHA = 0.5
SHAPES = [(1,), (7,), (64,), (65,), (200,), (513,), (1000,), (3, 40), (37, 5), (8, 8, 8)]
THREADS = [2, 8, 2, 8, 3, 5, None]
deadline = time.monotonic() + seconds
results = []

def stress(seed):
    rng = np.random.default_rng(seed)
    cases = []
    for shape in SHAPES:
        x = rng.standard_normal(shape)
        cases.append((x, np.where(x > 0, x, x * ALPHA), np.where(x > 0, 1.0, ALPHA)))
    calls = wrong = 0
    first = None
    while calls < 200 or time.monotonic() < deadline:
        for (x, forward, grad), threads in zip(cases, THREADS * 2):
            work = x.copy()
            leaky_relu(work, ALPHA, out=work, threads=threads)
            ones = np.ones_like(x)
            leaky_relu_backward(ones, x, ALPHA, out=ones, threads=threads)
            fresh = leaky_relu(x, ALPHA, threads=threads)
            calls += 3
            for got, want in ((work, forward), (ones, grad), (fresh, forward)):
                if not np.array_equal(got, want):
                    wrong += 1
                    i = int(np.flatnonzero(got.ravel() != want.ravel())[0])
                    first = first or (x.shape, threads, i, got.ravel()[i], want.ravel()[i])
    results.append((calls, wrong, first))

workers = [threading.Thread(target=stress, args=(i,)) for i in range(nthreads)]
for t in workers:
    t.start()
for t in workers:
    t.join()
calls = sum(r[0] for r in results)
wrong = sum(r[1] for r in results)
firsts = [r[2] for r in results if r[2] is not None]
assert len(results) == nthreads, results
assert wrong == 0, f"{wrong} wrong results of {calls} calls, first: {firsts[0]}"
assert sum(ext._worker_parts()) > 0, "the workers never took a part"
print("ok", calls)
"""


def test_pool_stress_tiny_jobs_from_many_threads() -> None:
    seconds = os.environ.get("LEAKY_POOL_STRESS_SECONDS", "2")
    done = subprocess.run(
        [sys.executable, "-c", POOL_STRESS, seconds, "6"],
        capture_output=True,
        text=True,
        timeout=float(seconds) * 10 + 120,
        env={**os.environ, "LEAKY_NUM_THREADS": "8"},
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert done.stdout.split()[0] == "ok", done.stdout


def test_threads_n_uses_at_most_n_threads() -> None:
    # A pool of 5 workers (LEAKY_NUM_THREADS may exceed the CPUs): threads=n
    # must leave workers n-1 and up idle, and the answers must be right.
    out = run_script(
        """
        import numpy as np, leaky, leaky._leaky as ext
        assert ext._max_threads == 6, ext._max_threads
        x = np.linspace(-1, 1, 10**6)
        expected = np.where(x > 0, x, 0.25 * x)
        for n in (2, 3, 6):
            before = ext._worker_parts() or (0,) * 5
            for _ in range(20):
                assert (leaky.leaky_relu(x, 0.25, threads=n) == expected).all()
            ran = [after - b for after, b in zip(ext._worker_parts(), before)]
            assert len(ran) == 5, ran
            assert all(count == 0 for count in ran[n - 1:]), (n, ran)
            print(n, sum(count > 0 for count in ran))
        """,
        LEAKY_NUM_THREADS="6",
    )
    # which of the allowed workers wake in time is up to the OS; the cap is not
    assert [line.split()[0] for line in out.splitlines()] == ["2", "3", "6"]


def import_with_thread_count(value: str | None, *flags: str) -> tuple[int, int, list[str]]:
    """_max_threads, _thread_cap and the warnings of `import leaky` in a fresh process."""
    env = {k: v for k, v in os.environ.items() if k != "LEAKY_NUM_THREADS"}
    if value is not None:
        env["LEAKY_NUM_THREADS"] = value
    code = textwrap.dedent("""
        import json, warnings
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            import leaky._leaky as ext
        print(json.dumps([ext._max_threads, ext._thread_cap,
                          [f"{w.category.__name__}: {w.message}" for w in caught]]))
    """)
    done = subprocess.run(
        [sys.executable, *flags, "-c", code], capture_output=True, text=True, timeout=60, env=env
    )
    assert done.returncode == 0, done.stderr
    used, cap, warnings = json.loads(done.stdout)
    return used, cap, warnings


@pytest.fixture(scope="module")
def automatic_thread_count() -> int:
    used, cap, warnings = import_with_thread_count(None)
    assert 1 <= used <= cap and not warnings
    return used


@pytest.mark.parametrize(
    "value", ["0", "-1", "-2", "abc", "four", "2x", "2.5", "0x10", "+", "4 4", "\u0664"]
)
def test_bad_thread_count_in_the_environment_is_ignored(
    value: str, automatic_thread_count: int
) -> None:
    used, cap, warnings = import_with_thread_count(value)
    assert used == automatic_thread_count
    assert warnings == [
        f"RuntimeWarning: LEAKY_NUM_THREADS={value!r} is not a thread count (a whole number "
        f"from 1 to {cap}); ignored, using {used} (the CPUs this process may use)"
    ]


@pytest.mark.parametrize("value", ["4", " 4", "4 ", " 4 ", "\t4\n", "+4", "0004"])
def test_thread_count_in_the_environment_ignores_whitespace(value: str) -> None:
    assert import_with_thread_count(value) == (4, 1024, [])


@pytest.mark.parametrize("value", ["", "   "])
def test_empty_thread_count_in_the_environment_means_unset(
    value: str, automatic_thread_count: int
) -> None:
    assert import_with_thread_count(value) == (automatic_thread_count, 1024, [])


@pytest.mark.parametrize("value", ["1025", " 5000 ", "99999999999999999999999999"])
def test_thread_count_above_the_cap_is_clamped(value: str) -> None:
    used, cap, warnings = import_with_thread_count(value)
    assert (used, cap) == (1024, 1024)
    assert warnings == [
        f"RuntimeWarning: LEAKY_NUM_THREADS={value!r} is more than leaky's cap of 1024 "
        "threads; using 1024"
    ]
    assert import_with_thread_count("1024") == (1024, 1024, [])  # the cap itself is fine


def test_thread_count_warning_obeys_the_warning_filters() -> None:
    # -W error turns this warning into an error, as it does every warning
    done = subprocess.run(
        [sys.executable, "-W", "error::RuntimeWarning", "-c", "import leaky"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "LEAKY_NUM_THREADS": "abc"},
    )
    assert done.returncode != 0
    assert "RuntimeWarning: LEAKY_NUM_THREADS='abc' is not a thread count" in done.stderr


def test_thread_count_from_the_environment_caps_auto() -> None:
    out = run_script(
        """
        import numpy as np, leaky, leaky._leaky as ext
        x = np.ones(10**6)
        leaky.leaky_relu(x)
        print(ext._max_threads, ext._worker_parts())
        """,
        LEAKY_NUM_THREADS="1",
    )
    assert out.split() == ["1", "()"]  # one thread: no pool is ever made


@pytest.mark.skipif(sys.platform == "win32", reason="os.fork is POSIX-only")
def test_pool_survives_fork() -> None:
    out = run_script("""
        import os, numpy as np, leaky
        x = np.linspace(-1, 1, 10**6)
        expected = np.where(x > 0, x, 0.01 * x)
        assert (leaky.leaky_relu(x) == expected).all()   # the parent's pool exists now
        pid = os.fork()
        if pid == 0:
            ok = all((leaky.leaky_relu(x) == expected).all() for _ in range(5))
            os._exit(0 if ok else 3)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, status
        assert (leaky.leaky_relu(x) == expected).all()
        print("ok")
    """)
    assert out.strip() == "ok"


# A grandchild whose pid is that of a dead ancestor which made a pool: with a
# pid check it took the inherited pool (threads gone, lock maybe held) for
# its own.  The pid is reused on purpose by writing ns_last_pid (root only).
PID_REUSE = """
import os
import numpy as np
import leaky, leaky._leaky as ext

x = np.linspace(-1, 1, 10**6)
expected = np.where(x > 0, x, 0.01 * x)

def fork_with_pid(wanted):
    for _ in range(50):
        with open("/proc/sys/kernel/ns_last_pid", "w") as f:
            f.write(str(wanted - 1))
        pid = os.fork()
        if pid == 0:
            if os.getpid() != wanted:
                os._exit(7)
            inherited = ext._worker_parts()
            ok = (leaky.leaky_relu(x) == expected).all()
            return f"{len(inherited)} {ok} {len(ext._worker_parts())}"
        _, status = os.waitpid(pid, 0)
        if os.waitstatus_to_exitcode(status) != 7:
            return None
    return "unlucky"

try:
    open("/proc/sys/kernel/ns_last_pid", "w").close()
except OSError as exc:
    print("skip", exc)
    raise SystemExit(0)
go_read, go_write = os.pipe()
out_read, out_write = os.pipe()
a = os.fork()
if a == 0:  # A makes a pool, forks B and exits
    assert (leaky.leaky_relu(x) == expected).all() and len(ext._worker_parts()) == 3
    a_pid = os.getpid()
    if os.fork() == 0:  # B forks, once A is gone, a child G with A's pid
        os.close(out_read)
        os.read(go_read, 1)
        seen = fork_with_pid(a_pid)
        if seen is not None:
            os.write(out_write, seen.encode())
    os._exit(0)
os.close(out_write)
os.waitpid(a, 0)  # A reaped: its pid is free
os.write(go_write, b"g")
print(os.read(out_read, 100).decode() or "no answer")
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ns_last_pid is Linux's")
def test_grandchild_with_a_dead_ancestors_pid_makes_its_own_pool() -> None:
    out = run_script(PID_REUSE, LEAKY_NUM_THREADS="4").strip()
    if out.startswith("skip") or out == "unlucky":
        pytest.skip(f"cannot choose the next pid here: {out}")
    # G saw no pool (the inherited one is forgotten), computed right, and made its own
    assert out == "0 True 3"


def test_interpreter_exits_with_a_busy_pool() -> None:
    out = run_script("""
        import threading, numpy as np, leaky
        x = np.ones(10**6)
        def loop():
            while True:
                leaky.leaky_relu(x)
        threading.Thread(target=loop, daemon=True).start()
        leaky.leaky_relu(x)
        print("exiting")
    """)
    assert out.strip() == "exiting"


@pytest.mark.parametrize("dtype", ["e", "f", "d"])
def test_streaming_stores_at_any_alignment(dtype: str) -> None:
    itemsize = np.dtype(dtype).itemsize
    count = STREAM_BYTES // itemsize + 1001
    x = sample(dtype, (count,), seed=7)
    expected = numpy_forward(x, 0.25)
    np.testing.assert_array_equal(
        leaky_relu(x, 0.25).view(f"u{itemsize}"), expected.view(f"u{itemsize}")
    )
    for offset in (0, itemsize, 3 * itemsize, 1):  # 1: not even element-aligned
        raw = np.zeros(count * itemsize + 64, dtype=np.uint8)
        out = raw[offset : offset + count * itemsize].view(dtype)
        leaky_relu(x, 0.25, out=out)
        np.testing.assert_array_equal(out.view(f"u{itemsize}"), expected.view(f"u{itemsize}"))
        assert not raw[:offset].any() and not raw[offset + count * itemsize :].any()
    g = sample(dtype, (count,), seed=8)
    assert_matches(
        leaky_relu_backward(g[:5000], x[:5000], 0.25),
        expected_backward(g[:5000], x[:5000], 0.25),
        dtype,
        0.25,
    )
    big_backward = leaky_relu_backward(g, x, 0.25)
    np.testing.assert_array_equal(
        big_backward[-5000:].view(f"u{itemsize}"),
        leaky_relu_backward(g[-5000:], x[-5000:], 0.25).view(f"u{itemsize}"),
    )


@pytest.fixture
def stream_everything() -> Any:
    """Streaming stores for every out= of any size, to reach their heads and tails."""
    old = ext._tune()["stream_bytes"]
    ext._tune(stream_bytes=0)
    yield
    ext._tune(stream_bytes=old)


@pytest.mark.parametrize("dtype", ["e", "f", "d"])
@pytest.mark.usefixtures("stream_everything")
def test_streaming_heads_and_tails(dtype: str) -> None:
    itemsize = np.dtype(dtype).itemsize
    for size in [*range(0, 70), 127, 128, 129, 1000]:
        x = sample(dtype, (size,), seed=size)
        g = sample(dtype, (size,), seed=size + 1)
        for offset in (0, itemsize, 5 * itemsize):
            raw = np.zeros(size * itemsize + 128, dtype=np.uint8)
            out = raw[offset : offset + size * itemsize].view(dtype)
            leaky_relu(x, -0.5, out=out)
            assert_matches(out, expected_forward(x, -0.5), dtype, -0.5)
            leaky_relu_backward(g, x, 0.5, out=out)
            assert_matches(out, expected_backward(g, x, 0.5), dtype, 0.5)
            assert not raw[:offset].any() and not raw[offset + size * itemsize :].any()
