"""A DLPack exporter and consumer in pure Python (ctypes), for tests without PyTorch.

`Exporter` wraps memory (any writable buffer, kept alive with it) as a tensor
with `__dlpack__` and `__dlpack_device__`, building a `DLManagedTensorVersioned`
or `DLManagedTensor` and its PyCapsule as a C library would (the structs of
DLPack 1.0, written out again here from the specification rather than taken
from leaky's header). It counts every call of its deleter, so tests can check
that leaky calls it exactly once on every path, and has switches for each way
an exporter can differ or misbehave (the "producer zoo" of test_dlpack.py):
flags, copies made unless told `copy=False`, refusals of that keyword or of
sharing, a capsule handed out twice, a deleter that raises, a NULL data
pointer.

`consume` is the other side: it takes a capsule from any `__dlpack__`, reads
the tensor's description and bytes, renames the capsule and calls the deleter,
as torch.from_dlpack would, so leaky's own export is checked without PyTorch.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Any

import numpy as np

KDLCPU, KDLCUDA = 1, 2
INT, UINT, FLOAT, BFLOAT, COMPLEX, BOOL = 0, 1, 2, 4, 5, 6
READ_ONLY, IS_COPIED = 1, 2

# NumPy dtype -> DLPack (code, bits)
DTYPES: dict[str, tuple[int, int]] = {
    "float16": (FLOAT, 16),
    "float32": (FLOAT, 32),
    "float64": (FLOAT, 64),
    "int8": (INT, 8),
    "int16": (INT, 16),
    "int32": (INT, 32),
    "int64": (INT, 64),
    "uint8": (UINT, 8),
    "uint16": (UINT, 16),
    "uint32": (UINT, 32),
    "uint64": (UINT, 64),
    "bool": (BOOL, 8),
}


class DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class DLTensor(ctypes.Structure):
    _fields_ = [
        ("data", ctypes.c_void_p),
        ("device", DLDevice),
        ("ndim", ctypes.c_int32),
        ("dtype", DLDataType),
        ("shape", ctypes.POINTER(ctypes.c_int64)),
        ("strides", ctypes.POINTER(ctypes.c_int64)),
        ("byte_offset", ctypes.c_uint64),
    ]


DELETER = ctypes.CFUNCTYPE(None, ctypes.c_void_p)


class DLManagedTensor(ctypes.Structure):
    _fields_ = [
        ("dl_tensor", DLTensor),
        ("manager_ctx", ctypes.c_void_p),
        ("deleter", DELETER),
    ]


class DLPackVersion(ctypes.Structure):
    _fields_ = [("major", ctypes.c_uint32), ("minor", ctypes.c_uint32)]


class DLManagedTensorVersioned(ctypes.Structure):
    _fields_ = [
        ("version", DLPackVersion),
        ("manager_ctx", ctypes.c_void_p),
        ("deleter", DELETER),
        ("flags", ctypes.c_uint64),
        ("dl_tensor", DLTensor),
    ]


# The C API, with void pointers for capsules where the capsule may be dying
# (a py_object argument would take a new reference to it).
_api = ctypes.pythonapi
_capsule_new = _api.PyCapsule_New
_capsule_new.restype = ctypes.py_object
_capsule_new.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
_capsule_name = _api.PyCapsule_GetName
_capsule_name.restype = ctypes.c_char_p
_capsule_name.argtypes = [ctypes.c_void_p]
_capsule_pointer = _api.PyCapsule_GetPointer
_capsule_pointer.restype = ctypes.c_void_p
_capsule_pointer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
_capsule_set_name = _api.PyCapsule_SetName
_capsule_set_name.restype = ctypes.c_int
_capsule_set_name.argtypes = [ctypes.py_object, ctypes.c_char_p]

# Capsule names: C strings that must outlive every capsule, so module constants.
VERSIONED, PLAIN = b"dltensor_versioned", b"dltensor"
USED_VERSIONED, USED_PLAIN = b"used_dltensor_versioned", b"used_dltensor"

# What each live managed tensor needs kept alive, by its address: its
# exporter, the struct, shape and strides arrays, and the copy it was made of.
_live: dict[int, tuple[Exporter, Any, Any, Any, Any]] = {}


def _call_deleter(address: int) -> None:
    entry = _live.pop(address, None)
    if entry is None:
        raise AssertionError(f"deleter called twice (or never exported) for {address:#x}")
    entry[0].deleter_calls += 1
    if entry[0].deleter_raises:
        raise RuntimeError("the deleter failed")


_deleter = DELETER(_call_deleter)
_NO_DELETER = DELETER()


def _destroy_capsule(capsule: int) -> None:
    """The exporter's side: a capsule nobody renamed "used_..." still owns its tensor."""
    name = _capsule_name(capsule)
    if not name.startswith(b"used_"):
        address = _capsule_pointer(capsule, name)
        entry = _live.get(address)
        managed = entry[1] if entry is not None else None
        if managed is not None and managed.deleter:
            managed.deleter(address)
        elif entry is not None:  # a NULL deleter: nothing to call, count it as freed
            _live.pop(address)
            entry[0].deleter_calls += 1


