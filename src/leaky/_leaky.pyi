"""Type stubs for the C extension (the functions re-exported by ``leaky``)."""

import os
from typing import Any, Final, Literal, SupportsFloat, SupportsIndex, TypeVar, overload

_Alpha = SupportsFloat | SupportsIndex
_Seq = list[Any] | tuple[Any, ...]
_Threads = SupportsIndex | None  # an int >= 1 or anything with __index__ (numpy.int64)
# any writable buffer (NumPy's stubs only declare __buffer__ for Python >= 3.12)
_Out = TypeVar("_Out")

PYBUF_MAX_NDIM: Final[int]
_kernels: Final[str]
_supported_kernels: Final[tuple[str, ...]]
_max_threads: Final[int]  # threads a call may use: the CPUs, or LEAKY_NUM_THREADS
_thread_cap: Final[int]  # the most threads leaky uses, whatever is asked
_assertions: Final[int]  # 1 in LEAKY_DEBUG=1, LEAKY_SANITIZE=1 and LEAKY_TSAN=1 builds

def _tune(
    gil_threshold: int = -1, parallel_threshold: int = -1, stream_bytes: int = -1
) -> dict[str, int]: ...
def _worker_parts() -> tuple[int, ...]: ...
def _default_thread_count(
    root: str | bytes | os.PathLike[str], /
) -> int: ...  # tests: cgroup files under root
def _numpy_fast_path() -> Literal["untried", "loading", "ready", "unusable"]: ...

class ResultBuffer:
    """The memory behind a memoryview result, and behind tensor results via DLPack."""

    def __buffer__(self, flags: int, /) -> memoryview: ...
    def __dlpack__(
        self,
        *,
        stream: int | None = None,
        max_version: tuple[int, int] | None = None,
        dl_device: tuple[int, int] | None = None,
        copy: bool | None = None,
    ) -> Any: ...
    def __dlpack_device__(self) -> tuple[int, int]: ...

# Numbers keep their kind (ints >= 0 come back as themselves), lists and
# tuples give lists, out= is returned as given; buffers give NumPy arrays or
# scalars, array.array or memoryview depending on the input, and DLPack
# tensors a tensor of their own library (typed Any, as NumPy's, PyTorch's and
# JAX's types are not known here).
@overload
def leaky_relu(
    z: int, alpha: _Alpha = 0.01, *, out: None = None, threads: _Threads = None
) -> int | float: ...
@overload
def leaky_relu(
    z: float, alpha: _Alpha = 0.01, *, out: None = None, threads: _Threads = None
) -> float: ...
@overload
def leaky_relu(
    z: _Seq, alpha: _Alpha = 0.01, *, out: None = None, threads: _Threads = None
) -> list[Any]: ...
@overload
def leaky_relu(z: Any, alpha: _Alpha = 0.01, *, out: _Out, threads: _Threads = None) -> _Out: ...
@overload
def leaky_relu(
    z: Any, alpha: _Alpha = 0.01, *, out: None = None, threads: _Threads = None
) -> Any: ...
@overload
def leaky_relu_grad(
    z: float, alpha: _Alpha = 0.01, *, out: None = None, threads: _Threads = None
) -> float: ...
@overload
def leaky_relu_grad(
    z: _Seq, alpha: _Alpha = 0.01, *, out: None = None, threads: _Threads = None
) -> list[Any]: ...
@overload
def leaky_relu_grad(
    z: Any, alpha: _Alpha = 0.01, *, out: _Out, threads: _Threads = None
) -> _Out: ...
@overload
def leaky_relu_grad(
    z: Any, alpha: _Alpha = 0.01, *, out: None = None, threads: _Threads = None
) -> Any: ...
@overload
def leaky_relu_backward(
    grad_output: float,
    z: float,
    alpha: _Alpha = 0.01,
    *,
    out: None = None,
    threads: _Threads = None,
) -> float: ...
@overload
def leaky_relu_backward(
    grad_output: _Seq,
    z: _Seq,
    alpha: _Alpha = 0.01,
    *,
    out: None = None,
    threads: _Threads = None,
) -> list[Any]: ...
@overload
def leaky_relu_backward(
    grad_output: Any, z: Any, alpha: _Alpha = 0.01, *, out: _Out, threads: _Threads = None
) -> _Out: ...
@overload
def leaky_relu_backward(
    grad_output: Any, z: Any, alpha: _Alpha = 0.01, *, out: None = None, threads: _Threads = None
) -> Any: ...
