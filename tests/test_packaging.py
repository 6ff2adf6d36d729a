"""The packaging promises: the wheel set cibuildwheel builds, one version, test deps in sync.

The cibuildwheel test needs cibuildwheel (the `release` dependency group,
which .ci/run installs) and skips without it, as it does where the suite runs
against a built wheel.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import leaky

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = ROOT / "pyproject.toml"

PYTHONS = ["cp310", "cp311", "cp312", "cp313", "cp314", "cp314t", "cp315", "cp315t"]
PLATFORMS = {
    "linux": [
        "manylinux_x86_64",
        "manylinux_aarch64",
        "musllinux_x86_64",
        "musllinux_aarch64",
    ],
    "macos": ["macosx_x86_64", "macosx_arm64"],
    "windows": ["win_amd64", "win_arm64"],
}


def load_pyproject() -> dict[str, Any]:
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from 3.11")
    if not PYPROJECT.is_file():
        pytest.skip("no pyproject.toml next to the tests")
    with PYPROJECT.open("rb") as file:
        data: dict[str, Any] = tomllib.load(file)
    return data


@pytest.mark.parametrize("platform", sorted(PLATFORMS))
def test_build_identifiers(platform: str) -> None:
    """Exactly the promised wheels, so a configuration change cannot drop one silently."""
    if importlib.util.find_spec("cibuildwheel") is None:
        pytest.skip("cibuildwheel is not installed (dependency group 'release')")
    if not (ROOT / "setup.py").is_file():
        pytest.skip("not in a source tree")
    env = {key: value for key, value in os.environ.items() if not key.startswith("CIBW_")}
    command = [sys.executable, "-m", "cibuildwheel", "--print-build-identifiers"]
    done = subprocess.run(
        [*command, "--platform", platform, "--archs", "all", str(ROOT)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    expected = {f"{python}-{tag}" for python in PYTHONS for tag in PLATFORMS[platform]}
    assert set(done.stdout.split()) == expected


def test_one_version() -> None:
    """The version is written once (_version.py); the metadata and the module agree."""
    assert leaky.__version__ == importlib.metadata.version("leaky")
    assert re.fullmatch(r"\d+\.\d+\.\d+((a|b|rc)\d+)?", leaky.__version__)


def test_wheel_test_group_is_in_test_extra() -> None:
    """Wheels are tested with the `wheel-test` group; `.[test]` must install all of it."""
    data = load_pyproject()
    group = data["dependency-groups"]["wheel-test"]
    extra = data["project"]["optional-dependencies"]["test"]
    assert set(group) <= set(extra)


def test_changelog_names_the_version() -> None:
    changelog = ROOT / "CHANGELOG.md"
    if not changelog.is_file():
        pytest.skip("no CHANGELOG.md next to the tests")
    release = leaky.__version__
    text = changelog.read_text(encoding="utf-8")
    assert f"## {release}" in text or "## Unreleased" in text
