"""Arrow arrays and polars Series through leaky: their own type back, nulls kept.

Every value is checked bit for bit against tests/oracle.py on the non-null
slots, the validity equal to the input's (for two operands: null where either
is, as pyarrow.compute's binary functions do), zeros under the nulls, and the
type: float16/32/64 keep theirs, integers and bool give float64.
tests/arrow_exporter.py, a ctypes producer, checks that every struct leaky
takes out of a capsule is released exactly once.
"""

from __future__ import annotations

import gc
import re
import struct
import sys
from typing import Any

import oracle
import pytest
from arrow_exporter import ArrayExporter, StreamExporter
from optional import require

import leaky

pa = require("pyarrow", "arrow")
pl = require("polars", "arrow")

ALPHA = 0.01
VALUES = [1.5, -2.0, None, 0.0, -0.0, 3.25, None, -7.5, 1e-3, -6e4]
RESULT_TYPE = {"e": pa.float16(), "f": pa.float32(), "d": pa.float64()}
KIND_OF = {pa.float16(): "e", pa.float32(): "f", pa.float64(): "d"}


def elements(kind: str, arr: Any) -> list[Any]:
    """The values (float16 as bits), None where null."""
    if kind == "e":
        bits = pa.Array.from_buffers(pa.uint16(), len(arr), arr.buffers()[:2], offset=arr.offset)
        return [
            None if not v else b
            for v, b in zip(arr.is_valid().to_pylist(), bits.to_pylist(), strict=True)
        ]
    return list(arr.to_pylist())


def raw_values(arr: Any) -> list[float]:
    """Every slot's value, under the nulls too."""
    fmt = {pa.float16(): "e", pa.float32(): "f", pa.float64(): "d"}[arr.type]
    size = struct.calcsize(fmt)
    data = arr.buffers()[1].to_pybytes()[arr.offset * size : (arr.offset + len(arr)) * size]
    return list(struct.unpack(f"<{len(arr)}{fmt}", data))


def check(result: Any, inputs: list[Any], expected_of: Any) -> None:
    source = inputs[0]
    assert type(result) is type(source) or isinstance(result, pa.Array)
    in_kind = KIND_OF.get(source.type, "d")
    kind = oracle.result_kind(in_kind)
    assert result.type == RESULT_TYPE[kind]
    assert len(result) == len(source)
    valid = [all(x.is_valid().to_pylist()[i] for x in inputs) for i in range(len(source))]
    assert result.is_valid().to_pylist() == valid
    assert result.null_count == valid.count(False)
    columns = [elements(KIND_OF.get(x.type, "d"), x) for x in inputs]
    got = elements(kind, result)
    for i, ok in enumerate(valid):
        if ok:
            want = expected_of(*(col[i] for col in columns))
            assert oracle.same_result(kind, got[i], want), (i, got[i], want)
    for ok, value in zip(valid, raw_values(result), strict=True):
        if not ok:
            assert value == 0.0 and struct.pack("<d", value) == bytes(8)


def typed(values: list[Any], arrow_type: Any) -> Any:
    if arrow_type == pa.float16():
        import numpy as np

        cast = [None if v is None else np.float16(v) for v in values]
        return pa.array(cast, type=arrow_type)
    if pa.types.is_integer(arrow_type):
        # clamped (and for unsigned types, made positive) to fit every width
        fit = [None if v is None else max(-100, min(100, int(v))) for v in values]
        if pa.types.is_unsigned_integer(arrow_type):
            fit = [None if v is None else abs(v) for v in fit]
        return pa.array(fit, type=arrow_type)
    if pa.types.is_boolean(arrow_type):
        return pa.array([None if v is None else v > 0 for v in values], type=arrow_type)
    return pa.array(values, type=arrow_type)


TYPES = [pa.float16(), pa.float32(), pa.float64(), pa.int8(), pa.int64(), pa.uint32(), pa.bool_()]


