#!/usr/bin/env bash
# Compiles csrc/ for every wheel target from this machine, warnings as
# errors, with Zig's C compiler (clang with every target's libc headers
# bundled; the `platforms` dependency group pins it), against CPython 3.13's
# headers from Debian's source package (.ci/cpython-source.sh):
#
#   target                    links                           checks
#   x86_64-linux-gnu.2.17     .so, -flto                      newest GLIBC_ symbol <= 2.17
#   aarch64-linux-gnu.2.17    .so, -flto                      newest GLIBC_ symbol <= 2.17
#   x86_64-linux-musl         .so, -flto                      needs only libc.so
#   aarch64-linux-musl        .so, -flto                      needs only libc.so
#   x86_64-macos.10.9         .so, -undefined dynamic_lookup  (10.9: cibuildwheel's floor for cp310/cp311)
#   aarch64-macos.11.0        .so, -undefined dynamic_lookup
#   x86_64-windows-gnu        .pyd, against an import library of python313.dll
#   aarch64-windows-gnu       .pyd, the same
#
# each with the GIL build's headers and with the free-threaded (3.13t)
# ones (not mingw ARM64's: CPython's headers need MSVC's __getReg there);
# then an MSVC-mode compile of every file for x86-64 and ARM64
# (--target=*-windows-msvc, _MSC_VER 1940), once as clang-cl sees the code
# and once with the `!defined(__clang__)` branches forced on, as cl.exe sees
# it.  Every Windows compile puts .ci/platforms/sdk-rpcndr first on the
# include path: it gives mingw-w64's headers the SDK's `#define small char`.
#
# Both of setup.py's extensions are built: leaky._leaky, and leaky._ufunc
# against the target's own NumPy headers, taken from NumPy's wheel for that
# platform (MSVC mode adds a stand-in for the UCRT's <complex.h>, which they
# use under _MSC_VER: .ci/platforms/msvc-mode/include/).
#
# Last, whether every test dependency (the `wheel-test` group) installs from
# wheels on each of the 64 wheel identifiers, against [tool.cibuildwheel]'s
# test-skip (.ci/platforms/wheel_deps.py).
#
# Nothing here runs the compiled code: the Linux x86-64 build is run by the
# rest of .ci/run, the others only on the workflow's runners.
#
# Outside CI a machine without the CPython source (fetching it needs apt as
# root) skips the compiles with a message; under CI=true nothing is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS
step() { echo "-- $* ($((SECONDS - started))s)"; }

# ---- the compiler: ziglang from PyPI, in a venv of its own ----
venv=.venv-platforms
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --upgrade pip  # --group needs pip 25.1
"$venv/bin/python" -m pip install --quiet --group platforms
zig() { "$venv/bin/python" -m ziglang "$@"; }
# zig caches the libc stubs it builds per target; a warm cache saves most of the time
cache=${LEAKY_CI_CACHE:-$HOME/.cache/leaky-ci}
export ZIG_GLOBAL_CACHE_DIR=${ZIG_GLOBAL_CACHE_DIR:-$cache/zig}
step "zig $(zig version)"

