"""runc 1.1's systemd cgroup driver: the container's transient unit, through systemd's D-Bus API.

create asks systemd's manager (org.freedesktop.systemd1.Manager on the system bus) to start
`<prefix>-<name>.scope` in its slice with the init's pid in it, and waits for the job as runc
does (JobRemoved, 30 s). The fs driver then makes what systemd did not (v1 controllers it
does not manage), sets what no unit property holds, and joins every hierarchy, as runc's
systemd managers do after startUnit. delete stops the unit and resets it if it failed.

jeepney (pure Python) speaks the wire protocol; it is imported only here, so only
--systemd-cgroup pays for it.
"""

from __future__ import annotations

import os

from jeepney import DBusAddress, MatchRule, message_bus, new_method_call
from jeepney.io.blocking import DBusConnection, open_dbus_connection
from jeepney.wrappers import DBusErrorResponse, unwrap_msg

from runproc.errors import RunprocError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from runproc.spec.resources import Resources

SYSTEM_BUS = "unix:path=/run/dbus/system_bus_socket"  # runc's: the system bus (rootless would use the user's)
MANAGER = DBusAddress("/org/freedesktop/systemd1", bus_name="org.freedesktop.systemd1",
                      interface="org.freedesktop.systemd1.Manager")
JOB_TIMEOUT = 30.0  # runc's wait for a unit's start or stop job
UINT64_MAX = 2**64 - 1  # systemd's "infinity"
UNIT_EXISTS = "org.freedesktop.systemd1.UnitExists"
NO_SUCH_UNIT = "org.freedesktop.systemd1.NoSuchUnit"

Property = tuple[str, tuple[str, object]]  # (name, (D-Bus signature, value)): systemd's a(sv)


class UnitExistsError(RunprocError):
    """The scope is there and active: someone else's, which create must not stop on its way out."""


def connect() -> DBusConnection:
    if os.geteuid() != 0:
        raise RunprocError("systemd cgroup driver: rootless use (systemd's user bus) is not supported by runproc")
    try:
        return open_dbus_connection(SYSTEM_BUS)
    except OSError as err:
        raise RunprocError(f"systemd cgroup driver: cannot connect to the system bus ({SYSTEM_BUS}): {err}") from None


def _call(conn: DBusConnection, method: str, signature: str | None = None, body: tuple = ()) -> tuple:
    """A Manager method; raises DBusErrorResponse with systemd's error name."""
    return unwrap_msg(conn.send_and_get_reply(new_method_call(MANAGER, method, signature, body), timeout=JOB_TIMEOUT))


def _run_job(conn: DBusConnection, method: str, signature: str, body: tuple) -> str:
    """Call a Manager method that queues a job, then wait for its JobRemoved: the job's result."""
    rule = MatchRule(type="signal", interface=MANAGER.interface, member="JobRemoved", path=MANAGER.object_path)
    # Listen before the call: the job may end before its reply is read.
    _call_bus(conn, "AddMatch", "s", (rule.serialise(),))
    with conn.filter(rule, bufsize=64) as queue:
        (job,) = _call(conn, method, signature, body)
        while True:
            try:
                signal = conn.recv_until_filtered(queue, timeout=JOB_TIMEOUT)
            except TimeoutError:
                return "timeout"
            _, job_path, _, result = signal.body
            if job_path == job:
                return result


def _call_bus(conn: DBusConnection, method: str, signature: str, body: tuple) -> None:
    unwrap_msg(conn.send_and_get_reply(new_method_call(message_bus, method, signature, body), timeout=JOB_TIMEOUT))


def _reset_failed(conn: DBusConnection, unit: str) -> None:
    try:
        _call(conn, "ResetFailedUnit", "s", (unit,))
    except DBusErrorResponse:
        pass  # not loaded, or not failed: nothing to reset


