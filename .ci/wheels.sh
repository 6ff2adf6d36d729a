#!/usr/bin/env bash
# Packaging checks that need no hosted runner: the sdist and its contents,
# the wheel's metadata, a manylinux wheel per CPython on this machine, each
# installed into a fresh venv and tested (the whole suite on the oldest,
# the CPython-dependent part of it on the others), the
# cibuildwheel configuration, and the workflows' lint.
#
# Run from the venv .ci/run made (leaky installed there); installs the
# `release` dependency group into it.  Writes only under a temporary folder.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

step() { echo "== wheels.sh [$((SECONDS - started))s] $*"; }

step "install the release tools (dependency group 'release')"
python -m pip install --quiet --group release

# Archives carry this time instead of now, so a rebuild gives the same bytes.
SOURCE_DATE_EPOCH=$(git log -1 --format=%ct)
export SOURCE_DATE_EPOCH

step "python -m build: the sdist, then a wheel built from it"
python -m build --outdir "$work/dist" . >"$work/build.log" 2>&1 || {
    cat "$work/build.log"
    exit 1
}
sdist=$(echo "$work"/dist/leaky-*.tar.gz)
wheel=$(echo "$work"/dist/leaky-*.whl)
ls -l "$work/dist"

step "twine check --strict, check-wheel-contents"
twine check --strict "$sdist" "$wheel"
check-wheel-contents "$wheel"

step "the sdist holds exactly the tracked sources, tests and documents"
git ls-files -- csrc src/leaky tests examples LICENSE README.md CHANGELOG.md MANIFEST.in \
    pyproject.toml setup.py >"$work/expected.txt"
python - "$sdist" "$work/expected.txt" <<'EOF'
import sys
import tarfile

sdist, expected_list = sys.argv[1], sys.argv[2]
with tarfile.open(sdist) as archive:
    members = [m.name for m in archive.getmembers() if m.isfile()]
top = members[0].split("/", 1)[0]
names = {name.split("/", 1)[1] for name in members}
expected = set(open(expected_list).read().split())
generated = {"PKG-INFO", "setup.cfg"}
egg_info = {name for name in names if name.startswith("src/leaky.egg-info/")}
missing = sorted(expected - names)
stray = sorted(names - expected - generated - egg_info)
needed = ["csrc/leaky.c", "csrc/leaky.h", "src/leaky/_leaky.pyi", "src/leaky/py.typed", "tests/conftest.py",
          "tests/data/float16_pytorch.npz", "LICENSE", "README.md"]
assert not missing, f"missing from the sdist: {missing}"
assert not stray, f"stray files in the sdist: {stray}"
assert all(name in names for name in needed), [n for n in needed if n not in names]
print(f"{top}: {len(names)} files, none missing, none stray")
EOF

step "auditwheel: this machine's wheel repaired to a manylinux tag"
auditwheel repair --wheel-dir "$work/repaired" "$wheel" >"$work/audit.log" 2>&1 || {
    cat "$work/audit.log"
    exit 1
}
repaired=$(echo "$work"/repaired/leaky-*.whl)
case "$repaired" in
*manylinux*) echo "repaired: $(basename "$repaired")" ;;
*) echo "auditwheel gave no manylinux tag: $repaired" >&2 && exit 1 ;;
esac

# Every CPython 3.10-3.13 this machine has: the running one (required),
# others through pyenv or on PATH as python3.X, each used when present.
running=$(python -c 'import sys; print("%d.%d" % sys.version_info[:2])')
pythons=()
for version in 3.10 3.11 3.12 3.13; do
    found=""
    if [ "$version" = "$running" ]; then
        found=$(command -v python)
    elif command -v pyenv >/dev/null 2>&1; then
        # pyenv first: its shims are on PATH but fail unless a version is chosen
        found=$(PYENV_VERSION=$version pyenv which python 2>/dev/null || true)
    fi
    if [ -z "$found" ] && command -v "python$version" >/dev/null 2>&1; then
        found=$(command -v "python$version")
    fi
    if [ -n "$found" ] && [ "$("$found" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" = "$version" ]; then
        pythons+=("$found")
        echo "CPython $version: $found"
    else
        echo "CPython $version: not on this machine"
        if [ "$version" = "$running" ]; then
            echo "the running Python ($running) must be among them" >&2
            exit 1
        fi
    fi
