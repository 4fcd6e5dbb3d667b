"""How many CPU cores this process may use: the cores it may run on (its affinity) and,
in a container, its CPU quota (cgroup v2 `cpu.max`, v1 `cpu.cfs_quota_us`), which
`os.cpu_count()` ignores: a Kubernetes pod limited to 8 CPUs on a 64-core node would
otherwise start 64 hash processes and describe on 64 threads, time-sliced on 8."""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def _own_cgroup_dirs(root: Path) -> list[Path]:
    """The cgroup folders that may hold this process's quota: the mount's root (what a
    container with its own cgroup namespace sees) and its own group under it (v2)."""
    folders = [root, root / "cpu", root / "cpu,cpuacct"]
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            if line.startswith("0::/") and len(line) > 4:
                folders.append(root / line[4:])
    except OSError:
        pass
    return folders


def cpu_quota(root: Path = CGROUP_ROOT) -> float | None:
    """The CPU quota in cores (1.5 for `150000 100000`), the smallest found; None where
    there is none (`max`, -1, no cgroup files: not Linux, or no limit)."""
    quotas = []
    for folder in _own_cgroup_dirs(root):
        try:
            quota, period = (folder / "cpu.max").read_text().split()[:2]
            if quota != "max" and int(period) > 0:
                quotas.append(int(quota) / int(period))
        except (OSError, ValueError):
            pass
        try:
            quota = int((folder / "cpu.cfs_quota_us").read_text())
            period = int((folder / "cpu.cfs_period_us").read_text())
            if quota > 0 and period > 0:
                quotas.append(quota / period)
        except (OSError, ValueError):
            pass
    return min(quotas, default=None)


def usable_cores(root: Path = CGROUP_ROOT) -> int:
    """Cores this process may use: its affinity, at most its CPU quota rounded up."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    quota = cpu_quota(root)
    return max(1, min(cores, math.ceil(quota))) if quota is not None else max(1, cores)


def cap_torch_threads() -> None:
    """PyTorch sizes its CPU thread pool by the cores it sees, not a container's CPU
    quota: in a pod limited to 8 CPUs on a 64-core node its threads would be time-sliced
    on 8. Capped at the usable cores, unless the operator chose (OMP_NUM_THREADS)."""
    if "OMP_NUM_THREADS" in os.environ:
        return
    import torch

    cores = usable_cores()
    if torch.get_num_threads() > cores:
        torch.set_num_threads(cores)