# ---- CPython's headers ----
if ! cpython=$(bash .ci/cpython-source.sh); then
    if [ "${CI:-}" = true ]; then
        echo "platforms.sh: no CPython source tree (.ci/cpython-source.sh failed)" >&2
        exit 1
    fi
    echo "platforms.sh: SKIPPED the cross-compiles: .ci/cpython-source.sh could not fetch CPython's source (it needs apt-get as root)"
    cpython=
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# setup.py's flags for gcc and clang, warnings as errors
cflags=(-O3 -std=c11 -Wall -Wextra -Wno-unused-parameter -Werror)
# setup.py's two extensions: leaky._leaky is every file but ufunc.c, which
# is leaky._ufunc on its own, compiled against NumPy's headers.
sources=()
for src in csrc/*.c; do
    [ "$src" = csrc/ufunc.c ] || sources+=("$src")
done

# NumPy's headers as a wheel for the target ships them: _numpyconfig.h is
# written per platform when NumPy is built (type sizes, whether <endian.h>
# exists; Windows' long is 4 bytes), so the host's cannot stand in.  The
# include directory of the newest NumPy 2 wheel for CPython 3.13 (the build
# requirement is numpy>=2), cached per platform; the wheels are not kept.
numpy_headers() {  # $1: the target; prints the include directory
    local platforms
    case $1 in
    x86_64-linux-gnu*) platforms="manylinux_2_28_x86_64" ;;
    aarch64-linux-gnu*) platforms="manylinux_2_28_aarch64" ;;
    x86_64-linux-musl) platforms="musllinux_1_2_x86_64" ;;
    aarch64-linux-musl) platforms="musllinux_1_2_aarch64" ;;
    x86_64-macos*) platforms="macosx_14_0_x86_64 macosx_10_13_x86_64" ;;
    aarch64-macos*) platforms="macosx_14_0_arm64 macosx_11_0_arm64" ;;
    x86_64-windows*) platforms="win_amd64" ;;
    aarch64-windows*) platforms="win_arm64" ;;
    *) echo "platforms.sh: no NumPy wheel platform for $1" >&2; return 1 ;;
    esac
    local dir=$cache/numpy-headers/${platforms%% *}
    if [ ! -f "$dir/include/numpy/_numpyconfig.h" ]; then
        local args=() platform download=$work/numpy-${platforms%% *}
        for platform in $platforms; do args+=(--platform "$platform"); done
        "$venv/bin/python" -m pip download --quiet --no-deps --only-binary :all: \
            --python-version 3.13 --implementation cp --abi cp313 "${args[@]}" \
            -d "$download" "numpy>=2" >&2 || return 1
        rm -rf "$dir" && mkdir -p "$dir"
        "$venv/bin/python" - "$download"/numpy-*.whl "$dir" <<'PY' || return 1
import sys, zipfile
wheel, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as archive:
    prefix = "numpy/_core/include/"
    members = [m for m in archive.namelist() if m.startswith(prefix)]
    for member in members:
        target = dest + "/include/" + member[len(prefix):]
        if not member.endswith("/"):
            import os
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with open(target, "wb") as out:
                out.write(archive.read(member))
    with open(dest + "/version", "w") as out:
        out.write(wheel.rsplit("/", 1)[-1].split("-")[1] + "\n")
PY
    fi
    echo "$dir/include"
}

# PC/pyconfig.h for Windows: 3.13 ships it as PC/pyconfig.h.in, and the
# build copies it, defining Py_GIL_DISABLED for the free-threaded build.
windows_pyconfig() {  # $1: gil or ft; prints the include directory
    local dir=$work/pyconfig-win-$1
    mkdir -p "$dir"
    if [ "$1" = ft ]; then
        sed 's|^/\* #define Py_GIL_DISABLED 1 \*/$|#define Py_GIL_DISABLED 1|' \
            "$cpython/PC/pyconfig.h.in" >"$dir/pyconfig.h"
        grep -q '^#define Py_GIL_DISABLED 1$' "$dir/pyconfig.h" ||
            { echo "platforms.sh: PC/pyconfig.h.in has no Py_GIL_DISABLED line to turn on" >&2; exit 1; }
    else
        cp "$cpython/PC/pyconfig.h.in" "$dir/pyconfig.h"
    fi
    echo "$dir"
}

