"""Redis and Sentinel stages, pyinfra style: facts in, exact steps out. The risky decisions are
here: which Redis starts as master, that a deploy after a failover changes nothing (never
re-uploads a role), and that no secret reaches a command line.

Recorded states come from tests/loopback (real redis-server/redis-sentinel 7.0.15 running the
files these stages render), moved to the sentinel fixture's addresses."""
from __future__ import annotations

import pytest

from deploy import facts as F
from deploy import redis_model as RM
from deploy.errors import DeployFailed
from deploy.files import ManagedFile
from deploy.stage import StageEnv
from deploy.stages import redis as RD
from deploy.stages import sentinel as SN
from deploy.steps import Await, Replan

from kit import FakeCtx, all_argv_text, argvs, inventory, step, whats
from test_redis_model import DEBIAN12, DEBIAN13, state, states

SINGLE = inventory()
REPL = inventory("inventory.sentinel.yaml")
ACTIVE = {"ActiveState": "active", "UnitFileState": "enabled"}
DIR = ("root", "redis", 0o750)
KIT_DIR_STEP = "directory /etc/celery-kit/redis"


def synced(files: list[ManagedFile]) -> dict:
    return {f.path: F.FileState(f.owner, f.group, f.mode, f.sha256) for f in files}


def ctx(inv):
    return FakeCtx(inv)


def once_head(inv=REPL) -> str:
    return RM.ONCE_MARK + "; Redis owns this file from now on."


# Redis facts as a host in sync reports them ------------------------------------------------

def redis_facts(inv, name, *, version=DEBIAN12, running=True, st=None, head=None, drop=(), extra=None):
    c, h = ctx(inv), inv.host(name)
    files = RD.wanted_files(c, h, version)
    if not inv.sentinel_hosts():
        files.append(RD.main_file(None, once=False))
    synced_files = {p: s for p, s in synced(files).items() if p not in drop}
    if inv.sentinel_hosts() and head is None:
        head = once_head()
    return {"files": {**synced_files, **(extra or {})},
            "units": {RD.UNIT: ACTIVE} if running else {RD.UNIT: {"ActiveState": "inactive",
                                                                 "UnitFileState": "enabled"}},
            "packages": {"redis-server": version} if version else {}, "dir": DIR, "head": head,
            "state": st if st is not None else {"redis": {"role": "master", "loading": "0"}}}


def plan_redis(inv, name, facts, all_facts=None):
    all_facts = all_facts or {name: facts}
    stage = RD.Redis()
    prepared = stage.prepare(ctx(inv), all_facts)
    return stage.plan(ctx(inv), inv.host(name), facts, StageEnv({}, prepared, all_facts))


def test_single_redis_in_sync_is_empty():
    assert whats(plan_redis(SINGLE, "node1", redis_facts(SINGLE, "node1"))) == []


