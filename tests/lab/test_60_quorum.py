"""The same cluster switched to quorum queues (inventory queue_mode: quorum, on its own
vhost): no HA policy, Celery declares quorum queues, and a SIGKILLed leader loses nothing."""

import pytest

from brokerutil import api, consume_all, declare, publish, queue_info, wait_for
from conftest import PROJECT, client_env, fab, inventory_variant, summary_rows

VHOST = "/celery-quorum"


@pytest.fixture(scope="module")
def quorum(tmp_path_factory, first_deploy, secrets, lab):
    # On Debian 12 this is the optional quorum mode of RabbitMQ 3.10; on Debian 13 the same
    # explicit choice that 4.0 makes by itself. Same secrets and scale as the lab's own
    # inventory: only the queue mode and vhost differ.
    path = inventory_variant(tmp_path_factory.mktemp("quorum"), (
        "  mirrors: majority                  # with mirrored queues: majority | all | a number of nodes\n",
        f"  queue_mode: quorum\n  vhost: {VHOST}\n"))
    out = fab("deploy", "--inventory", str(path)).stdout
    from deploy.inventory import load_inventory
    inv = load_inventory(path)
    settings = client_env(path, path.parent / "client")
    return {"path": path, "inv": inv, "out": out, "settings": settings,
            "urls": settings["CELERY_BROKER_URL"].split(";")}


def test_quorum_deploy_has_a_delivery_limit_policy_and_is_idempotent(quorum, secrets):
    assert f"vhost {VHOST}" in quorum["out"]
    (policy,) = api(quorum["inv"], secrets, "/policies/%2Fcelery-quorum")
    assert "ha-mode" not in policy["definition"] and policy["definition"]["delivery-limit"] == 4
    again = fab("deploy", "--inventory", str(quorum["path"])).stdout
    assert summary_rows(again) == {h.name: ("unchanged", 0) for h in quorum["inv"].hosts}


def test_celery_uses_quorum_queues(quorum, secrets):
    import subprocess
    import sys
    code = ("import os; from app.tasks import add; print(add.delay(4, 4).get(timeout=60))")
    out = subprocess.run([sys.executable, "-c", code], env={**quorum["settings"], "PATH": "/usr/bin:/bin"},
                         cwd=PROJECT, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "8", out.stderr
    info = queue_info(quorum["inv"], secrets, "celery")
    assert info["type"] == "quorum" and info["vhost"] == VHOST
    assert quorum["settings"]["CELERY_QUEUE_TYPE"] == "quorum"


def test_sigkill_of_the_quorum_leader_loses_no_confirmed_message(quorum, hosts, secrets):
    inv = quorum["inv"]
    q = declare(quorum["urls"], "kit-test-quorum-kill", {"x-queue-type": "quorum"})
    bodies = [f"q-{i}" for i in range(1000)]
    publish(quorum["urls"], q, bodies)
    info = wait_for(lambda: (i := queue_info(inv, secrets, "kit-test-quorum-kill")) and
                    i.get("messages") == 1000 and i, 30, "1000 messages")
    leader = (info.get("leader") or info["node"]).split("@")[1]
    assert len(info["members"]) == 3 and info["type"] == "quorum"

    hosts[leader].run("sudo systemctl kill -s KILL rabbitmq-server")
    survivors = [u for u in quorum["urls"] if f"@{inv.host(leader).address}:" not in u]
    assert consume_all(survivors, q, 1000, timeout=90) == set(bodies)

    other = next(h for h in inv.with_role("rabbitmq") if h.name != leader)
    want = {f"rabbit@{h.name}" for h in inv.with_role("rabbitmq")}
    wait_for(lambda: want <= {n["name"] for n in api(inv, secrets, "/nodes", other.address)
                              if n.get("running")}, 120, f"rabbit@{leader} back in the cluster")
