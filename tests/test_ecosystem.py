"""pandas and xarray objects through leaky's functions and leaky.ufunc.

Each gets back what the equivalent NumPy ufunc expression,
np.maximum(z, alpha * z), gives it (type, index, columns, dims, coords,
nullable dtype and its missing values), with leaky's values bit for bit
against the oracle.  pandas and xarray come with the `ecosystem` extra; the
tests skip with that reason where it is absent, and fail instead in CI
(LEAKY_REQUIRE_OPTIONAL=1).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from conftest import (
    assert_matches,
    expected_backward,
    expected_forward,
    expected_grad,
    sample,
)
from optional import require

pd = require("pandas", "ecosystem")
xr = require("xarray", "ecosystem")

import leaky  # noqa: E402
import leaky.ufunc as lu  # noqa: E402

ALPHA = 0.3
ROUTES = [
    ("leaky_relu", leaky.leaky_relu, expected_forward),
    ("leaky_relu_grad", leaky.leaky_relu_grad, expected_grad),
    ("ufunc.leaky_relu", lu.leaky_relu, expected_forward),
    ("ufunc.leaky_relu_grad", lu.leaky_relu_grad, expected_grad),
]
IDS = [name for name, _, _ in ROUTES]


def reference(z: Any) -> Any:
    """What a NumPy ufunc with the same arguments gives this object: the type,
    metadata and dtype to match.  (pandas hands a DataFrame's scalar to
    non-arithmetic ufuncs as float64, so a float32 DataFrame with a Python
    float slope gives float64, for np.maximum as for leaky.)"""
    return np.maximum(z, ALPHA)


@pytest.mark.parametrize(("name", "func", "expect"), ROUTES, ids=IDS)
def test_series_keeps_index_and_name(name: str, func: Any, expect: Any) -> None:
    values = sample("d", (30,), seed=1)
    s = pd.Series(values, index=[f"r{i}" for i in range(30)], name="activations")
    got = func(s, ALPHA)
    ref = reference(s)
    assert type(got) is type(ref) is pd.Series
    assert got.index.equals(ref.index) and got.name == ref.name == "activations"
    assert got.dtype == ref.dtype == np.float64
    assert_matches(got.to_numpy(), expect(values, ALPHA), "d", ALPHA)


@pytest.mark.parametrize(("name", "func", "expect"), ROUTES, ids=IDS)
def test_nullable_series_keeps_its_dtype_and_missing_values(
    name: str, func: Any, expect: Any
) -> None:
    values = sample("d", (12,), seed=2)
    values = values[~np.isnan(values)]
    s = pd.Series(values, dtype="Float64")
    s[[1, 4]] = pd.NA
    got = func(s, ALPHA)
    ref = reference(s)
    assert type(got) is pd.Series and got.dtype == ref.dtype == pd.Float64Dtype()
    assert got.isna().equals(ref.isna()) and got.isna().sum() == 2
    present = s.notna().to_numpy()
    assert_matches(got[present].to_numpy("d"), expect(values[present], ALPHA), "d", ALPHA)


@pytest.mark.parametrize(("name", "func", "expect"), ROUTES, ids=IDS)
def test_dataframe_keeps_index_and_columns(name: str, func: Any, expect: Any) -> None:
    values = sample("f", (6, 3), seed=3)
    df = pd.DataFrame(values, columns=["a", "b", "c"], index=list("uvwxyz"))
    got = func(df, ALPHA)
    ref = reference(df)
    assert type(got) is type(ref) is pd.DataFrame
    assert got.index.equals(ref.index) and got.columns.equals(ref.columns)
    assert list(got.dtypes) == list(ref.dtypes)
    kind = got.dtypes.iloc[0].char
    assert_matches(got.to_numpy(), expect(values.astype(kind), ALPHA), kind, ALPHA)
    # a float32 slope keeps float32, as for np.maximum
    got = func(df, np.float32(ALPHA))
    assert list(got.dtypes) == list(np.maximum(df, np.float32(ALPHA)).dtypes) == [np.float32] * 3
    assert_matches(got.to_numpy(), expect(values, ALPHA), "f", ALPHA)


def test_series_backward() -> None:
    g = pd.Series(sample("d", (20,), seed=4), index=range(100, 120))
    z = pd.Series(sample("d", (20,), seed=5), index=range(100, 120))
    for got in (leaky.leaky_relu_backward(g, z, ALPHA), lu.leaky_relu_backward(g, z, ALPHA)):
        assert type(got) is pd.Series and got.index.equals(g.index)
        want = expected_backward(g.to_numpy(), z.to_numpy(), ALPHA)
        assert_matches(got.to_numpy(), want, "d", ALPHA)
    # one side a plain ndarray: still a Series, as for a NumPy ufunc
    got = leaky.leaky_relu_backward(g.to_numpy(), z, ALPHA)
    assert type(got) is pd.Series


@pytest.mark.parametrize(("name", "func", "expect"), ROUTES, ids=IDS)
def test_dataarray_keeps_dims_and_coords(name: str, func: Any, expect: Any) -> None:
    values = sample("f", (4, 5), seed=6)
    arr = xr.DataArray(
        values,
        dims=("time", "unit"),
        coords={"time": np.arange(4), "unit": list("abcde")},
        name="h",
    )
    got = func(arr, ALPHA)
    ref = reference(arr)
    assert type(got) is type(ref) is xr.DataArray
    assert got.dims == ref.dims == ("time", "unit")
    assert got.coords.to_dataset().identical(ref.coords.to_dataset())
    assert got.name == ref.name
    assert got.dtype == np.float32
    assert_matches(got.to_numpy(), expect(values, ALPHA), "f", ALPHA)


@pytest.mark.parametrize("shape", [(), (1,)], ids=["0-d", "1-element"])
def test_small_dataarrays_are_dataarrays_too(shape: tuple[int, ...]) -> None:
    # these used to "work" by accident, through float(), and came back as floats
    arr = xr.DataArray(np.full(shape, -2.0))
    got = leaky.leaky_relu(arr, ALPHA)
    assert type(got) is xr.DataArray and got.shape == shape
    assert_matches(got.to_numpy(), expected_forward(np.full(shape, -2.0), ALPHA), "d", ALPHA)


def test_dataarray_per_channel_slopes_broadcast_by_name() -> None:
    values = sample("f", (3, 8), seed=7)
    z = xr.DataArray(values, dims=("channel", "x"))
    slopes = xr.DataArray(np.array([0.1, -0.5, 2.0], dtype=np.float32), dims=("channel",))
    got = lu.leaky_relu(z, slopes)
    assert type(got) is xr.DataArray and got.dims == ("channel", "x")
    for c in range(3):
        alpha = float(slopes[c])
        assert_matches(got[c].to_numpy(), expected_forward(values[c], alpha), "f", alpha)


def test_series_alpha_points_at_the_ufunc() -> None:
    with pytest.raises(TypeError, match=r"leaky\.ufunc\.leaky_relu"):
        leaky.leaky_relu(np.zeros(3), pd.Series([0.1, 0.2, 0.3]))
