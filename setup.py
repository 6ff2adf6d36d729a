"""Declares the C extension; all other metadata lives in pyproject.toml."""

import sys

from setuptools import Extension, setup

# Release builds are optimised; no -march/-mavx flag appears here, so a wheel
# runs on its platform's oldest CPU and the AVX2/AVX-512 loops are compiled
# through per-function target attributes and chosen at import.
if sys.platform == "win32":
    compile_args = ["/O2", "/std:c11"]
else:
    compile_args = ["-O3", "-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter"]

link_args: list[str] = []
libraries: list[str] = []
if sys.platform.startswith("linux"):
    # --no-as-needed keeps libc (and libpthread, separate before glibc 2.34)
    # in DT_NEEDED, where auditwheel reads which glibc the wheel needs.
    link_args = ["-Wl,--no-as-needed"]
    libraries = ["pthread"]

setup(
    ext_modules=[
        Extension(
            "leaky._leaky",
            sources=["csrc/leaky.c"],
            extra_compile_args=compile_args,
            extra_link_args=link_args,
            libraries=libraries,
        )
    ]
)
