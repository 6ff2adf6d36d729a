"""Can every wheel's tests install?  The `wheel-test` group on all 64 identifiers.

cibuildwheel tests each wheel after installing the `wheel-test` dependency
group into that wheel's Python on its runner.  A dependency without a wheel
for that Python and platform would be built from its sdist there (NumPy:
minutes, then likely a failure).  For each identifier this asks pip to
resolve the group from wheels only, for that platform, Python version and
ABI (`pip install --dry-run --only-binary :all: --platform ... --target`,
which reads the index and the wheels' metadata but downloads no wheel), and
compares the identifiers that cannot install with [tool.cibuildwheel]'s
`test-skip`: every gap must be skipped there (with its reason written next
to it), and every skip must still be a gap, so a skip cannot outlive its
reason.

pip evaluates environment markers for this machine, not the target (it has
no option for that), so a dependency that only some platforms pull in
(pytest's colorama on Windows) is not asked for; all such are pure Python.

The identifiers are tests/test_packaging.py's PYTHONS x PLATFORMS (that test
checks cibuildwheel builds exactly those); the platform tags are the
runners' (wheels.yml): glibc 2.28 and musl 1.2 (cibuildwheel's default
images, where the Linux wheels are tested), macOS 15 on Intel and 14 on
Apple silicon.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10: pip's own copy of tomli
    from pip._vendor import tomli as tomllib


ROOT = Path(__file__).resolve().parents[2]

PYTHONS = ["cp310", "cp311", "cp312", "cp313", "cp314", "cp314t", "cp315", "cp315t"]


# cibuildwheel's platform -> the platform tags pip is asked for.  pip takes
# a manylinux_2_28 or musllinux_1_2 --platform literally (it widens only
# manylinux2014 and macOS versions), so every older tag the runner's pip
# would accept is listed too.
def _linux(prefix: str, versions: range, arch: str) -> list[str]:
    return [f"{prefix}_{minor}_{arch}" for minor in versions]


PLATFORMS = {
    "manylinux_x86_64": _linux("manylinux_2", range(5, 29), "x86_64"),
    "manylinux_aarch64": _linux("manylinux_2", range(17, 29), "aarch64"),
    "musllinux_x86_64": _linux("musllinux_1", range(0, 3), "x86_64"),
    "musllinux_aarch64": _linux("musllinux_1", range(0, 3), "aarch64"),
    "macosx_x86_64": ["macosx_15_0_x86_64"],
    "macosx_arm64": ["macosx_14_0_arm64"],
    "win_amd64": ["win_amd64"],
    "win_arm64": ["win_arm64"],
}


def resolve(identifier: str, requirements: list[str], scratch: str) -> tuple[str, str]:
    """(identifier, "" and the versions chosen) or (identifier, pip's complaint)."""
    python, platform = identifier.split("-", 1)
    # the newest patch release, as the runners have (hypothesis asks for >=3.10.2)
    version = f"{python[2]}.{python[3:].rstrip('t')}.99"
    report = Path(scratch) / f"{identifier}.json"
    command = [
        sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--ignore-installed",
        "--disable-pip-version-check", "--only-binary", ":all:",
        *(f"--platform={tag}" for tag in PLATFORMS[platform]), "--python-version", version,
        "--implementation", "cp", "--abi", python,
        "--target", str(Path(scratch) / "target"), "--report", str(report), *requirements,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        errors = [line for line in done.stderr.splitlines() if line.startswith("ERROR")]
        return identifier, "\n".join(errors) or done.stderr.strip()
    installed = json.loads(report.read_text())["install"]
    return identifier, " ".join(
        f"{item['metadata']['name']}=={item['metadata']['version']}" for item in installed
    )


def main() -> int:
    started = time.monotonic()
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    requirements = config["dependency-groups"]["wheel-test"]
    assert all(isinstance(item, str) for item in requirements), (
        "wheel-test must be plain requirements"
    )
    skip = config["tool"]["cibuildwheel"].get("test-skip", [])
    skip = skip.split() if isinstance(skip, str) else list(skip)
    identifiers = [f"{python}-{platform}" for python in PYTHONS for platform in PLATFORMS]

    # The answers change only when the index does (a new NumPy adds wheels):
    # kept a day under the CI cache, keyed by everything that was asked.
    question = json.dumps([requirements, identifiers, PLATFORMS], sort_keys=True)
    key = hashlib.sha256(question.encode()).hexdigest()[:16]
    cache_dir = Path(os.environ.get("LEAKY_CI_CACHE", Path.home() / ".cache" / "leaky-ci"))
    cached = cache_dir / f"wheel-deps-{key}.json"
    if cached.is_file() and time.time() - cached.stat().st_mtime < 86400:
        answers = json.loads(cached.read_text())
        print(f"   (answers of {time.ctime(cached.stat().st_mtime)}, cached for a day)")
    else:
        with tempfile.TemporaryDirectory() as scratch, ThreadPoolExecutor(8) as pool:
            answers = dict(pool.map(lambda i: resolve(i, requirements, scratch), identifiers))
        cache_dir.mkdir(parents=True, exist_ok=True)
        cached.write_text(json.dumps(answers, indent=1))
    gaps = {i: answer for i, answer in answers.items() if answer.startswith("ERROR")}
    skipped = {i for i in identifiers if any(fnmatch.fnmatch(i, pattern) for pattern in skip)}

    failed = False
    for identifier in identifiers:
        if identifier in gaps:
            status = "gap, tests skipped" if identifier in skipped else "GAP, NOT SKIPPED"
            failed |= identifier not in skipped
            print(f"   {identifier}: {status}: {gaps[identifier].splitlines()[0]}")
    for identifier in sorted(skipped - gaps.keys()):
        failed = True
        print(f"   {identifier}: test-skip names it, but its test dependencies install now")
    newest = {answer for i, answer in answers.items() if i not in gaps}
    print(
        f"-- wheel-test ({', '.join(requirements)}) on {len(identifiers)} identifiers: "
        f"{len(identifiers) - len(gaps)} install from wheels, {len(gaps)} do not "
        f"({len(newest)} distinct resolutions; {time.monotonic() - started:.0f}s)"
    )
    if failed:
        print(
            "wheel_deps.py: every identifier whose test dependencies cannot install from wheels "
            "must be in [tool.cibuildwheel] test-skip with its reason, and only those",
            file=sys.stderr,
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
