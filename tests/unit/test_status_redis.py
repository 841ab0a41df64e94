"""`fab status` with Redis Sentinel: recorded states of a real master, replica and Sentinels
(tests/loopback) before and after a failover, and each problem it must name."""
from __future__ import annotations

import copy
import json

from deploy import status

from kit import inventory
from test_redis_model import states

INV = inventory("inventory.sentinel.yaml")
VIEW = {"running": [f"rabbit@node{i}" for i in (1, 2, 3)], "members": [], "partitions": {}, "alarms": [],
        "source": "api"}
PONG = {"node2": ["w1@node2", "w2@node2"], "node3": ["w1@node3", "w2@node3"]}


def facts(when: str = "after") -> dict:
    s = states(when)
    out = {}
    for name in ("node1", "node2", "node3"):
        f = {"cluster": VIEW, "redis": s[name]}
        if name in PONG:
            f["ping"] = {"answered": PONG[name], "restarts": 0}
        out[name] = f
    out["node1"]["queues"] = []
    return out


def evaluate(f: dict) -> status.Health:
    return status.evaluate(INV, f)


def redis_problems(h: status.Health) -> list[str]:
    return [p for p in h.problems if p.startswith(("redis", "sentinel"))]


def test_sentinel_host_facts():
    node3 = [f for f in status.host_facts(INV, INV.host("node3")) if f.key == "redis"]
    assert len(node3) == 1 and node3[0].argv[4:6] == ("", "26380")      # Sentinel only
    node1 = [f for f in status.host_facts(INV, INV.host("node1")) if f.key == "redis"][0]
    assert node1.argv[4:6] == ("6379", "26380")


def test_healthy_before_and_after_a_failover():
    before = evaluate(facts("before"))
    assert redis_problems(before) == []
    assert "redis master results (as the Sentinels see it): node1 (192.0.2.11:6379); quorum 2 of 3 Sentinels" \
        in before.notes
    assert any(n.startswith("redis replica on node2: linked to node1 (192.0.2.11:6379)") for n in before.notes)
    after = evaluate(facts("after"))
    assert redis_problems(after) == []
    assert "redis master results (as the Sentinels see it): node2 (192.0.2.12:6379); quorum 2 of 3 Sentinels" \
        in after.notes
    assert any(n.startswith("redis replica on node1: linked to node2") for n in after.notes)
    assert any(n.startswith("redis on node2: master,") for n in after.notes)


def test_a_dead_master_seen_by_the_sentinels():
    f = facts("before")
    f["node1"]["redis"] = dict(f["node1"]["redis"], redis=None,
                               redis_error="Could not connect to Redis at 127.0.0.1:6379: Connection refused")
    for name in ("node1", "node2", "node3"):
        f[name]["redis"]["sentinel"]["master"]["flags"] = "s_down,o_down,master"
    f["node2"]["redis"]["redis"]["master_link_status"] = "down"
    problems = redis_problems(evaluate(f))
    assert problems == [
        "redis on node1: does not answer (Could not connect to Redis at 127.0.0.1:6379: Connection refused)",
        "sentinel on node1: sees the master node1 (192.0.2.11:6379) down (s_down,o_down,master)",
        "sentinel on node2: sees the master node1 (192.0.2.11:6379) down (s_down,o_down,master)",
        "sentinel on node3: sees the master node1 (192.0.2.11:6379) down (s_down,o_down,master)",
        "redis on node2: replica not linked to node1 (192.0.2.11:6379) (master_link_status down)"]


def test_sentinels_disagreeing_and_missing_a_quorum():
    f = facts("after")
    f["node3"]["redis"] = copy.deepcopy(states("before")["node3"])
    f["node3"]["redis"]["sentinel"]["master"]["num-other-sentinels"] = "1"
    f["node3"]["redis"]["sentinel"]["ckquorum"] = ("NOQUORUM 2 usable Sentinels. Not enough available "
                                                   "Sentinels to reach the majority and authorize a failover")
    problems = redis_problems(evaluate(f))
    assert problems == [
        "sentinel on node3: NOQUORUM 2 usable Sentinels. Not enough available Sentinels to reach the majority "
        "and authorize a failover",
        "sentinel on node3: sees 1 other Sentinels, the inventory has 2",
        "redis: the Sentinels disagree on the master (node3: 192.0.2.11:6379; node1, node2: 192.0.2.12:6379)"]


def test_no_master_known_and_unreachable_sentinels():
    f = facts("after")
    for name in ("node1", "node2", "node3"):
        f[name]["redis"]["sentinel"] = {"master": None, "error": "ERR No such master with that name",
                                        "replicas": [], "ckquorum": "ERR No such master with that name"}
    f["node3"] = None
    problems = redis_problems(evaluate(f))
    assert problems == ["sentinel on node1: no master results known (ERR No such master with that name)",
                        "sentinel on node2: no master results known (ERR No such master with that name)",
                        "redis: no Sentinel knows the master results"]
    assert "node3: cannot be reached over SSH" in evaluate(f).problems


def test_replicas_that_do_not_follow_the_master():
    f = facts("after")
    node1 = f["node1"]["redis"]["redis"]
    node1.update(master_host="192.0.2.13")
    problems = redis_problems(evaluate(f))
    assert problems == ["redis on node1: replicates 192.0.2.13:6379, not the master node2 (192.0.2.12:6379)"]
    node1.update(role="master")                     # came back as master; Sentinel has not converted it yet
    assert redis_problems(evaluate(f)) == ["redis on node1: runs as master, not as a replica of node2 "
                                           "(192.0.2.12:6379)"]
    f = facts("after")
    f["node2"]["redis"]["redis"]["role"] = "slave"
    assert redis_problems(evaluate(f)) == ["redis on node2: the Sentinels' master, but it runs as slave"]


def test_a_master_outside_the_inventory():
    f = json.loads(json.dumps(facts("after")))
    for name in ("node1", "node2", "node3"):
        f[name]["redis"]["sentinel"]["master"]["ip"] = "198.51.100.7"
    problems = redis_problems(evaluate(f))
    assert "redis: the Sentinels' master 198.51.100.7:6379 is not a redis host of the inventory" in problems
