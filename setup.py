"""Declares the C extension; all other metadata lives in pyproject.toml."""

import sys

from setuptools import Extension, setup

if sys.platform == "win32":
    compile_args = ["/O2", "/std:c11"]
else:
    compile_args = ["-O3", "-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter"]

setup(
    ext_modules=[
        Extension("leaky._leaky", sources=["csrc/leaky.c"], extra_compile_args=compile_args)
    ]
)
