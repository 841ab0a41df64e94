"""Redis on two hosts with Sentinel on all three (README: a replica with Sentinel). When the
master's host goes away, results keep being stored through the promoted replica, and the
deploy after the old master is back changes nothing: it neither re-uploads a role nor demotes
the new master. Leaves the lab with the single Redis of inventory.yaml, as it found it."""
import importlib
import sys
import time

from brokerutil import wait_for
from conftest import INVENTORY, PROJECT, fab, lab_host, summary_rows
from deploy.lab import runtime

ADMIN = "REDISCLI_AUTH=$(head -n 1 /etc/celery-kit/redis/admin.pass) redis-cli --no-auth-warning --user celery-kit"


def inventory_with_replica(tmp_path):
    text = INVENTORY.read_text().replace("key: .state/lab/id_ed25519", f"key: {PROJECT}/.state/lab/id_ed25519")
    text = text.replace("known_hosts: .state/lab/known_hosts", f"known_hosts: {PROJECT}/.state/lab/known_hosts")
    text = text.replace("roles: [rabbitmq, worker, beat]", "roles: [rabbitmq, redis, worker, beat]", 1)
    path = tmp_path / "inventory.yaml"
    path.write_text(f"state_dir: {PROJECT}/.state\n" + text)
    return path


def admin(host, command: str) -> str:
    return host.run(f"sudo sh -c '{ADMIN} {command}'").stdout


def sentinel_master(host) -> str:
    return admin(host, "-p 26379 SENTINEL GET-MASTER-ADDR-BY-NAME celery-kit").split("\n")[0].strip()


def healthy(path) -> bool:
    return fab("status", "--inventory", str(path), "--check", check=False).returncode == 0


def sentinel_app(hosts, monkeypatch):
    """A client configured exactly like the workers: their environment file, the kit's settings."""
    env = dict(line.split("=", 1) for line in
               hosts["node2"].run("sudo cat /etc/celery-kit/celery.env").stdout.splitlines() if "=" in line)
    for key, value in env.items():
        monkeypatch.setenv(key, value.strip("'"))
    assert env["CELERY_RESULT_BACKEND"].strip("'").startswith("sentinel://celery:")
    monkeypatch.syspath_prepend(str(PROJECT / "deploy" / "client"))
    sys.modules.pop("celery_kit_config", None)
    from celery import Celery
    app = Celery("lab-sentinel")
    app.config_from_object(importlib.import_module("celery_kit_config"))
    return app


def add(app, timeout=30) -> int:
    return app.send_task("app.tasks.add", (20, 22)).get(timeout=timeout)


def restore_single_redis(hosts):
    """Back to inventory.yaml's single Redis on node1: Sentinels off first (no failover during
    the change), then the deploy rewrites node1's stub (no replicaof: master again)."""
    for name in ("node1", "node2", "node3"):
        hosts[name].run("sudo systemctl disable --now redis-sentinel")
    fab("deploy")
    hosts["node2"].run("sudo systemctl disable --now redis-server")
    assert admin(hosts["node1"], "ROLE").startswith("master")
    assert set(summary_rows(fab("deploy").stdout).values()) == {("unchanged", 0)}


def test_failover_keeps_results_and_the_next_deploy_changes_nothing(lab, hosts, tmp_path, monkeypatch,
                                                                   first_deploy):
    path = inventory_with_replica(tmp_path)
    try:
        failover(lab, hosts, path, monkeypatch)
    finally:
        restore_single_redis(hosts)


def failover(lab, hosts, path, monkeypatch):
    fab("deploy", "--inventory", str(path))
    wait_for(lambda: healthy(path), 120, "replica linked, three Sentinels agreeing (fab status --check)")
    assert set(summary_rows(fab("deploy", "--inventory", str(path)).stdout).values()) == {("unchanged", 0)}
    assert sentinel_master(hosts["node3"]) == "10.77.0.11"
    app = sentinel_app(hosts, monkeypatch)
    assert add(app) == 42

    # The master's whole host goes away.
    runtime.stop_one(lab, "node1")
    stopped = time.monotonic()
    try:
        wait_for(lambda: add(app, timeout=10) == 42, 30, "a result stored and read after the master's host stopped")
        recovered = time.monotonic() - stopped
        assert sentinel_master(hosts["node3"]) == "10.77.0.12"
        print(f"results flowed again {recovered:.1f}s after node1 stopped")
    finally:
        assert runtime.start_one(lab, "node1") == "started"
        hosts["node1"] = lab_host(lab, "10.77.0.11")       # the old SSH session died with the host

    # node1 comes back as it was (a master, by its own file); Sentinel turns it into a replica.
    wait_for(lambda: "master_link_status:up" in admin(hosts["node1"], "INFO replication"), 120,
             "node1 rejoins as a replica of node2")
    assert "replicaof 10.77.0.12 6379" in hosts["node1"].run("sudo cat /etc/redis/redis.conf").stdout
    wait_for(lambda: healthy(path), 120, "fab status --check clean after the failover")
    out = fab("deploy", "--inventory", str(path)).stdout
    assert set(summary_rows(out).values()) == {("unchanged", 0)}, out
    assert sentinel_master(hosts["node3"]) == "10.77.0.12"          # nobody was demoted
    assert add(app) == 42