def test_single_redis_on_a_fresh_host():
    f = redis_facts(SINGLE, "node1", running=False, st={"redis": None, "redis_error": "Could not connect"},
                    drop=[RD.CONF, RM.REDIS_ACL, RM.ADMIN_PASSWORD, RM.dropin(RD.UNIT), RM.REDIS_MAIN])
    f["dir"] = None
    plan = plan_redis(SINGLE, "node1", f)
    assert whats(plan) == [KIT_DIR_STEP, f"file {RD.CONF}", f"file {RM.REDIS_ACL}", f"file {RM.ADMIN_PASSWORD}",
                           f"file {RM.dropin(RD.UNIT)}", "systemd daemon-reload", f"file {RM.REDIS_MAIN}",
                           "start redis-server.service", "await: redis on node1 answers the kit's login"]
    assert argvs(plan.steps[0]) == [("install", "-d", "-o", "root", "-g", "redis", "-m", "0750", RM.KIT_DIR),
                                    ("chown", "root:redis", RM.KIT_DIR), ("chmod", "0750", RM.KIT_DIR)]
    files = {s.file.path: s.file for s in plan.changes if s.file}
    assert [(f.owner, f.group, f.mode, f.secret) for f in (files[RD.CONF], files[RM.REDIS_ACL])] == [
        ("root", "redis", 0o640, False), ("root", "redis", 0o640, True)]
    assert (files[RM.ADMIN_PASSWORD].owner, files[RM.ADMIN_PASSWORD].mode) == ("root", 0o600)
    assert (files[RM.REDIS_MAIN].owner, files[RM.REDIS_MAIN].group) == ("redis", "redis")   # Debian's
    conf = files[RD.CONF].content.decode()
    assert f"aclfile {RM.REDIS_ACL}" in conf and "bind 192.0.2.11 127.0.0.1 -::1" in conf
    assert "requirepass" not in conf and "rename-command" not in conf and "replicaof" not in conf
    assert 'save ""\nsave 900 1 300 10 60 10000\n' in conf
    assert "enable-debug-command no" in conf and not [l for l in conf.splitlines() if l.startswith("include")]
    dropin = files[RM.dropin(RD.UNIT)].content.decode()
    assert ("ExecStart=\nExecStart=/usr/bin/redis-server /etc/redis/redis.conf --include "
            "/etc/celery-kit/redis/redis.conf --supervised systemd --daemonize no\n") in dropin
    main = files[RM.REDIS_MAIN].content.decode()
    assert main.startswith(RM.MANAGED_MARK) and not [l for l in main.splitlines() if l and l[0] != "#"]
    await_ = plan.steps[-1]
    assert await_.until({"redis": {"loading": "0"}}) and not await_.until({"redis": None})
    assert not await_.until({"redis": {"loading": "1"}})


def test_an_existing_kit_redis_moves_to_acl_logins():
    """The previous layout: the whole config in /etc/redis/redis.conf, requirepass in an include."""
    f = redis_facts(SINGLE, "node1", drop=[RD.CONF, RM.REDIS_ACL, RM.ADMIN_PASSWORD, RM.dropin(RD.UNIT),
                                            RM.REDIS_MAIN],
                    extra={RM.REDIS_MAIN: F.FileState("redis", "redis", 0o640, "0" * 64),
                           RM.LEGACY_AUTH: F.FileState("redis", "redis", 0o640, "1" * 64)})
    assert whats(plan_redis(SINGLE, "node1", f)) == [
        f"file {RD.CONF}", f"file {RM.REDIS_ACL}", f"file {RM.ADMIN_PASSWORD}", f"file {RM.dropin(RD.UNIT)}",
        "systemd daemon-reload", f"file {RM.REDIS_MAIN}",
        f"remove {RM.LEGACY_AUTH} (the password is in the ACL file now)", "restart redis-server.service",
        "await: redis on node1 answers the kit's login"]


def test_what_restarts_redis_and_what_does_not():
    # A new Redis version changes the ACL file (CLIENT SETINFO exists from 7.2): restart.
    f = redis_facts(SINGLE, "node1")
    plan = plan_redis(SINGLE, "node1", dict(f, packages={"redis-server": DEBIAN13}))
    assert whats(plan) == [f"file {RM.REDIS_ACL}", "restart redis-server.service",
                           "await: redis on node1 answers the kit's login"]
    # Only the kit's own password file, or only owner/mode: no restart.
    f = redis_facts(SINGLE, "node1", drop=[RM.ADMIN_PASSWORD])
    assert whats(plan_redis(SINGLE, "node1", f)) == [f"file {RM.ADMIN_PASSWORD}"]
    f = redis_facts(SINGLE, "node1", extra={RD.CONF: F.FileState("redis", "redis", 0o640, "x")})
    f["files"][RD.CONF] = F.FileState("redis", "redis", 0o640, RD.wanted_files(ctx(SINGLE), SINGLE.host("node1"),
                                                                               DEBIAN12)[0].sha256)
    plan = plan_redis(SINGLE, "node1", f)
    assert whats(plan) == [f"attributes of {RD.CONF}"]
    # An unknown version (package facts missing): no rule a Redis might not know.
    assert "client|setinfo" not in RM.redis_acl(lambda n: "x" * 20, None)


