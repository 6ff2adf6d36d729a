"""DLPack in and out without PyTorch: a ctypes exporter (dlpack_exporter.py) stands in.

Covers what leaky promises any DLPack library: every dtype and layout runs the
buffer paths' kernels; bfloat16, which only DLPack carries, matches PyTorch's
vectors for every bit pattern; the capsule protocol (versioned first, the
older capsule for older exporters, the deleter called exactly once on every
path, errors included); the read-only flag; and leaky's own export of its
results, to versioned and unversioned consumers.
"""

from __future__ import annotations

import functools
import gc
import sys
from collections.abc import Callable
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import oracle
import oracle_bits
import pytest
from dlpack_exporter import (
    BFLOAT,
    BOOL,
    COMPLEX,
    FLOAT,
    INT,
    IS_COPIED,
    KDLCPU,
    KDLCUDA,
    PLAIN,
    VERSIONED,
    Exporter,
    _live,
    bfloat16_exporter,
    consume,
    exporter_of,
)
from test_refcounts import check_stable

import leaky
from leaky import leaky_relu, leaky_relu_backward, leaky_relu_grad

FUNCTIONS = {"leaky_relu": leaky_relu, "leaky_relu_grad": leaky_relu_grad}
with np.load(Path(__file__).parent / "data" / "bfloat16_pytorch.npz") as _npz:
    VECTORS = {name: _npz[name] for name in _npz.files}  # an NpzFile unzips on every lookup
X_BITS: Any = VECTORS["x_bits"]
GRAD_BITS: Any = VECTORS["grad_output_bits"]
ALPHAS = [float(a) for a in VECTORS["alphas"]]


def result_array(result: Any, dtype: Any) -> Any:
    """A leaky result for a DLPack input of no known library (a ResultBuffer) as NumPy."""
    got = consume(result, max_version=(1, 0))
    array = np.frombuffer(got.payload, dtype)
    return array.reshape(got.shape)


def bf16_is_nan(bits: Any) -> Any:
    return (bits & 0x7FFF) > 0x7F80


# ---------------------------------------------------------------- bfloat16 vectors


@pytest.fixture(scope="module")
def kernels() -> str:
    return str(leaky._leaky._kernels)


@pytest.mark.parametrize("alpha_index", range(len(ALPHAS)))
@pytest.mark.parametrize("function", ["leaky_relu", "leaky_relu_grad", "leaky_relu_backward"])
def test_bfloat16_matches_pytorch_for_every_bit_pattern(
    function: str, alpha_index: int, kernels: str
) -> None:
    alpha = ALPHAS[alpha_index]
    x = bfloat16_exporter(X_BITS)
    if function == "leaky_relu_backward":
        result = leaky_relu_backward(bfloat16_exporter(GRAD_BITS), x, alpha)
    else:
        result = FUNCTIONS[function](x, alpha)
    got = result_array(result, np.uint16)
    expected = VECTORS[f"{function}_bits"][alpha_index]
    nan = bf16_is_nan(expected)
    assert np.array_equal(got[~nan], expected[~nan]), kernels
    # NaN results: PyTorch's bits are an accident (tests/data/README.md); leaky's
    # rule (docs/semantics.md) is checked element by element against the oracle
    alpha_bits = oracle_bits.bits_of_double(alpha)
    for i in np.flatnonzero(nan):
        z = int(X_BITS[i])
        if function == "leaky_relu":
            want = oracle_bits.forward("bf16", z, alpha_bits)
        elif function == "leaky_relu_grad":
            want = oracle_bits.grad("bf16", z, alpha_bits)
        else:
            want = oracle_bits.backward("bf16", int(GRAD_BITS[i]), "bf16", z, alpha_bits)
        assert int(got[i]) == want, (hex(z), hex(int(got[i])), hex(want))


def test_bfloat16_oracle_agrees_with_pytorch() -> None:
    """The bit oracle's bfloat16 rounding is anchored to the vectors too (a sample)."""
    for alpha_index, alpha in enumerate(ALPHAS):
        alpha_bits = oracle_bits.bits_of_double(alpha)
        for i in range(0, 65536, 13):
            z = int(X_BITS[i])
            for name, want in [
                ("leaky_relu", oracle_bits.forward("bf16", z, alpha_bits)),
                ("leaky_relu_grad", oracle_bits.grad("bf16", z, alpha_bits)),
                (
                    "leaky_relu_backward",
                    oracle_bits.backward("bf16", int(GRAD_BITS[i]), "bf16", z, alpha_bits),
                ),
            ]:
                expected = int(VECTORS[f"{name}_bits"][alpha_index][i])
                if not bf16_is_nan(expected):
                    assert want == expected, (name, alpha, hex(z))