_capsule_destructor = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(_destroy_capsule)
_destructor_address = ctypes.cast(_capsule_destructor, ctypes.c_void_p).value


class Exporter:
    """A CPU tensor over `memory` (a writable buffer, e.g. a NumPy array's base).

    dtype is a NumPy dtype name from DTYPES, "bfloat16", or a (code, bits)
    pair; shape and strides are in elements (strides None: C-contiguous, as
    the exporter says by a NULL pointer); byte_offset is added to the base.
    """

    def __init__(
        self,
        memory: Any,
        dtype: str | tuple[int, int],
        shape: tuple[int, ...],
        strides: tuple[int, ...] | None = None,
        *,
        byte_offset: int = 0,
        versioned: bool = True,
        knows_max_version: bool = True,
        read_only: bool = False,
        device: tuple[int, int] = (KDLCPU, 0),
        tensor_device: tuple[int, int] | None = None,
        version: tuple[int, int] = (1, 0),
        capsule_name: bytes | None = None,
        null_deleter: bool = False,
        lanes: int = 1,
        raises: BaseException | None = None,
        is_copied: bool = False,
        copies_unless_told: bool = False,
        flags_its_copies: bool = True,
        refuses_no_copy: bool = False,
        knows_copy: bool = True,
        same_capsule: bool = False,
        deleter_raises: bool = False,
        null_data: bool = False,
    ) -> None:
        self.memory = memory
        self.base = np.frombuffer(memory, np.uint8).ctypes.data if len(memory) else 0
        self.code, self.bits = (
            dtype
            if isinstance(dtype, tuple)
            else ((BFLOAT, 16) if dtype == "bfloat16" else DTYPES[dtype])
        )
        self.shape, self.strides, self.byte_offset = shape, strides, byte_offset
        self.versioned, self.knows_max_version = versioned, knows_max_version
        self.read_only, self.device, self.version = read_only, device, version
        self.tensor_device = tensor_device or device
        self.capsule_name, self.null_deleter, self.lanes = capsule_name, null_deleter, lanes
        self.raises = raises
        # is_copied: the flag on a tensor over the memory itself (a lying
        # producer); copies_unless_told: a real copy unless copy=False, flagged
        # IS_COPIED if flags_its_copies; refuses_no_copy: BufferError for
        # copy=False, as the standard tells a producer that must copy
        self.is_copied, self.copies_unless_told = is_copied, copies_unless_told
        self.flags_its_copies, self.refuses_no_copy = flags_its_copies, refuses_no_copy
        self.knows_copy, self.same_capsule = knows_copy, same_capsule
        self.deleter_raises, self.null_data = deleter_raises, null_data
        self.copies: list[bytearray] = []  # the copies handed out, to see what landed there
        self.copy_requests: list[Any] = []  # the copy keyword of each __dlpack__ call
        self._capsule: Any = None
        self.exports = 0  # capsules handed out
        self.deleter_calls = 0
        self.max_versions: list[Any] = []  # what each __dlpack__ call asked for

    def __dlpack_device__(self) -> tuple[int, int]:
        return self.device

    def __dlpack__(self, **kwargs: Any) -> Any:
        if "max_version" in kwargs and not self.knows_max_version:
            raise TypeError("__dlpack__() got an unexpected keyword argument 'max_version'")
        if "copy" in kwargs and not self.knows_copy:
            raise TypeError("__dlpack__() got an unexpected keyword argument 'copy'")
        self.max_versions.append(kwargs.get("max_version"))
        self.copy_requests.append(kwargs.get("copy", "absent"))
        if self.raises is not None:
            raise self.raises
        if self.refuses_no_copy and kwargs.get("copy") is False:
            raise BufferError("this producer cannot share its memory: it must copy")
        if self.same_capsule and self._capsule is not None:
            return self._capsule
        copy = None
        data = 0 if self.null_data else self.base
        flags = (READ_ONLY if self.read_only else 0) | (IS_COPIED if self.is_copied else 0)
        if self.copies_unless_told and kwargs.get("copy") is not False:
            copy = bytearray(self.memory)
            self.copies.append(copy)
            data = np.frombuffer(copy, np.uint8).ctypes.data if len(copy) else 0
            flags |= IS_COPIED if self.flags_its_copies else 0
        ndim = len(self.shape)
        shape = (ctypes.c_int64 * max(ndim, 1))(*self.shape)
        strides = None if self.strides is None else (ctypes.c_int64 * max(ndim, 1))(*self.strides)
        tensor = DLTensor(
            data=data,
            device=DLDevice(*self.tensor_device),
            ndim=ndim,
            dtype=DLDataType(self.code, self.bits, self.lanes),
            shape=shape,
            strides=strides,
            byte_offset=self.byte_offset,
        )
        deleter = _NO_DELETER if self.null_deleter else _deleter
        versioned = self.versioned and kwargs.get("max_version") is not None
        managed: Any
        if versioned:
            managed = DLManagedTensorVersioned(
                version=DLPackVersion(*self.version),
                deleter=deleter,
                flags=flags,
                dl_tensor=tensor,
            )
        else:
            managed = DLManagedTensor(dl_tensor=tensor, deleter=deleter)
        address = ctypes.addressof(managed)
        name = self.capsule_name or (VERSIONED if versioned else PLAIN)
        _live[address] = (self, managed, shape, strides, copy)
        self.exports += 1
        capsule = _capsule_new(address, name, _destructor_address)
        if self.same_capsule:
            self._capsule = capsule
        return capsule


