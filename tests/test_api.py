"""The public surface: names, signatures, docs, version, import behaviour."""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import os
import platform
import subprocess
import sys

import leaky
from leaky import leaky_relu, leaky_relu_backward, leaky_relu_grad


def test_public_names() -> None:
    assert sorted(leaky.__all__) == [
        "__version__",
        "leaky_relu",
        "leaky_relu_backward",
        "leaky_relu_grad",
    ]
    # the public functions are the C functions themselves, no Python wrapper
    assert type(leaky_relu).__name__ == "builtin_function_or_method"
    assert leaky_relu.__module__ in ("leaky._leaky", "leaky")


def test_signatures_are_visible_to_help() -> None:
    assert str(inspect.signature(leaky_relu)) == "(z, alpha=0.01, *, out=None, threads=None)"
    assert str(inspect.signature(leaky_relu_grad)) == ("(z, alpha=0.01, *, out=None, threads=None)")
    assert str(inspect.signature(leaky_relu_backward)) == (
        "(grad_output, z, alpha=0.01, *, out=None, threads=None)"
    )
    for func in (leaky_relu, leaky_relu_grad, leaky_relu_backward):
        assert func.__doc__ and "alpha" in func.__doc__


def test_version_is_the_installed_metadata() -> None:
    assert leaky.__version__ == importlib.metadata.version("leaky")


def run_python(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    return done.stdout


def test_import_does_not_import_numpy() -> None:
    assert (
        run_python(
            "import sys, leaky; leaky.leaky_relu([1.0, -1.0]); leaky.leaky_relu(b'ab');"
            "print('numpy' in sys.modules)"
        ).strip()
        == "False"
    )


# Everything `import leaky` may bring in: its own modules.  A module added to
# the import path costs every program that imports leaky its start-up time
# (typing and collections.abc, for annotations alone, once took ten times as
# long as leaky itself), so a new name here needs a reason.
IMPORT_BRINGS_IN = ["leaky", "leaky._containers", "leaky._leaky", "leaky._version"]


def test_import_brings_in_only_leaky_itself() -> None:
    # -I -S: no site, no .pth files, no PYTHON* variables, so that only what
    # the interpreter needs to start is loaded, and leaky cannot lean on a
    # module that site or a .pth file imports on one Python and not another.
    # The new modules are the difference within the one process, so what the
    # interpreter loads at start-up (different on each version) cancels out.
    # Calls with plain Python objects bring in nothing either.
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); before = set(sys.modules); "
        "import leaky; print(*sorted(set(sys.modules) - before)); "
        "leaky.leaky_relu(-1.5); leaky.leaky_relu_grad([1.0, -1]); "
        "leaky.leaky_relu_backward((1.0, 2.0), (1, -1)); "
        "leaky.leaky_relu_backward(memoryview(b'ab'), bytearray(b'ab')); leaky.leaky_relu(b'ab'); "
        "print(*sorted(set(sys.modules) - before))"
    )
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(leaky.__file__)))
    done = subprocess.run(
        [sys.executable, "-I", "-S", "-c", code, package_parent],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    after_import, after_calls = (line.split() for line in done.stdout.splitlines())
    assert after_import == IMPORT_BRINGS_IN
    assert after_calls == IMPORT_BRINGS_IN


def test_containers_for_modules_imported_after_leaky() -> None:
    # leaky._containers finds array and numpy in sys.modules rather than
    # importing them: still an array.array and a NumPy scalar back when the
    # caller imports them after leaky
    out = run_python(
        "import leaky, array, numpy; "
        "print(type(leaky.leaky_relu(array.array('d', [-2.0, 1.0]))).__name__, "
        "type(leaky.leaky_relu_grad(array.array('f', [-2.0]))).__name__, "
        "type(leaky.leaky_relu(numpy.float32(-2.0))).__name__, "
        "type(leaky.leaky_relu_backward(numpy.float64(1.0), numpy.float16(-1.0))).__name__, "
        "repr(leaky.leaky_relu(array.array('d', [-2.0, 1.0]), 0.5)))"
    )
    assert out.split() == [
        "array",
        "array",
        "float32",
        "float64",
        "array('d',",
        "[-1.0,",
        "1.0])",
    ]


def test_main_prints_the_problem_examples() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "leaky"], capture_output=True, text=True, timeout=300, check=True
    )
    lines = done.stdout.splitlines()
    assert "print(leaky_relu(0))             # 0" in lines
    assert "print(leaky_relu(1))             # 1" in lines
    assert "print(leaky_relu(-1))            # -0.01" in lines
    assert "print(leaky_relu(-2, alpha=0.1)) # -0.2" in lines
    assert any("pure-Python one-liner" in line for line in lines)


def test_reimport_makes_a_fresh_module() -> None:
    # multi-phase init: a second import runs exec again and gets its own state
    old = sys.modules.pop("leaky._leaky")
    try:
        fresh = importlib.import_module("leaky._leaky")
        assert fresh is not old
        assert fresh.leaky_relu(-2.0, 0.5) == -1.0
        assert old.leaky_relu(-2.0, 0.5) == -1.0
        assert fresh.leaky_relu(memoryview(b"\x01")).tolist() == [1.0]
    finally:
        # the import also set the package's attribute: put both back
        sys.modules["leaky._leaky"] = old
        leaky._leaky = old


def test_kernel_paths_for_this_cpu() -> None:
    import leaky._leaky as ext

    supported = ext._supported_kernels
    assert supported[-1] == "portable"  # always there, always last
    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64"):
        assert set(supported) <= {"avx512", "avx2", "portable"}
    elif machine in ("aarch64", "arm64") and sys.platform != "win32":
        assert supported == ("neon", "portable")  # NEON is part of the base ISA
    forced = os.environ.get("LEAKY_KERNELS")
    assert ext._kernels == (forced or supported[0])


def test_an_unknown_kernel_path_fails_the_import() -> None:
    done = subprocess.run(
        [sys.executable, "-c", "import leaky"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "LEAKY_KERNELS": "sse9"},
    )
    assert done.returncode != 0
    assert "ImportError: LEAKY_KERNELS=sse9 is not a kernel path this CPU supports" in done.stderr