@pytest.mark.parametrize("payload", [0x7F81, 0xFF81, 0x7FC1, 0xFFFF, 0x7FA5])
@pytest.mark.parametrize("alpha", [0.01, -0.3, float("nan")])
def test_bfloat16_nan_rule(payload: int, alpha: float) -> None:
    """A NaN z (signalling or quiet, either sign) comes back quieted, its payload kept."""
    bits = np.array([payload, 0xC000, 0x3F80], np.uint16)
    alpha_bits = oracle_bits.bits_of_double(alpha)
    got = result_array(leaky_relu(bfloat16_exporter(bits), alpha), np.uint16)
    want = [oracle_bits.forward("bf16", int(b), alpha_bits) for b in bits]
    assert got.tolist() == want
    assert int(got[0]) == payload | 0x0040
    grads = np.array([payload, 0x4000, 0xC000], np.uint16)
    got = result_array(
        leaky_relu_backward(bfloat16_exporter(grads), bfloat16_exporter(bits), alpha), np.uint16
    )
    want = [
        oracle_bits.backward("bf16", int(g), "bf16", int(z), alpha_bits)
        for g, z in zip(grads, bits, strict=True)
    ]
    assert got.tolist() == want


def test_bfloat16_mixed_with_other_kinds_in_backward() -> None:
    """bfloat16 z with a float32 grad (and the other way): the mixed loop, by the oracle."""
    z_bits = np.array([0xC000, 0x4000, 0x7FC1, 0x0000, 0x8001], np.uint16)
    g32 = np.array([1.5, -2.0, 3.0, 0.25, -1e30], np.float32)
    alpha = 0.2
    alpha_bits = oracle_bits.bits_of_double(alpha)
    got = leaky_relu_backward(g32, bfloat16_exporter(z_bits), alpha)
    want = [
        oracle_bits.backward("f", int(g), "bf16", int(z), alpha_bits)
        for g, z in zip(g32.view(np.uint32), z_bits, strict=True)
    ]
    assert isinstance(got, np.ndarray) and got.dtype == np.float32
    assert got.view(np.uint32).tolist() == want
    got_b = result_array(leaky_relu_backward(bfloat16_exporter(z_bits), g32, alpha), np.uint16)
    want_b = [
        oracle_bits.backward("bf16", int(z), "f", int(g), alpha_bits)
        for z, g in zip(z_bits, g32.view(np.uint32), strict=True)
    ]
    assert got_b.tolist() == want_b


# ---------------------------------------------------------------- dtypes and layouts

DTYPES = ["float16", "float32", "float64", "int8", "int16", "int32", "int64"]
DTYPES += ["uint8", "uint16", "uint32", "uint64", "bool"]


def sample(dtype: str, shape: tuple[int, ...]) -> Any:
    count = int(np.prod(shape))
    if dtype == "bool":
        return (np.arange(count) % 3 == 0).reshape(shape)
    if dtype.startswith("uint"):
        return (np.arange(count) * 7 % 200).astype(dtype).reshape(shape)
    values = np.linspace(-50, 50, count)
    if dtype.startswith("float"):
        values[::5] = [-0.0, np.inf, -np.inf, np.nan, 1e-3][: len(values[::5])]
    return values.astype(dtype).reshape(shape)


def expected_of(function: str, array: Any, alpha: float, grad: Any = None) -> list[float]:
    kind = array.dtype.char if array.dtype.kind == "f" else "d"
    as_elements = array.view(np.uint16) if kind == "e" else array.astype(np.float64)
    values: list[Any] = as_elements.ravel().tolist()
    if function == "leaky_relu":
        return [oracle.forward_element(kind, v, alpha) for v in values]
    if function == "leaky_relu_grad":
        return [oracle.grad_element(kind, v, alpha) for v in values]
    gkind = grad.dtype.char if grad.dtype.kind == "f" else "d"
    gvalues = grad.view(np.uint16) if gkind == "e" else grad.astype(np.float64)
    return [
        oracle.backward_element(gkind, g, kind, v, alpha)
        for g, v in zip(gvalues.ravel().tolist(), values, strict=True)
    ]


def check_values(got: Any, expected: list[float], kind: str) -> None:
    flat = got.ravel()
    values = flat.view(np.uint16).tolist() if kind == "e" else flat.tolist()
    assert len(values) == len(expected)
    for a, e in zip(values, expected, strict=True):
        assert oracle.same_result(kind, a, e), (a, e)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("function", ["leaky_relu", "leaky_relu_grad", "leaky_relu_backward"])
