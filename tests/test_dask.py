"""leaky on dask.array arrays, computed on a real distributed.LocalCluster.

Every blockwise result is compared bit for bit with leaky on the whole NumPy
array, and that with the pure-Python oracle.  The cluster is two worker
processes of one thread each, made once for this module.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from conftest import assert_matches, expected_backward, expected_forward, expected_grad, sample
from optional import require

require("dask.array", "dask")
require("distributed", "dask")

import dask.array as da  # noqa: E402
from distributed import Client, LocalCluster, get_task_stream  # noqa: E402

import leaky  # noqa: E402
import leaky.dask  # noqa: E402

pytestmark = pytest.mark.cluster

N_WORKERS = 2
# 1-D: three full chunks of 32,768 (leaky's threaded size) and an odd last one of 1,699
SIZE, CHUNK = 100_003, 32_768
# 2-D: last chunks of 1 row and 3 columns
SHAPE2, CHUNKS2 = (129, 203), (64, 100)
ALPHAS: list[float | None] = [None, 0.2, -0.3, 1.5]  # None: leaky's default, not passed
FUNCS = ["leaky_relu", "leaky_relu_grad", "leaky_relu_backward"]
ORACLES: dict[str, Callable[..., list[float]]] = {
    "leaky_relu": expected_forward,
    "leaky_relu_grad": expected_grad,
    "leaky_relu_backward": expected_backward,
}


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    with (
        LocalCluster(
            n_workers=N_WORKERS,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.ERROR,
        ) as cluster,
        Client(cluster) as c,
    ):
        c.wait_for_workers(N_WORKERS, timeout=120)
        yield c


def alpha_args(alpha: float | None) -> tuple[float, ...]:
    return () if alpha is None else (alpha,)


def numpy_inputs(name: str, dtype: str, shape: tuple[int, ...]) -> tuple[Any, ...]:
    z = sample(dtype, shape, seed=11)
    if name == "leaky_relu_backward":
        return (sample(dtype, shape, seed=12), z)
    return (z,)


def same_bits(got: Any, want: Any) -> None:
    assert isinstance(got, np.ndarray)
    assert got.dtype == want.dtype and got.shape == want.shape
    width = f"u{want.dtype.itemsize}"
    np.testing.assert_array_equal(got.view(width), want.view(width))


# (name, alpha, digest of the inputs) whose whole-array result has matched the oracle
_oracle_checked: set[tuple[str, float | None, bytes]] = set()


def check(name: str, result: Any, arrays: tuple[Any, ...], alpha: float | None) -> None:
    """result equals leaky on the whole arrays bit for bit, and that equals the oracle."""
    whole = getattr(leaky, name)(*arrays, *alpha_args(alpha))
    same_bits(result, whole)
    digest = hashlib.sha256()
    for a in arrays:
        digest.update(a.dtype.str.encode() + repr(a.shape).encode() + a.tobytes())
    key = (name, alpha, digest.digest())
    if key not in _oracle_checked:  # the pure-Python oracle is slow: once per input
        a = 0.01 if alpha is None else alpha
        assert_matches(whole, ORACLES[name](*arrays, a), whole.dtype.char, a)
        _oracle_checked.add(key)


def test_the_cluster_is_worker_processes(client: Client) -> None:
    pids = client.run(os.getpid)
    assert len(pids) == N_WORKERS
    assert len(set(pids.values())) == N_WORKERS and os.getpid() not in pids.values()
    assert all(w["nthreads"] == 1 for w in client.scheduler_info()["workers"].values())


def test_every_worker_runs_the_functions(client: Client) -> None:
    x = sample("d", (SIZE,), seed=3)
    for address in client.scheduler_info()["workers"]:
        # the function itself is pickled to the worker, unpickled there as leaky.leaky_relu
        got = client.submit(leaky.leaky_relu, x, 0.2, workers=[address], pure=False).result()
        check("leaky_relu", got, (x,), 0.2)


@pytest.mark.parametrize("alpha", ALPHAS)
@pytest.mark.parametrize("dtype", ["f", "d"])
@pytest.mark.parametrize("name", FUNCS)
def test_helper_on_the_cluster(client: Client, name: str, dtype: str, alpha: float | None) -> None:
    arrays = numpy_inputs(name, dtype, (SIZE,))
    lazy = [da.from_array(a, chunks=CHUNK) for a in arrays]
    assert lazy[0].chunks == ((CHUNK, CHUNK, CHUNK, 1_699),)
    result = getattr(leaky.dask, name)(*lazy, *alpha_args(alpha))
    assert result.chunks == lazy[0].chunks
    assert result.dtype == np.dtype(dtype)
    assert type(result._meta) is np.ndarray and result._meta.dtype == np.dtype(dtype)
    check(name, client.compute(result).result(), arrays, alpha)


@pytest.mark.parametrize("alpha", ALPHAS)
@pytest.mark.parametrize("dtype", ["f", "d"])
@pytest.mark.parametrize("name", FUNCS)
def test_plain_map_blocks_on_the_cluster(
    client: Client, name: str, dtype: str, alpha: float | None
) -> None:
    # the form docs/dask-processes-example.md documents, without leaky.dask
    arrays = numpy_inputs(name, dtype, SHAPE2)
    lazy = [da.from_array(a, chunks=CHUNKS2) for a in arrays]
    assert lazy[0].chunks == ((64, 64, 1), (100, 100, 3))
    func = getattr(leaky, name)
    result = da.map_blocks(func, *lazy, *alpha_args(alpha), dtype=lazy[0].dtype, threads=1)
    assert result.dtype == np.dtype(dtype)
    check(name, client.compute(result).result(), arrays, alpha)


def test_tasks_ran_on_the_workers(client: Client) -> None:
    x = sample("f", (SIZE,), seed=5)
    lazy = da.from_array(x, chunks=8_192)  # 13 chunks, the last of 1,699
    with get_task_stream(client) as stream:
        got = client.compute(leaky.dask.leaky_relu(lazy, 0.2)).result()
    check("leaky_relu", got, (x,), 0.2)
    # (Dask renames the from_array tasks "array-leaky_relu-...": not those)
    ran = [t for t in stream.data if str(t["key"][0]).startswith("leaky_relu-")]
    workers = set(client.scheduler_info()["workers"])
    assert len(ran) == lazy.numblocks[0]
    assert {t["worker"] for t in ran} <= workers


@pytest.mark.parametrize("threads", [None, 1, 2])
def test_threads_passed_through(client: Client, threads: int | None) -> None:
    x = sample("d", (SIZE,), seed=6)
    result = leaky.dask.leaky_relu(da.from_array(x, chunks=CHUNK), 0.2, threads=threads)
    check("leaky_relu", client.compute(result).result(), (x,), 0.2)
    # and on Dask's threaded scheduler, where leaky's pool is shared by its threads
    same_bits(result.compute(scheduler="threads"), leaky.leaky_relu(x, 0.2))


def test_backward_with_different_chunks(client: Client) -> None:
    g, z = sample("f", (SIZE,), seed=7), sample("f", (SIZE,), seed=8)
    result = leaky.dask.leaky_relu_backward(
        da.from_array(g, chunks=30_001), da.from_array(z, chunks=CHUNK), 0.2
    )
    assert result.chunks == ((30_001, 30_001, 30_001, 10_000),)
    check("leaky_relu_backward", client.compute(result).result(), (g, z), 0.2)


@pytest.mark.parametrize("dtype", ["i", "B", "?"])
def test_integer_chunks_give_float64(client: Client, dtype: str) -> None:
    x = sample(dtype, (SIZE,), seed=9)
    lazy = da.from_array(x, chunks=CHUNK)
    result = leaky.dask.leaky_relu(lazy, 0.2)
    assert result.dtype == np.float64 and result._meta.dtype == np.float64
    check("leaky_relu", client.compute(result).result(), (x,), 0.2)
    assert leaky.dask.result_dtype(dtype) == np.float64


@pytest.mark.parametrize("name", FUNCS)
def test_dask_arrays_passed_to_leakys_functions_stay_lazy(client: Client, name: str) -> None:
    # the route through leaky.ufunc: Dask's __array_ufunc__ gives a lazy array
    # blockwise, as np.maximum(x, 0.2 * x) would; computed on the cluster
    arrays = numpy_inputs(name, "f", SHAPE2)
    lazy = [da.from_array(a, chunks=CHUNKS2) for a in arrays]
    result = getattr(leaky, name)(*lazy, 0.2)
    reference = np.maximum(lazy[0], np.float32(0.2) * lazy[0])
    assert type(result) is type(reference) is da.Array
    assert result.chunks == reference.chunks and result.dtype == np.float32
    check(name, client.compute(result).result(), arrays, 0.2)


def test_dask_arrays_with_per_channel_slopes(client: Client) -> None:
    z = sample("f", (3, 40, 50), seed=21)
    slopes = np.array([0.1, -0.5, 2.0], dtype=np.float32).reshape(3, 1, 1)
    result = leaky.ufunc.leaky_relu(da.from_array(z, chunks=(1, 20, 50)), slopes)
    assert type(result) is da.Array
    got = client.compute(result).result()
    for c in range(3):
        alpha = float(slopes[c, 0, 0])
        assert_matches(got[c], expected_forward(z[c], alpha), "f", alpha)


def test_numpy_input_is_accepted() -> None:
    x = sample("f", (1_000,), seed=10)
    result = leaky.dask.leaky_relu(x, 0.2)
    assert isinstance(result, da.Array)
    same_bits(result.compute(scheduler="sync"), leaky.leaky_relu(x, 0.2))


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda x: leaky.dask.leaky_relu(x, "0.2"), TypeError, "alpha"),  # type: ignore[arg-type]
        (lambda x: leaky.dask.leaky_relu_grad(x, threads=0), ValueError, "threads"),
        (lambda x: leaky.dask.leaky_relu_backward(x, x, None), TypeError, "alpha"),  # type: ignore[arg-type]
        (lambda x: leaky.dask.leaky_relu(x.astype("c16")), TypeError, "complex128"),
        (lambda x: leaky.dask.leaky_relu(x.astype(">f8")), TypeError, ">f8"),
        (lambda x: leaky.dask.leaky_relu(x.astype("g")), TypeError, "dtype"),
        (lambda x: leaky.dask.leaky_relu_backward(x, x[:-1]), ValueError, "same shape"),
        (lambda x: leaky.dask.leaky_relu_backward(x, x.astype("c8")), TypeError, "complex"),
        (
            lambda x: leaky.dask.leaky_relu(da.ma.masked_greater(x, 0)),
            TypeError,
            "NumPy chunks",
        ),
    ],
)
def test_bad_arguments_raise_where_the_call_is(
    make: Callable[[Any], Any], error: type[Exception], match: str
) -> None:
    x = da.from_array(np.linspace(-1, 1, 10), chunks=3)
    with pytest.raises(error, match=match):
        make(x)


def test_import_leaky_does_not_import_dask() -> None:
    code = (
        "import sys, leaky; a = 'dask' in sys.modules; import leaky.dask; "
        "print(a, 'dask.array' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.split() == ["False", "True"]


def test_leaky_dask_loads_on_first_access_like_leaky_ufunc() -> None:
    # `import leaky` imports no Dask; `leaky.dask` then imports it, as `leaky.ufunc` does NumPy
    code = (
        "import sys, leaky; print('dask' in sys.modules); "
        "f = leaky.dask.leaky_relu; print('dask' in sys.modules, f.__module__)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "True", "leaky.dask"]