def start_unit(unit: str, slice_name: str, pid: int, resources: Resources, version: int) -> None:
    """Start the transient unit with `pid` in it (runc's startUnit). A scope that exists already is
    reset (a failed leftover) and tried once more, then its UnitExists error stands, as in runc 1.1;
    a slice that exists is fine (kubelet's pod slices)."""
    properties: list[Property] = [("Description", ("s", f"libcontainer container {unit}"))]
    if unit.endswith(".slice"):
        properties.append(("Wants", ("s", slice_name)))
    else:
        properties += [("Slice", ("s", slice_name)), ("Delegate", ("b", True)), ("PIDs", ("au", [pid]))]
    properties += [("MemoryAccounting", ("b", True)), ("CPUAccounting", ("b", True)),
                   ("IOAccounting" if version == 2 else "BlockIOAccounting", ("b", True)),
                   ("TasksAccounting", ("b", True)), ("DefaultDependencies", ("b", False))]
    properties += resource_properties(resources, version)
    with connect() as conn:
        _call(conn, "Subscribe")  # job signals for older systemd versions too; ends with the connection
        for retry in (True, False):
            try:
                result = _run_job(conn, "StartTransientUnit", "ssa(sv)a(sa(sv))",
                                  (unit, "replace", properties, []))
            except DBusErrorResponse as err:
                if err.name != UNIT_EXISTS:
                    raise RunprocError(f"systemd: start {unit}: {err.name}: {' '.join(map(str, err.data))}") from None
                if unit.endswith(".slice"):
                    return
                if retry:
                    _reset_failed(conn, unit)
                    continue
                raise UnitExistsError(f"systemd: unit {unit} already exists") from None
            if result == "done":
                return
            _reset_failed(conn, unit)
            if result == "timeout":
                raise RunprocError(f"Timeout waiting for systemd to create {unit}")
            raise RunprocError(f"error creating systemd unit `{unit}`: got `{result}`")


def stop_unit(unit: str) -> None:
    """Stop the unit and wait for it (runc's stopUnit); one already gone is fine. Then reset it, so
    that a failed unit does not stay loaded."""
    with connect() as conn:
        try:
            result = _run_job(conn, "StopUnit", "ss", (unit, "replace"))
        except DBusErrorResponse as err:
            if err.name != NO_SUCH_UNIT:
                raise RunprocError(f"systemd: stop {unit}: {err.name}: {' '.join(map(str, err.data))}") from None
            result = "done"
        _reset_failed(conn, unit)
    if result not in ("done", "skipped"):
        raise RunprocError(f"systemd: stop {unit}: job {result}")


def resource_properties(resources: Resources, version: int) -> list[Property]:
    """The limits runc 1.1 gives systemd as unit properties (genV1/genV2ResourcesProperties); the fs
    driver writes the same values again, and everything else, afterwards."""
    props: list[Property] = []
    if resources.memory:
        props.append(("MemoryMax" if version == 2 else "MemoryLimit", ("t", _unsigned(resources.memory))))
    if version == 2 and resources.memory_reservation > 0:
        props.append(("MemoryLow", ("t", resources.memory_reservation)))
    if version == 2 and resources.memory_swap:
        swap = _v2_swap(resources.memory_swap, resources.memory)
        if swap is not None:
            props.append(("MemorySwapMax", ("t", swap)))
    if resources.cpu_shares:
        if version == 2:  # runc's ConvertCPUSharesToCgroupV2Value
            props.append(("CPUWeight", ("t", 1 + ((resources.cpu_shares - 2) * 9999) // 262142)))
        else:
            props.append(("CPUShares", ("t", resources.cpu_shares)))
    props += _cpu_quota(resources.cpu_quota, resources.cpu_period)
    if version == 1 and resources.blkio_weight:
        props.append(("BlockIOWeight", ("t", resources.blkio_weight)))
    if resources.pids_limit > 0 or resources.pids_limit == -1:
        props.append(("TasksMax", ("t", _unsigned(resources.pids_limit))))
    return props


def _cpu_quota(quota: int, period: int) -> list[Property]:
    """runc's addCpuQuota: a period of its own, and the quota per second rounded up to 10 ms (systemd's
    granularity); a quota of -1 (or only a period) is infinity."""
    props: list[Property] = []
    if period:
        props.append(("CPUQuotaPeriodUSec", ("t", period)))  # systemd 242+ (Debian 11 has 247)
    if quota or period:
        per_sec = UINT64_MAX
        if quota > 0:
            per_sec = quota * 1_000_000 // (period or 100_000)
            if per_sec % 10_000:
                per_sec = (per_sec // 10_000 + 1) * 10_000
        props.append(("CPUQuotaPerSecUSec", ("t", per_sec)))
    return props


def _v2_swap(swap: int, memory: int) -> int | None:
    """runc's ConvertMemorySwapToCgroupV2Value: v1's memory+swap total to v2's swap alone."""
    if swap == -1:
        return UINT64_MAX
    if memory <= 0 or memory == -1:
        return None  # runc: only with a memory limit (the fs driver reports the error)
    return swap - memory if swap >= memory else None


def _unsigned(value: int) -> int:
    return UINT64_MAX if value < 0 else value
