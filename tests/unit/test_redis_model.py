"""Redis decided purely: ACL users, versions, the host script's JSON, which Redis is the master."""
from __future__ import annotations

import hashlib
import json
import re

from deploy import redis_model as RM

from kit import inventory, recorded

SENTINEL = inventory("inventory.sentinel.yaml")
SECRET = {name: f"{name}-0123456789abcdef" for name in RM.SECRETS.values()}.__getitem__
DEBIAN12, DEBIAN13 = "5:7.0.15-1~deb12u10", "5:8.0.2-3"


def state(name: str) -> dict:
    """A recorded state (tests/loopback, CELERYKIT_RECORD=1) at the sentinel fixture's
    addresses: the loopback hosts 127.0.0.11.. are its nodes 192.0.2.11.."""
    text = re.sub(r"127\.0\.0\.1(\d)", r"192.0.2.1\1", recorded(f"redis/{name}.json"))
    return RM.parse_state(text)


def states(when: str) -> dict:
    return {n: state(f"sentinel-{when}-{n}") for n in ("node1", "node2", "node3")}


def users(text: str) -> dict[str, str]:
    return {line.split()[1]: line for line in text.splitlines()}


def test_versions_and_client_setinfo():
    assert RM.version_tuple(DEBIAN12) == (7, 0) and RM.version_tuple(DEBIAN13) == (8, 0)
    assert RM.version_tuple(None) is None and RM.version_tuple("junk") is None
    assert not RM.has_client_setinfo(DEBIAN12) and RM.has_client_setinfo(DEBIAN13)
    assert not RM.has_client_setinfo(None)        # unknown: a rule naming it could stop Redis


def test_redis_acl_exact_rules_and_only_hashes_of_passwords():
    text = RM.redis_acl(SECRET, DEBIAN12)
    u = users(text)
    assert list(u) == ["default", "celery", "celery-kit", "celery-kit-replica", "celery-kit-sentinel"]
    assert u["default"] == "user default off resetpass ~* resetchannels -@all +@write +multi +exec +select"
    celery_hash = "#" + hashlib.sha256(SECRET("redis_password").encode()).hexdigest()
    assert u["celery"] == (
        f"user celery on resetpass {celery_hash} resetkeys ~celery-task-meta-* ~celery-taskset-meta-* "
        "~chord-unlock-* resetchannels &celery-task-meta-* &celery-taskset-meta-* &chord-unlock-* -@all "
        "+ping +select +get +mget +set +setex +del +exists +incr +incrby +expire +multi +exec +discard "
        "+publish +subscribe +unsubscribe +evalsha +script|load +zadd +zrange +zcount +rpush +lrange "
        "+llen +sadd +sismember")
    assert u["celery-kit"].endswith("resetkeys resetchannels -@all +ping +info +role")
    assert u["celery-kit-replica"].endswith("-@all +psync +replconf +ping")
    assert u["celery-kit-sentinel"].endswith(
        "resetkeys resetchannels &__sentinel__:hello -@all +multi +exec +slaveof +ping +subscribe +publish "
        "+config|rewrite +role +info +client|setname +client|kill +script|kill")
    for name in RM.SECRETS.values():
        assert SECRET(name) not in text
    granted = {w for n, line in u.items() if n != "default" for w in line.split() if w[0] in "+~&"}
    for dangerous in ("+flushall", "+flushdb", "+config", "+keys", "+scan", "+eval", "+function", "+acl",
                      "+migrate", "+replicaof", "+debug", "+module", "+shutdown", "+monitor", "+client",
                      "~*", "&*"):
        assert dangerous not in granted, dangerous
    assert not [w for w in granted if w.startswith("+@")]         # no categories: commands one by one


