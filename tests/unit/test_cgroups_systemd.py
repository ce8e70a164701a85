"""The systemd driver's unit properties: runc 1.1's genV1/genV2ResourcesProperties (no systemd needed)."""

from __future__ import annotations

import pytest

pytest.importorskip("jeepney")

from runproc.linux.cgroups import expand_slice  # noqa: E402
from runproc.linux.cgroups.systemd import UINT64_MAX, resource_properties  # noqa: E402
from runproc.spec.resources import Resources  # noqa: E402


def resources(**values: int) -> Resources:
    r = Resources()
    for name, value in values.items():
        setattr(r, name, value)
    return r


def props(version: int, **values: int) -> dict[str, object]:
    return {name: value for name, (_, value) in resource_properties(resources(**values), version)}


def test_nothing_set_gives_no_property() -> None:
    assert props(1) == {} and props(2) == {}


def test_v1_names() -> None:
    got = props(1, memory=64 << 20, cpu_shares=512, blkio_weight=300, pids_limit=50)
    assert got == {"MemoryLimit": 64 << 20, "CPUShares": 512, "BlockIOWeight": 300, "TasksMax": 50}


def test_v2_names_and_conversions() -> None:
    got = props(2, memory=64 << 20, memory_reservation=32 << 20, memory_swap=128 << 20, cpu_shares=1024,
                pids_limit=-1)
    # CPUWeight as runc's ConvertCPUSharesToCgroupV2Value; swap is v1's total less memory.
    assert got == {"MemoryMax": 64 << 20, "MemoryLow": 32 << 20, "MemorySwapMax": 64 << 20, "CPUWeight": 39,
                   "TasksMax": UINT64_MAX}


@pytest.mark.parametrize(("quota", "period", "want"), [
    (50_000, 100_000, {"CPUQuotaPeriodUSec": 100_000, "CPUQuotaPerSecUSec": 500_000}),
    (12_345, 0, {"CPUQuotaPerSecUSec": 130_000}),  # rounded up to 10 ms, as runc
    (-1, 0, {"CPUQuotaPerSecUSec": UINT64_MAX}),
    (0, 200_000, {"CPUQuotaPeriodUSec": 200_000, "CPUQuotaPerSecUSec": UINT64_MAX}),
])  # fmt: skip
def test_cpu_quota_as_runc(quota: int, period: int, want: dict[str, int]) -> None:
    assert props(1, cpu_quota=quota, cpu_period=period) == want


def test_slice_expansion() -> None:
    assert expand_slice("kubepods-besteffort.slice") == "/kubepods.slice/kubepods-besteffort.slice"
    assert expand_slice("-.slice") == ""
