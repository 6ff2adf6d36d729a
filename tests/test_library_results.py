"""What each library gets back: every row of docs/semantics.md's table, checked.

The table ("What each library gets back") is read from the document, and each
row runs the check of its library below against the library itself: the
type, dtype, layout and nulls or mask that come back, and the values against
the pure-Python oracle.  A row without a check, or a check without a row,
fails, so the document and the tests cannot drift apart.  Rows whose library
is absent skip (LEAKY_REQUIRE_OPTIONAL=1 makes that a failure in CI).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import oracle
import pytest
from optional import require

import leaky

ROOT = Path(__file__).resolve().parent.parent
SEMANTICS = ROOT / "docs" / "semantics.md"
HEADING = "### What each library gets back"


def table_rows() -> list[str]:
    """The library column of the table, in order."""
    if not SEMANTICS.exists():
        return []
    text = SEMANTICS.read_text(encoding="utf-8")
    section = text[text.index(HEADING) :]
    rows = []
    for line in section.splitlines()[1:]:
        if line.startswith("### ") or line.startswith("## "):
            break
        if line.startswith("| ") and not line.startswith("| library") and "---" not in line:
            rows.append(line.split("|")[1].strip())
    return rows


def oracle_forward(values: list[float], alpha: float) -> list[float]:
    return [oracle.forward_element("d", float(v), alpha) for v in values]


def same_floats(got: Any, want: list[float]) -> None:
    got_list = [float(v) for v in got]
    assert len(got_list) == len(want)
    for g, w in zip(got_list, want, strict=True):
        assert g == w or (math.isnan(g) and math.isnan(w)), (got_list, want)


def check_numpy() -> None:
    x = np.arange(-6, 6, dtype=np.float32).reshape(3, 4).T  # F-ordered
    r = leaky.leaky_relu(x, 0.25)
    assert type(r) is np.ndarray and r.dtype == np.float32
    assert r.strides == np.multiply(x, np.float32(1)).strides and r.flags.f_contiguous
    assert np.array_equal(r, np.where(x > 0, x, np.float32(0.25) * x))
    ints = leaky.leaky_relu(np.array([-4, 3], np.int16), 0.5)
    assert ints.dtype == np.float64 and ints.tolist() == oracle_forward([-4, 3], 0.5)


def check_numpy_masked() -> None:
    m = np.ma.array([-2.0, 3.0, -4.0], mask=[False, False, True], dtype=np.float32)
    r = leaky.leaky_relu(m, 0.5)
    assert type(r) is np.ma.MaskedArray and r.dtype == np.float32
    assert r.mask.tolist() == [False, False, True]
    same_floats(r.compressed(), oracle_forward([-2.0, 3.0], 0.5))


def check_pytorch() -> None:
    torch = require("torch", "frameworks")
    t = torch.arange(-6.0, 6.0).reshape(3, 4).t()
    r = leaky.leaky_relu(t, 0.25)
    assert type(r) is torch.Tensor and r.dtype == torch.float32
    assert r.stride() == torch.nn.functional.leaky_relu(t, 0.25).stride()
    assert torch.equal(r, torch.nn.functional.leaky_relu(t, 0.25))
    for dtype in (torch.float16, torch.bfloat16, torch.float64):
        assert leaky.leaky_relu(t.to(dtype)).dtype == dtype
    ints = leaky.leaky_relu(torch.tensor([-4, 3]), 0.5)
    assert ints.dtype == torch.float64 and ints.tolist() == oracle_forward([-4, 3], 0.5)


def check_jax() -> None:
    jax = require("jax", "frameworks")
    jnp = require("jax.numpy", "frameworks")
    for dtype in (jnp.float16, jnp.bfloat16, jnp.float32):
        r = leaky.leaky_relu(jnp.array([-2.0, 3.0], dtype), 0.5)
        assert isinstance(r, jax.Array) and r.dtype == dtype
    ints = leaky.leaky_relu(jnp.array([-4, 3]), 0.5)
    # leaky computes float64; JAX without x64 narrows what it takes in
    expected = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
    assert isinstance(ints, jax.Array) and ints.dtype == expected
    assert [float(v) for v in ints] == oracle_forward([-4, 3], 0.5)


def check_array_api() -> None:
    xp = require("array_api_strict", "frameworks")
    a = xp.asarray([[-2.0, 3.0, 6.0], [4.0, -5.0, -7.0]], dtype=xp.float32).T
    r = leaky.leaky_relu(a, 0.5)
    assert type(r) is type(a) and r.dtype == xp.float32
    assert np.from_dlpack(r).flags.f_contiguous  # a.T's order, seen through DLPack
    got = [float(r[i, j]) for i in range(3) for j in range(2)]
    same_floats(got, oracle_forward([-2.0, 4.0, 3.0, -5.0, 6.0, -7.0], 0.5))
    ints = leaky.leaky_relu(xp.asarray([-4, 3]), 0.5)
    assert ints.dtype == xp.float64


def check_pandas() -> None:
    pd = require("pandas", "ecosystem")
    s = pd.Series([-2.0, 3.0, None], dtype="float32", index=list("abc"), name="z")
    r = leaky.leaky_relu(s, 0.5)
    assert type(r) is pd.Series and r.dtype == np.float32
    assert list(r.index) == ["a", "b", "c"] and r.name == "z"
    assert r.isna().tolist() == [False, False, True]
    same_floats(r.iloc[:2], oracle_forward([-2.0, 3.0], 0.5))
    frame = pd.DataFrame({"a": np.array([-2.0, 3.0], np.float32)})
    assert leaky.leaky_relu(frame, 0.5).dtypes.tolist() == [np.float64]
    assert leaky.leaky_relu(frame, np.float32(0.5)).dtypes.tolist() == [np.float32]
    nullable = leaky.leaky_relu(pd.Series([-2.0, None], dtype="Float64"), 0.5)
    assert str(nullable.dtype) == "Float64" and nullable.isna().tolist() == [False, True]
    assert float(nullable.iloc[0]) == oracle_forward([-2.0], 0.5)[0]


def check_pyarrow() -> None:
    pa = require("pyarrow", "arrow")
    x = pa.array([-2.0, None, 3.0, -4.0], pa.float32())
    r = leaky.leaky_relu(x, 0.5)
    assert isinstance(r, pa.Array) and r.type == pa.float32()
    assert r.is_null().to_pylist() == [False, True, False, False]
    same_floats([r[i].as_py() for i in (0, 2, 3)], oracle_forward([-2.0, 3.0, -4.0], 0.5))
    chunked = pa.chunked_array([pa.array([-2, 3], pa.int64()), pa.array([-4], pa.int64())])
    rc = leaky.leaky_relu(chunked, 0.5)
    assert isinstance(rc, pa.ChunkedArray) and rc.type == pa.float64()
    assert [len(c) for c in rc.chunks] == [2, 1]
    same_floats(rc.to_pylist(), oracle_forward([-2, 3, -4], 0.5))


def check_polars() -> None:
    pl = require("polars", "arrow")
    s = pl.Series("z", [-2.0, None, 3.0], dtype=pl.Float32)
    r = leaky.leaky_relu(s, 0.5)
    assert isinstance(r, pl.Series) and r.dtype == pl.Float32 and r.name == "z"
    assert r.is_null().to_list() == [False, True, False]
    same_floats([r[0], r[2]], oracle_forward([-2.0, 3.0], 0.5))
    assert leaky.leaky_relu(pl.Series("i", [-4, 3]), 0.5).dtype == pl.Float64


def check_xarray() -> None:
    xr = require("xarray", "ecosystem")
    x = xr.DataArray(
        np.array([[-2.0, 3.0]], np.float32), dims=("row", "col"), coords={"col": [10, 20]}
    )
    r = leaky.leaky_relu(x, 0.5)
    assert type(r) is xr.DataArray and r.dtype == np.float32 and r.dims == ("row", "col")
    assert r.coords["col"].values.tolist() == [10, 20]
    same_floats(r.values.ravel(), oracle_forward([-2.0, 3.0], 0.5))


def check_dask() -> None:
    da = require("dask.array", "dask")
    x = da.from_array(np.array([-2.0, 3.0, -4.0, 5.0], np.float32), chunks=2)
    r = leaky.leaky_relu(x, 0.5)
    assert type(r) is da.Array and r.dtype == np.float32 and r.chunks == x.chunks
    same_floats(r.compute(), oracle_forward([-2.0, 3.0, -4.0, 5.0], 0.5))
    ints = leaky.leaky_relu(da.from_array(np.array([-4, 3]), chunks=1), 0.5)
    assert ints.dtype == np.float64


CHECKS: dict[str, Callable[[], None]] = {
    "NumPy": check_numpy,
    "NumPy masked": check_numpy_masked,
    "PyTorch": check_pytorch,
    "JAX": check_jax,
    "array API": check_array_api,
    "pandas": check_pandas,
    "pyarrow": check_pyarrow,
    "polars": check_polars,
    "xarray": check_xarray,
    "Dask": check_dask,
}


def test_every_row_has_a_check_and_every_check_a_row() -> None:
    if not SEMANTICS.exists():
        pytest.skip("docs/ is not beside these tests (a wheel's test folder)")
    assert sorted(table_rows()) == sorted(CHECKS)


@pytest.mark.parametrize("library", sorted(CHECKS))
def test_row(library: str) -> None:
    CHECKS[library]()
