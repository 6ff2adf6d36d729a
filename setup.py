"""Declares the C extension; all other metadata lives in pyproject.toml.

Two opt-in build switches, for the hardening checks in .ci/ (docs/reliability.md):

- ``LEAKY_SANITIZE=1``: AddressSanitizer and UndefinedBehaviorSanitizer, C asserts on.
- ``LEAKY_DEBUG=1``: C asserts on (``-UNDEBUG``), with debug info, no sanitizers.
"""

import os
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
if sys.platform == "win32":
    compile_args = ["/O2", "/std:c11"]
    if switch("LEAKY_DEBUG") or switch("LEAKY_SANITIZE"):
        compile_args += ["/UNDEBUG"]
else:
    compile_args = ["-O3", "-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter"]
    if switch("LEAKY_SANITIZE"):
        # -O1 keeps the stacks in reports readable; any UB report aborts
        sanitizers = ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined"]
        compile_args += [*sanitizers, "-fno-omit-frame-pointer", "-O1", "-g", "-UNDEBUG"]
        link_args += ["-fsanitize=address,undefined"]
    elif switch("LEAKY_DEBUG"):
        compile_args += ["-O1", "-g", "-UNDEBUG"]
if sys.platform.startswith("linux"):
    # --no-as-needed keeps libc (and libpthread, separate before glibc 2.34)
    # in DT_NEEDED, where auditwheel reads which glibc the wheel needs.
    link_args += ["-Wl,--no-as-needed"]
    libraries = ["pthread"]


class AlwaysBuildExt(build_ext):
    """Recompiles every time: a build/ left by another switch's build is never reused.

    setuptools skips the compile when build/ holds an object newer than the source, so
    ``pip install .`` after ``LEAKY_SANITIZE=1 pip install .`` would ship the sanitized
    object.  The compile takes seconds.
    """

    def finalize_options(self) -> None:
        super().finalize_options()
        self.force = True


setup(
    cmdclass={"build_ext": AlwaysBuildExt},
    ext_modules=[
        Extension(
            "leaky._leaky",
            sources=["csrc/leaky.c"],
            extra_compile_args=compile_args,
            extra_link_args=link_args,
            libraries=libraries,
        )
    ],
)