def test_redis_8_gets_client_setinfo_and_allow_dangerous_opens_the_admin_only():
    u = users(RM.redis_acl(SECRET, DEBIAN13))
    assert u["celery"].endswith("+sismember +client|setinfo")
    u = users(RM.redis_acl(SECRET, DEBIAN12, admin_everything=True))
    assert u["celery-kit"].endswith(" ~* &* +@all") and "+@all" not in u["celery"]


def test_sentinel_acl():
    u = users(RM.sentinel_acl(SECRET, DEBIAN12))
    assert u["default"] == "user default off resetpass resetkeys resetchannels -@all"
    assert u["celery"].endswith("-@all +ping +sentinel|get-master-addr-by-name +sentinel|masters "
                                "+sentinel|master")
    assert u["celery-kit"].endswith("-@all +ping +info +sentinel")
    assert u["celery-kit-sentinel"].endswith("&__sentinel__:hello -@all +ping +publish +client|setname "
                                             "+sentinel|is-master-down-by-addr")
    assert users(RM.sentinel_acl(SECRET, DEBIAN13))["celery"].endswith("+client|setinfo")


def test_quorum_is_a_majority_of_the_sentinels():
    assert len(SENTINEL.sentinel_hosts()) == 3 and RM.quorum(SENTINEL) == 2


def test_parse_state_of_recorded_outputs():
    s = state("sentinel-before-node1")
    assert s["redis"]["role"] == "master" and s["redis"]["connected_slaves"] == "1"
    assert s["redis_error"] is None
    assert s["sentinel"]["master"]["ip"] == "192.0.2.11" and s["sentinel"]["master"]["quorum"] == "2"
    assert s["sentinel"]["ckquorum"].startswith("OK 3 usable Sentinels")
    assert [r["flags"] for r in s["sentinel"]["replicas"]] == ["slave"]
    assert "redis" not in state("sentinel-before-node3")          # a Sentinel-only host
    assert RM.parse_state("not json") == {} and RM.parse_state("[1]") == {}


def test_agreed_master_before_and_after_a_failover():
    assert RM.agreed_master(states("before")) == (("192.0.2.11", 6379), None)
    assert RM.agreed_master(states("after")) == (("192.0.2.12", 6379), None)
    assert RM.agreed_master({}) == (None, None)


def test_sentinels_that_disagree_newest_epoch_wins_a_tie_is_no_answer():
    mixed = states("after")
    mixed["node3"] = states("before")["node3"]            # still at epoch 0, on the old master
    master, problem = RM.agreed_master(mixed)
    assert master == ("192.0.2.12", 6379)
    assert problem == ("the Sentinels disagree on the master (node3: 192.0.2.11:6379; "
                       "node1, node2: 192.0.2.12:6379)")
    tie = json.loads(json.dumps(mixed))
    tie["node3"]["sentinel"]["master"]["config-epoch"] = "1"
    assert RM.agreed_master(tie)[0] is None


def test_initial_master_sentinels_then_a_running_master_then_the_inventory():
    assert RM.initial_master(SENTINEL, states("after"))[0].name == "node2"
    # No Sentinel ever ran: the Redis already running as master keeps its data.
    alone = {"node2": {"redis": {"role": "master", "connected_slaves": "0"}}}
    assert RM.initial_master(SENTINEL, alone) == (SENTINEL.host("node2"), None)
    assert RM.initial_master(SENTINEL, {}) == (SENTINEL.host("node1"), None)
    # A master outside the inventory is followed by address.
    outside = states("after")
    for s in outside.values():
        s["sentinel"]["master"]["ip"] = "198.51.100.7"
    assert RM.initial_master(SENTINEL, outside)[0] == ("198.51.100.7", 6379)
    tie = states("after")
    tie["node3"] = states("before")["node3"]
    tie["node3"]["sentinel"]["master"]["config-epoch"] = "1"
    master, problem = RM.initial_master(SENTINEL, tie)
    assert master is None and "disagree" in problem
    assert RM.master_address(SENTINEL, SENTINEL.host("node1")) == ("192.0.2.11", 6379)