# One target, one header variant (gil or ft): compile and link.
build() {
    local target=$1 variant=$2 out=$work/$1-$2
    mkdir -p "$out"
    local ft=() numpy_include
    [ "$variant" = ft ] && ft=(-DPy_GIL_DISABLED=1)
    numpy_include=$(numpy_headers "$target") || return 1
    case $target in
    *-linux-*)
        zig cc -target "$target" "${cflags[@]}" "${ft[@]}" -I.ci/platforms/posix -I"$cpython/Include" \
            -flto -fPIC -shared -o "$out/_leaky.so" "${sources[@]}" -Wl,--no-as-needed -lpthread || return 1
        zig cc -target "$target" "${cflags[@]}" "${ft[@]}" -I.ci/platforms/posix -I"$cpython/Include" \
            -I"$numpy_include" -fPIC -shared -o "$out/_ufunc.so" csrc/ufunc.c || return 1
        local needed
        needed=$(readelf -d "$out/_leaky.so" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | sort | tr '\n' ' ')
        case $target in
        *-gnu.2.17)
            [ "$needed" = "libc.so.6 libpthread.so.0 " ] ||
                { echo "$target: unexpected DT_NEEDED: $needed" >&2; return 1; }
            local newest
            newest=$(readelf -V -W "$out/_leaky.so" | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -n1)
            printf '%s\n%s\n' "$newest" GLIBC_2.17 | sort -V -C ||
                { echo "$target: needs $newest, more than manylinux2014's GLIBC_2.17" >&2; return 1; }
            echo "   $target $variant: linked; needs $needed; newest symbol $newest"
            ;;
        *)
            [ "$needed" = "libc.so " ] ||
                { echo "$target: unexpected DT_NEEDED: $needed" >&2; return 1; }
            echo "   $target $variant: linked; needs $needed"
            ;;
        esac
        ;;
    *-macos*)
        # zig's Mach-O linker does no LTO, so no -flto here (the objects
        # are what Apple clang would compile; only cross-file inlining differs)
        zig cc -target "$target" "${cflags[@]}" "${ft[@]}" -I.ci/platforms/posix -I"$cpython/Include" \
            -fPIC -shared -Wl,-undefined,dynamic_lookup -o "$out/_leaky.so" "${sources[@]}" || return 1
        zig cc -target "$target" "${cflags[@]}" "${ft[@]}" -I.ci/platforms/posix -I"$cpython/Include" \
            -I"$numpy_include" -fPIC -shared -Wl,-undefined,dynamic_lookup -o "$out/_ufunc.so" \
            csrc/ufunc.c || return 1
        echo "   $target $variant: linked (CPython's symbols left to the loader)"
        ;;
    *-windows-gnu)
        # No python313.lib here: the objects name the CPython symbols they
        # import (__imp_Py*), an import library of python313.dll is made of
        # exactly those, and the link must resolve everything else from the
        # C runtime and the system libraries.  Compiled file by file (no
        # LTO: setup.py's Windows flags are MSVC's, this is the mingw view).
        local pyconfig
        pyconfig=$(windows_pyconfig "$variant")
        local objects=() src
        for src in "${sources[@]}"; do
            local obj
            obj=$out/$(basename "$src" .c).obj
            zig cc -target "$target" "${cflags[@]}" -I.ci/platforms/sdk-rpcndr -I"$pyconfig" \
                -I"$cpython/Include" -c -o "$obj" "$src" || return 1
            objects+=("$obj")
        done
        local dll=python313.dll machine=i386:x86-64
        [ "$variant" = ft ] && dll=python313t.dll
        [ "${target%%-*}" = aarch64 ] && machine=arm64
        { echo "LIBRARY $dll"; echo "EXPORTS"; "$venv/bin/python" .ci/platforms/coff_imports.py "${objects[@]}"; } >"$out/python.def"
        zig dlltool -m "$machine" -D "$dll" -d "$out/python.def" -l "$out/libpython.a" || return 1
        zig cc -target "$target" -shared -o "$out/_leaky.pyd" "${objects[@]}" "$out/libpython.a" || return 1
        # leaky._ufunc the same way, with the target's NumPy headers (NumPy's
        # own C API comes through its capsule at import: no NumPy library)
        zig cc -target "$target" "${cflags[@]}" -I.ci/platforms/sdk-rpcndr -I"$pyconfig" \
            -I"$cpython/Include" -I"$numpy_include" -c -o "$out/ufunc.obj" csrc/ufunc.c || return 1
        { echo "LIBRARY $dll"; echo "EXPORTS"; "$venv/bin/python" .ci/platforms/coff_imports.py "$out/ufunc.obj"; } >"$out/python-ufunc.def"
        zig dlltool -m "$machine" -D "$dll" -d "$out/python-ufunc.def" -l "$out/libpython-ufunc.a" || return 1
        zig cc -target "$target" -shared -o "$out/_ufunc.pyd" "$out/ufunc.obj" "$out/libpython-ufunc.a" || return 1
        echo "   $target $variant: linked against $(($(wc -l <"$out/python.def") - 2)) names of $dll" \
            "(leaky._ufunc: $(($(wc -l <"$out/python-ufunc.def") - 2)))"
        ;;
    esac
}