def forward_of(arrow_type: Any) -> Any:
    kind = KIND_OF.get(arrow_type, "d")
    return lambda x: oracle.forward_element(kind, x if kind == "e" else float(x), ALPHA)


@pytest.mark.parametrize("arrow_type", TYPES, ids=str)
def test_array_keeps_its_type_and_nulls(arrow_type: Any) -> None:
    x = typed(VALUES, arrow_type)
    result = leaky.leaky_relu(x)
    assert isinstance(result, pa.Array)
    check(result, [x], forward_of(arrow_type))


@pytest.mark.parametrize("arrow_type", TYPES, ids=str)
@pytest.mark.parametrize("start", [1, 3, 9])
def test_slice_with_offset(arrow_type: Any, start: int) -> None:
    x = typed(VALUES * 2, arrow_type).slice(start, 9)
    check(leaky.leaky_relu(x), [x], forward_of(arrow_type))


@pytest.mark.parametrize(
    "arrow_type", [pa.float32(), pa.float64(), pa.int32(), pa.bool_()], ids=str
)
def test_chunked_array_chunk_by_chunk(arrow_type: Any) -> None:
    x = pa.chunked_array(
        [typed(VALUES[:3], arrow_type), typed([], arrow_type), typed(VALUES[3:], arrow_type)]
    )
    result = leaky.leaky_relu(x)
    assert isinstance(result, pa.ChunkedArray)
    assert [len(c) for c in result.chunks] == [len(c) for c in x.chunks]
    check(result.combine_chunks(), [x.combine_chunks()], forward_of(arrow_type))


def test_empty_and_all_null() -> None:
    empty = leaky.leaky_relu(pa.array([], type=pa.float32()))
    assert isinstance(empty, pa.Array) and empty.type == pa.float32() and len(empty) == 0
    nulls = pa.array([None, None, None], type=pa.float64())
    result = leaky.leaky_relu(nulls)
    assert result.type == pa.float64() and result.null_count == 3
    assert raw_values(result) == [0.0, 0.0, 0.0]
    empty_chunks = leaky.leaky_relu(pa.chunked_array([], type=pa.float16()))
    assert isinstance(empty_chunks, pa.ChunkedArray) and empty_chunks.type == pa.float16()


def test_grad() -> None:
    x = pa.array(VALUES, type=pa.float32())
    check(leaky.leaky_relu_grad(x, ALPHA), [x], lambda v: oracle.grad_element("f", v, ALPHA))


@pytest.mark.parametrize("grad_type", [pa.float32(), pa.float64()], ids=str)
def test_backward_nulls_are_the_union(grad_type: Any) -> None:
    grad = pa.array([1.0, None, 3.0, -4.0, 5.0, None, 2.5, -1.0, 8.0, 9.0], type=grad_type)
    z = pa.array(VALUES, type=pa.float64()).slice(0, 10)
    result = leaky.leaky_relu_backward(grad, z, ALPHA)
    kind = KIND_OF[grad_type]
    check(result, [grad, z], lambda g, v: oracle.backward_element(kind, g, "d", v, ALPHA))


@pytest.mark.parametrize(
    ("dtype", "kind"),
    [(pl.Float32, "f"), (pl.Float64, "d"), (pl.Int64, "d")],
    ids=["Float32", "Float64", "Int64"],
)
def test_polars_series_keeps_dtype_nulls_and_name(dtype: Any, kind: str) -> None:
    values = [1.0, -2.0, None, 4.0, -0.5] if dtype != pl.Int64 else [1, -2, None, 4, -5]
    s = pl.Series("activations", values, dtype=dtype)
    result = leaky.leaky_relu(s)
    assert isinstance(result, pl.Series)
    assert result.name == "activations"
    assert result.dtype == (pl.Float32 if kind == "f" else pl.Float64)
    assert result.is_null().to_list() == s.is_null().to_list()
    for got, v in zip(result.to_list(), values, strict=True):
        if v is not None:
            assert oracle.same_result(kind, got, oracle.forward_element(kind, float(v), ALPHA))


