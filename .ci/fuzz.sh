#!/usr/bin/env bash
# Fuzzing against the sanitized build (LEAKY_SANITIZE=1): any crash, sanitizer
# report, oracle mismatch or unexpected exception fails.
#
#   bash .ci/fuzz.sh            # bounded, as CI runs it (a few minutes on 2 cores)
#   bash .ci/fuzz.sh --forever  # open-ended: until stopped or a finding
#
# 1. hypothesis (tests/test_fuzz_arrays.py): arbitrary NumPy layouts over one
#    byte buffer (every dtype, 0-d to 5-d, zero/negative/odd strides,
#    unaligned, overlapping out, outs that overlap themselves, threads)
#    against the pure-Python oracle; and (tests/test_nan_bits.py) NaN slopes
#    and NaN data with payloads against the bit-level oracle, bit for bit.
# 2. atheris (tests/fuzz/fuzz_entry_points.py): hostile exporters
#    (memoryview.cast, ctypes, odd format strings), slopes, outs.  Under the
#    sanitizers it is not coverage-guided: the preloaded gcc sanitizer
#    runtimes define the __sanitizer_cov_* hooks before atheris's libFuzzer
#    (atheris prints a WARNING), so the corpus stays at one unit.
# 3. atheris again, coverage-guided, on the LEAKY_DEBUG=1 build (C asserts
#    on, no preload): coverage of the harness and the leaky package steers
#    it toward new exporter/format/shape combinations.  See
#    docs/reliability.md.
# Knobs: LEAKY_FUZZ_EXAMPLES (hypothesis examples per test, default 2000),
# LEAKY_FUZZ_RUNS (atheris executions, default 200000), LEAKY_FUZZ_SECONDS
# (atheris time cap under the sanitizers, default 240), LEAKY_FUZZ_GUIDED_SECONDS
# (the guided phase's cap, default 120).  Findings land in .fuzz/ (git-ignored).
set -euo pipefail
cd "$(dirname "$0")/.."

forever=0
if [ "${1:-}" = --forever ]; then
    forever=1
fi

venv=.venv-sanitize
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
# shellcheck disable=SC1091
source "$venv/bin/activate"
python -m pip install --quiet --upgrade pip
python -m pip install --quiet ".[test]" atheris
LEAKY_SANITIZE=1 python -m pip install --quiet --no-deps --force-reinstall --no-cache-dir .

reports=$(mktemp -d)
trap 'rm -rf "$reports"' EXIT
LD_PRELOAD="$(gcc -print-file-name=libasan.so):$(gcc -print-file-name=libubsan.so)"
export LD_PRELOAD
export PYTHONMALLOC=malloc
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:log_path=$reports/asan"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$reports/ubsan"
python -c "import leaky._leaky as e; assert e._assertions == 1, 'not the sanitized build'"

status=0
if [ "$forever" = 1 ]; then
    examples=${LEAKY_FUZZ_EXAMPLES:-1000000}
else
    examples=${LEAKY_FUZZ_EXAMPLES:-2000}
fi
echo "== hypothesis: $examples examples per test (tests/test_fuzz_arrays.py, tests/test_nan_bits.py)"
LEAKY_HYPOTHESIS_PROFILE=fuzz LEAKY_FUZZ_EXAMPLES=$examples \
    python -m pytest -q -p no:cacheprovider tests/test_fuzz_arrays.py tests/test_nan_bits.py ||
    status=$?

# run_atheris CORPUS SECONDS: the harness, bounded by LEAKY_FUZZ_RUNS and
# SECONDS, or open-ended with --forever; findings land in .fuzz/findings/.
run_atheris() {
    local corpus=$1 seconds=$2 limits
    if [ "$forever" = 1 ]; then
        limits=(-max_total_time=0)
    else
        limits=("-runs=${LEAKY_FUZZ_RUNS:-200000}" "-max_total_time=$seconds")
    fi
    mkdir -p "$corpus" .fuzz/findings
    echo "== atheris: ${limits[*]} (tests/fuzz/fuzz_entry_points.py, corpus $corpus)"
    python tests/fuzz/fuzz_entry_points.py -max_len=4096 -print_final_stats=1 \
        -artifact_prefix=.fuzz/findings/ "${limits[@]}" "$corpus" 2>&1 |
        grep -v '^INFO: Instrumenting'
}

run_atheris .fuzz/corpus "${LEAKY_FUZZ_SECONDS:-240}" || status=$?

# The guided phase: same harness, the asserts-on build, no sanitizer preload.
unset LD_PRELOAD ASAN_OPTIONS UBSAN_OPTIONS
LEAKY_DEBUG=1 python -m pip install --quiet --no-deps --force-reinstall --no-cache-dir .
python -c "import leaky._leaky as e; assert e._assertions == 1, 'not the asserts-on build'"
echo "(coverage-guided: the LEAKY_DEBUG=1 build)"
run_atheris .fuzz/corpus-guided "${LEAKY_FUZZ_GUIDED_SECONDS:-120}" || status=$?

if compgen -G "$reports/*" > /dev/null; then
    echo "fuzz: sanitizer reports:" >&2
    cat "$reports"/* >&2
    status=1
fi
if [ "$status" -ne 0 ]; then
    echo "fuzz: FAILED (inputs that fail are in .fuzz/findings/)" >&2
else
    echo "fuzz: clean"
fi
exit "$status"
