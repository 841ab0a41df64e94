"""The fault suite: each scenario runs a steady load, injects one fault through the lab and the
hosts' own tools, and counts what was lost (see harness.py). Every scenario is bounded in
time and count, stops by itself, prints one table row and writes JSON to .state/chaos/.

Targets (asserted): no confirmed task without a stored SUCCESS, in every scenario; duplicate
executions only where at-least-once delivery implies them (counted, and explained in the
README); the first completion after a node kill within 10 s; after a network black hole
heals, every node running and no partition within 60 s with nobody involved; during
`fab rabbitmq.restart` no gap between completions longer than 5 s.
"""
from __future__ import annotations

import json
import time

import pytest

from brokerutil import api, wait_for
from conftest import PROJECT, fab
from deploy.lab import procs, runtime
from harness import Load, account, save

OUT = PROJECT / ".state" / "chaos"
RESULTS: list = []


@pytest.fixture(scope="module")
def chaos(inv, hosts, lab, celery_app, secrets, queue_mode, first_deploy):
    from app.tasks import record_id
    # Ready: a task goes through before any scenario starts.
    assert record_id.delay("warm-up").get(timeout=60)["tag"] == "warm-up"
    workers = [hosts[h.name] for h in inv.with_role("worker")]
    return {"inv": inv, "hosts": hosts, "lab": lab, "app": celery_app, "task": record_id, "mode": queue_mode,
            "workers": workers, "secrets": secrets}


def scenario(chaos, name, fault, *, steady=8.0, after=20.0, rate=30.0, seconds=0.0, settle=240.0):
    """Load for `steady` seconds, the fault (which may block while it lasts), load for `after`
    more seconds, then account. Returns the Outcome (also recorded and saved)."""
    load = Load(chaos["task"], rate, seconds)
    started = time.time()
    load.start()
    wait_for(lambda: len(load.sent) >= rate * steady, steady * 3, "the steady load")
    fault_at = time.time()
    extra = fault() or {}
    time.sleep(after)            # the load keeps running through the recovery (the timeline)
    load.finish()
    ended = time.time()
    o = account(name, chaos["mode"], chaos["app"], load, chaos["workers"], started, fault_at, ended, settle)
    o.notes += [f"{k}: {v}" for k, v in extra.items()]
    RESULTS.append(o)
    save(o, OUT)
    print("\n" + o.row() + ("\n  " + "\n  ".join(o.notes) if o.notes else ""))
    return o


def queue_leader(chaos) -> str:
    vh = chaos["inv"].rabbitmq.vhost.replace("/", "%2F")
    q = api(chaos["inv"], chaos["secrets"], f"/queues/{vh}/celery")
    return (q.get("leader") or q["node"]).split("@")[1]


def cluster_ok(chaos, address=None) -> bool:
    nodes = api(chaos["inv"], chaos["secrets"], "/nodes", address)
    return all(n.get("running") for n in nodes) and not any(n.get("partitions") for n in nodes)


def wait_cluster(chaos, timeout=120):
    for h in chaos["inv"].with_role("rabbitmq"):
        wait_for(lambda: cluster_ok(chaos, h.address), timeout, f"the cluster healthy as {h.name} sees it")


def kill_broker(chaos, name):
    def fault():
        chaos["hosts"][name].run("sudo systemctl kill -s KILL rabbitmq-server")
        return {"killed": f"rabbit@{name}"}
    return fault


def test_sigkill_of_the_queue_leader(chaos):
    o = scenario(chaos, "kill-queue-leader", kill_broker(chaos, queue_leader(chaos)))
    wait_cluster(chaos)
    assert o.lost == 0, o.notes
    assert o.recovery is not None and o.recovery <= 10, o.recovery


def test_sigkill_of_the_node_the_workers_use(chaos):
    # A worker host's broker list starts with its own node (deploy/celery_env.py).
    name = chaos["inv"].with_role("worker")[0].name
    o = scenario(chaos, "kill-worker-broker-node", kill_broker(chaos, name))
    wait_cluster(chaos)
    assert o.lost == 0, o.notes
    assert o.recovery is not None and o.recovery <= 10, o.recovery