def test_out_is_refused() -> None:
    x = pa.array([1.0, -1.0])
    with pytest.raises(ValueError, match="immutable"):
        leaky.leaky_relu(x, out=pa.array([0.0, 0.0]))


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda: pa.array(["a", "b"]), "format 'u'"),
        (lambda: pa.array([[1.0], [2.0]]), "format '+l'"),
        (lambda: pa.array(["a", "b", "a"]).dictionary_encode(), "dictionary-encoded"),
        (lambda: pa.array([1, 2], type=pa.decimal128(5, 2)), "format 'd:5,2'"),
    ],
    ids=["string", "nested", "dictionary", "decimal"],
)
def test_unsupported_formats_raise_type_error(make: Any, words: str) -> None:
    with pytest.raises(TypeError, match=re.escape(words)):
        leaky.leaky_relu(make())


def test_releases_exactly_once() -> None:
    values = [1.0, -2.0, 3.0, -4.0, 5.0]
    exporter = ArrayExporter(values, valid=[True, True, False, True, True])
    result = leaky.leaky_relu(exporter)
    assert (exporter.schema_releases, exporter.array_releases) == (1, 1)
    # a producer that is neither pyarrow nor polars gets leaky's own result,
    # which exports the Arrow PyCapsule interface
    assert "ResultBuffer float64 (5,)" in repr(result)
    back = pa.array(result)
    assert back.to_pylist() == [1.0, -0.02, None, -0.04, 5.0]
    streamed = StreamExporter(values, valid=[True] * 4 + [False], chunks=[2, 0, 3])
    result = pa.array(leaky.leaky_relu(streamed))
    assert result.to_pylist() == [1.0, -0.02, 3.0, -0.04, None]
    assert (streamed.schema_releases, streamed.array_releases, streamed.stream_releases) == (
        1,
        3,
        1,
    )
    refused = ArrayExporter(values, fmt=b"u")
    with pytest.raises(TypeError, match="format 'u'"):
        leaky.leaky_relu(refused)
    assert (refused.schema_releases, refused.array_releases) == (1, 1)


def test_exported_result_outlives_everything() -> None:
    x = pa.array([1.0, None, -3.0], type=pa.float32())
    before = sys.getrefcount(x)
    result = leaky.leaky_relu(x)
    assert sys.getrefcount(x) == before
    schema, array = result.__arrow_c_array__()
    del result
    gc.collect()
    assert pa.Array._import_from_c_capsule(schema, array).to_pylist() == [
        1.0,
        None,
        pytest.approx(-0.03),
    ]


def test_result_buffer_repr() -> None:
    r = leaky.leaky_relu(memoryview(struct.pack("<3f", 1, -2, 3)).cast("B").cast("f")).obj
    assert repr(r) == "<leaky ResultBuffer float32 (3,)>"


def test_pandas_arrow_exporters_keep_the_numpy_route() -> None:
    # pandas exports Arrow streams too (DataFrame since 2.2, Series since
    # 3.0), but it implements __array_ufunc__: it keeps leaky.ufunc's route
    # and its own type, not an Arrow result (a DataFrame would be a struct)
    pd = require("pandas", "ecosystem")
    s = pd.Series([1.5, -2.0, 3.0], name="s")
    df = pd.DataFrame({"a": [1.5, -2.0], "b": [-4.0, 0.5]})
    got_s = leaky.leaky_relu(s)
    assert type(got_s) is pd.Series and got_s.name == "s"
    assert got_s.tolist() == [oracle.forward_element("d", v, ALPHA) for v in s.tolist()]
    got_df = leaky.leaky_relu(df)
    assert type(got_df) is pd.DataFrame
    for column in df:
        want = [oracle.forward_element("d", v, ALPHA) for v in df[column].tolist()]
        assert got_df[column].tolist() == want
