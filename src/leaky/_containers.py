"""Result containers for buffer inputs.

The C extension computes into whatever this module hands it.  Making NumPy
and ``array.array`` results here, in Python, lets ``import leaky`` stay free
of NumPy: NumPy is only touched once the caller has passed a NumPy object,
which means NumPy is already imported.
"""

from __future__ import annotations

import array
import operator
import sys
from collections.abc import Callable
from typing import Any

# Indexing a 0-d array with () gives the NumPy scalar of its dtype.
_scalar_of_0d = operator.itemgetter(())

# One-element arrays repeated with `*`, which fills by memcpy doubling.
_array_unit = {"f": array.array("f", [0.0]), "d": array.array("d", [0.0])}

NewResult = tuple[Any, Callable[[Any], Any] | None] | None


def new_result(source: object, fmt: str, shape: tuple[int, ...]) -> NewResult:
    """Return ``(target, finish)`` for a result shaped like ``source``.

    ``target`` is a writable C-contiguous buffer of format ``fmt`` and shape
    ``shape``; after the kernel has filled it, the value returned to the user
    is ``finish(target)``, or ``target`` itself when ``finish`` is None.
    ``None`` means "no special container": the caller returns a memoryview.
    """
    if isinstance(source, array.array):
        unit = _array_unit.get(fmt)
        if unit is not None:
            return unit * shape[0], None
        return None
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        if isinstance(source, numpy.ndarray):
            return numpy.empty(shape, dtype=fmt), None
        if isinstance(source, numpy.generic):
            return numpy.empty((), dtype=fmt), _scalar_of_0d
    return None
