"""leaky: the Leaky ReLU activation, its gradient and its backward pass, in C.

``leaky_relu(z, alpha=0.01)`` is ``z`` where ``z > 0`` and ``alpha * z``
elsewhere; ``leaky_relu_grad`` is its derivative (1 or ``alpha``) and
``leaky_relu_backward(grad_output, z, alpha)`` the fused backward pass.  All
three take Python numbers, lists and tuples of numbers, and any object with
the buffer protocol (NumPy arrays and scalars, ``array.array``,
``memoryview``, ``bytes``, ctypes arrays).  See the README for the exact
semantics, and ``help()`` on each function.
"""

from leaky._leaky import leaky_relu, leaky_relu_backward, leaky_relu_grad
from leaky._version import __version__

__all__ = ["__version__", "leaky_relu", "leaky_relu_backward", "leaky_relu_grad"]
