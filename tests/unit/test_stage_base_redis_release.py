"""Base and release stages, pyinfra style: recorded facts in, exact steps out (Redis and
Sentinel: test_stage_redis_sentinel.py)."""
from __future__ import annotations

import pytest

from deploy import build
from deploy import facts as F
from deploy.errors import DeployFailed
from deploy.files import ManagedFile
from deploy.stages import base as B
from deploy.stages import release as RL
from deploy.steps import STAGED

from kit import FakeCtx, argvs, env, inventory, recorded, whats

INV = inventory()
CTX = FakeCtx(INV)
PACKAGES = F.parse_dpkg_query(recorded("trixie/node1-dpkg.txt"))


def synced(files: list[ManagedFile]) -> dict:
    return {f.path: F.FileState(f.owner, f.group, f.mode, f.sha256) for f in files}


# Base --------------------------------------------------------------------------------------

ADDRESSES = {h.address: h.address for h in INV.hosts}


def base_facts(name, hosts_text=None, packages=None, users=None, proxy=None):
    h = INV.host(name)
    text = hosts_text if hosts_text is not None else B.hosts_file("127.0.0.1\tlocalhost\n", INV, ADDRESSES.get)
    return {"files": proxy or {}, "packages": packages if packages is not None else
            {p: "1" for p in B.packages_for(INV, h)}, "users": users if users is not None else set(B.users_for(h)),
            "hosts": text}


def test_recorded_packages_parse():
    assert PACKAGES["rabbitmq-server"].startswith("4.0.5") and "nosuchpkg" not in PACKAGES


def test_base_in_sync_is_empty():
    assert whats(B.Base().plan(CTX, INV.host("node2"), base_facts("node2"), env(prepared=ADDRESSES))) == []


def test_base_on_a_fresh_host():
    f = base_facts("node2", hosts_text="127.0.0.1\tlocalhost\n127.0.1.1\tnode2\n", packages={}, users=set())
    plan = B.Base().plan(CTX, INV.host("node2"), f, env(prepared=ADDRESSES))
    assert whats(plan) == ["file /etc/hosts", "packages " + " ".join(B.packages_for(INV, INV.host("node2"))),
                           "system user celery"]
    hosts = plan.steps[0].file.content.decode()
    assert "127.0.1.1" not in hosts and "192.0.2.13\tnode3" in hosts
    apt = [s for s in plan.steps if s.what.startswith("packages")][0]
    assert apt.slow and argvs(apt)[0][:2] == ("sh", "-c")


def test_apt_proxy_file_follows_the_inventory():
    inv = inventory(apt={"proxy": "http://192.0.2.1:3128"})
    plan = B.Base().plan(FakeCtx(inv), inv.host("node2"), base_facts("node2"), env(prepared=ADDRESSES))
    (proxy,) = plan.steps
    assert proxy.file.content == b'Acquire::http::Proxy "http://192.0.2.1:3128";\n'
    gone = B.Base().plan(CTX, INV.host("node2"), base_facts("node2", proxy={B.PROXY_CONF: None}),
                         env(prepared=ADDRESSES))
    assert whats(gone) == [f"remove {B.PROXY_CONF}"]


def test_dns_addresses_are_resolved_once_and_failures_named():
    with pytest.raises(DeployFailed, match="cannot resolve inventory address 'no-such-host.invalid'"):
        B.ip_of("no-such-host.invalid")
    assert B.ip_of("::1") == "::1"


# Release -----------------------------------------------------------------------------------

TARGET = build.parse_target(recorded("trixie/node2-target.txt"))
REL = build.Release("abc123def456", RL.CURRENT, "tasks-1.0-py3-none-any.whl")   # a stand-in path


def test_recorded_target():
    assert TARGET == build.Target("3.13.5", "x86_64", "2.41") and TARGET.abi == "cp313"


def test_a_missing_release_is_uploaded_and_installed_offline():
    f = {"target": TARGET, "releases": {"current": "old", "complete": ["old"]}}
    plan = RL.Release().plan(CTX, INV.host("node2"), f, env(prepared={TARGET: REL}))
    assert whats(plan) == ["release abc123def456 (Python 3.13.5)"]
    change = plan.steps[0]
    assert change.upload == REL.tarball and change.slow
    (cmd,) = argvs(change)
    assert cmd[-3:] == ("/opt/celery-kit/releases/abc123def456", STAGED, "tasks-1.0-py3-none-any.whl")
    assert "--no-index" in cmd[2] and "celery_kit_config.py" in cmd[2]
    assert plan.output == "abc123def456"


def test_a_present_release_is_not_uploaded_and_old_ones_are_pruned():
    have = ["abc123def456", "r5", "r4", "r3", "r2", "r1", "r0"]
    f = {"target": TARGET, "releases": {"current": "r5", "complete": have}}
    plan = RL.Release().plan(CTX, INV.host("node2"), f, env(prepared={TARGET: REL}))
    assert whats(plan) == ["remove old releases r1, r0"]


def test_prepare_checks_the_lock_pins_what_the_hosts_run(tmp_path):
    project = tmp_path / "p"
    project.mkdir()
    (project / "pyproject.toml").write_text("[project]\nname='x'\nversion='1'\n")
    (project / "requirements.lock").write_text("celery==5.7.0\n")
    inv = inventory(project={"path": project, "lock": project / "requirements.lock"})
    with pytest.raises(DeployFailed, match="does not pin flower"):
        RL.Release().prepare(FakeCtx(inv), {"node2": {"target": TARGET}})


def test_a_host_without_python_is_named():
    with pytest.raises(DeployFailed, match="node2: python3 on the host did not report its version"):
        RL.Release().prepare(CTX, {"node2": {"target": None}})


def test_previous_release_for_rollback():
    plan = RL.Previous().plan(CTX, INV.host("node2"), {"releases": {"current": "b", "complete": ["b", "a"]}}, env())
    assert plan.output == "a" and plan.notes == ["b -> a"]
    with pytest.raises(DeployFailed, match="no previous release"):
        RL.Previous().plan(CTX, INV.host("node2"), {"releases": {"current": "b", "complete": ["b"]}}, env())


def test_parse_releases_and_prune():
    assert RL.parse_releases(recorded("trixie/node2-releases.txt"))["current"]
    assert RL.parse_releases("\n") == {"current": None, "complete": []}
    assert argvs(RL.prune_plan(["e", "d", "c", "b", "a"], 2, {"e", "c"})[0]) == [
        ("rm", "-rf", "/opt/celery-kit/releases/b", "/opt/celery-kit/releases/a")]