def test_every_dtype_against_the_oracle(dtype: str, function: str) -> None:
    array = sample(dtype, (4, 6))
    alpha = 0.3
    result_kind = array.dtype.char if array.dtype.kind == "f" else "d"
    if function == "leaky_relu_backward":
        grad = sample(dtype, (4, 6))[::-1].copy()
        result = leaky_relu_backward(exporter_of(grad), exporter_of(array), alpha)
    else:
        grad = None
        result = FUNCTIONS[function](exporter_of(array), alpha)
    got = result_array(result, np.dtype(result_kind))
    assert got.shape == (4, 6)
    check_values(got, expected_of(function, array, alpha, grad), result_kind)


def layouts() -> dict[str, Callable[[], Any]]:
    base = np.linspace(-3, 3, 60).astype(np.float32)
    return {
        "transposed": lambda: base.reshape(6, 10).T,
        "steps": lambda: base.reshape(6, 10)[::2, ::3],
        "reversed": lambda: base[::-1],
        "offset": lambda: base[7:40],
        "broadcast (stride 0)": lambda: np.broadcast_to(base[:5], (4, 5)),
        "0-d": lambda: base[3:4].reshape(()),
        "empty": lambda: base[:0].reshape(0, 3),
        "3-d permuted": lambda: base.reshape(3, 4, 5).transpose(2, 0, 1)[:, ::-1],
    }


@pytest.mark.parametrize("name", list(layouts()))
def test_layouts(name: str) -> None:
    array = layouts()[name]()
    exporter = exporter_of(array)
    got = result_array(leaky_relu(exporter, 0.25), np.float32)
    assert got.shape == array.shape
    check_values(got, expected_of("leaky_relu", array, 0.25), "f")
    assert exporter.deleter_calls == exporter.exports == 1


def test_null_strides_mean_c_contiguous() -> None:
    array = np.linspace(-2, 2, 12).reshape(3, 4)
    exporter = exporter_of(array, strides=None)
    got = result_array(leaky_relu(exporter, 0.5), np.float64)
    check_values(got, expected_of("leaky_relu", array, 0.5), "d")


def test_byte_offset_is_honoured() -> None:
    array = np.arange(-5.0, 5.0)
    exporter = Exporter(array.data.cast("B"), "float64", (4,), byte_offset=3 * 8)
    got = result_array(leaky_relu(exporter, 0.5), np.float64)
    assert got.tolist() == [oracle.leaky_relu(v, 0.5) for v in array[3:7].tolist()]


def test_large_tensor_runs_on_the_pool() -> None:
    array = np.linspace(-1, 1, 200_003).astype(np.float32)
    got = result_array(leaky_relu(exporter_of(array), 0.1), np.float32)
    expected = np.where(array > 0, array, array * np.float32(0.1))
    assert np.array_equal(got, expected)


# ---------------------------------------------------------------- out=


def test_out_in_place_and_overlapping() -> None:
    array = np.linspace(-4, 4, 9)
    before = array.copy()
    exporter = exporter_of(array)
    result = leaky_relu(exporter, 0.5, out=exporter)
    assert result is exporter
    assert array.tolist() == [oracle.leaky_relu(v, 0.5) for v in before.tolist()]
    assert exporter.deleter_calls == exporter.exports == 2
    # the output one element ahead of the input: the input is read before it is overwritten
    array = np.linspace(-4, 4, 9)
    before = array.copy()
    leaky_relu(exporter_of(array[:-1]), 0.5, out=exporter_of(array[1:]))
    assert array[1:].tolist() == [oracle.leaky_relu(v, 0.5) for v in before[:-1].tolist()]


def test_out_of_another_container() -> None:
    z = np.linspace(-4, 4, 9)
    out = np.zeros(9)
    leaky_relu_grad(exporter_of(z), 0.5, out=exporter_of(out))
    assert out.tolist() == [oracle.leaky_relu_grad(v, 0.5) for v in z.tolist()]
    out32 = np.zeros(9, np.float32)
    exporter = exporter_of(out32)
    leaky_relu(z.astype(np.float32), 0.5, out=exporter)
    assert out32.tolist() == leaky_relu(z.astype(np.float32), 0.5).tolist()


def test_read_only_flag_refuses_out_and_writes_nothing() -> None:
    out = np.full(3, 7.0)
    exporter = exporter_of(out, read_only=True)
    with pytest.raises(ValueError, match=r"leaky_relu\(\) argument 'out' is read-only"):
        leaky_relu(np.array([-1.0, 0.0, 1.0]), out=exporter)
    assert out.tolist() == [7.0, 7.0, 7.0]
    assert exporter.deleter_calls == exporter.exports == 1
    # as an input, read-only is fine
    assert result_array(leaky_relu(exporter, 2.0), np.float64).tolist() == [7.0] * 3


