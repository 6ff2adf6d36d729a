"""Result containers for buffer inputs.

The C extension computes into whatever this module hands it.  Making NumPy
and ``array.array`` results here, in Python, lets ``import leaky`` stay free
of NumPy: NumPy is only touched once the caller has passed a NumPy object,
which means NumPy is already imported.  The same goes for ``array``, whose
import brings in ``collections.abc`` on most Pythons.

The C extension imports this module as it loads, so it is on the path of
every ``import leaky`` and imports nothing but ``sys`` (always loaded) at run
time: no ``from __future__ import annotations`` (that statement imports the
``__future__`` module), and the names used only in annotations come from
``typing`` and ``collections.abc`` for type checkers alone.
tests/test_api.py checks the modules ``import leaky`` brings in.
"""

import sys

TYPE_CHECKING = False  # what typing.TYPE_CHECKING is at run time; type checkers take it as True
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    NewResult = tuple[Any, Callable[[Any], Any] | None] | None

# array.array once the caller has imported array (new_result looks for it
# when an input is neither that nor NumPy's); until then (), a tuple of no
# types, which isinstance() is never true for.  Kept here rather than looked
# up in sys.modules on each call: that lookup cost 45-55 ns on every
# array.array and NumPy-scalar result (timeit, Python 3.11).
_array_type: "type[Any] | tuple[()]" = ()

# One-element arrays repeated with `*`, which fills by memcpy doubling; made
# on the first array.array result.
_array_unit: "dict[str, Any]" = {}

# Indexing a 0-d array with () gives the NumPy scalar of its dtype: an
# operator.itemgetter(()), made on the first NumPy scalar (NumPy has imported
# operator by then).
_scalar_of_0d: "Callable[[Any], Any] | None" = None


def new_result(source: object, fmt: str, shape: tuple[int, ...]) -> "NewResult":
    """Return ``(target, finish)`` for a result shaped like ``source``.

    ``target`` is a writable C-contiguous buffer of format ``fmt`` and shape
    ``shape``; after the kernel has filled it, the value returned to the user
    is ``finish(target)``, or ``target`` itself when ``finish`` is None.
    ``target`` None asks the caller for one of leaky's ResultBuffers, which
    export DLPack, so that ``finish`` (a library's ``from_dlpack``) wraps it
    without a copy; ``fmt`` is then "bfloat16" for bfloat16, which has no
    format.  ``None`` means "no special container": the caller returns a
    memoryview (for a DLPack input, the ResultBuffer itself).
    """
    global _array_type, _scalar_of_0d
    # Read once: another thread may set _array_type while this call is in
    # the NumPy tests below, and the test at the end must see what this
    # isinstance() saw, or an array.array source would get no container.
    array_type = _array_type
    if isinstance(source, array_type):
        unit = _array_unit.get(fmt)
        if unit is None:
            if fmt not in ("f", "d"):
                return None
            unit = _array_unit[fmt] = sys.modules["array"].array(fmt, [0.0])
        return unit * shape[0], None
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        if isinstance(source, numpy.ndarray):
            return numpy.empty(shape, dtype=fmt), None
        # a 0-d result only for a 0-d buffer: a scalar that exports its bytes
        # (datetime64, bytes_) has dimensions, and gets a memoryview
        if isinstance(source, numpy.generic) and not shape:
            if _scalar_of_0d is None:
                import operator

                _scalar_of_0d = operator.itemgetter(())
            return numpy.empty((), dtype=fmt), _scalar_of_0d
    finish = _from_dlpack_for(source)
    if finish is not None:
        return None, finish
    if not array_type:
        array = sys.modules.get("array")
        if array is not None:
            _array_type = array.array
            return new_result(source, fmt, shape)
    return None


def _from_dlpack_for(source: object) -> "Callable[[Any], Any] | None":
    """The ``from_dlpack`` that gives a result of ``source``'s own library, or None.

    PyTorch and JAX by name (their modules are in ``sys.modules`` once the
    caller has one of their arrays), then any array-API object through its
    namespace.  JAX arrays also export buffers, but a JAX user expects a
    ``jax.Array`` back, not a memoryview.
    """
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(source, torch.Tensor):
        return torch.from_dlpack  # type: ignore[no-any-return]
    jax = sys.modules.get("jax")
    if jax is not None and isinstance(source, jax.Array):
        return sys.modules["jax.numpy"].from_dlpack  # type: ignore[no-any-return]
    namespace = getattr(type(source), "__array_namespace__", None)
    if namespace is not None:
        return namespace(source).from_dlpack  # type: ignore[no-any-return]
    return None


def arrow_result(result: "Any", source: object) -> object:
    """The Arrow result ``result`` as ``source``'s own library's type.

    ``result`` is a 1-d ResultBuffer that exports ``__arrow_c_array__``
    (its nulls already in its validity bitmap, zeros under them).  A pyarrow
    ``Array`` gives a ``pyarrow.Array``, a ``ChunkedArray`` a ``ChunkedArray``
    cut into the source's chunk lengths (zero-copy slices of one result), a
    polars ``Series`` a ``Series`` of the same name; any other producer
    (nanoarrow, DuckDB) gets the ResultBuffer, which any Arrow consumer takes.
    The modules are looked up in ``sys.modules``, never imported.
    """
    pyarrow = sys.modules.get("pyarrow")
    if pyarrow is not None:
        if isinstance(source, pyarrow.Array):
            return pyarrow.array(result)
        if isinstance(source, pyarrow.ChunkedArray):
            whole = pyarrow.array(result)
            chunks = []
            start = 0
            for chunk in source.chunks:
                chunks.append(whole.slice(start, len(chunk)))
                start += len(chunk)
            return pyarrow.chunked_array(chunks, type=whole.type)
    polars = sys.modules.get("polars")
    if polars is not None and isinstance(source, polars.Series):
        return polars.Series(result).alias(source.name)
    return result
