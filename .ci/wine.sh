#!/usr/bin/env bash
# leaky's Windows x64 code, run on Windows' own APIs under Wine: built with
# Debian's mingw-w64 gcc from the shipped csrc/ files against CPython 3.13's
# Windows headers (PC/pyconfig.h, from .ci/cpython-source.sh's tree), with a
# stand-in python313.dll for the few C-API calls they import
# (tests/c/python_stub.c), and run with Debian's Wine:
#
#   kernel_paths.exe   tests/c/kernel_paths.c unchanged: every kernel table
#                      this CPU has (AVX-512, AVX2) against the portable
#                      loops, on the Windows x64 calling convention (xmm6-15
#                      callee-saved, arguments in rcx/rdx/r8/r9), and every
#                      table against PyTorch's bfloat16 results
#   windows_pool.exe   tests/c/windows_pool.c: the pool on Win32 threads,
#                      SRW locks and condition variables under 8 callers and
#                      20,000 small jobs, its shutdown, and the CPU count
#                      (affinity, processor groups, a job object's CPU-rate
#                      cap as far as Wine implements it; it says which)
#
# Seconds once Wine's prefix exists (cached under ${LEAKY_CI_CACHE:-~/.cache/leaky-ci}).
# Under CI=true it installs gcc-mingw-w64-x86-64 and wine64 itself.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS
step() { echo "-- wine.sh [$((SECONDS - started))s] $*"; }

if [ "${CI:-}" = true ] && { ! command -v x86_64-w64-mingw32-gcc >/dev/null || ! command -v wine >/dev/null; }; then
    apt-get update -qq && apt-get install -y -qq gcc-mingw-w64-x86-64 wine wine64 >/dev/null
fi
for tool in x86_64-w64-mingw32-gcc wine; do
    command -v "$tool" >/dev/null || {
        echo "wine.sh: $tool missing (apt-get install gcc-mingw-w64-x86-64 wine64)" >&2
        exit 1
    }
done

cpython=$(bash .ci/cpython-source.sh)
cache=${LEAKY_CI_CACHE:-$HOME/.cache/leaky-ci}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# PC/pyconfig.h.in is what CPython's Windows build copies to pyconfig.h.
mkdir "$work/pyconfig"
cp "$cpython/PC/pyconfig.h.in" "$work/pyconfig/pyconfig.h"
flags=(-O2 -std=c11 -Wall -Wextra -Werror -Wno-unused-parameter -D__USE_MINGW_ANSI_STDIO=1
    -I.ci/platforms/sdk-rpcndr -I"$work/pyconfig" -I"$cpython/Include" -Icsrc -Itests/c)
cc=x86_64-w64-mingw32-gcc
kernels=(csrc/loops_portable.c csrc/kernels_avx2.c csrc/kernels_avx512.c csrc/kernels_neon.c
    csrc/cpu_dispatch.c)

step "mingw-w64: $($cc -dumpversion), the stand-in python313.dll, two programs"
$cc "${flags[@]}" -shared -o "$work/python313.dll" tests/c/python_stub.c \
    -Wl,--out-implib,"$work/libpython313.a"
$cc "${flags[@]}" -o "$work/kernel_paths.exe" tests/c/kernel_paths.c "${kernels[@]}"
$cc "${flags[@]}" -o "$work/windows_pool.exe" tests/c/windows_pool.c csrc/pool.c csrc/driver.c \
    "${kernels[@]}" "$work/libpython313.a"
# the programs are Windows' own: PE32+ for x86-64, importing python313.dll
x86_64-w64-mingw32-objdump -p "$work/windows_pool.exe" | grep -c 'DLL Name: python313.dll' >/dev/null ||
    { echo "wine.sh: windows_pool.exe does not import python313.dll" >&2; exit 1; }

# The vectors as raw little-endian arrays (.ci/vectors_raw.py), as for .ci/kernel_paths.sh.
mkdir "$work/vectors"
python3 .ci/vectors_raw.py "$work/vectors"

# A 64-bit prefix, made once per Wine version (wineboot takes seconds).
export WINEARCH=win64 WINEDEBUG=-all
WINEPREFIX=$cache/wine-prefix-$(wine --version | tr -c 'A-Za-z0-9.\n' _)
export WINEPREFIX
if [ ! -f "$WINEPREFIX/.complete" ]; then
    rm -rf "$WINEPREFIX"
    wine wineboot --init >/dev/null 2>&1
    touch "$WINEPREFIX/.complete"
fi
step "$(wine --version), prefix ready"

(cd "$work" && wine ./kernel_paths.exe "$(winepath -w "$work/vectors" 2>/dev/null)")
step "kernel_paths.exe passed"
(cd "$work" && wine ./windows_pool.exe)
wineserver -w 2>/dev/null || true  # the prefix's server exits before the next step
step "windows_pool.exe passed"