@pytest.mark.parametrize(
    ("out_dtype", "message"),
    [
        ("float32", r"argument 'out' has dtype float32 but the result is float64 \('d'\)"),
        ("int64", r"argument 'out' has dtype int64 but the result is float64"),
    ],
)
def test_out_of_the_wrong_dtype(out_dtype: str, message: str) -> None:
    out = np.zeros(3, out_dtype)
    exporter = exporter_of(out)
    with pytest.raises(TypeError, match=message):
        leaky_relu(np.array([-1.0, 0.0, 1.0]), out=exporter)
    assert exporter.deleter_calls == exporter.exports == 1


def test_bfloat16_out() -> None:
    z = np.array([0xC000, 0x4000], np.uint16)
    out = np.zeros(2, np.uint16)
    exporter = bfloat16_exporter(out)
    assert leaky_relu(bfloat16_exporter(z), 0.5, out=exporter) is exporter
    assert out.tolist() == [0xBF80, 0x4000]  # -2 * 0.5 = -1, 2
    with pytest.raises(TypeError, match=r"'out' has dtype bfloat16 but the result is float32"):
        leaky_relu(np.zeros(2, np.float32), out=exporter)
    with pytest.raises(TypeError, match=r"'out' has dtype float32 but the result is bfloat16$"):
        leaky_relu(bfloat16_exporter(z), out=exporter_of(np.zeros(2, np.float32)))
    with pytest.raises(ValueError, match=r"'out' has shape \(1,\) but the result has shape"):
        leaky_relu(bfloat16_exporter(z), out=bfloat16_exporter(out[:1]))


# ---------------------------------------------------------------- the capsule protocol


def test_versioned_first_then_the_older_capsule() -> None:
    array = np.array([-1.0, 2.0])
    new = exporter_of(array)
    leaky_relu(new)
    assert new.max_versions == [(1, 0)]
    old = exporter_of(array, knows_max_version=False)  # raises TypeError for max_version
    assert result_array(leaky_relu(old, 0.5), np.float64).tolist() == [-0.5, 2.0]
    assert old.max_versions == [None]
    assert old.deleter_calls == old.exports == 1
    plain = exporter_of(array, versioned=False)  # takes max_version, answers unversioned
    assert result_array(leaky_relu(plain, 0.5), np.float64).tolist() == [-0.5, 2.0]
    assert plain.deleter_calls == plain.exports == 1


def test_null_deleter_is_not_called() -> None:
    array = np.array([-1.0, 2.0])
    exporter = exporter_of(array, null_deleter=True)
    assert result_array(leaky_relu(exporter, 0.5), np.float64).tolist() == [-0.5, 2.0]
    assert exporter.exports == 1 and exporter.deleter_calls == 0


def error_cases() -> list[tuple[str, Callable[[], Any], type[BaseException], str]]:
    """(name, call, exception, message): each must free every capsule it took."""
    x = np.array([-1.0, 2.0])
    return [
        (
            "complex",
            lambda: Exporter(bytearray(16), (COMPLEX, 64), (2,)),
            TypeError,
            r"leaky_relu\(\) argument 'z' has dtype complex64, which leaky cannot compute",
        ),
        (
            "int4",
            lambda: Exporter(bytearray(16), (INT, 4), (2,)),
            TypeError,
            "has dtype int4",
        ),
        (
            "float8",
            lambda: Exporter(bytearray(16), (10, 8), (2,)),
            TypeError,
            "has dtype float8_e4m3fn",
        ),
        (
            "lanes",
            lambda: Exporter(bytearray(16), (FLOAT, 32), (2,), lanes=2),
            TypeError,
            "has dtype float32 in vectors of 2 lanes",
        ),
        (
            "bool of 16 bits",
            lambda: Exporter(bytearray(16), (BOOL, 16), (2,)),
            TypeError,
            "has dtype bool",
        ),
        (
            "bfloat of 32 bits",
            lambda: Exporter(bytearray(16), (BFLOAT, 32), (2,)),
            TypeError,
            "has dtype bfloat32",
        ),
        (
            "too many dimensions",
            lambda: Exporter(bytearray(8), "float64", (1,) * 65),
            ValueError,
            "cannot handle a tensor with 65 dimensions",
        ),
        (
            "negative side",
            lambda: Exporter(bytearray(8), "float64", (-1,)),
            ValueError,
            "bad side length -1",
        ),
        (
            "huge strides",
            lambda: Exporter(bytearray(16), "float64", (2,), (2**61,)),
            ValueError,
            "is too big",
        ),
        (
            "a CUDA tensor",
            lambda: exporter_of(x, device=(KDLCUDA, 1)),
            TypeError,
            r"argument 'z' is on cuda \(DLPack device type 2, id 1\), but leaky runs on the "
            r"CPU; move it with `.cpu\(\)`",
        ),
        (
            "a tensor not where its device said",
            lambda: exporter_of(x, tensor_device=(KDLCUDA, 0)),
            TypeError,
            "exported a tensor on cuda",
        ),
        (
            "DLPack 2",
            lambda: exporter_of(x, version=(2, 0)),
            BufferError,
            r"exported DLPack 2\.0; leaky reads DLPack 1\.x",
        ),
        (
            "a wrong capsule name",
            lambda: exporter_of(x, capsule_name=b"tensor"),
            TypeError,
            "not a 'dltensor' or 'dltensor_versioned' capsule",
        ),
        (
            "__dlpack__ raises",
            lambda: exporter_of(x, raises=BufferError("no export today")),
            BufferError,
            "no export today",
        ),
    ]