def test_allow_dangerous_commands_opens_the_admin_login_only():
    inv = inventory(redis={"allow_dangerous_commands": True})
    acl = RD.wanted_files(ctx(inv), inv.host("node1"), DEBIAN12)[1].content.decode()
    admin = [l for l in acl.splitlines() if l.startswith("user celery-kit ")][0]
    assert admin.endswith("~* &* +@all")
    conf = RD.wanted_files(ctx(inv), inv.host("node1"), DEBIAN12)[0].content.decode()
    assert "every command (redis.allow_dangerous_commands)" in conf


def test_a_replica_file_left_from_sentinel_days_is_removed():
    f = redis_facts(SINGLE, "node1", extra={RM.REDIS_REPLICATION: F.FileState("root", "redis", 0o640, "x")})
    assert whats(plan_redis(SINGLE, "node1", f)) == [f"remove {RM.REDIS_REPLICATION} (no replicas)"]


def test_no_secret_on_any_command_line():
    c = ctx(REPL)
    f = redis_facts(REPL, "node2", running=False, head="", drop=[RD.CONF, RM.REDIS_ACL, RM.ADMIN_PASSWORD,
                                                                   RM.REDIS_REPLICATION])
    text = all_argv_text(plan_redis(REPL, "node2", f))
    text += all_argv_text(SN.Sentinel().plan(c, REPL.host("node3"), sentinel_facts("node3", quorum="1"),
                                             sentinel_env({"node3": sentinel_facts("node3")})))
    for name in RM.SECRETS.values():
        assert c.secret(name).reveal() not in text
    assert RM.ADMIN_PASSWORD in text              # the scripts read it on the host


# Redis with Sentinel: the role is written once ----------------------------------------------

def fresh(inv, name):
    f = redis_facts(inv, name, running=False, head="", st={"redis": None},
                    drop=[RD.CONF, RM.REDIS_ACL, RM.ADMIN_PASSWORD, RM.REDIS_REPLICATION, RM.dropin(RD.UNIT)])
    f["dir"] = None
    return f


def test_a_new_replicated_redis_first_host_master_the_other_its_replica():
    both = {"node1": fresh(REPL, "node1"), "node2": fresh(REPL, "node2")}
    p1, p2 = plan_redis(REPL, "node1", both["node1"], both), plan_redis(REPL, "node2", both["node2"], both)
    assert whats(p1) == [KIT_DIR_STEP, f"file {RD.CONF}", f"file {RM.REDIS_REPLICATION}", f"file {RM.REDIS_ACL}",
                         f"file {RM.ADMIN_PASSWORD}", f"file {RM.dropin(RD.UNIT)}", "systemd daemon-reload",
                         f"file {RM.REDIS_MAIN} (written once: the master)", "start redis-server.service",
                         "await: redis on node1 answers the kit's login"]
    assert f"file {RM.REDIS_MAIN} (written once: replica of 192.0.2.11:6379)" in whats(p2)
    assert p2.notes == ["starts as a replica of 192.0.2.11:6379"]
    main1 = step(p1, f"file {RM.REDIS_MAIN} (written once: the master)").file
    main2 = step(p2, f"file {RM.REDIS_MAIN} (written once: replica of 192.0.2.11:6379)").file
    assert main1.content.decode().startswith(RM.ONCE_MARK) and "replicaof" not in main1.content.decode()
    assert "\nreplicaof 192.0.2.11 6379\n" in main2.content.decode()
    assert (main2.owner, main2.group, main2.mode) == ("redis", "redis", 0o640)    # Redis rewrites it
    repl = step(p1, f"file {RM.REDIS_REPLICATION}").file
    assert repl.secret and repl.content.decode().startswith("masteruser celery-kit-replica\nmasterauth ")
    conf = step(p1, f"file {RD.CONF}").file.content.decode()
    assert f"include {RM.REDIS_REPLICATION}" in conf and "replica-announce-ip 192.0.2.11" in conf