done
# The suite's own dependencies, from the project's dependency group.
read -r -a test_deps <<<"$(python - <<'EOF'
try:
    import tomllib
except ImportError:  # Python 3.10: pip carries a TOML reader
    from pip._vendor import tomli as tomllib
with open("pyproject.toml", "rb") as file:
    print(" ".join(tomllib.load(file)["dependency-groups"]["wheel-test"]))
EOF
)"

# The tests run as cibuildwheel's test-command does: tests/ and the pytest
# configuration, from the unpacked sdist, in a folder with no source tree.
mkdir "$work/sdist" && tar -xzf "$sdist" -C "$work/sdist"
unpacked=$(echo "$work"/sdist/leaky-*)
# The whole suite on the oldest CPython's wheel; on the others, all but the
# files whose outcome rests only on the compiled loops and the pool, which
# are the same C on every CPython and run whole elsewhere in .ci/run (every
# kernel path, the sanitizers, 3.13t, arm64): two thirds of the suite's
# time.  What does differ per CPython stays: the C-API and the buffer
# protocol (numbers, buffers, errors, refcounts), the NumPy that CPython
# gets (ufunc, DLPack, ml_dtypes), multiprocessing's start methods, and the
# wheel's own import and packaging.
kernel_only=(tests/test_nan_bits.py tests/test_threads.py tests/test_fuzz_arrays.py
    tests/test_properties.py tests/test_float16.py tests/test_layouts.py tests/test_freethreading.py)
whole=$("${pythons[0]}" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
for python in "${pythons[@]}"; do
    version=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    suite=()
    if [ "$version" = "$whole" ]; then
        step "CPython $version: wheel from the sdist, repaired, installed in a fresh venv, whole suite"
    else
        step "CPython $version: wheel from the sdist, repaired, installed in a fresh venv, the suite less ${kernel_only[*]#tests/}"
        for file in "${kernel_only[@]}"; do
            suite+=("--ignore=$file")
        done
    fi
    venv="$work/venv-$version"
    "$python" -m venv "$venv"
    if [ "$version" = "$running" ]; then
        built=$wheel
    else
        "$venv/bin/python" -m pip wheel --quiet --no-deps --wheel-dir "$work/wheels-$version" "$sdist"
        built=$(echo "$work/wheels-$version"/leaky-*.whl)
        auditwheel repair --wheel-dir "$work/repaired" "$built" >"$work/audit.log" 2>&1 || {
            cat "$work/audit.log"
            exit 1
        }
    fi
    tag=$(basename "$built" | cut -d- -f3)
    repaired=$(echo "$work"/repaired/leaky-*-"$tag"-"$tag"-*manylinux*.whl)
    echo "installing $(basename "$repaired")"
    "$venv/bin/python" -m pip install --quiet "$repaired" "${test_deps[@]}"
    run="$work/run-$version"
    mkdir "$run" && cp -r "$unpacked/tests" "$unpacked/examples" "$unpacked/pyproject.toml" "$run/"
    (
        cd "$run"
        "$venv/bin/python" -c 'import leaky, sys; assert leaky.__file__.startswith(sys.prefix), leaky.__file__; print("imports", leaky.__file__)'
        "$venv/bin/python" -m pytest -q -p no:cacheprovider "${suite[@]}" | tail -n 2
    )
done

step "cibuildwheel: the promised build identifiers (tests/test_packaging.py)"
python -m pytest -q -p no:cacheprovider tests/test_packaging.py -rs

step "workflow lint: actionlint (with shellcheck), zizmor --offline"
actionlint -color=false
zizmor --offline --no-progress .github/workflows

step "done in $((SECONDS - started))s"
