"""An Arrow PyCapsule producer in pure Python (ctypes), counting its releases.

The Arrow C data interface's structs, written out again here from the
specification rather than taken from leaky's header.  `ArrayExporter`
lends float64 values (and an optional validity bitmap) as `__arrow_c_array__`,
`StreamExporter` as `__arrow_c_stream__` in `chunks`, and counts every call of each release
callback, so tests can check that leaky releases every struct it moved out
of a capsule exactly once, on every path.  Its capsules have no destructor:
a struct leaky never moved out is simply never released, which the counts show.
"""

from __future__ import annotations

import ctypes
import struct
from typing import Any


class ArrowSchema(ctypes.Structure):
    pass


class ArrowArray(ctypes.Structure):
    pass


class ArrowArrayStream(ctypes.Structure):
    pass


SCHEMA_RELEASE = ctypes.CFUNCTYPE(None, ctypes.POINTER(ArrowSchema))
ARRAY_RELEASE = ctypes.CFUNCTYPE(None, ctypes.POINTER(ArrowArray))
GET_SCHEMA = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ArrowArrayStream), ctypes.POINTER(ArrowSchema)
)
GET_NEXT = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ArrowArrayStream), ctypes.POINTER(ArrowArray)
)
LAST_ERROR = ctypes.CFUNCTYPE(ctypes.c_char_p, ctypes.POINTER(ArrowArrayStream))
STREAM_RELEASE = ctypes.CFUNCTYPE(None, ctypes.POINTER(ArrowArrayStream))

ArrowSchema._fields_ = [
    ("format", ctypes.c_char_p),
    ("name", ctypes.c_char_p),
    ("metadata", ctypes.c_char_p),
    ("flags", ctypes.c_int64),
    ("n_children", ctypes.c_int64),
    ("children", ctypes.c_void_p),
    ("dictionary", ctypes.c_void_p),
    ("release", SCHEMA_RELEASE),
    ("private_data", ctypes.c_void_p),
]
ArrowArray._fields_ = [
    ("length", ctypes.c_int64),
    ("null_count", ctypes.c_int64),
    ("offset", ctypes.c_int64),
    ("n_buffers", ctypes.c_int64),
    ("n_children", ctypes.c_int64),
    ("buffers", ctypes.POINTER(ctypes.c_void_p)),
    ("children", ctypes.c_void_p),
    ("dictionary", ctypes.c_void_p),
    ("release", ARRAY_RELEASE),
    ("private_data", ctypes.c_void_p),
]
ArrowArrayStream._fields_ = [
    ("get_schema", GET_SCHEMA),
    ("get_next", GET_NEXT),
    ("get_last_error", LAST_ERROR),
    ("release", STREAM_RELEASE),
    ("private_data", ctypes.c_void_p),
]

_capsule_new = ctypes.pythonapi.PyCapsule_New
_capsule_new.restype = ctypes.py_object
_capsule_new.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
SCHEMA_NAME, ARRAY_NAME, STREAM_NAME = b"arrow_schema", b"arrow_array", b"arrow_array_stream"


class Exporter:
    """float64 values lent through the Arrow PyCapsule interface.

    `chunks`: lengths to cut the values into, lent as a stream; None lends
    one array through `__arrow_c_array__`.  `valid`: per-element validity, or
    None for no bitmap.  `fmt` lies about the format, for the error paths.
    """

    def __init__(
        self,
        values: list[float],
        valid: list[bool] | None = None,
        chunks: list[int] | None = None,
        fmt: bytes = b"g",
    ) -> None:
        self.values = values
        self.valid = valid
        self.chunks = chunks
        self.fmt = fmt
        self.schema_releases = 0
        self.array_releases = 0
        self.stream_releases = 0
        self._keep: list[Any] = []  # every struct, buffer and callback lent out
        self._schema_release = SCHEMA_RELEASE(self._release_schema)
        self._array_release = ARRAY_RELEASE(self._release_array)
        self._get_schema = GET_SCHEMA(self._stream_schema)
        self._get_next = GET_NEXT(self._stream_next)
        self._last_error = LAST_ERROR(lambda stream: b"")
        self._stream_release = STREAM_RELEASE(self._release_stream)
        self._pending: list[tuple[int, int]] = []

    def _release_schema(self, schema: Any) -> None:
        self.schema_releases += 1
        schema.contents.release = SCHEMA_RELEASE()

    def _release_array(self, array: Any) -> None:
        self.array_releases += 1
        array.contents.release = ARRAY_RELEASE()

    def _release_stream(self, stream: Any) -> None:
        self.stream_releases += 1
        stream.contents.release = STREAM_RELEASE()

    def _fill_schema(self, schema: ArrowSchema) -> None:
        schema.format = self.fmt
        schema.name = b""
        schema.flags = 2
        schema.release = self._schema_release

    def _fill_array(self, array: ArrowArray, start: int, length: int) -> None:
        values = ctypes.create_string_buffer(
            struct.pack(f"<{length}d", *self.values[start : start + length])
        )
        validity = None
        nulls = 0
        if self.valid is not None:
            flags = self.valid[start : start + length]
            nulls = flags.count(False)
            bits = bytearray((length + 7) // 8)
            for i, ok in enumerate(flags):
                bits[i // 8] |= ok << (i % 8)
            validity = ctypes.create_string_buffer(bytes(bits), max(len(bits), 1))
        buffers = (ctypes.c_void_p * 2)(
            ctypes.addressof(validity) if validity is not None else None, ctypes.addressof(values)
        )
        self._keep += [values, validity, buffers]
        array.length = length
        array.null_count = nulls
        array.offset = 0
        array.n_buffers = 2
        array.buffers = ctypes.cast(buffers, ctypes.POINTER(ctypes.c_void_p))
        array.release = self._array_release

    def _stream_schema(self, stream: Any, out: Any) -> int:
        self._fill_schema(out.contents)
        return 0

    def _stream_next(self, stream: Any, out: Any) -> int:
        if not self._pending:
            out.contents.release = ARRAY_RELEASE()
            return 0
        start, length = self._pending.pop(0)
        self._fill_array(out.contents, start, length)
        return 0


class ArrayExporter(Exporter):
    """The values lent as one array."""

    def __arrow_c_array__(self, requested_schema: object = None) -> tuple[object, object]:
        schema, array = ArrowSchema(), ArrowArray()
        self._fill_schema(schema)
        self._fill_array(array, 0, len(self.values))
        self._keep += [schema, array]
        return (
            _capsule_new(ctypes.addressof(schema), SCHEMA_NAME, None),
            _capsule_new(ctypes.addressof(array), ARRAY_NAME, None),
        )


class StreamExporter(Exporter):
    """The values lent only as a stream of `chunks`."""

    def __arrow_c_stream__(self, requested_schema: object = None) -> object:
        assert self.chunks is not None
        starts = [sum(self.chunks[:i]) for i in range(len(self.chunks))]
        self._pending = list(zip(starts, self.chunks, strict=True))
        stream = ArrowArrayStream()
        stream.get_schema = self._get_schema
        stream.get_next = self._get_next
        stream.get_last_error = self._last_error
        stream.release = self._stream_release
        self._keep.append(stream)
        return _capsule_new(ctypes.addressof(stream), STREAM_NAME, None)