def test_a_deploy_after_a_failover_changes_nothing_and_demotes_nobody():
    """node1 was the master; Sentinel promoted node2 and made node1 its replica (recorded)."""
    after = states("after")
    facts = {n: redis_facts(REPL, n, st=after[n]) for n in ("node1", "node2")}
    for name in facts:
        assert plan_redis(REPL, name, facts[name], facts).steps == []
    # The same holds while node1 is still down: it is started again, nothing is rewritten.
    down = dict(facts["node1"], units={RD.UNIT: {"ActiveState": "failed", "UnitFileState": "enabled"}},
                state={"redis": None, "redis_error": "Could not connect to Redis at 127.0.0.1:6379"})
    assert whats(plan_redis(REPL, "node1", down, dict(facts, node1=down))) == [
        "start redis-server.service", "await: redis on node1 answers the kit's login"]


def test_a_reinstalled_redis_host_follows_the_current_master_not_the_inventory():
    after = states("after")
    node1 = fresh(REPL, "node1")
    node1["state"] = {"redis": None, "sentinel": after["node1"]["sentinel"]}
    facts = {"node1": node1, "node2": redis_facts(REPL, "node2", st=after["node2"])}
    plan = plan_redis(REPL, "node1", node1, facts)
    assert f"file {RM.REDIS_MAIN} (written once: replica of 192.0.2.12:6379)" in whats(plan)


def test_turning_a_single_redis_into_a_replicated_one_keeps_its_data_on_the_master():
    """node2 is listed first in this variant, but node1 already runs (and holds the results)."""
    node1 = redis_facts(REPL, "node1", head=RM.MANAGED_MARK + ": local edits are overwritten.",
                        st={"redis": {"role": "master", "connected_slaves": "0", "loading": "0"}})
    node2 = fresh(REPL, "node2")
    facts = {"node2": node2, "node1": node1}
    assert f"file {RM.REDIS_MAIN} (written once: the master)" in whats(plan_redis(REPL, "node1", node1, facts))
    assert (f"file {RM.REDIS_MAIN} (written once: replica of 192.0.2.11:6379)"
            in whats(plan_redis(REPL, "node2", node2, facts)))


def test_sentinels_that_disagree_stop_only_a_host_that_needs_the_master():
    tie = states("after")
    tie["node1"] = states("before")["node1"]
    tie["node1"]["sentinel"]["master"]["config-epoch"] = "1"
    settled = redis_facts(REPL, "node2", st=tie["node2"])
    facts = {"node1": redis_facts(REPL, "node1", st=tie["node1"]), "node2": settled}
    plan = plan_redis(REPL, "node2", settled, facts)
    assert plan.steps == [] and "disagree" in plan.notes[0]
    new = fresh(REPL, "node2")
    new["state"] = tie["node2"]
    with pytest.raises(DeployFailed, match="cannot write /etc/redis/redis.conf on node2: it needs the current "
                                           "master, and the Sentinels disagree"):
        plan_redis(REPL, "node2", new, dict(facts, node2=new))


# Sentinel ----------------------------------------------------------------------------------

def sentinel_facts(name, *, running=True, quorum=None, st=None, head=None, drop=(), version=DEBIAN12):
    c = ctx(REPL)
    st = st if st is not None else states("after")[name]
    if quorum is not None:
        st = {**st, "sentinel": {**st["sentinel"], "master": {**st["sentinel"]["master"], "quorum": quorum}}}
    files = {p: s for p, s in synced(SN.wanted_files(c, REPL.host(name), version)).items() if p not in drop}
    return {"files": files, "units": {SN.UNIT: ACTIVE if running else {"ActiveState": "inactive",
                                                                     "UnitFileState": "enabled"}},
            "packages": {"redis-sentinel": version}, "dir": DIR,
            "head": head if head is not None else SN.mark(REPL) + " Sentinel owns this file from now on.",
            "state": st}


def sentinel_env(facts):
    return StageEnv({}, SN.Sentinel().prepare(ctx(REPL), facts), facts)


def plan_sentinel(name, facts, all_facts=None):
    all_facts = all_facts or {name: facts}
    return SN.Sentinel().plan(ctx(REPL), REPL.host(name), facts, sentinel_env(all_facts))


