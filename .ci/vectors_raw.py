"""Writes PyTorch's bfloat16 vectors (tests/data/) as raw little-endian arrays into DIR.

The C harness tests/c/kernel_paths.c reads them so, natively, under qemu
(.ci/kernel_paths.sh) and under Wine (.ci/wine.sh).
"""

import sys

import numpy as np

with np.load("tests/data/bfloat16_pytorch.npz") as data:
    for name in ("x_bits", "grad_output_bits", "alphas", "leaky_relu_bits",
                 "leaky_relu_grad_bits", "leaky_relu_backward_bits"):
        array = data[name]
        array.astype(array.dtype.newbyteorder("<")).tofile(f"{sys.argv[1]}/{name}")
