"""The kit's Redis and Sentinel, for real, on loopback (see conftest.py and harness.py)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from deploy import redis_model as RM
from deploy import status
from deploy.celery_env import celery_env
from deploy.stages import redis as RS
from deploy.stages import sentinel as SS

from harness import wait_for

CLIENT = Path(__file__).resolve().parent / "celery_client.py"
SINGLE = {"node1": ["rabbitmq", "redis"], "node2": ["rabbitmq", "worker"]}
REPLICATED = {"node1": ["rabbitmq", "redis"], "node2": ["rabbitmq", "redis"], "node3": ["rabbitmq", "worker"]}

# Refused to Celery's login: each must answer NOPERM (DEBUG and MODULE: disabled outright).
REFUSED = [["FLUSHALL"], ["FLUSHDB"], ["CONFIG", "GET", "maxmemory"], ["CONFIG", "SET", "dir", "/tmp"],
           ["KEYS", "*"], ["SCAN", "0"], ["EVAL", "return 1", "0"], ["FUNCTION", "LIST"],
           ["SCRIPT", "FLUSH"], ["ACL", "LIST"], ["ACL", "SETUSER", "x", "on"], ["REPLICAOF", "NO", "ONE"],
           ["SLAVEOF", "NO", "ONE"], ["MIGRATE", "127.0.0.1", "1", "celery-task-meta-x", "0", "1"],
           ["DEBUG", "SLEEP", "0"], ["MODULE", "LIST"], ["SHUTDOWN"], ["MONITOR"], ["CLIENT", "LIST"],
           ["CLIENT", "KILL", "ID", "1"], ["INFO"], ["BGSAVE"], ["SET", "other-key", "v"],
           ["GET", "other-key"], ["PUBLISH", "other-channel", "x"], ["SUBSCRIBE", "other-channel"],
           ["PSUBSCRIBE", "*"]]
ALLOWED = [["SET", "celery-task-meta-probe", "v", "EX", "60"], ["GET", "celery-task-meta-probe"],
           ["PUBLISH", "celery-task-meta-probe", "v"], ["SCRIPT", "LOAD", "return 1"], ["PING"]]
SENTINEL_REFUSED = [["SENTINEL", "SET", "results", "quorum", "1"], ["SENTINEL", "REMOVE", "results"],
                    ["SENTINEL", "FAILOVER", "results"], ["SENTINEL", "RESET", "*"],
                    ["SENTINEL", "MONITOR", "evil", "192.0.2.1", "6379", "1"],
                    ["SENTINEL", "CONFIG", "SET", "announce-ip", "192.0.2.1"], ["ACL", "LIST"],
                    ["SENTINEL", "DEBUG"], ["SHUTDOWN"]]


def refused(answer: str) -> bool:
    return answer.startswith("NOPERM") or answer.startswith(("ERR DEBUG command not allowed",
                                                             "ERR MODULE command not allowed"))


def password(c, user: str) -> str:
    return c.ctx.secret(RM.SECRETS[user]).reveal()


def run_client(c, *args: str, timeout: float = 180) -> dict:
    env = celery_env(c.inv, "unused-broker-password", password(c, RM.CELERY_USER))
    env.pop("CELERY_BROKER_URL")            # the client's broker is in memory
    proc = subprocess.run([sys.executable, str(CLIENT), *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **env})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def acl_log(c, name: str, sentinel: bool = False) -> str:
    return c.check(name, "ACL", "LOG", sentinel=sentinel)


def no_plans(c, *stages) -> dict:
    return {f"{s.name}/{n}": steps for s in stages for n, steps in c.plans(s).items() if steps}


def redis_problems(c) -> list[str]:
    facts = {h.name: {"redis": c.state(h.name)} for h in c.inv.hosts}
    return [p for p in status.evaluate(c.inv, facts).problems if p.startswith(("redis", "sentinel"))]


def test_single_redis_least_privilege_celery_works_and_the_aof_keeps_chords(cluster_factory, record):
    c = cluster_factory(SINGLE)
    said = c.deploy(RS.Redis(), RM.REDIS_UNIT)
    assert said["node1"][-1] == "start redis-server.service"
    assert no_plans(c, RS.Redis()) == {}, "a second deploy must change nothing"

    result = run_client(c, "roundtrip")
    assert result == {"pubsub_get": 5, "reread": ["SUCCESS", 5], "chord": 20, "group": [2, 3, 4, 5],
                      "failure": ["FAILURE", "expected failure"], "group_restore": [2, 4],
                      "forgotten": "PENDING"}
    assert acl_log(c, "node1") == "", "Celery sent a command its login may not run"

    celery = lambda *a: c.cli("node1", RM.CELERY_USER, password(c, RM.CELERY_USER), *a)   # noqa: E731
    for command in REFUSED:
        assert refused(celery(*command)), command
    for command in ALLOWED:
        assert "NOPERM" not in celery(*command) and "ERR" not in celery(*command), command
    assert c.cli("node1", "default", "", "PING").startswith("NOAUTH")
    assert "WRONGPASS" in c.cli("node1", "default", "anything", "PING")
    admin = lambda *a: c.cli("node1", RM.ADMIN_USER, password(c, RM.ADMIN_USER), *a)      # noqa: E731
    assert "redis_version" in admin("INFO") and admin("ROLE").startswith("master")
    for command in (["FLUSHALL"], ["CONFIG", "GET", "dir"], ["KEYS", "*"], ["GET", "celery-task-meta-probe"]):
        assert refused(admin(*command)), command

    # Chord state is written by Lua scripts, which the AOF records inside MULTI/EXEC: it must
    # survive a crash (kill -9) and a restart.
    keys = c.check("node1", "DBSIZE")
    time.sleep(1.5)                                   # appendfsync everysec
    c.hosts["node1"].kill(RM.REDIS_UNIT)
    c.hosts["node1"].start(RM.REDIS_UNIT)
    wait_for(lambda: c.answers("node1", RM.REDIS_UNIT), 30, "redis back")
    assert c.check("node1", "DBSIZE") == keys
    log = c.hosts["node1"].path("/var/log/redis/redis-server.log").read_text()
    assert "CRITICAL" not in log and "NOPERM" not in log
    record("single-master.json", c.recorded_state("node1"))


def test_sentinel_failover_keeps_results_and_a_deploy_afterwards_changes_nothing(cluster_factory, record):
    c = cluster_factory(REPLICATED)
    c.deploy(RS.Redis(), RM.REDIS_UNIT)
    said = c.deploy(SS.Sentinel(), RM.SENTINEL_UNIT)
    assert said["node3"][-1] == "start redis-sentinel.service"

    def settled() -> bool:
        states = {n: c.state(n) for n in ("node1", "node2", "node3")}
        return (states["node2"]["redis"].get("master_link_status") == "up"
                and all(s["sentinel"]["master"] and s["sentinel"]["master"]["num-other-sentinels"] == "2"
                        and s["sentinel"]["master"]["num-slaves"] == "1" for s in states.values()))
    wait_for(settled, 40, "replica linked, Sentinels know each other")
    assert no_plans(c, RS.Redis(), SS.Sentinel()) == {}
    assert redis_problems(c) == []
    for name in ("node1", "node2", "node3"):
        record(f"sentinel-before-{name}.json", c.recorded_state(name))

    assert run_client(c, "roundtrip")["chord"] == 20
    sentinel_celery = lambda *a: c.cli("node3", RM.CELERY_USER, password(c, RM.CELERY_USER), *a,   # noqa: E731
                                       sentinel=True)
    assert sentinel_celery("SENTINEL", "GET-MASTER-ADDR-BY-NAME", "results").split() == ["127.0.0.11", "6379"]
    for command in SENTINEL_REFUSED:
        assert refused(sentinel_celery(*command)), command
    assert acl_log(c, "node3", sentinel=True).count("object") == len(SENTINEL_REFUSED)
    c.check("node3", "ACL", "LOG", "RESET", sentinel=True)

    # Failover: node1's Redis dies while a client keeps storing and reading results.
    load: dict = {}
    client = threading.Thread(target=lambda: load.update(run_client(c, "load", "40")))
    client.start()
    time.sleep(5)
    c.hosts["node1"].kill(RM.REDIS_UNIT)
    killed = time.monotonic()
    wait_for(lambda: (c.state("node3")["sentinel"]["master"] or {}).get("ip") == "127.0.0.12", 40,
             "Sentinel promotes node2")
    promoted = time.monotonic() - killed
    client.join()
    assert load["failed"] == 0 and load["ok"] > 20, load
    assert load["slowest"] < 30, load
    assert "replicaof" not in c.hosts["node2"].path(RM.REDIS_MAIN).read_text()   # CONFIG REWRITE

    # The deploy that follows: the kit's files are unchanged everywhere, node1's Redis is only
    # started again (systemd would have done it); nothing is rewritten, nobody is demoted.
    plans = no_plans(c, RS.Redis(), SS.Sentinel())
    assert {k: [getattr(s, "what", None) for s in v] for k, v in plans.items()} == {
        "redis/node1": ["start redis-server.service", "redis on node1 answers the kit's login"]}
    c.deploy(RS.Redis(), RM.REDIS_UNIT)
    wait_for(lambda: c.state("node1")["redis"].get("master_link_status") == "up", 60,
             "the old master rejoins as a replica of node2")
    assert "replicaof 127.0.0.12 6379" in c.hosts["node1"].path(RM.REDIS_MAIN).read_text()
    assert no_plans(c, RS.Redis(), SS.Sentinel()) == {}
    assert redis_problems(c) == []
    assert run_client(c, "roundtrip")["chord"] == 20
    for name in ("node1", "node2", "node3"):
        assert acl_log(c, name) == "" or name == "node3", name
        assert acl_log(c, name, sentinel=True) == "", name
        record(f"sentinel-after-{name}.json", c.recorded_state(name))

    # A reinstalled node1 (no main file) is written once as a replica of the current master.
    c.hosts["node1"].path(RM.REDIS_MAIN).unlink()
    (steps,) = [s for n, s in c.plans(RS.Redis()).items() if n == "node1"]
    assert [s.what for s in steps][0] == f"file {RM.REDIS_MAIN} (written once: replica of 127.0.0.12:6379)"

    # The quorum is the kit's: changed on a running Sentinel with SENTINEL SET, as the admin.
    assert c.check("node3", "SENTINEL", "SET", "results", "quorum", "1", sentinel=True) == "OK"
    (change,) = c.plans(SS.Sentinel())["node3"]
    assert change.what == "sentinel quorum 2 (was 1)"
    argv = [c.hosts["node3"].map_text(a).replace("-h 127.0.0.1 ", "-h 127.0.0.13 ") for a in change.commands[0].argv]
    subprocess.run(argv, check=True)
    assert c.plans(SS.Sentinel())["node3"] == []
    print(f"failover: Sentinel promoted node2 {promoted:.1f}s after node1's Redis died; client: {load}")
