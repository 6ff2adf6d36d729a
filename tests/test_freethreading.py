"""Free-threading: the GIL stays off, and 16 threads on every path at once agree with the oracle.

Both run on any build; what they assert about the GIL only applies to a
free-threaded one (3.13t and up), where .ci/freethreaded.sh runs the suite
and, for a minute, tests/freethreading_stress.py itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

STRESS = Path(__file__).with_name("freethreading_stress.py")
FREE_THREADED = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
PATHS = {
    "numbers",
    "list",
    "ndarray",
    "ndarray out=",
    "ndarray in place",
    "array.array",
    "array.array in place",
}


def run_python(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """A fresh interpreter with warnings as errors (CPython's "GIL enabled" one included)."""
    return subprocess.run(
        [sys.executable, "-W", "error", "-X", "faulthandler", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        # a pool of 8 (7 workers) whatever the CPUs, as test_threads.py's stress
        env={**os.environ, "LEAKY_NUM_THREADS": "8"},
    )


def test_import_and_every_kind_of_call_keep_the_gil_off() -> None:
    # sys._is_gil_enabled() is 3.13's; before it every build has a GIL
    code = textwrap.dedent("""
        import array, sys
        import leaky
        states = [getattr(sys, "_is_gil_enabled", lambda: True)()]
        import numpy as np
        x = np.linspace(-1, 1, 100_000)
        for z in (-1.5, [1, -2.0], array.array("f", [1, -2]), x, x.astype("e")):
            leaky.leaky_relu(z)
            leaky.leaky_relu_grad(z)
            leaky.leaky_relu_backward(z, z)
            states.append(getattr(sys, "_is_gil_enabled", lambda: True)())
        print(states)
    """)
    done = run_python("-c", code, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str([not FREE_THREADED] * 6)


def test_sixteen_threads_every_path_against_the_oracle() -> None:
    seconds = os.environ.get("LEAKY_FT_STRESS_SECONDS", "2")
    done = run_python(str(STRESS), "--seconds", seconds, "--races", "2")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-6000:]
    figures = json.loads(done.stdout.splitlines()[-1])
    assert figures["failures"] == 0
    assert figures["free_threaded"] == FREE_THREADED
    assert figures["gil_enabled"] == (not FREE_THREADED)
    assert figures["threads"] == 16 and figures["pool_threads"] == 8
    # every path was taken, the thresholds moved under the calls, the pool ran parts
    assert set(figures["by_path"]) == PATHS and min(figures["by_path"].values()) > 0
    assert figures["calls"] >= 16 * 50
    assert figures["tune_calls"] > 0
    assert figures["worker_parts"] > 0
    if hasattr(os, "fork"):
        assert figures["forks"] > 0
    # two fresh interpreters, 16 threads each making a first NumPy call and an out= one
    assert figures["first_call_race_calls"] == 2 * 16 * 2


def test_a_first_array_array_result_raced_by_another_stays_an_array_array() -> None:
    # leaky._containers learns array.array's type on the first array.array
    # result.  A thread that looked before another thread learned it, and
    # tested again after, took the type as already known and returned None,
    # so its caller got a memoryview (found by freethreading_stress.py on
    # 3.13t).  Here the window is held open on any build: the first thread
    # waits inside new_result (on a stand-in for NumPy's module, which
    # new_result consults in between) until a second thread has made the
    # process's first array.array result.
    code = textwrap.dedent("""
        import array, sys, threading, types
        from leaky import leaky_relu
        import leaky._containers as containers

        assert "numpy" not in sys.modules and containers._array_type == ()
        inside, second_done = threading.Event(), threading.Event()
        held = []

        class NotNumpy(types.ModuleType):
            ndarray = generic = type("NotAnArray", (), {})

            def __getattribute__(self, name):
                if name == "ndarray" and not held:
                    held.append(threading.current_thread().name)
                    inside.set()
                    assert second_done.wait(30), "the second thread never finished"
                return super().__getattribute__(name)

        sys.modules["numpy"] = NotNumpy("numpy")
        results = {}

        def call(name):
            results[name] = leaky_relu(array.array("d", [-2.0, 3.0]), 0.5)

        first = threading.Thread(target=call, args=("first",), name="first")
        first.start()
        assert inside.wait(30)
        call("second")
        second_done.set()
        first.join()
        del sys.modules["numpy"]
        print(held[0], {k: (type(v).__name__, list(v)) for k, v in sorted(results.items())})
    """)
    done = run_python("-c", code, timeout=120)
    assert done.returncode == 0, done.stderr
    expected = {"first": ("array", [-1.0, 3.0]), "second": ("array", [-1.0, 3.0])}
    assert done.stdout.strip() == f"first {expected}"
