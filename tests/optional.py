"""Optional test dependencies: skip with the reason where absent, fail in CI.

``LEAKY_REQUIRE_OPTIONAL=1`` (set by .ci/run) turns the skip into a
failure, so CI cannot pass by silently skipping the Dask and example tests.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest

REQUIRE = os.environ.get("LEAKY_REQUIRE_OPTIONAL", "") not in ("", "0")


def require(module: str, extra: str) -> ModuleType:
    """Import ``module``, or skip the calling test module saying which extra installs it."""
    __tracebackhide__ = True
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        reason = f'{module} is not installed (pip install ".[{extra}]"): {exc}'
        if REQUIRE:
            pytest.fail(f"LEAKY_REQUIRE_OPTIONAL is set but {reason}", pytrace=False)
        pytest.skip(reason, allow_module_level=True)
