"""leaky's three functions as NumPy ufuncs.

``leaky.ufunc.leaky_relu(z, alpha)``, ``leaky_relu_grad(z, alpha)`` and
``leaky_relu_backward(grad_output, z, alpha)`` are real ``numpy.ufunc``
objects whose inner loops are leaky's own kernels, so NumPy's machinery
applies: ``alpha`` broadcasts against ``z`` (per-channel slopes, as in
PReLU), and ``out=``, ``where=``, ``casting=``, ``dtype=``, ``.at``,
``__array_ufunc__`` dispatch (pandas, xarray, Dask, masked arrays) and
``ndarray`` subclass wrapping all work.  ``alpha`` is required: a ufunc has no
default arguments.

This module imports NumPy; ``import leaky`` does not import it (``leaky.ufunc``
is imported on first access).  leaky's dtype rules are the ufuncs' type loops:
float16 computes in float32 with ``float32(alpha)`` and rounds once, float32
and float64 keep their type, integers and bool give float64.
"""

try:
    from leaky._ufunc import leaky_relu, leaky_relu_backward, leaky_relu_grad
except ModuleNotFoundError as error:
    if error.name != "leaky._ufunc":
        raise
    # setup.py leaves the extension out only where NumPy has no wheel to build
    # against (Windows ARM64 on Python 3.10).
    raise ImportError(
        "leaky.ufunc is not part of this build of leaky: it is built against NumPy's "
        "headers, and this platform had no NumPy to build with"
    ) from error

__all__ = ["leaky_relu", "leaky_relu_backward", "leaky_relu_grad"]
