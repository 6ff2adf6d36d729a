"""Long-haul checks: leaks over a million calls per path, an 8-thread stress run,
sub-interpreters and re-import, and an array of more than 2**31 elements.

The leak, stress and size tests are marked slow (``python -m pytest -m slow``);
.ci/run runs them.  The re-import and sub-interpreter tests run every time.
"""

from __future__ import annotations

import array
import gc
import importlib
import os
import subprocess
import sys
import textwrap
import tracemalloc
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import numpy as np
import pytest

from leaky import leaky_relu, leaky_relu_backward, leaky_relu_grad

CALLS = int(os.environ.get("LEAKY_LEAK_CALLS", "1000000"))
# tracemalloc's traced total may move by a few cached objects; RSS by allocator slack
TRACED_BOUND = 64 * 1024
RSS_BOUND = 8 * 1024 * 1024


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def released_view() -> memoryview[float]:
    view = memoryview(bytearray(24)).cast("d")
    view.release()
    return view


X = np.linspace(-1.0, 1.0, 3)
X32 = X.astype("f")
OUT = np.empty(3)
ALPHA = 0.3
BIG_NEG = -(10**400)
FRAC = Fraction(-1, 3)
SEQ = [1.0, -2.0, 3]
ARR = array.array("i", [1, -2, 3])
VIEW = memoryview(bytearray(24)).cast("d")
CT = (__import__("ctypes").c_float * 3)()
READONLY = np.zeros(3)
READONLY.flags.writeable = False
COMPLEX = np.zeros(3, complex)

# (name, call, exception or None, objects whose refcounts must not move)
PATHS: list[tuple[str, Callable[[], object], type[BaseException] | None, list[Any]]] = [
    ("float", lambda: leaky_relu(-1.5, ALPHA), None, [ALPHA]),
    ("int", lambda: leaky_relu(-3), None, []),
    ("fraction", lambda: leaky_relu(FRAC, ALPHA), None, [FRAC, ALPHA]),
    ("grad float", lambda: leaky_relu_grad(-1.5, alpha=ALPHA), None, [ALPHA]),
    ("backward floats", lambda: leaky_relu_backward(2.0, -1.0, ALPHA), None, [ALPHA]),
    ("list", lambda: leaky_relu(SEQ, ALPHA), None, [SEQ, ALPHA]),
    ("numpy", lambda: leaky_relu(X, ALPHA), None, [X, ALPHA]),
    ("numpy float32", lambda: leaky_relu_grad(X32), None, [X32]),
    ("numpy scalar", lambda: leaky_relu(X32[0]), None, []),
    ("array.array", lambda: leaky_relu(ARR), None, [ARR]),
    ("memoryview", lambda: leaky_relu(VIEW), None, [VIEW]),
    ("ctypes", lambda: leaky_relu(CT), None, [CT]),
    ("bytes", lambda: leaky_relu(b"abc"), None, []),
    ("out=", lambda: leaky_relu(X, ALPHA, out=OUT), None, [X, ALPHA, OUT]),
    ("backward out=", lambda: leaky_relu_backward(X, X, ALPHA, out=OUT), None, [X, OUT]),
    ("in place", lambda: leaky_relu(OUT, out=OUT), None, [OUT]),
    ("error: alpha type", lambda: leaky_relu(X, "a", out=OUT), TypeError, [X, OUT]),  # type: ignore[call-overload]
    ("error: out shape", lambda: leaky_relu(X, out=OUT[:2]), ValueError, [X, OUT]),
    ("error: out read-only", lambda: leaky_relu(X, out=READONLY), ValueError, [X, READONLY]),
    ("error: format", lambda: leaky_relu(COMPLEX, out=OUT), TypeError, [COMPLEX, OUT]),
    ("error: released", lambda: leaky_relu(released_view()), ValueError, []),
    ("error: backward shapes", lambda: leaky_relu_backward(X, OUT[:2]), ValueError, [X, OUT]),
    ("error: overflow", lambda: leaky_relu(BIG_NEG), OverflowError, [BIG_NEG]),
    ("error: out with number", lambda: leaky_relu(1.0, out=OUT), TypeError, [OUT]),
    ("error: missing z", lambda: leaky_relu(), TypeError, []),  # type: ignore[call-overload]
]