@pytest.mark.parametrize("case", error_cases(), ids=[c[0] for c in error_cases()])
@pytest.mark.parametrize("where", ["z", "grad_output", "out"])
def test_errors_free_every_capsule(
    case: tuple[str, Callable[[], Any], type[BaseException], str], where: str
) -> None:
    _, make, exc, message = case
    bad = make()
    plain = np.array([-1.0, 2.0])
    out = np.full(2, 7.0)
    calls: dict[str, Callable[[], Any]] = {
        "z": lambda: leaky_relu(bad, out=out),
        "grad_output": lambda: leaky_relu_backward(bad, exporter_of(plain), out=out),
        "out": lambda: leaky_relu(exporter_of(plain), out=bad),
    }
    if where != "z":
        message = message.replace("leaky_relu\\(\\)", "").replace("'z'", f"'{where}'")
    with pytest.raises(exc, match=message):
        calls[where]()
    gc.collect()
    assert bad.deleter_calls == bad.exports  # every capsule it handed out is freed, once
    assert out.tolist() == [7.0, 7.0]


def test_device_is_checked_before_any_export() -> None:
    exporter = exporter_of(np.zeros(2), device=(KDLCUDA, 0))
    with pytest.raises(TypeError):
        leaky_relu(exporter)
    assert exporter.exports == 0


def test_requires_grad_and_tracer_messages() -> None:
    class NeedsGrad(Exporter):
        requires_grad = True

    bad = NeedsGrad(bytearray(16), "float64", (2,), raises=RuntimeError("needs grad"))
    with pytest.raises(TypeError, match=r"requires grad; .*call it on `t.detach\(\)`") as info:
        leaky_relu_grad(bad)
    assert isinstance(info.value.__cause__, RuntimeError)


# ---------------------------------------------------------------- the producer zoo
#
# Each kind of producer, as an input and as out=, with the result docs/dlpack.md
# promises: "ok" (the oracle's values, in a new result or written into out's own
# memory) or the error.  Every capsule handed out is freed exactly once.

OK = "ok"
ZOO_Z = [-2.0, 0.5, -4.0, 3.0]
CUDA_HOST, ROCM = 3, 10
PRE_1_0 = r"argument 'out' exported a pre-1\.0 DLPack tensor, which cannot say whether it is"
NO_COPY_BY_PRODUCER = "this producer cannot share its memory: it must copy"
Outcome = Any  # OK, or (exception type, message pattern)

ZOO: dict[str, tuple[dict[str, Any], Outcome, Outcome]] = {
    # name: (Exporter options, as input, as out=)
    "versioned": ({}, OK, OK),
    "unversioned answer to max_version": ({"versioned": False}, OK, (ValueError, PRE_1_0)),
    "pre-1.0, no max_version": ({"knows_max_version": False}, OK, (ValueError, PRE_1_0)),
    "READ_ONLY": ({"read_only": True}, OK, (ValueError, r"argument 'out' is read-only$")),
    "IS_COPIED though not a copy": (
        {"is_copied": True},
        OK,
        (ValueError, r"argument 'out' exported a copy \(DLPACK_FLAG_BITMASK_IS_COPIED\)"),
    ),
    "copies unless told copy=False": ({"copies_unless_told": True}, OK, OK),
    "copies unless told, unflagged": (
        {"copies_unless_told": True, "flags_its_copies": False},
        OK,
        OK,
    ),
    "knows no copy keyword, copies": (
        {"copies_unless_told": True, "knows_copy": False},
        OK,
        (ValueError, r"argument 'out' exported a copy"),
    ),
    "knows no copy keyword, shares": ({"knows_copy": False}, OK, OK),
    "BufferError for copy=False": (
        {"refuses_no_copy": True},
        OK,
        (BufferError, NO_COPY_BY_PRODUCER),
    ),
    "byte_offset": ({"byte_offset": 16}, OK, OK),
    "NULL strides": ({"strides": None}, OK, OK),
    "lanes > 1": (
        {"lanes": 2},
        (TypeError, r"argument 'z' has dtype float64 in vectors of 2 lanes"),
        (TypeError, r"argument 'out' has dtype float64 in vectors of 2 lanes"),
    ),
    "CUDA": (
        {"device": (KDLCUDA, 0)},
        (TypeError, r"argument 'z' is on cuda \(DLPack device type 2, id 0\)"),
        (TypeError, r"argument 'out' is on cuda \(DLPack device type 2, id 0\)"),
    ),
    "pinned host (kDLCUDAHost)": (
        {"device": (CUDA_HOST, 0)},
        (TypeError, r"argument 'z' is on cuda_host \(pinned\) \(DLPack device type 3"),
        (TypeError, r"argument 'out' is on cuda_host \(pinned\) \(DLPack device type 3"),
    ),
    "ROCm": (
        {"device": (ROCM, 1)},
        (TypeError, r"argument 'z' is on rocm \(DLPack device type 10, id 1\)"),
        (TypeError, r"argument 'out' is on rocm \(DLPack device type 10, id 1\)"),
    ),
    "NULL data pointer": (
        {"null_data": True},
        (BufferError, r"argument 'z' exported a NULL data pointer for 32 bytes"),
        (BufferError, r"argument 'out' exported a NULL data pointer for 32 bytes"),
    ),
    "NULL deleter": ({"null_deleter": True}, OK, OK),
}