def exporter_of(array: Any, **options: Any) -> Exporter:
    """An Exporter over a NumPy array's own memory, with its shape and strides."""
    base = array.base if array.base is not None else array
    while getattr(base, "base", None) is not None:
        base = base.base
    memory = memoryview(base).cast("B") if base.nbytes else bytearray()
    offset = array.ctypes.data - base.ctypes.data if array.size else 0
    itemsize = array.itemsize
    return Exporter(
        memory,
        options.pop("dtype", array.dtype.name),
        array.shape,
        options.pop("strides", tuple(s // itemsize for s in array.strides)),
        byte_offset=options.pop("byte_offset", offset),
        **options,
    )


def bfloat16_exporter(bits: Any, **options: Any) -> Exporter:
    """An Exporter of bfloat16 elements over a uint16 array of their bit patterns."""
    return exporter_of(bits, dtype="bfloat16", **options)


@dataclass
class Consumed:
    """What `consume` read from a capsule, after freeing it."""

    name: bytes
    version: tuple[int, int] | None
    flags: int
    code: int
    bits: int
    shape: tuple[int, ...]
    strides: tuple[int, ...] | None
    data: int
    payload: bytes  # the elements, read in C order through the strides


def consume(producer: Any, **kwargs: Any) -> Consumed:
    """Call producer.__dlpack__(**kwargs), read the tensor, rename the capsule, delete it."""
    capsule = producer.__dlpack__(**kwargs)
    name = _capsule_name(id(capsule))
    address = _capsule_pointer(id(capsule), name)
    version = None
    flags = 0
    managed: Any
    if name == VERSIONED:
        managed = DLManagedTensorVersioned.from_address(address)
        version = (managed.version.major, managed.version.minor)
        flags = managed.flags
    else:
        managed = DLManagedTensor.from_address(address)
    t = managed.dl_tensor
    ndim = t.ndim
    shape = tuple(t.shape[d] for d in range(ndim))
    strides = None if not t.strides else tuple(t.strides[d] for d in range(ndim))
    itemsize = t.dtype.bits // 8
    count = int(np.prod(shape)) if ndim else 1
    base = t.data + t.byte_offset
    elements = []
    element_strides = strides or tuple(
        int(np.prod(shape[d + 1 :])) if d + 1 < ndim else 1 for d in range(ndim)
    )
    contiguous = list(element_strides) == [
        int(np.prod(shape[d + 1 :])) if d + 1 < ndim else 1 for d in range(ndim)
    ]
    for flat in range(0 if contiguous else count):
        offset, rest = 0, flat
        for d in reversed(range(ndim)):
            offset += (rest % shape[d]) * element_strides[d]
            rest //= shape[d]
        elements.append(ctypes.string_at(base + offset * itemsize, itemsize))
    consumed = Consumed(
        name,
        version,
        flags,
        t.dtype.code,
        t.dtype.bits,
        shape,
        strides,
        t.data,
        ctypes.string_at(base, count * itemsize) if contiguous and count else b"".join(elements),
    )
    assert _capsule_set_name(capsule, USED_VERSIONED if name == VERSIONED else USED_PLAIN) == 0
    managed.deleter(address)
    return consumed
