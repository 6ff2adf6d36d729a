#!/usr/bin/env bash
# The thread tests and a pool stress against a ThreadSanitizer build
# (LEAKY_TSAN=1, see setup.py; C asserts on).  Fails on any test failure
# and on any ThreadSanitizer report, including reports from the
# subprocesses the tests start (they inherit the environment).
#
#   bash .ci/tsan.sh                      # the thread, process and ufunc-method tests, stress 20 s
#   LEAKY_POOL_STRESS_SECONDS=120 bash .ci/tsan.sh -k stress
#
# The interpreter itself is not instrumented, so the runtime is preloaded.
# ThreadSanitizer then sees the extension's memory accesses and atomics and
# every pthread call (so the GIL's hand-offs, a mutex and a condition
# variable, order what Python threads do), but not the interpreter's or
# NumPy's own memory accesses: a report always has the extension in it.
# .ci/tsan.supp lists what is suppressed, and why.
set -euo pipefail
cd "$(dirname "$0")/.."

tsan=$(gcc -print-file-name=libtsan.so)
if [ ! -e "$tsan" ]; then
    echo "tsan: gcc's libtsan not found ($tsan); on Debian: apt-get install libtsan2" >&2
    exit 1
fi

venv=.venv-tsan
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
# shellcheck disable=SC1091
source "$venv/bin/activate"
python -m pip install --quiet --upgrade pip
python -m pip install --quiet ".[test]"
# a fresh build of the extension with ThreadSanitizer (never a cached wheel)
LEAKY_TSAN=1 python -m pip install --quiet --no-deps --force-reinstall --no-cache-dir .

reports=$(mktemp -d)
trap 'rm -rf "$reports"' EXIT
export LD_PRELOAD="$tsan"
# halt_on_error: the first report ends the process (exit code 66), so a test
# fails even where its output is not read; log_path keeps every report.
# die_after_fork=0: a fork child of a process with threads may start threads
# (leaky's pool does, tests/test_threads.py and test_processes.py fork on
# purpose); ThreadSanitizer would otherwise end such a child at once.
export TSAN_OPTIONS="halt_on_error=1:exitcode=66:die_after_fork=0:second_deadlock_stack=1:log_path=$reports/tsan:suppressions=$PWD/.ci/tsan.supp"
export LEAKY_POOL_STRESS_SECONDS="${LEAKY_POOL_STRESS_SECONDS:-20}"

# the build really is the instrumented one: asserts on, the runtime loaded
python - <<'PY'
import leaky._leaky as ext

assert ext._assertions == 1, "LEAKY_TSAN=1 did not reach the build"
maps = open("/proc/self/maps").read()
assert "libtsan" in maps, "libtsan is not loaded"
print("tsan: build", ext.__file__, "kernels", ext._kernels)
PY

status=0
# test_ufunc_methods.py: leaky.ufunc's loops on the pool, forced on for every
# run, reduce and accumulate (whose operands alias) included
python -m pytest -q -p no:cacheprovider tests/test_threads.py tests/test_processes.py \
    tests/test_ufunc_methods.py "$@" ||
    status=$?
if compgen -G "$reports/*" > /dev/null; then
    echo "tsan: ThreadSanitizer reports:" >&2
    cat "$reports"/* >&2
    status=1
fi
if [ "$status" -ne 0 ]; then
    echo "tsan: FAILED" >&2
else
    echo "tsan: clean"
fi
exit "$status"