def test_sigkill_of_a_pool_process_mid_task(chaos):
    host = chaos["workers"][0]

    def fault():
        main = host.run("systemctl show -p MainPID --value celery-worker@1").stdout.strip()
        child = host.run(f"pgrep -P {main} | head -n 1").stdout.strip()
        host.run(f"sudo kill -KILL {child}")
        return {"killed": f"pool process {child} of celery-worker@1"}

    o = scenario(chaos, "kill-pool-process", fault, seconds=0.3, rate=15)
    assert o.lost == 0, o.notes
    assert o.duplicates <= 2          # the task that was running is run again, nothing else


def test_restart_of_redis(chaos):
    (redis_host,) = chaos["inv"].with_role("redis")[:1]

    def fault():
        chaos["hosts"][redis_host.name].run("sudo systemctl restart redis-server")
        return {"restarted": f"redis-server on {redis_host.name}"}

    o = scenario(chaos, "restart-redis", fault)
    assert o.lost == 0, o.notes


def test_power_off_of_a_worker_host_and_its_return(chaos):
    name = chaos["inv"].with_role("worker")[-1].name
    lab = chaos["lab"]

    def fault():
        runtime.stop_one(lab, name)
        time.sleep(20)                        # how long the host stays off (the timeline)
        runtime.start_one(lab, name)
        return {"powered off": f"{name} for 20 s"}

    o = scenario(chaos, "power-off-worker-host", fault, after=30, settle=300)
    from conftest import lab_host
    chaos["hosts"][name] = lab_host(lab, lab.host(int(name[4:])).address)     # a fresh SSH session
    chaos["workers"][:] = [chaos["hosts"][h.name] for h in chaos["inv"].with_role("worker")]
    wait_cluster(chaos)
    assert o.lost == 0, o.notes


def test_network_black_hole_of_a_rabbitmq_node_heals_by_itself(chaos):
    name = chaos["inv"].with_role("rabbitmq")[-1].name
    veth = chaos["lab"].host(int(name[4:])).veth
    healed = {}

    def fault():
        procs.run(["ip", "link", "set", "dev", veth, "down"])
        try:
            time.sleep(90)                    # longer than net_ticktime (60 s): a real partition
        finally:
            procs.run(["ip", "link", "set", "dev", veth, "up"])
        t0 = time.monotonic()
        try:
            wait_cluster(chaos, timeout=60)
            healed["healed in"] = f"{time.monotonic() - t0:.1f}s"
        except AssertionError as exc:
            healed["not healed"] = str(exc)[:300]
        return dict(healed, cut=f"{name} for 90 s")

    o = scenario(chaos, "black-hole-rabbitmq-node-90s", fault, after=10, settle=300)
    if "not healed" in healed:          # leave a working lab for what follows, then fail
        chaos["hosts"][name].run("sudo rabbitmqctl stop_app && sudo rabbitmqctl start_app")
        wait_cluster(chaos)
    assert "healed in" in healed, healed
    assert o.lost == 0, o.notes


def test_rolling_restart_under_load(chaos):
    def fault():
        out = fab("rabbitmq.restart").stdout
        (OUT / "fab-rabbitmq-restart.log").write_text(out)
        return {"restart": out.strip().splitlines()[-1]}

    o = scenario(chaos, "fab-rabbitmq-restart", fault, after=5)
    assert o.lost == 0, o.notes
    assert o.max_gap <= 5, o.max_gap


def test_deploy_with_a_code_change_under_load(chaos):
    marker = PROJECT / "app" / "chaos_marker.py"

    def fault():
        marker.write_text(f"# a code change for the fault suite\nMARK = {time.time()!r}\n")
        try:
            out = fab("deploy").stdout
        finally:
            marker.unlink()
        (OUT / "fab-deploy-code-change.log").write_text(out)
        return {"deploy": out.strip().splitlines()[-1]}

    o = scenario(chaos, "fab-deploy-code-change", fault, after=5)
    fab("deploy")                 # back to the release without the marker
    assert o.lost == 0, o.notes


def test_write_the_table(chaos):
    rows = [o for o in RESULTS if o.mode == chaos["mode"]]
    text = "\n".join([rows[0].header() if rows else "", *[o.row() for o in rows]])
    (OUT / f"table-{chaos['mode']}.txt").write_text(text + "\n")
    (OUT / f"table-{chaos['mode']}.json").write_text(json.dumps([o.__dict__ for o in rows], indent=2))
    print("\n" + text)
    assert len(rows) == 8
