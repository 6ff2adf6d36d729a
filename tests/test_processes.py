"""Pickling, and the functions called in other processes (multiprocessing, ProcessPoolExecutor)."""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import pickle
import pickletools
import sys
from collections.abc import Callable
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

import leaky
from leaky import leaky_relu, leaky_relu_backward, leaky_relu_grad

NAMES = ["leaky_relu", "leaky_relu_grad", "leaky_relu_backward"]

# fork is POSIX-only; spawn everywhere
START_METHODS = [m for m in ("spawn", "fork") if m in multiprocessing.get_all_start_methods()]

# Python 3.12+ warns when a process with threads forks; leaky's pool threads
# are exactly what these tests fork on purpose (a child makes its own pool).
# JAX warns the same way once tests/test_jax.py has imported it in this
# process; the children here never touch JAX.
pytestmark = [
    pytest.mark.filterwarnings(
        "ignore:This process .* is multi-threaded, use of fork:DeprecationWarning"
    ),
    pytest.mark.filterwarnings("ignore:os.fork.. was called.*JAX is multithreaded:RuntimeWarning"),
]


def global_name(payload: bytes) -> tuple[str, str]:
    """The (module, name) a pickle of one global refers to, read from its opcodes."""
    strings = [
        arg
        for op, arg, _ in pickletools.genops(payload)
        if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE")
    ]
    globals_ = [
        str(arg).split(" ")
        for op, arg, _ in pickletools.genops(payload)
        if op.name in ("GLOBAL", "INST")
    ]
    if globals_:
        module, name = globals_[0]
        return module, name
    assert len(strings) == 2, strings
    return str(strings[0]), str(strings[1])


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
@pytest.mark.parametrize("name", NAMES)
def test_pickles_to_itself_as_the_public_name(name: str, protocol: int) -> None:
    func = getattr(leaky, name)
    payload = pickle.dumps(func, protocol=protocol)
    assert pickle.loads(payload) is func
    assert global_name(payload) == ("leaky", name)
    # the extension's own attribute is the same object, so it pickles the same
    extension = sys.modules["leaky._leaky"]
    assert pickle.dumps(getattr(extension, name), protocol=protocol) == payload


@pytest.mark.parametrize("name", NAMES)
def test_pickles_that_name_the_extension_still_load(name: str) -> None:
    # what leaky 0.1.0 wrote before __module__ named the public module
    old = f"cleaky._leaky\n{name}\n.".encode()
    assert pickle.loads(old) is getattr(leaky, name)


@pytest.mark.parametrize("name", NAMES)
def test_module_and_qualname(name: str) -> None:
    func = getattr(leaky, name)
    assert func.__module__ == "leaky"
    assert func.__qualname__ == name
    assert getattr(sys.modules[func.__module__], func.__qualname__) is func


# ---------------------------------------------------------------- other processes
#
# The callables handed to the pools are leaky's C functions themselves, so
# what crosses the process boundary is exactly their pickle; the arrays are
# large enough (10^5 elements) for the GIL-free threaded kernels in the child.

ALPHA = 0.2
SIZE = 100_003


def jobs() -> list[tuple[Callable[..., Any], tuple[Any, ...], list[float], str]]:
    """(function, args, oracle result, result dtype char) for the three functions."""
    out: list[tuple[Callable[..., Any], tuple[Any, ...], list[float], str]] = []
    for dtype in ("f", "d"):
        x = sample(dtype, (SIZE,), seed=1)
        g = sample(dtype, (SIZE,), seed=2)
        out.append((leaky_relu, (x, ALPHA), expected_forward(x, ALPHA), dtype))
        out.append((leaky_relu_grad, (x, ALPHA), expected_grad(x, ALPHA), dtype))
        out.append((leaky_relu_backward, (g, x, ALPHA), expected_backward(g, x, ALPHA), dtype))
    return out


@pytest.fixture(scope="module")
def cases() -> list[tuple[Callable[..., Any], tuple[Any, ...], list[float], str]]:
    return jobs()


@pytest.mark.parametrize("method", START_METHODS)
def test_multiprocessing_pool(
    method: str, cases: list[tuple[Callable[..., Any], tuple[Any, ...], list[float], str]]
) -> None:
    ctx = multiprocessing.get_context(method)
    with ctx.Pool(2) as pool:
        pending = [pool.apply_async(func, args) for func, args, _, _ in cases]
        # starmap pickles the function once per chunk of tasks
        starred = pool.starmap(leaky_relu, [args for func, args, _, _ in cases[::3]])
        results = [p.get(timeout=120) for p in pending]
    for (func, _, expected, kind), got in zip(cases, results, strict=True):
        assert isinstance(got, np.ndarray), func
        assert_matches(got, expected, kind, ALPHA)
    for (_, _, expected, kind), got in zip(cases[::3], starred, strict=True):
        assert_matches(got, expected, kind, ALPHA)


@pytest.mark.parametrize("method", START_METHODS)
def test_process_pool_executor(
    method: str, cases: list[tuple[Callable[..., Any], tuple[Any, ...], list[float], str]]
) -> None:
    ctx = multiprocessing.get_context(method)
    with concurrent.futures.ProcessPoolExecutor(2, mp_context=ctx) as pool:
        futures = [pool.submit(func, *args, threads=1) for func, args, _, _ in cases]
        # keyword-only arguments cross too; map pickles the bare function
        mapped = list(pool.map(leaky_relu, [cases[0][1][0]], [ALPHA]))
        results = [f.result(timeout=120) for f in futures]
    for (_, _, expected, kind), got in zip(cases, results, strict=True):
        assert_matches(got, expected, kind, ALPHA)
    assert_matches(mapped[0], cases[0][2], cases[0][3], ALPHA)


def test_the_parent_pool_then_fork_children() -> None:
    # the parent has used its thread pool before the fork children start
    if "fork" not in START_METHODS:
        pytest.skip("fork is not available on this platform")
    x = sample("d", (SIZE,), seed=3)
    leaky_relu(x)
    expected = expected_forward(x, ALPHA)
    with multiprocessing.get_context("fork").Pool(2) as pool:
        results = pool.starmap(leaky_relu, [(x, ALPHA)] * 4)
    for got in results:
        assert_matches(got, expected, "d", ALPHA)