def zoo_exporter(options: dict[str, Any], values: list[float]) -> tuple[Exporter, Any]:
    """An Exporter of `options` over float64 values, and the NumPy array it shares."""
    options = dict(options)
    offset = options.pop("byte_offset", 0) // 8
    memory = np.full(len(values) + offset, 99.0)
    array = memory[offset:]
    array[:] = values
    exporter = Exporter(
        memory.data.cast("B"),
        "float64",
        (len(values),),
        options.pop("strides", (1,)),
        byte_offset=offset * 8,
        **options,
    )
    return exporter, array


def check_freed(exporter: Exporter) -> None:
    gc.collect()
    if exporter.null_deleter:
        assert exporter.deleter_calls == 0
        # nobody frees a tensor without a deleter: the ctypes side keeps it (and
        # so its exporter) in _live; let it go, so refcounts can be compared
        for address in [a for a, entry in _live.items() if entry[0] is exporter]:
            del _live[address]
    else:
        assert exporter.deleter_calls == exporter.exports  # each capsule freed, exactly once


@pytest.mark.parametrize("name", list(ZOO))
def test_producer_zoo_as_input(name: str) -> None:
    options, as_input, _ = ZOO[name]
    exporter, array = zoo_exporter(options, ZOO_Z)
    before = sys.getrefcount(exporter)
    if as_input == OK:
        got = result_array(leaky_relu(exporter, 0.5), np.float64)
        assert got.tolist() == [oracle.leaky_relu(v, 0.5) for v in ZOO_Z]
        # an input is never asked for copy=False: a copy is as good to read
        assert exporter.copy_requests == ["absent"] * len(exporter.copy_requests)
    else:
        exc, message = as_input
        with pytest.raises(exc, match=message):
            leaky_relu(exporter, 0.5)
    assert array.tolist() == ZOO_Z
    check_freed(exporter)
    assert sys.getrefcount(exporter) == before


@pytest.mark.parametrize("name", list(ZOO))
def test_producer_zoo_as_out(name: str) -> None:
    options, _, as_out = ZOO[name]
    exporter, array = zoo_exporter(options, [7.0] * len(ZOO_Z))
    z = np.array(ZOO_Z)
    before = sys.getrefcount(exporter), sys.getrefcount(z)
    if as_out == OK:
        assert leaky_relu(z, 0.5, out=exporter) is exporter
        # the results are in out's own memory, not in a copy of it
        assert array.tolist() == [oracle.leaky_relu(v, 0.5) for v in ZOO_Z]
        if exporter.knows_copy and exporter.exports:
            assert exporter.copy_requests == [False]
    else:
        exc, message = as_out
        with pytest.raises(exc, match=message):
            leaky_relu(z, 0.5, out=exporter)
        assert array.tolist() == [7.0] * len(ZOO_Z)  # nothing written
        for copy in exporter.copies:  # nor into a copy
            assert np.frombuffer(copy).tolist()[-len(ZOO_Z) :] == [7.0] * len(ZOO_Z)
    check_freed(exporter)
    assert (sys.getrefcount(exporter), sys.getrefcount(z)) == before


