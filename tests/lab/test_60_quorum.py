"""The same cluster switched to quorum queues (inventory queue_mode: quorum, on its own
vhost): no HA policy, Celery declares quorum queues, a SIGKILLed leader loses nothing, a task
that kills its worker ends in the dead-letter queue, countdown tasks wait in the broker."""

import pytest

from kombu import Queue

from brokerutil import api, connection, consume_all, declare, publish, queue_info, wait_for
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


def run_client(quorum, code: str, timeout: float = 180) -> str:
    """Python code run as a producer with the quorum inventory's client settings."""
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-c", code], env={**quorum["settings"], "PATH": "/usr/bin:/bin"},
                         cwd=PROJECT, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def test_a_task_that_kills_its_worker_every_time_ends_in_the_dead_letter_queue(quorum, hosts, secrets):
    """No poison-message loop: after delivery_limit deliveries RabbitMQ moves it aside, and the
    workers go on with other tasks."""
    import uuid
    inv = quorum["inv"]
    tag = "crash-" + uuid.uuid4().hex[:8]
    dlq = inv.rabbitmq.dead_letter_queue
    before = queue_info(inv, secrets, dlq)["messages"]
    task_id = run_client(quorum, f"from app.tasks import crash; print(crash.delay({tag!r}).id)").strip()
    wait_for(lambda: queue_info(inv, secrets, dlq)["messages"] == before + 1, 180,
             f"the crashing task in {dlq}")
    grep = (f"sudo journalctl -u 'celery-worker@*' --since -10min -o cat --no-pager"
            f" | grep -cF 'crash-exec {tag}' || true")
    runs = sum(int(hosts[h.name].run(grep).stdout.strip() or 0) for h in inv.with_role("worker"))
    assert runs == inv.rabbitmq.delivery_limit, f"ran {runs} times, limit {inv.rabbitmq.delivery_limit}"
    # The dead letter is the task itself (its id in the headers), dead-lettered for the limit.
    with connection(quorum["urls"]) as conn:
        queue = Queue(dlq, no_declare=True)(conn.default_channel)
        while (msg := queue.get(accept=["msgpack", "json"])) is not None:
            msg.ack()
            if msg.headers.get("id") == task_id:
                break
    assert msg is not None, f"task {task_id} not in {dlq}"
    assert msg.headers["x-first-death-reason"] == "delivery_limit"
    assert run_client(quorum, "from app.tasks import add; print(add.delay(20, 22).get(timeout=60))").strip() == "42"


def test_countdown_tasks_wait_in_the_broker_not_in_a_worker(quorum, secrets):
    """Native delayed delivery: a countdown task sits in RabbitMQ's celery_delayed_* queues (a
    worker holding it unacknowledged would meet consumer_timeout on a long ETA) and runs once
    its time has come."""
    import json
    import time
    inv = quorum["inv"]
    # The worker side is asked directly (inspect: the tasks each worker has reserved or holds
    # for a later time); the management API's queue counters are sampled every 5 s and may
    # still show a task of the previous test.
    code = ("import json, sys, time\nfrom app.tasks import record_id\n"
            "t0 = time.time(); r = record_id.apply_async(('countdown',), countdown=20)\n"
            "print(json.dumps({'id': r.id, 'sent': t0}), flush=True)\n"
            "sys.stdin.readline()\n"
            "ins = record_id.app.control.inspect(timeout=2)\n"
            "scheduled, reserved = ins.scheduled() or {}, ins.reserved() or {}\n"
            "held = [t.get('request', t).get('id') for m in (scheduled, reserved) for ts in m.values() for t in ts]\n"
            "print(json.dumps({'held': held, 'workers': sorted(scheduled)}), flush=True)\n"
            "r.get(timeout=90); print(json.dumps({'done': r.date_done.timestamp()}), flush=True)\n")
    import subprocess
    import sys
    proc = subprocess.Popen([sys.executable, "-c", code], env={**quorum["settings"], "PATH": "/usr/bin:/bin"},
                            cwd=PROJECT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        first = json.loads(proc.stdout.readline())
        sent = first["sent"]
        vh = inv.rabbitmq.vhost.replace("/", "%2F")
        delayed = wait_for(lambda: [q for q in api(inv, secrets, f"/queues/{vh}")
                                    if q["name"].startswith("celery_delayed_") and q.get("messages")], 12,
                           "the task in a celery_delayed_* queue")
        assert all(q["type"] == "quorum" for q in delayed)
        proc.stdin.write("\n")
        proc.stdin.flush()
        seen = json.loads(proc.stdout.readline())
        assert time.time() - sent < 20, "inspected too late to tell"
        assert len(seen["workers"]) == sum(h.worker.instances for h in inv.with_role("worker")), seen
        assert first["id"] not in seen["held"], "a worker holds the countdown task"
        done = json.loads(proc.stdout.readline())["done"]
    finally:
        proc.kill()
    assert 20 <= done - sent < 50, done - sent
