"""Moving a vhost's tasks into the inventory's one (mirrored -> quorum): shovels with direct
connections (no password), then a wait until the old vhost is empty and unused."""
from __future__ import annotations

import json

import pytest

from deploy import migrate as MG
from deploy.errors import DeployFailed

from kit import FakeCtx, env, inventory, whats

INV = inventory(rabbitmq={"vhost": "/celery-q", "queue_mode": "quorum"})
CTX = FakeCtx(INV)
OLD = {"queues": [{"name": "celery", "messages": 12, "messages_unacknowledged": 0},
                  {"name": "celeryev.abc", "messages": 0, "messages_unacknowledged": 0}], "connections": 2}


def test_shovels_then_wait_then_remove():
    plan = MG.MoveTasks("/celery").plan(CTX, INV.host("node1"), {"old": OLD, "vhosts": ["/", "/celery", "/celery-q"]},
                                         env())
    assert whats(plan) == ["shovel /celery celery -> /celery-q celery",
                           "await: /celery is empty and no client uses it",
                           "remove shovel celery-kit-migrate-celery"]
    argv = plan.steps[0].commands[0].argv
    assert argv[:6] == ("rabbitmqctl", "set_parameter", "-p", "/celery", "shovel", "celery-kit-migrate-celery")
    d = json.loads(argv[6])
    assert d["src-uri"] == "amqp://celery@/%2Fcelery" and d["dest-uri"] == "amqp://celery@/%2Fcelery-q"
    assert d["ack-mode"] == "on-confirm" and d["dest-queue"] == "celery"
    wait = plan.steps[1]
    assert not wait.until(OLD)
    assert not wait.until({"queues": [{"name": "celery", "messages": 0, "messages_unacknowledged": 0}], "connections": 1})
    assert wait.until({"queues": [{"name": "celery", "messages": 0, "messages_unacknowledged": 0}], "connections": 0})


def test_delete_old_and_refusals():
    plan = MG.MoveTasks("/celery", delete_old=True).plan(CTX, INV.host("node1"),
                                                          {"old": OLD, "vhosts": ["/celery", "/celery-q"]}, env())
    assert whats(plan)[-1] == "delete vhost /celery"
    with pytest.raises(DeployFailed, match="is the inventory's vhost"):
        MG.MoveTasks("/celery-q").plan(CTX, INV.host("node1"), {"old": OLD, "vhosts": []}, env())
    with pytest.raises(DeployFailed, match="no vhost /nope"):
        MG.MoveTasks("/nope").plan(CTX, INV.host("node1"), {"old": None, "vhosts": ["/celery"]}, env())


def test_old_vhost_fact_parses_both_listings():
    fact = MG.old_vhost_fact("/celery")
    out = ('[{"name": "celery", "messages": 3, "messages_unacknowledged": 1}]\n' + MG.SPLIT + "\n" +
           '[{"vhost": "/celery"}, {"vhost": "/celery-q"}]\n')
    assert fact.parse(out, 0) == {"queues": [{"name": "celery", "messages": 3, "messages_unacknowledged": 1}],
                                  "connections": 1}
    assert fact.parse("garbage", 1) is None and MG.drained(None, ["celery"]) is False
