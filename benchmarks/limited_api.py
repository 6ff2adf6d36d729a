"""What abi3 would cost: leaky built twice, as is and with the limited API's functions.

csrc/ does not compile with Py_LIMITED_API (this script counts the errors),
so the cost is measured on a stand-in: the same files with each non-limited
macro it calls on its hot paths replaced by the limited API's function
(PyFloat_AS_DOUBLE -> PyFloat_AsDouble, PyTuple_GET_ITEM -> PyTuple_GetItem,
...).  Both builds are timed in fresh processes, round by round, and the
medians compared.  Needs gcc, the Python headers and NumPy; Linux only.

    python benchmarks/limited_api.py [--rounds 7]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CSRC = ROOT / "csrc"
SOURCES = sorted(CSRC.glob("*.c"))

SHIM = """#define PY_SSIZE_T_CLEAN
#include <Python.h>
#undef PyFloat_AS_DOUBLE
#define PyFloat_AS_DOUBLE(o) PyFloat_AsDouble(o)
#undef PyTuple_GET_SIZE
#define PyTuple_GET_SIZE(o) PyTuple_Size(o)
#undef PyTuple_GET_ITEM
#define PyTuple_GET_ITEM(o, i) PyTuple_GetItem((o), (i))
#undef PyList_SET_ITEM
#define PyList_SET_ITEM(o, i, v) PyList_SetItem((o), (i), (v))
#undef PyTuple_SET_ITEM
#define PyTuple_SET_ITEM(o, i, v) PyTuple_SetItem((o), (i), (v))
"""

CASES = {
    "leaky_relu(-1.5)": "f(x)",
    "leaky_relu(-1.5, 0.1)": "f(x, a)",
    "leaky_relu(-1.5, alpha=0.1)": "f(x, alpha=a)",
    "leaky_relu(3)": "f(i)",
    "leaky_relu(float32[1000])": "f(arr)",
    "leaky_relu(float32[10], out=o)": "f(small, out=o)",
}

TIMER = r"""
import json, sys, timeit
import numpy as np
sys.path.insert(0, sys.argv[1])
import leaky
ns = dict(f=leaky.leaky_relu, x=-1.5, a=0.1, i=3,
          arr=np.linspace(-1, 1, 1000, dtype=np.float32),
          small=np.linspace(-1, 1, 10, dtype=np.float32), o=np.empty(10, dtype=np.float32))
result = {}
for name, stmt in json.loads(sys.argv[2]).items():
    number = 20000 if "arr" in stmt else 200000
    result[name] = min(timeit.Timer(stmt, globals=ns).repeat(5, number)) / number * 1e9
print(json.dumps(result))
"""


def compile_errors(include: str, limited: str) -> tuple[int, int]:
    flags = ["-fsyntax-only", "-std=c11", f"-DPy_LIMITED_API={limited}", f"-I{include}"]
    done = subprocess.run(
        ["gcc", *flags, *map(str, SOURCES)],
        capture_output=True,
        text=True,
    )
    # leaky.h is compiled once per source file: count each diagnostic once
    diagnostics = set(re.findall(r"^\S+:\d+:\d+: (?:error|warning): .*$", done.stderr, re.M))
    errors = sum(": error: " in line for line in diagnostics)
    # and each undeclared function once, however many files call it
    implicit = len(set(re.findall(r"implicit declaration of function .(\w+).", done.stderr)))
    return errors, implicit


def build(folder: Path, shim: Path | None, include: str, suffix: str) -> None:
    """Builds the extension into folder/leaky; with shim, every source includes it first."""
    package = folder / "leaky"
    package.mkdir(parents=True)
    for file in (ROOT / "src" / "leaky").glob("*.py"):
        shutil.copy(file, package)
    flags = ["-shared", "-fPIC", "-O3", "-flto", "-std=c11", f"-I{include}", f"-I{CSRC}"]
    if shim is not None:
        flags += ["-include", str(shim)]
    subprocess.run(
        ["gcc", *flags, *map(str, SOURCES), "-o", str(package / f"_leaky{suffix}"), "-lpthread"],
        check=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    include = sysconfig.get_paths()["include"]
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    for limited in ("0x030a0000", "0x030b0000"):
        errors, implicit = compile_errors(include, limited)
        print(f"Py_LIMITED_API={limited}: {errors} errors, {implicit} implicit declarations")
    with tempfile.TemporaryDirectory() as temp:
        work = Path(temp)
        shim = work / "shim.h"
        shim.write_text(SHIM)
        build(work / "full", None, include, suffix)
        build(work / "limited", shim, include, suffix)
        times: dict[str, dict[str, list[float]]] = {
            b: {k: [] for k in CASES} for b in ("full", "limited")
        }
        for _ in range(args.rounds):
            for name in ("full", "limited"):
                out = subprocess.check_output(
                    [sys.executable, "-c", TIMER, str(work / name), json.dumps(CASES)]
                )
                for case, ns in json.loads(out).items():
                    times[name][case].append(ns)
    print("\n| call | full C API | limited-API functions | difference |\n|---|---:|---:|---:|")
    for case in CASES:
        full = statistics.median(times["full"][case])
        limited_ns = statistics.median(times["limited"][case])
        change = (limited_ns / full - 1) * 100
        print(
            f"| `{case}` | {full:.1f} ns | {limited_ns:.1f} ns "
            f"| {limited_ns - full:+.1f} ns ({change:+.1f}%) |"
        )


if __name__ == "__main__":
    main()
