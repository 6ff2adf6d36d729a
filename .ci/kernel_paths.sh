#!/usr/bin/env bash
# The SIMD kernels against the portable loops, bit for bit, in C
# (tests/c/kernel_paths.c): natively for this CPU's paths (AVX2, AVX-512),
# and cross-compiled for arm64 and run under qemu-user for the NEON loops
# (.ci/arm64.sh runs them inside the real module too); then every path's bfloat16 loops against
# PyTorch's results for all 65,536 patterns (tests/data/bfloat16_pytorch.npz,
# unpacked to raw files with NumPy first).  Seconds.  The arm64 half needs
# gcc-aarch64-linux-gnu and qemu-user or qemu-user-static (.ci/run installs
# them); without them it is skipped with a note, except under CI=true,
# where it must run.
set -euo pipefail
cd "$(dirname "$0")/.."

include=$(python3 -c "import sysconfig; print(sysconfig.get_paths()['include'])")
sources=(tests/c/kernel_paths.c csrc/loops_portable.c csrc/kernels_avx2.c
    csrc/kernels_avx512.c csrc/kernels_neon.c csrc/cpu_dispatch.c)
flags=(-O2 -std=c11 -Wall -Wextra -Werror -Wno-unused-parameter "-I$include" -Icsrc)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The vectors as raw little-endian arrays, which the C harness reads.
vectors=$work/vectors
mkdir "$vectors"
python3 .ci/vectors_raw.py "$vectors"

echo "-- native ($(uname -m))"
gcc "${flags[@]}" "${sources[@]}" -o "$work/native"
"$work/native" "$vectors"

# qemu-user's or qemu-user-static's (.ci/arm64.sh needs the latter)
qemu=$(command -v qemu-aarch64 || command -v qemu-aarch64-static || true)
if command -v aarch64-linux-gnu-gcc >/dev/null && [ -n "$qemu" ]; then
    # The kernels use Python.h for its types only (Py_ssize_t), the same on
    # every 64-bit Linux, so this machine's headers serve the arm64 build.
    echo "-- arm64 under qemu-user"
    aarch64-linux-gnu-gcc "${flags[@]}" -static "${sources[@]}" -o "$work/arm64"
    "$qemu" "$work/arm64" "$vectors"
elif [ "${CI:-}" = true ]; then
    echo "aarch64-linux-gnu-gcc or qemu-aarch64 missing: the NEON loops cannot be checked" >&2
    exit 1
else
    echo "-- arm64 skipped: install gcc-aarch64-linux-gnu and qemu-user-static to run the NEON loops"
fi
