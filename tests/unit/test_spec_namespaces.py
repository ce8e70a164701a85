"""linux.namespaces, id mappings, hostname/domainname and sysctl: the pure checks (runc's validator's rules)."""

from __future__ import annotations

import pytest

from runproc.errors import RunprocError
from runproc.spec.namespaces import NamespacePlan, apply_namespaces
from runproc.spec.plan import ContainerPlan


def plan_of(config: dict) -> NamespacePlan:
    plan = ContainerPlan()
    apply_namespaces(config, plan)
    assert plan.namespaces is not None
    return plan.namespaces


def error_of(config: dict) -> str:
    with pytest.raises(RunprocError) as caught:
        apply_namespaces(config, ContainerPlan())
    return caught.value.message


def namespaces(*entries: dict) -> dict:
    return {"linux": {"namespaces": list(entries)}}


def test_no_linux_section_shares_everything() -> None:
    plan = plan_of({})
    assert plan.namespaces == [] and not plan.private("pid") and plan.sysctl == {}


def test_entered_in_runc_order_user_first() -> None:
    config = namespaces({"type": "mount"}, {"type": "network", "path": "/run/netns/x"}, {"type": "user"},
                        {"type": "pid"})
    config["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 1000, "size": 1}]
    plan = plan_of(config)
    assert [(n.type, n.path) for n in plan.namespaces] == [
        ("user", ""), ("network", "/run/netns/x"), ("pid", ""), ("mount", "")]
    assert plan.new("pid") and plan.private("network") and not plan.new("network")


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([{"type": "bogus"}], "linux.namespaces[0]: unknown namespace type 'bogus'"),
        ([{"type": "pid"}, {"type": "pid"}], "linux.namespaces[1]: duplicate namespace type 'pid'"),
        ([{"type": "network", "path": "netns/x"}], "linux.namespaces[0] (type network): path 'netns/x' is not absolute"),
        ([{"type": "ipc", "path": 3}], "linux.namespaces[0].path must be a string"),
        (["pid"], "linux.namespaces[0] must be an object"),
    ],
)
def test_bad_namespace_entries(entries: list, message: str) -> None:
    assert error_of({"linux": {"namespaces": entries}}) == f"config.json: {message}"


def test_mappings_need_a_user_namespace() -> None:
    config = {"linux": {"uidMappings": [{"containerID": 0, "hostID": 1000, "size": 1}]}}
    assert "no user namespace" in error_of(config)


def test_new_user_namespace_needs_mappings() -> None:
    assert "no namespace path to join nor mappings" in error_of(namespaces({"type": "user"}))


def test_mappings_are_read() -> None:
    config = namespaces({"type": "user"})
    config["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    config["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    plan = plan_of(config)
    assert [m.line() for m in plan.uid_mappings] == ["0 100000 65536\n"]


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        ({"containerID": 0, "hostID": 1000, "size": 0}, "linux.uidMappings[0].size must not be 0"),
        ({"containerID": -1, "hostID": 1000, "size": 1}, "linux.uidMappings[0].containerID must be an integer"),
        ({"containerID": 0, "hostID": "1000", "size": 1}, "linux.uidMappings[0].hostID must be an integer"),
        ({"containerID": 0, "hostID": 1000}, "linux.uidMappings[0].size must be an integer"),
    ],
)
def test_malformed_mappings(mapping: dict, message: str) -> None:
    config = namespaces({"type": "user"})
    config["linux"]["uidMappings"] = [mapping]
    config["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 1000, "size": 1}]
    assert message in error_of(config)


def test_hostname_needs_a_uts_namespace() -> None:
    assert error_of({"hostname": "box"}) == "config.json: unable to set hostname without a private UTS namespace"
    assert "domainname" in error_of({"domainname": "example"})
    plan = plan_of({"hostname": "box", "domainname": "example", **namespaces({"type": "uts"})})
    assert (plan.hostname, plan.domainname) == ("box", "example")
    assert plan_of({"hostname": ""}).hostname == ""  # an empty one is no request


@pytest.mark.parametrize(
    ("key", "kind"),
    [("net.ipv4.ip_forward", "network"), ("kernel.shmmax", "ipc"), ("fs.mqueue.msg_max", "ipc"),
     ("kernel.domainname", "uts")],
)
def test_namespaced_sysctls(key: str, kind: str) -> None:
    assert f"sysctl {key!r} is not allowed in the host's {kind} namespace" in error_of(
        {"linux": {"sysctl": {key: "1"}}})
    config = namespaces({"type": kind})
    config["linux"]["sysctl"] = {key: "1"}
    assert plan_of(config).sysctl == {key: "1"}


@pytest.mark.parametrize("key", ["kernel.panic", "vm.swappiness", "fs.file-max"])
def test_sysctls_outside_any_namespace_are_refused(key: str) -> None:
    config = namespaces({"type": "ipc"}, {"type": "network"}, {"type": "uts"})
    config["linux"]["sysctl"] = {key: "1"}
    assert error_of(config) == f"config.json: sysctl {key!r} is not in a separate kernel namespace"


@pytest.mark.parametrize("key", ["net/../../kernel/panic", "", "/net.ipv4.x", "net.ipv4.x\0"])
def test_sysctl_names_cannot_leave_proc_sys(key: str) -> None:
    config = namespaces({"type": "network"})
    config["linux"]["sysctl"] = {key: "1"}
    assert "invalid sysctl name" in error_of(config)


def test_time_offsets() -> None:
    config = namespaces({"type": "time"})
    config["linux"]["timeOffsets"] = {"monotonic": {"secs": 86400}, "boottime": {"secs": -5, "nanosecs": 7}}
    assert plan_of(config).time_offsets == {"monotonic": (86400, 0), "boottime": (-5, 7)}
    assert "needs a new time namespace" in error_of({"linux": {"timeOffsets": {"monotonic": {"secs": 1}}}})
    config["linux"]["timeOffsets"] = {"realtime": {"secs": 1}}
    assert "unknown clock 'realtime'" in error_of(config)
    config["linux"]["timeOffsets"] = {"boottime": {"nanosecs": 10**9}}
    assert "nanosecs must be from 0 to 999999999" in error_of(config)
