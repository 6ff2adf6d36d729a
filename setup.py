"""Declares the C extension; all other metadata lives in pyproject.toml.

Three opt-in build switches, for the hardening checks in .ci/ (docs/reliability.md):

- ``LEAKY_SANITIZE=1``: AddressSanitizer and UndefinedBehaviorSanitizer, C asserts on.
- ``LEAKY_TSAN=1``: ThreadSanitizer, C asserts on (.ci/tsan.sh).
- ``LEAKY_DEBUG=1``: C asserts on (``-UNDEBUG``), with debug info, no sanitizers.
"""

import os
import platform
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


def switch(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")


# Release builds are optimised; no -march/-mavx flag appears here, so a wheel
# runs on its platform's oldest CPU and the AVX2/AVX-512 loops are compiled
# through per-function target attributes and chosen at import.
link_args: list[str] = []
libraries: list[str] = []

# csrc/ is several files, one per concern, but release builds link them with
# link-time optimisation, so the compiler inlines across files as it did when
# the extension was one file: without it, callgrind counted 70-100 more
# instructions in a 10-element ndarray call (docs/architecture.md).
release = not (switch("LEAKY_DEBUG") or switch("LEAKY_SANITIZE") or switch("LEAKY_TSAN"))
if sys.platform == "win32":
    compile_args = ["/O2", "/std:c11"]
    if release:
        compile_args += ["/GL"]
        link_args += ["/LTCG"]
    else:
        compile_args += ["/UNDEBUG"]
else:
    compile_args = ["-O3", "-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter"]
    if release:
        compile_args += ["-flto"]
        link_args += ["-flto"]
    if switch("LEAKY_SANITIZE"):
        # -O1 keeps the stacks in reports readable; any UB report aborts
        sanitizers = ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined"]
        compile_args += [*sanitizers, "-fno-omit-frame-pointer", "-O1", "-g", "-UNDEBUG"]
        link_args += ["-fsanitize=address,undefined"]
    elif switch("LEAKY_TSAN"):
        # ThreadSanitizer cannot be combined with ASan; its own build
        compile_args += ["-fsanitize=thread", "-fno-omit-frame-pointer", "-O1", "-g", "-UNDEBUG"]
        link_args += ["-fsanitize=thread"]
    elif switch("LEAKY_DEBUG"):
        compile_args += ["-O1", "-g", "-UNDEBUG"]
if sys.platform.startswith("linux"):
    # --no-as-needed keeps libc (and libpthread, separate before glibc 2.34)
    # in DT_NEEDED, where auditwheel reads which glibc the wheel needs.
    link_args += ["-Wl,--no-as-needed"]
    libraries = ["pthread"]


# csrc/, one file per concern (docs/architecture.md); leaky.c is the module itself.
SOURCES = [
    "leaky",  # argument parsing, the public functions and their scalar fast path, init
    "numbers",  # Python numbers and lists/tuples of them
    "buffers",  # the array paths: each operand to its kind of input, the output, the loop
    "input_ndarray",  # exact ndarrays: read directly, results from PyArray_New
    "input_buffer",  # the buffer protocol: acquire, release, result containers
    "input_dlpack",  # DLPack tensors in (torch, JAX, the array API) and results out
    "input_arrow",  # Arrow arrays in and out (the Arrow PyCapsule interface)
    "result_buffer",  # the exporter behind memoryview and DLPack results
    "driver",  # loop plans over any strides, run here or on the pool
    "pool",  # the thread pool and its thread shims
    "formats",  # buffer format strings to element kinds
    "loops_portable",  # the inner loops in plain C, every kind and stride
    "kernels_avx2",  # x86-64 AVX2 + F16C loops
    "kernels_avx512",  # x86-64 AVX-512 loops
    "kernels_neon",  # arm64 NEON loops
    "cpu_dispatch",  # which kernel tables this CPU can run
    "array_route",  # the capsule leaky._ufunc reads, and the route to leaky.ufunc
]


class AlwaysBuildExt(build_ext):
    """Recompiles every time: a build/ left by another switch's build is never reused.

    setuptools skips the compile when build/ holds an object newer than the source, so
    ``pip install .`` after ``LEAKY_SANITIZE=1 pip install .`` would ship the sanitized
    object.  The compile takes seconds.
    """

    def finalize_options(self) -> None:
        super().finalize_options()
        self.force = True



def numpy_include() -> str | None:
    """NumPy's headers, for leaky._ufunc (pyproject.toml's build requirements install them).

    Imported here, not at the top, so that reading this file needs no NumPy.
    None only where the build requirements leave NumPy out (Windows ARM64 on
    Python 3.10, which has no NumPy wheel); anywhere else a missing NumPy is
    an error, so that no wheel loses leaky.ufunc by accident.
    """
    try:
        import numpy
    except ImportError:
        if sys.platform == "win32" and platform.machine() == "ARM64" and sys.version_info < (3, 11):
            print("leaky: no NumPy for Windows ARM64 on Python 3.10; building without leaky.ufunc")
            return None
        raise
    return str(numpy.get_include())


# leaky.ufunc: NumPy ufuncs over leaky._leaky's kernels, which it reaches
# through a capsule (csrc/ufunc_api.h says why), so it is one small file.
# Built against NumPy >= 2's headers, it runs on NumPy 1.24 and up.
numpy_headers = numpy_include()
ufunc_extension = (
    []
    if numpy_headers is None
    else [
        Extension(
            "leaky._ufunc",
            sources=["csrc/ufunc.c"],
            depends=["csrc/leaky.h", "csrc/ufunc_api.h"],
            include_dirs=[numpy_headers],
            extra_compile_args=compile_args,
            extra_link_args=link_args,
        )
    ]
)

setup(
    cmdclass={"build_ext": AlwaysBuildExt},
    ext_modules=[
        Extension(
            "leaky._leaky",
            sources=[f"csrc/{name}.c" for name in SOURCES],
            depends=["csrc/leaky.h", "csrc/dlpack.h", "csrc/ufunc_api.h"],
            extra_compile_args=compile_args,
            extra_link_args=link_args,
            libraries=libraries,
        ),
    ]
    + ufunc_extension,
)
