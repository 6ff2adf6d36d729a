"""The automatic pool size follows Linux cgroup CPU quotas, on fabricated cgroup trees.

A container limited to 2 CPUs on a 64-core host has all 64 in its affinity
mask; the pool must be sized by the quota instead.  `_default_thread_count(root)`
runs the C code that sizes the pool at import (pool.c, thread_count_for) with
every cgroup file read under `root` instead of `/`, so each test lays out a
cgroup tree of its own.  The oracle below works out the expected count from
the same files independently: the affinity mask, then the smallest quota on
the path from the process's cgroup up to the mount point, rounded up.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

import pytest

import leaky._leaky as ext

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="cgroups are Linux's (Windows: job objects)"
)

MAX_THREADS = 1024


def affinity() -> int:
    return len(os.sched_getaffinity(0))


def expected(quotas: list[float]) -> int:
    """Oracle: the affinity count, capped by the smallest quota rounded up."""
    count = affinity()
    if quotas:
        count = min(count, math.ceil(min(quotas)))
    return max(1, min(count, MAX_THREADS))


def write(root: Path, relative: str, text: str) -> None:
    path = root / relative.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_no_cgroup_files_means_the_affinity_mask(tmp_path: Path) -> None:
    assert ext._default_thread_count(str(tmp_path)) == expected([])


def test_the_real_files_give_the_import_time_count() -> None:
    if "LEAKY_NUM_THREADS" in os.environ:
        pytest.skip("LEAKY_NUM_THREADS sets _max_threads here")
    assert ext._default_thread_count("") == ext._max_threads


@pytest.mark.parametrize(
    ("cpu_max", "quotas"),
    [
        ("max 100000\n", []),
        ("50000 100000\n", [0.5]),  # half a CPU: still one thread
        ("100000 100000\n", [1.0]),
        ("150000 100000\n", [1.5]),  # rounded up: 2, not 1
        ("400000 100000\n", [4.0]),
        ("garbage\n", []),
        ("", []),
    ],
)
def test_v2_cpu_max(tmp_path: Path, cpu_max: str, quotas: list[float]) -> None:
    write(tmp_path, "proc/self/cgroup", "0::/user.slice/job\n")
    write(tmp_path, "sys/fs/cgroup/user.slice/job/cpu.max", cpu_max)
    assert ext._default_thread_count(str(tmp_path)) == expected(quotas)


def test_v2_a_parent_limit_applies(tmp_path: Path) -> None:
    write(tmp_path, "proc/self/cgroup", "0::/outer/inner\n")
    write(tmp_path, "sys/fs/cgroup/outer/cpu.max", "100000 100000\n")
    write(tmp_path, "sys/fs/cgroup/outer/inner/cpu.max", "300000 100000\n")
    assert ext._default_thread_count(str(tmp_path)) == expected([1.0, 3.0])


def test_v2_container_sees_its_own_cgroup_at_the_mount_point(tmp_path: Path) -> None:
    # without a cgroup namespace: the host's path, but only the container's cgroup mounted
    write(tmp_path, "proc/self/cgroup", "0::/system.slice/docker-0123.scope\n")
    write(tmp_path, "sys/fs/cgroup/cpu.max", "50000 100000\n")
    assert ext._default_thread_count(str(tmp_path)) == expected([0.5])


@pytest.mark.parametrize("mount", ["cpu,cpuacct", "cpu"])
@pytest.mark.parametrize(
    ("quota_us", "period_us", "quotas"),
    [("-1\n", "100000\n", []), ("100000\n", "100000\n", [1.0]), ("250000\n", "100000\n", [2.5])],
)
def test_v1_cfs_quota(
    tmp_path: Path, mount: str, quota_us: str, period_us: str, quotas: list[float]
) -> None:
    write(tmp_path, "proc/self/cgroup", "4:memory:/elsewhere\n3:cpu,cpuacct:/batch\n0::/\n")
    write(tmp_path, f"sys/fs/cgroup/{mount}/batch/cpu.cfs_quota_us", quota_us)
    write(tmp_path, f"sys/fs/cgroup/{mount}/batch/cpu.cfs_period_us", period_us)
    # a memory-only hierarchy's files are not CPU limits
    write(tmp_path, "sys/fs/cgroup/memory/elsewhere/cpu.cfs_quota_us", "1000\n")
    write(tmp_path, "sys/fs/cgroup/memory/elsewhere/cpu.cfs_period_us", "100000\n")
    assert ext._default_thread_count(str(tmp_path)) == expected(quotas)


def test_v1_cpuacct_alone_is_not_cpu(tmp_path: Path) -> None:
    write(tmp_path, "proc/self/cgroup", "2:cpuacct:/batch\n")
    write(tmp_path, "sys/fs/cgroup/cpu,cpuacct/batch/cpu.cfs_quota_us", "100000\n")
    write(tmp_path, "sys/fs/cgroup/cpu,cpuacct/batch/cpu.cfs_period_us", "100000\n")
    assert ext._default_thread_count(str(tmp_path)) == expected([])


def test_a_quota_below_the_affinity_count_lowers_it(tmp_path: Path) -> None:
    """The cases above could all agree with the affinity count on a 1-CPU machine."""
    if affinity() < 2:
        pytest.skip("needs 2 CPUs in the affinity mask to see a quota lower it")
    write(tmp_path, "proc/self/cgroup", "0::/\n")
    write(tmp_path, "sys/fs/cgroup/cpu.max", "100000 100000\n")
    assert ext._default_thread_count(str(tmp_path)) == 1 < affinity()


def test_bad_roots() -> None:
    with pytest.raises(TypeError):
        ext._default_thread_count(1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="null"):
        ext._default_thread_count("a\0b")
    assert ext._default_thread_count("x" * 10000) == expected([])  # too long: no files