def test_producer_zoo_refcounts_stay_put() -> None:
    z = np.array(ZOO_Z)
    for name, (options, as_input, as_out) in ZOO.items():
        if options.get("null_deleter"):
            continue  # its tensors are never freed, by design: the ctypes side keeps them
        exporter, _ = zoo_exporter(options, ZOO_Z)
        in_exc = None if as_input == OK else as_input[0]
        out_exc = None if as_out == OK else as_out[0]
        check_stable(functools.partial(leaky_relu, exporter, 0.5), [exporter, z], in_exc)
        check_stable(functools.partial(leaky_relu, z, 0.5, out=exporter), [exporter, z], out_exc)
        check_freed(exporter)
        assert not exporter.copies or name.startswith(("copies", "knows no copy")), name


def test_a_capsule_handed_out_twice() -> None:
    """A producer that returns the same capsule again: the second consumer must refuse it."""
    exporter, array = zoo_exporter({"same_capsule": True}, ZOO_Z)
    first = result_array(leaky_relu(exporter, 0.5), np.float64)
    assert first.tolist() == [oracle.leaky_relu(v, 0.5) for v in ZOO_Z]
    with pytest.raises(
        BufferError,
        match=r"argument 'z': Exporter\.__dlpack__\(\) returned a "
        r"capsule that was already consumed",
    ):
        leaky_relu(exporter, 0.5)
    with pytest.raises(BufferError, match=r"argument 'out': .*already consumed"):
        leaky_relu(np.array(ZOO_Z), out=exporter)
    assert array.tolist() == ZOO_Z
    assert exporter.exports == exporter.deleter_calls == 1  # freed once, by its first consumer


def test_a_deleter_that_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    """The call's result stands; the deleter's error is reported as unraisable, once."""
    reported: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", reported.append)
    exporter, array = zoo_exporter({"deleter_raises": True}, ZOO_Z)
    got = result_array(leaky_relu(exporter, 0.5), np.float64)
    assert got.tolist() == [oracle.leaky_relu(v, 0.5) for v in ZOO_Z]
    out, out_array = zoo_exporter({"deleter_raises": True}, [7.0] * 4)
    assert leaky_relu(array, 0.5, out=out) is out
    assert out_array.tolist() == got.tolist()
    assert exporter.deleter_calls == exporter.exports == 1
    assert out.deleter_calls == out.exports == 1
    assert [type(r.exc_value) for r in reported] == [RuntimeError, RuntimeError]


# ---------------------------------------------------------------- leaky's export


def dlpack_result(values: Any) -> Any:
    """A ResultBuffer: leaky's result for a DLPack input of no known library."""
    return leaky_relu(exporter_of(np.asarray(values)), 0.5)


def test_result_exports_versioned_to_new_consumers() -> None:
    result = dlpack_result(np.array([[-2.0, 4.0, 6.0], [1.0, -8.0, 0.0]]))
    got = consume(result, max_version=(1, 0))
    assert got.name == VERSIONED and got.version == (1, 0) and got.flags == 0
    assert (got.code, got.bits, got.shape, got.strides) == (FLOAT, 64, (2, 3), (3, 1))
    assert np.frombuffer(got.payload).tolist() == [-1.0, 4.0, 6.0, 1.0, -4.0, 0.0]
    later = consume(result, max_version=(1, 7))
    assert later.name == VERSIONED and later.data == got.data  # shared, no copy


@pytest.mark.parametrize("kwargs", [{}, {"max_version": None}, {"max_version": (0, 8)}])
def test_result_exports_unversioned_to_old_consumers(kwargs: dict[str, Any]) -> None:
    result = dlpack_result([-2.0, 4.0])
    got = consume(result, **kwargs)
    assert got.name == PLAIN and got.version is None
    assert np.frombuffer(got.payload).tolist() == [-1.0, 4.0]


def test_result_copy_and_device_keywords() -> None:
    result = dlpack_result([-2.0, 4.0])
    shared = consume(result, max_version=(1, 0), copy=False, dl_device=(KDLCPU, 0))
    copied = consume(result, max_version=(1, 0), copy=True)
    assert copied.flags == IS_COPIED and copied.data != shared.data
    assert copied.payload == shared.payload
    assert result.__dlpack_device__() == (KDLCPU, 0)
    with pytest.raises(BufferError, match="CPU"):
        result.__dlpack__(dl_device=(KDLCUDA, 0))
    with pytest.raises(BufferError, match="stream must be None"):
        result.__dlpack__(stream=1)
    assert consume(result, stream=-1).name == PLAIN
    with pytest.raises(TypeError):
        result.__dlpack__(max_version="1.0")
    with pytest.raises(TypeError):
        result.__dlpack__((1, 0))  # keyword-only


def test_result_zero_d_empty_and_numpy_round_trip() -> None:
    zero_d = dlpack_result(np.array(-4.0))
    assert consume(zero_d).shape == ()
    assert np.from_dlpack(zero_d).tolist() == -2.0
    empty = dlpack_result(np.zeros((0, 3)))
    assert np.from_dlpack(empty).shape == (0, 3)
    result = dlpack_result(np.array([-2.0, 4.0]))
    assert memoryview(result).tolist() == [-1.0, 4.0]  # non-bfloat16: a buffer too


