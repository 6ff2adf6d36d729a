#!/usr/bin/env bash
# The whole test suite against a build with AddressSanitizer and
# UndefinedBehaviorSanitizer (and C asserts on): LEAKY_SANITIZE=1, see setup.py.
# Fails on any test failure and on any sanitizer report, including reports
# from the subprocesses some tests start (they inherit the environment).
#
#   bash .ci/sanitize.sh                 # the whole suite, slow tests excluded
#   bash .ci/sanitize.sh -k threads      # extra arguments go to pytest
#
# The interpreter itself is not instrumented, so the sanitizer runtimes are
# preloaded; PYTHONMALLOC=malloc sends Python's allocations through malloc,
# where ASan sees them.  detect_leaks=0: the interpreter keeps memory alive
# at exit on purpose, which LeakSanitizer would report (leaks are checked by
# tests/test_leaks.py instead).
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.venv-sanitize
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
# shellcheck disable=SC1091
source "$venv/bin/activate"
python -m pip install --quiet --upgrade pip
python -m pip install --quiet ".[test]"
# a fresh build of the extension with the sanitizers (never a cached wheel)
LEAKY_SANITIZE=1 python -m pip install --quiet --no-deps --force-reinstall --no-cache-dir .

asan=$(gcc -print-file-name=libasan.so)
ubsan=$(gcc -print-file-name=libubsan.so)
if [ ! -e "$asan" ] || [ ! -e "$ubsan" ]; then
    echo "sanitize: gcc's libasan/libubsan not found ($asan, $ubsan)" >&2
    exit 1
fi

reports=$(mktemp -d)
trap 'rm -rf "$reports"' EXIT
export LD_PRELOAD="$asan:$ubsan"
export PYTHONMALLOC=malloc
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:log_path=$reports/asan"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$reports/ubsan"

# the build really is the sanitized one: asserts on, ASan linked in
python - <<'PY'
import leaky._leaky as ext

assert ext._assertions == 1, "LEAKY_SANITIZE=1 did not reach the build"
maps = open("/proc/self/maps").read()
assert "libasan" in maps, "libasan is not loaded"
print("sanitize: build", ext.__file__, "kernels", ext._kernels)
PY

status=0
python -m pytest -q -p no:cacheprovider "$@" || status=$?
if compgen -G "$reports/*" > /dev/null; then
    echo "sanitize: sanitizer reports:" >&2
    cat "$reports"/* >&2
    status=1
fi
if [ "$status" -ne 0 ]; then
    echo "sanitize: FAILED" >&2
else
    echo "sanitize: clean"
fi
exit "$status"
