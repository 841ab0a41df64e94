"""The RabbitMQ cluster in mirrored mode: formed, configured, and surviving a killed node
and a rolling restart without losing a confirmed message."""
import json

from brokerutil import (PubSubPair, api, consume_all, declare, publish, queue_info, wait_for)
from conftest import fab


def rabbit_hosts(inv, hosts):
    return {h.name: hosts[h.name] for h in inv.with_role("rabbitmq")}


def urls(celery_settings):
    return celery_settings["CELERY_BROKER_URL"].split(";")


def test_cluster_lists_all_nodes_running(inv, hosts, first_deploy):
    want = {f"rabbit@{h.name}" for h in inv.with_role("rabbitmq")}
    for name, host in rabbit_hosts(inv, hosts).items():
        status = json.loads(host.run("sudo rabbitmqctl cluster_status --formatter json").stdout)
        assert set(status["running_nodes"]) == want, name


def test_guest_gone_cookie_private_listeners_up(inv, hosts, secrets, first_deploy):
    users = {u["name"] for u in api(inv, secrets, "/users")}
    assert "guest" not in users and {"admin", "celery"} <= users
    for name, host in rabbit_hosts(inv, hosts).items():
        out = host.run("sudo stat -c '%U %G %a' /var/lib/rabbitmq/.erlang.cookie").stdout.split()
        assert out == ["rabbitmq", "rabbitmq", "400"], name
        listening = host.run("ss -ltnH").stdout
        for port in (":5672", ":15672", ":15692", ":25672"):
            assert port in listening, (name, port)


def test_plugins_and_partition_handling(inv, hosts, first_deploy):
    host = hosts["node1"]
    assert "rabbitmq_management" in host.run("cat /etc/rabbitmq/enabled_plugins").stdout
    conf = host.run("sudo cat /etc/rabbitmq/rabbitmq.conf").stdout
    assert "cluster_partition_handling = " in conf
    # consumer_timeout above the longest task (time_limit 1800s by default): 3660 s.
    assert "consumer_timeout = 3660000" in conf


def test_policy_mirrors_a_fresh_app_queue_on_a_majority(inv, secrets, celery_settings, first_deploy, queue_mode):
    if queue_mode != "mirrored":
        return check_quorum_policy_limits_deliveries_into_the_dead_letter_queue(inv, secrets, celery_settings)
    declare(urls(celery_settings), "kit-test-fresh")
    # The management API fills in a queue's details as its stats arrive: poll until they do.
    info = wait_for(lambda: (q := queue_info(inv, secrets, "kit-test-fresh")) and "policy" in q and
                    len(q.get("synchronised_slave_nodes", [])) == 1 and q, 30, "a synchronised mirror")
    assert info["policy"] == "celery-kit-ha"
    assert info["effective_policy_definition"]["ha-promote-on-failure"] == "when-synced"
    assert info["effective_policy_definition"]["ha-mode"] == "exactly"
    assert info["effective_policy_definition"]["ha-params"] == 2          # majority of 3
    assert len({info["node"], *info["synchronised_slave_nodes"]}) == 2


def test_amq_and_transient_queues_get_no_policy(inv, secrets, first_deploy):
    policies = api(inv, secrets, "/policies/%2Fcelery")
    (p,) = [p for p in policies if p["name"] == "celery-kit-ha"]
    import re
    pattern = re.compile(p["pattern"])
    assert pattern.match("celery") and pattern.match("myapp.emails")
    assert not pattern.match("amq.gen-123") and not pattern.match("celeryev.abc")
    assert not pattern.match("w1@node2.celery.pidbox")


def check_quorum_policy_limits_deliveries_into_the_dead_letter_queue(inv, secrets, celery_settings):
    declare(urls(celery_settings), "kit-test-fresh", {"x-queue-type": "quorum"})
    info = wait_for(lambda: (q := queue_info(inv, secrets, "kit-test-fresh")) and "policy" in q and q, 30, "policy")
    assert info["policy"] == "celery-kit-ha" and info["type"] == "quorum"
    d = info["effective_policy_definition"]
    assert d["delivery-limit"] == inv.rabbitmq.delivery_limit - 1
    assert d["dead-letter-routing-key"] == inv.rabbitmq.dead_letter_queue
    assert queue_info(inv, secrets, inv.rabbitmq.dead_letter_queue)["type"] == "quorum"


def test_sigkill_of_the_queue_master_loses_no_confirmed_message(inv, hosts, secrets, celery_settings,
                                                               first_deploy, queue_mode):
    args = {"x-queue-type": "quorum"} if queue_mode == "quorum" else None
    q = declare(urls(celery_settings), "kit-test-kill", args)
    if queue_mode == "mirrored":
        wait_for(lambda: len(queue_info(inv, secrets, "kit-test-kill").get("synchronised_slave_nodes", [])) == 1,
                 30, "mirror in sync")
    bodies = [f"msg-{i}" for i in range(1000)]
    publish(urls(celery_settings), q, bodies)
    info = queue_info(inv, secrets, "kit-test-kill")
    master = (info.get("leader") or info["node"]).split("@")[1]
    wait_for(lambda: queue_info(inv, secrets, "kit-test-kill")["messages"] == 1000, 30, "1000 messages")

    hosts[master].run("sudo systemctl kill -s KILL rabbitmq-server")
    survivors = [h for h in inv.with_role("rabbitmq") if h.name != master]
    survivor_urls = [u for u in urls(celery_settings) if f"@{inv.host(master).address}:" not in u]
    got = consume_all(survivor_urls, q, 1000, timeout=90)
    assert got == set(bodies)

    # The killed node comes back on its own (systemd Restart=on-failure) and rejoins.
    want = {f"rabbit@{h.name}" for h in inv.with_role("rabbitmq")}
    wait_for(lambda: want <= {n["name"] for n in api(inv, secrets, "/nodes", survivors[0].address)
                              if n.get("running")}, 120, f"rabbit@{master} back in the cluster")


def test_rolling_restart_keeps_the_cluster_serving(inv, secrets, celery_settings, first_deploy, queue_mode):
    q = declare(urls(celery_settings), "kit-test-roll", {"x-queue-type": "quorum"} if queue_mode == "quorum" else None)
    pair = PubSubPair(urls(celery_settings), q)
    pair.start()
    wait_for(lambda: len(pair.consumed) >= 20, 30, "the pair to start working")
    out = fab("rabbitmq.restart").stdout
    pair.finish()
    assert all(f"rolling restart of rabbit@{h.name}" in out for h in inv.with_role("rabbitmq"))
    assert len(pair.published) > 100
    missing = set(pair.published) - pair.consumed
    assert not missing, f"{len(missing)} confirmed messages never consumed"
    assert pair.max_gap() < 15, f"publishing stalled for {pair.max_gap():.1f}s"