def test_bfloat16_result_has_no_buffer() -> None:
    result = leaky_relu(bfloat16_exporter(np.array([0xC000], np.uint16)))
    with pytest.raises(BufferError, match="result of bfloat16 has no buffer format"):
        memoryview(result)
    got = consume(result, max_version=(1, 0))
    assert (got.code, got.bits) == (BFLOAT, 16)


def test_exported_tensors_outlive_their_result() -> None:
    """A tensor shares the result's elements, not the ResultBuffer: both may go first."""
    result = dlpack_result([-2.0, 4.0])
    before = sys.getrefcount(result)
    capsule = result.__dlpack__(max_version=(1, 0))
    assert sys.getrefcount(result) == before  # the deleter never touches Python objects
    array = np.from_dlpack(dlpack_result([-6.0, 8.0]))  # its ResultBuffer is gone at once
    del result
    gc.collect()
    holder = type("Holder", (), {"__dlpack__": lambda self, **kw: capsule})()
    assert np.frombuffer(consume(holder).payload).tolist() == [-1.0, 4.0]
    assert array.tolist() == [-3.0, 8.0]
    unconsumed = dlpack_result([1.0]).__dlpack__()
    del unconsumed  # freed by its capsule's destructor: ASan and valgrind see to any leak


# ---------------------------------------------------------------- the number path


class FloatWithLen:
    def __float__(self) -> float:
        return -1.0

    def __len__(self) -> int:
        return 1


class FloatWithArray:
    def __float__(self) -> float:
        return -1.0

    def __array__(self) -> Any:
        return np.array([-1.0])


class IndexIterable:
    def __index__(self) -> int:
        return -1

    def __iter__(self) -> Any:
        return iter([-1])


class FloatWithInterface:
    def __float__(self) -> float:
        return -1.0

    __array_interface__: ClassVar[dict[str, Any]] = {"shape": (), "typestr": "<f8", "version": 3}


class Gt:
    """Compares, but is no number: what used to reach `z > 0`."""

    def __gt__(self, other: object) -> bool:
        return True


@pytest.mark.parametrize(
    "obj",
    [FloatWithLen(), FloatWithArray(), IndexIterable(), FloatWithInterface(), Gt(), 1j],
    ids=lambda obj: type(obj).__name__,
)
def test_number_path_refuses_array_likes_everywhere(obj: Any) -> None:
    name = type(obj).__name__
    cases: list[tuple[Callable[[], Any], str, str]] = [
        (lambda: leaky_relu(obj), "leaky_relu", "z"),
        (lambda: leaky_relu_grad(obj), "leaky_relu_grad", "z"),
        (lambda: leaky_relu_backward(obj, 1.0), "leaky_relu_backward", "grad_output"),
        (lambda: leaky_relu_backward(1.0, obj), "leaky_relu_backward", "z"),
    ]
    # with NumPy imported, objects with NumPy's array protocols take leaky.ufunc's
    # route instead (docs/ufunc.md); everywhere else, and inside lists, they are refused
    array_protocol = hasattr(obj, "__array__") or hasattr(obj, "__array_interface__")
    for call, fname, arg in cases if not array_protocol else []:
        message = rf"{fname}\(\) argument '{arg}' must be a real number.*not {name}"
        with pytest.raises(TypeError, match=message):
            call()
    with pytest.raises(TypeError, match=rf"at z\[1\]: .*argument 'z' must be a real .*not {name}"):
        leaky_relu([1.0, obj])
    with pytest.raises(TypeError, match=rf"at grad_output\[0\] .*'grad_output' .*not {name}"):
        leaky_relu_backward([obj], [1.0])


class RealNumber:
    """Has __float__ and nothing array-like: a real number by leaky's rule."""

    def __float__(self) -> float:
        return -3.0

    def __gt__(self, other: object) -> bool:
        return False

    def __rmul__(self, other: object) -> float:
        return float(other) * -3.0  # type: ignore[arg-type]

    def __mul__(self, other: object) -> float:
        return -3.0 * float(other)  # type: ignore[arg-type]


@pytest.mark.parametrize("obj", [Fraction(-1, 3), Decimal("-2"), RealNumber()])
def test_number_path_takes_real_numbers(obj: Any) -> None:
    alpha = Fraction(1, 2) if not isinstance(obj, Decimal) else Decimal("0.5")
    assert leaky_relu(obj, alpha) == alpha * obj
    assert leaky_relu_grad(obj, alpha) == alpha
    assert leaky_relu_backward(obj, obj, alpha) == obj * alpha