def repeat(call: Callable[[], object], exc: type[BaseException] | None, times: int) -> None:
    if exc is None:
        for _ in range(times):
            call()
        return
    for _ in range(times):
        try:
            call()
        except exc:
            pass
        else:
            raise AssertionError("no error")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("call", "exc", "objects"), [p[1:] for p in PATHS], ids=[p[0] for p in PATHS]
)
def test_a_million_calls_leak_nothing(
    call: Callable[[], object], exc: type[BaseException] | None, objects: list[Any]
) -> None:
    repeat(call, exc, 1000)  # warm caches: NumPy's API lookup, dtype objects, free lists
    gc.collect()
    counts = [sys.getrefcount(o) for o in objects]
    rss = rss_bytes()
    tracemalloc.start()
    try:
        repeat(call, exc, CALLS // 10)  # let tracemalloc's own tables settle first
        gc.collect()
        traced, _ = tracemalloc.get_traced_memory()
        repeat(call, exc, CALLS - CALLS // 10)
        gc.collect()
        traced_after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    growth = traced_after - traced
    rss_growth = rss_bytes() - rss
    print(f"{CALLS} calls: traced growth {growth} B, RSS growth {rss_growth} B")
    assert growth < TRACED_BOUND, growth
    assert rss_growth < RSS_BOUND, rss_growth
    assert [sys.getrefcount(o) for o in objects] == counts


STRESS = """
import sys, threading, numpy as np, leaky._leaky as ext
from leaky import leaky_relu, leaky_relu_grad, leaky_relu_backward
ext._tune(gil_threshold=256, parallel_threshold=512)  # GIL-free, pooled paths
THREADS, ROUNDS = 8, int(sys.argv[1])
def ref(x, a):
    with np.errstate(all="ignore"):
        return np.where(x > 0, x, x * np.asarray(a, x.dtype))
shared = np.linspace(-3, 3, 20000, dtype="f")
expected_shared = ref(shared, 0.25)
errors = []
barrier = threading.Barrier(THREADS)
def work(i):
    try:
        rng = np.random.default_rng(i)
        mine = rng.standard_normal(30000 + i).astype("d")
        inplace = mine.copy()
        barrier.wait()
        for r in range(ROUNDS):
            assert (leaky_relu(shared, 0.25) == expected_shared).all()  # shared
            grad = np.where(shared > 0, 1, np.float32(0.25))
            assert (leaky_relu_grad(shared, 0.25) == grad).all()
            out = np.empty_like(mine)
            leaky_relu_backward(mine, mine, 0.5, out=out)  # private out=
            assert (out == mine * np.where(mine > 0, 1.0, 0.5)).all()
            assert (leaky_relu(mine, 0.5) == ref(mine, 0.5)).all()  # private
            leaky_relu(inplace, 1.0, out=inplace)  # in place
            if r % 10 == 0:
                ext._tune(stream_bytes=(r * 4096) % 100000)  # racing _tune
            assert leaky_relu(-2.0, 0.5) == -1.0  # numbers
        assert (inplace == mine).all()
    except BaseException as exc:
        errors.append(exc)
threads = [threading.Thread(target=work, args=(i,)) for i in range(THREADS)]
for t in threads: t.start()
for t in threads: t.join()
assert not errors, errors[0]
# all threads writing one array in place with alpha=1: a value-preserving race
common = np.linspace(-1, 1, 50000)
copy = common.copy()
def same(i):
    for _ in range(ROUNDS):
        leaky_relu(common, 1.0, out=common)
threads = [threading.Thread(target=same, args=(i,)) for i in range(THREADS)]
for t in threads: t.start()
for t in threads: t.join()
assert (common == copy).all()
print("ok", THREADS, ROUNDS)
"""


@pytest.mark.slow
def test_eight_threads_all_functions_no_deadlock() -> None:
    done = subprocess.run(
        [sys.executable, "-c", STRESS, "300"], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["ok", "8", "300"]


def test_reimport_after_removal_from_sys_modules() -> None:
    code = textwrap.dedent("""
        import sys, numpy as np, leaky, leaky._leaky as first
        first._tune(gil_threshold=12345)
        assert first.leaky_relu(np.array([-1.0]))[0] == -0.01
        for name in [m for m in sys.modules if m == "leaky" or m.startswith("leaky.")]:
            del sys.modules[name]
        import leaky._leaky as second
        assert second is not first
        assert second._tune()["gil_threshold"] != 12345, "state shared between module objects"
        assert first._tune()["gil_threshold"] == 12345
        assert second.leaky_relu(np.array([-2.0]), 0.5)[0] == -1.0
        assert first.leaky_relu(np.array([-2.0]), 0.5)[0] == -1.0
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def subinterpreters() -> Any:
    for name in ("concurrent.interpreters", "_interpreters", "_xxsubinterpreters"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    return None


SUB = """
import leaky._leaky as ext
ext._tune(gil_threshold=777)
assert ext.leaky_relu(-2.0, 0.5) == -1.0
assert list(ext.leaky_relu(memoryview(bytes([1, 2])))) == [1.0, 2.0]
assert ext._tune()["gil_threshold"] == 777
"""


@pytest.mark.skipif(
    subinterpreters() is None,
    reason=f"Python {sys.version_info[0]}.{sys.version_info[1]} offers no sub-interpreter module "
    "(_xxsubinterpreters from 3.12 on here, concurrent.interpreters in 3.14)",
)
def test_sub_interpreter_imports_its_own_module() -> None:
    code = textwrap.dedent(f"""
        import importlib, leaky._leaky as ext
        for name in ("concurrent.interpreters", "_interpreters", "_xxsubinterpreters"):
            try:
                interp = importlib.import_module(name)
                break
            except ImportError:
                pass
        ext._tune(gil_threshold=4242)
        if hasattr(interp, "create") and hasattr(interp, "Interpreter"):  # 3.14
            sub = interp.create()
            sub.exec({SUB!r})
            sub.close()
        else:
            sub = interp.create()
            if hasattr(interp, "run_string"):
                interp.run_string(sub, {SUB!r})
            else:
                interp.exec(sub, {SUB!r})
            interp.destroy(sub)
        assert ext._tune()["gil_threshold"] == 4242, "the sub-interpreter changed our state"
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


@pytest.mark.slow
def test_more_than_2_to_the_31_float32_in_place() -> None:
    n = 2**31 + 17
    x = np.empty(n, dtype=np.float32)  # 8 GiB
    x[:] = -2.0
    x[1::2] = 3.0
    marks = np.array([0, 1, 2**31 - 2, 2**31 - 1, 2**31, 2**31 + 1, n - 2, n - 1])
    x[marks] = [-1.0, 5.0, -4.0, 6.0, -8.0, 7.0, -16.0, 9.0]
    assert leaky_relu(x, 0.5, out=x) is x
    assert x[marks].tolist() == [-0.5, 5.0, -2.0, 6.0, -4.0, 7.0, -8.0, 9.0]
    sample = np.random.default_rng(5).integers(0, n, 10000)
    sample = sample[~np.isin(sample, marks)]
    assert (x[sample] == np.where(sample % 2 == 1, 3.0, -1.0).astype(np.float32)).all()
    assert x[2**31 + 2 : 2**31 + 6].tolist() == [-1.0, 3.0, -1.0, 3.0]
