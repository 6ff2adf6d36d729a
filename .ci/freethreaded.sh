#!/usr/bin/env bash
# The whole suite, and a free-threading stress test, on a free-threaded
# CPython 3.13 (3.13t) built here from the source tree .ci/cpython-source.sh
# prints (Debian's python3.13 source package).
#
#   bash .ci/freethreaded.sh                  # suite + stress test (30 s)
#   LEAKY_FT_STRESS_SECONDS=300 LEAKY_FT_RACES=100 bash .ci/freethreaded.sh -k freethreading
#
# The interpreter is built once (./configure --disable-gil, no PGO, no LTO:
# it runs tests, it is not timed) and installed into a prefix cached outside
# the clone, keyed by the Debian version of the source and by RECIPE below;
# a second run only makes the venv.  Debian's patches are reversed in a copy
# of the tree first, so the build is CPython's own 3.13 release with its own
# layout, as the hosted runners' interpreters have it, not Debian's system
# layout (whose ensurepip refuses to run outside a venv); Debian's security
# fixes go with them, which does not matter for an interpreter that only
# runs this suite.
#
# Extra arguments go to the suite's pytest run.
set -euo pipefail
cd "$(dirname "$0")/.."

# Bump when the configure options or the build steps change: a new prefix.
RECIPE=1

src=$(bash .ci/cpython-source.sh)
version=$(cat "$src/.debian-version")
cache=${LEAKY_CI_CACHE:-$HOME/.cache/leaky-ci}
prefix=$cache/cpython-3.13t-$version-r$RECIPE
python=$prefix/bin/python3.13t

exec 8>"$cache/cpython-3.13t.lock"
flock 8
if [ ! -f "$prefix/.complete" ]; then
    echo "freethreaded: building CPython 3.13t ($version) into $prefix"
    if [ "${CI:-}" = true ]; then
        # make and patch for the build (dpkg-dev brings both, but say so);
        # what pip and the suite need: ssl (pip), zlib (wheels), ctypes,
        # the compression modules, sqlite3, uuid; pkg-config finds them.
        apt-get update -qq
        apt-get install -y -qq make patch pkg-config libssl-dev zlib1g-dev libffi-dev \
            libbz2-dev liblzma-dev libsqlite3-dev uuid-dev >/dev/null
    fi
    rm -rf "$prefix"
    build=$(mktemp -d "$cache/build-3.13t.XXXXXX")
    trap 'rm -rf "$build"' EXIT
    cp -a "$src/." "$build/src"
    cd "$build/src"
    # quilt's record of what dpkg-source applied, undone last-first
    if [ -f .pc/applied-patches ]; then
        tac .pc/applied-patches | while read -r patch; do
            patch -R -p1 -s --no-backup-if-mismatch <"debian/patches/$patch"
        done
    fi
    start=$SECONDS
    # No test modules (the suite here is leaky's, not CPython's) and no pip
    # in the prefix (the venv gets its own): both save minutes of install.
    ./configure --prefix="$prefix" --disable-gil --disable-test-modules \
        --with-ensurepip=no >"$build/configure.log" 2>&1 ||
        { tail -n 40 "$build/configure.log"; exit 1; }
    make -j"$(nproc)" >"$build/make.log" 2>&1 || { tail -n 60 "$build/make.log"; exit 1; }
    make install >"$build/install.log" 2>&1 || { tail -n 60 "$build/install.log"; exit 1; }
    cd - >/dev/null
    # The modules pip and the suite rest on were built (a missing -dev
    # package only warns at configure time), and the GIL really is off.
    "$python" -c 'import sys, ssl, zlib, ctypes, bz2, lzma, sqlite3, uuid
assert not sys._is_gil_enabled(), "the GIL is on"'
    touch "$prefix/.complete"
    rm -rf "$build"  # only the installed prefix is kept
    echo "freethreaded: built in $((SECONDS - start)) s (load $(cut -d' ' -f1-3 /proc/loadavg))"
fi
flock -u 8  # the interpreter is built; what follows is this clone's own

# A venv of it, made afresh each run (seconds); the test dependencies as
# wheels only: NumPy and ml_dtypes publish cp313t wheels, the rest are pure
# Python or Python-agnostic (ruff).  mypy resolves to the last release
# without librt, which has no cp313t wheel; the suite does not run mypy.
venv=.venv-3.13t
"$python" -m venv --clear "$venv"
# shellcheck disable=SC1091
source "$venv/bin/activate"
python -c 'import sys, sysconfig
assert sysconfig.get_config_var("Py_GIL_DISABLED") == 1, "not a free-threaded build"
print("freethreaded:", sys.version)'
python -m pip install --quiet --only-binary :all: ".[test]"

# -W error: CPython's "the GIL has been enabled to load module ..." is a
# RuntimeWarning, so an extension without Py_mod_gil fails here.
python -W error -c 'import sys, leaky, numpy
assert not sys._is_gil_enabled(), "import leaky turned the GIL on"'

echo "== freethreaded: the whole suite on CPython 3.13t"
python -m pytest -q -p no:cacheprovider "$@"

echo "== freethreaded: the stress test, ${LEAKY_FT_STRESS_SECONDS:-30} s, 16 threads"
# A pool of 8 whatever the CPUs, so that threads= and the workers matter.
# Its figures (calls per path, forks, races) are the JSON line it prints.
LEAKY_NUM_THREADS=8 python -W error -X faulthandler tests/freethreading_stress.py \
    --seconds "${LEAKY_FT_STRESS_SECONDS:-30}" --races "${LEAKY_FT_RACES:-12}"
