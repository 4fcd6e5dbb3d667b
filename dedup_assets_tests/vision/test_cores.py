import os

import pytest

from dedup_assets.vision.cores import cpu_quota, usable_cores


def cgroup(tmp_path, files: dict[str, str]):
    """A cgroup mount as a container sees it, with these files (v2 `cpu.max`, or v1's
    `cpu/cpu.cfs_quota_us` and `cpu/cpu.cfs_period_us`)."""
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


@pytest.mark.parametrize("files, quota", [
    ({"cpu.max": "150000 100000\n"}, 1.5),  # cgroup v2: 1.5 CPUs
    ({"cpu.max": "max 100000\n"}, None),  # v2, no limit
    ({"cpu/cpu.cfs_quota_us": "400000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 4.0),  # v1: 4 CPUs
    ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),  # v1, no limit
    ({}, None),  # no cgroup files
])
def test_a_containers_cpu_quota_is_read_from_cgroup_v1_or_v2(tmp_path, files, quota):
    assert cpu_quota(cgroup(tmp_path, files)) == quota


def test_usable_cores_are_the_affinity_at_most_the_quota_rounded_up(tmp_path):
    affinity = len(os.sched_getaffinity(0))
    assert usable_cores(cgroup(tmp_path / "none", {})) == affinity
    assert usable_cores(cgroup(tmp_path / "half", {"cpu.max": "50000 100000"})) == 1
    assert usable_cores(cgroup(tmp_path / "wide", {"cpu.max": f"{100000 * (affinity + 8)} 100000"})) == affinity
    if affinity >= 2:
        assert usable_cores(cgroup(tmp_path / "one_and_a_half", {"cpu.max": "150000 100000"})) == 2


def test_pytorch_threads_on_the_cpu_are_capped_at_the_usable_cores(monkeypatch):
    import torch

    from dedup_assets.vision import cores, embedders

    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(cores, "usable_cores", lambda: 1)
    try:
        torch.set_num_threads(2)
        assert embedders.resolve_device("cpu") == "cpu"
        assert torch.get_num_threads() == 1
        torch.set_num_threads(2)
        monkeypatch.setenv("OMP_NUM_THREADS", "2")  # the operator's choice stands
        embedders.resolve_device("cpu")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