# MSVC mode: clang as the MSVC compiler (_MSC_VER = 1940, MSVC's builtins
# and <intrin.h>), on mingw-w64's headers (no Windows SDK here) through
# .ci/platforms/msvc-mode/prelude.h.  `forced`: leaky's own sources with
# `!defined(__clang__)` replaced by 1, so the cl.exe branches are compiled;
# cl.exe allows every intrinsic without target attributes, so those compiles
# get the instruction sets leaky's kernels use on x86-64.
msvc_check() {
    local arch=$1 mode=$2 variant=$3 out=$work/msvc-$1-$2-$3 srcdir=csrc
    mkdir -p "$out"
    if [ "$mode" = forced ]; then
        srcdir=$out/csrc
        cp -r csrc "$srcdir"
        sed -i 's/!defined(__clang__)/1/g' "$srcdir"/*.c "$srcdir"/*.h
    fi
    # zig wants a libc for an msvc target; it is told mingw-w64's headers are one
    local zig_lib libc=$out/libc.txt
    zig_lib=$("$venv/bin/python" -c 'import os, ziglang; print(os.path.join(os.path.dirname(ziglang.__file__), "lib"))')
    local headers=$zig_lib/libc/include/any-windows-any
    [ -f "$headers/_mingw.h" ] || { echo "platforms.sh: no mingw-w64 headers at $headers" >&2; return 1; }
    printf '%s\n' "include_dir=$headers" "sys_include_dir=$headers" "crt_dir=$headers" \
        "msvc_lib_dir=$headers" "kernel32_lib_dir=$headers" "gcc_dir=" "darwin_sdk_dir=" >"$libc"
    local pyconfig isa=()
    pyconfig=$(windows_pyconfig "$variant")
    if [ "$mode" = forced ] && [ "$arch" = x86_64 ]; then
        isa=(-mavx2 -mfma -mf16c -mavx512f -mavx512bw -mavx512dq -mavx512vl -mavx512bf16)
    fi
    local src numpy_include
    numpy_include=$(numpy_headers "$arch-windows") || return 1
    for src in "$srcdir"/*.c; do
        ZIG_LIBC=$libc zig cc -target "$arch-windows-msvc" \
            -fms-compatibility -fms-extensions -fms-compatibility-version=19.40 -fgnuc-version=4.2.1 \
            -include .ci/platforms/msvc-mode/prelude.h "${isa[@]}" \
            -O2 -std=c11 -Wall -Wextra -Wno-unused-parameter -Werror \
            -I.ci/platforms/sdk-rpcndr -I.ci/platforms/msvc-mode/include \
            -isystem "$pyconfig" -I"$cpython/Include" -I"$numpy_include" \
            -c -o "$out/$(basename "$src" .c).obj" "$src" || return 1
    done
    echo "   $arch-windows-msvc $mode $variant: compiled"
}

if [ -n "$cpython" ]; then
    step "CPython headers: $(cat "$cpython/.debian-version" 2>/dev/null || echo "$cpython")"
    # Every target is tried even when one fails, so one run shows them all.
    failed=()
    for target in x86_64-linux-gnu.2.17 aarch64-linux-gnu.2.17 x86_64-linux-musl aarch64-linux-musl \
        x86_64-macos.10.9 aarch64-macos.11.0 x86_64-windows-gnu aarch64-windows-gnu; do
        for variant in gil ft; do
            # CPython 3.13's free-threaded headers call MSVC's __getReg on
            # Windows ARM64, which mingw-w64 does not declare: no mingw
            # compiler can build against them there.  The ARM64 wheels are
            # MSVC's, checked below in MSVC mode with these headers.
            [ "$target/$variant" = aarch64-windows-gnu/ft ] && continue
            build "$target" "$variant" || failed+=("$target/$variant")
        done
    done
    step "cross-compiled and linked: 8 targets x (GIL, free-threaded), less mingw ARM64 free-threaded"
    for arch in x86_64 aarch64; do
        msvc_check "$arch" clang gil || failed+=("$arch-windows-msvc/clang-cl")
        msvc_check "$arch" forced gil || failed+=("$arch-windows-msvc/cl.exe")
        msvc_check "$arch" forced ft || failed+=("$arch-windows-msvc/cl.exe/free-threaded")
    done
    step "MSVC mode: x86-64 and ARM64, as clang-cl and as cl.exe"
    if [ ${#failed[@]} -gt 0 ]; then
        echo "platforms.sh: FAILED: ${failed[*]}" >&2
        exit 1
    fi
fi

"$venv/bin/python" .ci/platforms/wheel_deps.py
step "done"
