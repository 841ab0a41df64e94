"""RabbitMQ decisions without a broker: config values, policy, version guard, cluster plan."""
import json
from dataclasses import replace
from pathlib import Path

import pytest

from deploy import rabbitmq_model as M
from deploy.inventory import load_inventory

INV = load_inventory(Path(__file__).resolve().parents[2] / "inventory.yaml")


def with_rabbit(**kw):
    return replace(INV, rabbitmq=replace(INV.rabbitmq, **kw))


def test_consumer_timeout_is_above_the_longest_task():
    assert M.consumer_timeout_ms(INV) == (2 * INV.celery.time_limit + 60) * 1000
    assert M.consumer_timeout_ms(INV) > INV.celery.time_limit * 1000
    assert M.consumer_timeout_ms(with_rabbit(consumer_timeout=7200)) == 7_200_000


def test_policy_definition_by_mode():
    assert M.policy_definition(INV, 3) == {"ha-mode": "exactly", "ha-params": 2, "ha-sync-mode": "automatic"}
    assert M.policy_definition(with_rabbit(mirrors="all"), 3) == {"ha-mode": "all", "ha-sync-mode": "automatic"}
    assert M.policy_definition(with_rabbit(queue_mode="quorum", mirrors="majority"), 3) is None


def test_rabbitmq_4_refuses_mirrored_mode_with_a_pointer_to_quorum():
    assert M.version_problem(INV, "3.10.8-1.1+deb12u1") is None
    problem = M.version_problem(INV, "4.0.5-1")
    assert "4.0.5-1" in problem and "queue_mode: quorum" in problem
    assert M.version_problem(with_rabbit(queue_mode="quorum"), "4.0.5-1") is None


@pytest.mark.parametrize("n,warns", [(1, True), (2, True), (3, False), (4, True), (5, False)])
def test_size_warning(n, warns):
    assert (M.size_warning(n) is not None) == warns


def test_policy_pattern_skips_amq_and_celery_transients():
    import re
    p = re.compile(M.POLICY_PATTERN)
    assert p.match("celery") and p.match("emails")
    for q in ("amq.gen-xyz", "celeryev.1234", "w1@node2.celery.pidbox", "abc.reply.celery.pidbox"):
        assert not p.match(q), q


GOOD = {"ok": True, "vhosts": ["/", "/celery"],
        "users": {"admin": {"tags": ["administrator"], "password_ok": True},
                  "celery": {"tags": [], "password_ok": True}},
        "permissions": {"admin": [".*", ".*", ".*"], "celery": [".*", ".*", ".*"]},
        "policies": {M.POLICY: {"pattern": M.POLICY_PATTERN, "apply-to": "queues", "priority": 0,
                                "definition": {"ha-mode": "exactly", "ha-params": 2, "ha-sync-mode": "automatic"}}}}


def test_converged_cluster_gives_an_empty_plan():
    assert M.cluster_plan(INV, GOOD, "a" * 40, "b" * 40, 3) == []


def test_unknown_state_plans_every_idempotent_step_and_keeps_passwords_off_argv():
    plan = M.cluster_plan(INV, {"ok": False}, "adminpw" * 6, "apppw" * 8, 3)
    whats = [c.what for c in plan]
    assert whats[0] == "vhost /celery" and "remove user guest" in whats
    assert any(w.startswith("policy celery-kit-ha") for w in whats)
    for change in plan:
        for c in change.commands:
            assert "adminpw" not in " ".join(c.argv) and "apppw" not in " ".join(c.argv)
    (user_admin,) = [c for c in plan if c.what == "user admin"]
    assert user_admin.commands[0].stdin == ("adminpw" * 6 + "\n").encode()


def test_drift_guest_back_password_changed_policy_changed():
    state = json.loads(json.dumps(GOOD))
    state["users"]["guest"] = {"tags": ["administrator"], "password_ok": None}
    state["users"]["celery"]["password_ok"] = False
    state["policies"][M.POLICY]["definition"]["ha-params"] = 3
    whats = [c.what for c in M.cluster_plan(INV, state, "a" * 40, "b" * 40, 3)]
    assert whats == ["password of celery", "remove user guest",
                     'policy celery-kit-ha {"ha-mode": "exactly", "ha-params": 2, "ha-sync-mode": "automatic"}']


def test_quorum_mode_removes_the_ha_policy():
    inv = with_rabbit(queue_mode="quorum")
    (ch,) = M.cluster_plan(inv, GOOD, "a" * 40, "b" * 40, 3)
    assert ch.what.startswith("remove policy celery-kit-ha")
    state = dict(GOOD, policies={})
    assert M.cluster_plan(inv, state, "a" * 40, "b" * 40, 3) == []
