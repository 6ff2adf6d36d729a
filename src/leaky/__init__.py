"""leaky: the Leaky ReLU activation, its gradient and its backward pass, in C.

``leaky_relu(z, alpha=0.01)`` is ``z`` where ``z > 0`` and ``alpha * z``
elsewhere; ``leaky_relu_grad`` is its derivative (1 or ``alpha``) and
``leaky_relu_backward(grad_output, z, alpha)`` the fused backward pass.  All
three take Python numbers, lists and tuples of numbers, any object with
the buffer protocol (NumPy arrays and scalars, ``array.array``,
``memoryview``, ``bytes``, ctypes arrays), and CPU tensors through DLPack
(PyTorch, JAX, array-API libraries), which give a tensor of their own kind.
See docs/semantics.md in the source repository for the exact semantics, and
``help()`` on each function.
"""

import sys

from leaky._leaky import leaky_relu, leaky_relu_backward, leaky_relu_grad
from leaky._version import __version__

# pickle stores a function as (its __module__, its __qualname__) and finds it
# again by importing that module.  Name the public module rather than the
# private extension, so pickles (multiprocessing, concurrent.futures, Dask)
# say ``leaky.leaky_relu`` and keep working should the extension move.
for _func in (leaky_relu, leaky_relu_grad, leaky_relu_backward):
    _func.__module__ = __name__
del _func

__all__ = ["__version__", "leaky_relu", "leaky_relu_backward", "leaky_relu_grad"]

TYPE_CHECKING = False  # what typing.TYPE_CHECKING is at run time, without importing typing
if TYPE_CHECKING:
    from types import ModuleType

    from leaky import dask as dask
    from leaky import ufunc as ufunc

# The submodules that import a heavy library: loaded on first access, since
# ``import leaky`` imports neither NumPy nor Dask.
_LAZY_SUBMODULES = ("ufunc", "dask")


def __getattr__(name: str) -> "ModuleType":
    """``leaky.ufunc`` (NumPy) and ``leaky.dask`` (Dask), imported on first access."""
    if name in _LAZY_SUBMODULES:
        __import__(f"leaky.{name}")
        return sys.modules[f"leaky.{name}"]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