def test_sentinels_in_sync_after_a_failover_are_empty():
    facts = {n: sentinel_facts(n) for n in ("node1", "node2", "node3")}
    for name in facts:
        plan = plan_sentinel(name, facts[name], facts)
        assert plan.steps == [] and plan.notes == []


def test_new_sentinels_monitor_the_master_the_redis_stage_set_up():
    redis_up = {"redis": {"role": "master", "connected_slaves": "1"}, "sentinel": {"master": None}}
    blank = {"sentinel": {"master": None, "error": "Could not connect"}}
    facts = {}
    for name in ("node1", "node2", "node3"):
        f = sentinel_facts(name, running=False, head="", st=redis_up if name == "node1" else blank,
                           drop=[p for p in synced(SN.wanted_files(ctx(REPL), REPL.host(name)))])
        f["dir"] = None
        facts[name] = f
    plan = plan_sentinel("node3", facts["node3"], facts)
    assert whats(plan) == [
        KIT_DIR_STEP, f"file {RM.SENTINEL_CONF}", f"file {RM.SENTINEL_AUTH}", f"file {RM.SENTINEL_ACL}",
        f"file {RM.ADMIN_PASSWORD}", f"file {RM.dropin(SN.UNIT)}", "systemd daemon-reload",
        f"file {RM.SENTINEL_MAIN} (written once: monitor results at 192.0.2.11:6379)",
        "start redis-sentinel.service", "await: sentinel on node3 follows a master",
        "replan: sentinel on node3 started"]
    files = {s.file.path: s.file for s in plan.changes if s.file}
    main = files[RM.SENTINEL_MAIN].content.decode()
    assert main.startswith(SN.mark(REPL)) and "\nsentinel monitor results 192.0.2.11 6379 2\n" in main
    assert "resolve-hostnames" not in main and (files[RM.SENTINEL_MAIN].owner, files[RM.SENTINEL_MAIN].mode) == (
        "redis", 0o640)
    conf = files[RM.SENTINEL_CONF].content.decode()
    for line in ("bind 192.0.2.13 127.0.0.1", "port 26380", f"aclfile {RM.SENTINEL_ACL}",
                 "sentinel announce-ip 192.0.2.13", "sentinel down-after-milliseconds results 5000",
                 "sentinel failover-timeout results 30000", "sentinel auth-user results celery-kit-sentinel",
                 "sentinel sentinel-user celery-kit-sentinel", f"include {RM.SENTINEL_AUTH}"):
        assert line + "\n" in conf, line
    assert "redis-sentinel-password" not in conf          # the secret is in the auth include only
    auth = files[RM.SENTINEL_AUTH]
    assert auth.secret and auth.content.decode().startswith("sentinel auth-pass results redis-sentinel-password")
    assert "ExecStart=/usr/bin/redis-sentinel /etc/redis/sentinel.conf --include " \
           "/etc/celery-kit/redis/sentinel.conf" in files[RM.dropin(SN.UNIT)].content.decode()
    assert isinstance(plan.steps[-2], Await) and isinstance(plan.steps[-1], Replan)


def test_the_quorum_is_set_on_the_running_sentinel():
    plan = plan_sentinel("node3", sentinel_facts("node3", quorum="1"))
    (change,) = plan.steps
    assert change.what == "sentinel quorum 2 (was 1)"
    (cmd,) = change.commands
    assert cmd.argv[:2] == ("sh", "-c") and cmd.argv[3:] == ("sh", RM.ADMIN_PASSWORD, "26380", "results", "2")
    assert "SENTINEL SET" in cmd.argv[2] and "export REDISCLI_AUTH" in cmd.argv[2]


def test_a_changed_kit_file_restarts_one_sentinel_then_reads_it_again():
    f = sentinel_facts("node2", drop=[RM.SENTINEL_CONF], version=DEBIAN12)
    assert whats(plan_sentinel("node2", f)) == [
        f"file {RM.SENTINEL_CONF}", "restart redis-sentinel.service", "await: sentinel on node2 follows a master",
        "replan: sentinel on node2 started"]
    assert SN.Sentinel.serial and RD.Redis.serial


def test_a_new_master_name_gets_a_new_sentinel_file_and_the_current_master():
    inv = inventory("inventory.sentinel.yaml", redis={"master_name": "other"})
    f = sentinel_facts("node1")
    f["files"] = synced(SN.wanted_files(ctx(inv), inv.host("node1"), DEBIAN12))
    stage = SN.Sentinel()
    env_ = StageEnv({}, stage.prepare(ctx(inv), {"node1": f}), {"node1": f})
    plan = stage.plan(ctx(inv), inv.host("node1"), f, env_)
    assert whats(plan)[0] == f"file {RM.SENTINEL_MAIN} (written once: monitor other at 192.0.2.12:6379)"


def test_leftover_sentinels_are_named_and_disagreement_noted():
    st = states("after")["node1"]
    st = {**st, "sentinel": {**st["sentinel"], "master": {**st["sentinel"]["master"], "num-other-sentinels": "3"}}}
    plan = plan_sentinel("node1", sentinel_facts("node1", st=st))
    assert plan.notes == ["sentinel on node1 still counts 3 other Sentinels, more than the inventory has: "
                          "run SENTINEL RESET (README: removing a Sentinel)"]


def test_host_names_make_sentinel_resolve_names():
    import dataclasses
    hosts = tuple(dataclasses.replace(h, address=f"{h.name}.example.internal") for h in REPL.hosts)
    inv = dataclasses.replace(REPL, hosts=hosts)
    assert SN.hostnames(inv) and not SN.hostnames(REPL)
    main = SN.main_file(inv, ("node1.example.internal", 6379)).content.decode()
    assert "sentinel resolve-hostnames yes\nsentinel announce-hostnames yes\nsentinel monitor results " \
           "node1.example.internal 6379 2\n" in main


def test_no_master_anywhere_is_a_clear_error():
    tie = states("after")
    tie["node3"] = states("before")["node3"]
    tie["node3"]["sentinel"]["master"]["config-epoch"] = "1"
    facts = {n: sentinel_facts(n, st=tie[n]) for n in tie}
    facts["node3"]["head"] = ""
    with pytest.raises(DeployFailed, match="cannot write /etc/redis/sentinel.conf on node3"):
        plan_sentinel("node3", facts["node3"], facts)


def test_state_fact_asks_only_what_the_host_runs():
    node3 = RD.state_fact(REPL, REPL.host("node3"))
    assert node3.argv[3:] == ("redis-state", "", "26380", "results", RM.ADMIN_PASSWORD)
    single = RD.state_fact(SINGLE, SINGLE.host("node1"))
    assert single.argv[3:] == ("redis-state", "6379", "", "celery-kit", RM.ADMIN_PASSWORD)
    assert single.parse('{"redis": {"role": "master"}}', 0) == {"redis": {"role": "master"}}
    assert state("single-master")["redis"]["role"] == "master"
    assert RD.parse_stat("root redis 750\n") == DIR and RD.parse_stat("", 1) is None
    assert RD.first_line_fact("head", "/x").parse("# a\n", 0) == "# a" and \
        RD.first_line_fact("head", "/x").parse("", 1) is None


def test_facts_one_round_trip_each_and_the_hosts():
    keys = [f.key for f in RD.Redis().facts(ctx(REPL), REPL.host("node1"))]
    assert keys == ["files", "units", "packages", "dir", "head", "state"]
    files = RD.Redis().facts(ctx(SINGLE), SINGLE.host("node1"))[0].argv[4:]
    assert RM.LEGACY_AUTH in files and RM.REDIS_REPLICATION in files and RM.REDIS_MAIN in files
    assert [f.key for f in SN.Sentinel().facts(ctx(REPL), REPL.host("node3"))] == keys
    assert [h.name for h in RD.Redis().hosts(REPL)] == ["node1", "node2"]
    assert [h.name for h in SN.Sentinel().hosts(REPL)] == ["node1", "node2", "node3"]
    assert SN.Sentinel().hosts(SINGLE) == []
