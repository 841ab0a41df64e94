"""Throughput and the CPU each task costs, on the deployed lab: Celery with the kit's settings
against raw kombu with the same guarantees, in one run.

    .venv/bin/python bench/throughput.py [--tasks 6000] [--publishers 2]

Celery: N `noop` tasks published by P processes on the control machine (publisher confirms,
persistent, the replicated queue of the cluster's mode), run by the deployed workers (acks
late), every result stored in Redis; the clock stops when the last result is in.
Kombu, same guarantees: the same N messages published the same way (confirms, persistent)
to a queue of the same kind, consumed ON the worker hosts by as many plain kombu processes as
the workers have pool processes, each message's result written to Redis before its ack.

CPU per 1,000 tasks for each process class, from systemd's per-unit CPU accounting (cgroup
v2) on the hosts and /proc for the workers' main processes; publishers from their rusage.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path
from statistics import median

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT))

from deploy import facts as F  # noqa: E402
from deploy import runner  # noqa: E402
from deploy.inventory import load_inventory  # noqa: E402

CLIENT = PROJECT / ".state" / "bench-client"

# On a host: CPU seconds of each unit of interest, and of each worker's main process.
CPU_SCRIPT = r"""
tck=$(getconf CLK_TCK)
for u in rabbitmq-server.service redis-server.service flower.service nginx.service celery-beat.service systemd-journald.service \
         $(systemctl list-units --plain --no-legend 'celery-worker@*' | awk '{print $1}') \
         $(systemctl list-units --plain --no-legend 'celery-kit-bench@*' | awk '{print $1}'); do
  n=$(systemctl show -p CPUUsageNSec --value "$u" 2>/dev/null)
  case "$n" in ''|'[not set]') continue;; esac
  echo "unit $u $n"
  case "$u" in celery-worker@*)
    pid=$(systemctl show -p MainPID --value "$u")
    [ "$pid" -gt 0 ] && awk -v t="$tck" -v u="$u" '{print "main", u, ($14 + $15) / t * 1e9}' /proc/$pid/stat;;
  esac
done
"""


def parse_cpu(out: str, rc: int = 0) -> dict[str, float]:
    """-> {"rabbitmq": s, "redis": s, "flower": s, "worker main": s, "worker pool": s, ...}"""
    units, mains = {}, {}
    for line in out.splitlines():
        kind, unit, ns = line.split()
        (units if kind == "unit" else mains)[unit] = float(ns) / 1e9
    classes: dict[str, float] = {}

    def add(k, v):
        classes[k] = classes.get(k, 0.0) + v
    for unit, s in units.items():
        if unit.startswith("celery-worker@"):
            add("worker main", mains.get(unit, 0.0))
            add("worker pool", s - mains.get(unit, 0.0))
        elif unit.startswith("celery-kit-bench@"):
            add("kombu consumers", s)
        else:
            add(unit.split(".")[0].replace("-server", ""), s)
    return classes


def cpu_snapshot(inv) -> dict[str, float]:
    per_host = runner.gather_all(inv, lambda h: [F.Fact("cpu", ("sh", "-c", CPU_SCRIPT), parse_cpu)])
    total: dict[str, float] = {}
    for facts in per_host.values():
        for k, v in (facts or {}).get("cpu", {}).items():
            total[k] = total.get(k, 0.0) + v
    return total


def client_env(inventory: str) -> dict[str, str]:
    subprocess.run([str(PROJECT / ".venv/bin/fab"), "client-env", "-i", inventory, "--out", str(CLIENT)], cwd=PROJECT,
                   check=True, stdout=subprocess.DEVNULL)
    env = {}
    for line in (CLIENT / "celery.env").read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            k, _, v = line.partition("=")
            env[k] = v.strip("'")
    return env


def publish_celery(env: dict, n: int, q) -> None:
    os.environ.update(env)
    sys.path.insert(0, env["PYTHONPATH"])
    from app.tasks import noop
    with noop.app.producer_or_acquire() as producer:
        ids = [noop.apply_async(producer=producer).id for _ in range(n)]
    ru = resource.getrusage(resource.RUSAGE_SELF)
    q.put((ids, ru.ru_utime + ru.ru_stime))


def celery_run(env: dict, n: int, publishers: int) -> tuple[float, float]:
    os.environ.update(env)
    sys.path.insert(0, env["PYTHONPATH"])
    from app.celery import app
    from celery.result import ResultSet
    q = mp.Queue()
    t0 = time.monotonic()
    procs = [mp.Process(target=publish_celery, args=(env, n // publishers, q)) for _ in procs_range(publishers)]
    for p in procs:
        p.start()
    got = [q.get() for _ in procs]
    for p in procs:
        p.join()
    published = time.monotonic() - t0
    ids = [i for batch, _ in got for i in batch]
    ResultSet([app.AsyncResult(i) for i in ids]).join_native(timeout=900)
    return time.monotonic() - t0, published, sum(cpu for _, cpu in got)


def procs_range(n):
    return range(n)


def queue_args(mode: str) -> dict:
    return {"x-queue-type": "quorum"} if mode == "quorum" else {}


def publish_kombu(url: str, n: int, mode: str, q) -> None:
    from kombu import Connection, Exchange, Producer, Queue
    queue = Queue("bench-kombu", Exchange("bench-kombu", "direct"), "bench-kombu", durable=True,
                  queue_arguments=queue_args(mode))
    with Connection(url, transport_options={"confirm_publish": True}) as conn:
        producer = Producer(conn.default_channel)
        for i in range(n):
            producer.publish({"i": i}, exchange=queue.exchange, routing_key="bench-kombu", delivery_mode=2,
                             serializer="msgpack")
    ru = resource.getrusage(resource.RUSAGE_SELF)
    q.put(ru.ru_utime + ru.ru_stime)


# Runs ON a worker host, as celery with the host's settings, from the release venv: consume,
# store a result in Redis, then ack (the same guarantees as a Celery worker with acks late).
CONSUMER = r"""
import json, os, sys, time
from kombu import Connection, Exchange, Queue
import redis
mode, n = sys.argv[1], int(sys.argv[2])
args = {"x-queue-type": "quorum"} if mode == "quorum" else {}
queue = Queue("bench-kombu", Exchange("bench-kombu", "direct"), "bench-kombu", durable=True, queue_arguments=args)
r = redis.Redis.from_url(os.environ["CELERY_RESULT_BACKEND"]) if os.environ["CELERY_RESULT_BACKEND"].startswith("redis") else None
url = os.environ["CELERY_BROKER_URL"]
got = 0
def on(body, message):
    global got
    if r is not None:
        r.set("celery-task-meta-bench-" + str(body["i"]), json.dumps({"status": "SUCCESS", "result": None}), ex=600)
    message.ack()
    if r is not None:
        r.incr("celery-task-meta-bench-acked")
    got += 1
with Connection(url) as conn:
    with conn.Consumer(queue, callbacks=[on], prefetch_count=int(os.environ.get("CELERY_PREFETCH_MULTIPLIER", "1")),
                       accept=["msgpack"]):
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            try:
                conn.drain_events(timeout=5)
            except Exception:
                if got:
                    break
print(got)
"""


def kombu_run(inv, env: dict, n: int, publishers: int, mode: str, snapshot) -> tuple[float, float, float, dict]:
    """-> (seconds, publish seconds, publishers' CPU, CPU snapshot taken before the consumers stop)."""
    from kombu import Connection, Exchange, Queue
    url = env["CELERY_BROKER_URL"]
    queue = Queue("bench-kombu", Exchange("bench-kombu", "direct"), "bench-kombu", durable=True,
                  queue_arguments=queue_args(mode))
    with Connection(url) as conn:
        queue(conn.default_channel).declare()
        queue(conn.default_channel).purge()
    import redis
    acked = redis.Redis.from_url(env["CELERY_RESULT_BACKEND"])
    acked.delete("celery-task-meta-bench-acked")
    sessions = runner.connect_all(inv, only=[h.name for h in inv.with_role("worker")])
    consumers = []
    try:
        for name, s in sessions.items():
            h = s.host
            procs = h.worker.instances * h.worker.concurrency
            for i in range(1, procs + 1):
                # A transient unit per consumer: its CPU is accounted like the workers' own.
                script = ("set -a; . /etc/celery-kit/celery.env; set +a; exec /opt/celery-kit/current/venv/bin/python "
                          "-c " + shlex.quote(CONSUMER) + f" {mode} {n}")
                consumers.append((s, f"celery-kit-bench@{i}"))
                s.exec(shlex.join(["sudo", "-n", "systemd-run", "--unit", f"celery-kit-bench@{i}", "--uid", "celery",
                                   "--collect", "--property", "CPUAccounting=yes", "sh", "-c", script]))
        q = mp.Queue()
        t0 = time.monotonic()
        pubs = [mp.Process(target=publish_kombu, args=(url, n // publishers, mode, q)) for _ in range(publishers)]
        for p in pubs:
            p.start()
        cpu = sum(q.get() for _ in pubs)
        for p in pubs:
            p.join()
        published = time.monotonic() - t0
        while int(acked.get("celery-task-meta-bench-acked") or 0) < n:    # every message acknowledged
            time.sleep(0.05)
        took = time.monotonic() - t0
        return took, published, cpu, snapshot()
    finally:
        for s, unit in consumers:
            s.exec(shlex.join(["sudo", "-n", "systemctl", "stop", unit]))
        runner.close_all(sessions)


def per_thousand(before: dict, after: dict, n: int) -> dict[str, float]:
    return {k: (after.get(k, 0.0) - before.get(k, 0.0)) / (n / 1000) for k in after}


def one_round(inv, env: dict, n: int, p: int, mode: str) -> dict:
    """Celery, then kombu with the same guarantees, on the same cluster."""
    before = cpu_snapshot(inv)
    took, pub_took, pub_cpu = celery_run(env, n, p)
    after = cpu_snapshot(inv)
    cpu = per_thousand(before, after, n)
    cpu["publishers"] = pub_cpu / (n / 1000)

    before = cpu_snapshot(inv)
    k_took, k_pub_took, k_pub_cpu, after = kombu_run(inv, env, n, p, mode, lambda: cpu_snapshot(inv))
    kcpu = per_thousand(before, after, n)
    kcpu["publishers"] = k_pub_cpu / (n / 1000)
    r = {"celery_rate": n / took, "kombu_rate": n / k_took, "celery_s": took, "celery_publish_s": pub_took,
         "kombu_s": k_took, "kombu_publish_s": k_pub_took, "cpu": cpu, "kombu_cpu": kcpu}
    r["ratio"] = r["celery_rate"] / r["kombu_rate"]
    return r


def medians(tables: list[dict[str, float]]) -> dict[str, float]:
    """Per key, the median over the rounds (a class missing from a round counts 0)."""
    keys = {k for t in tables for k in t}
    return {k: median([t.get(k, 0.0) for t in tables]) for k in keys}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", type=int, default=6000)
    ap.add_argument("--publishers", type=int, default=2)
    # One round is a few seconds on a machine whose cores everything shares; rounds that
    # alternate Celery and kombu, and their median, keep one noisy second from deciding.
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--inventory", default=str(PROJECT / "inventory.yaml"))
    args = ap.parse_args()
    inv = load_inventory(Path(args.inventory))
    env = client_env(args.inventory)
    mode = "quorum" if env["CELERY_QUEUE_TYPE"] == "quorum" else "mirrored"
    n, p = args.tasks, args.publishers

    print(f"queues: {mode}; {n} tasks per run, {p} publisher processes on the control machine, "
          f"task events {'on' if env.get('CELERY_TASK_EVENTS', '1') == '1' else 'off'}, "
          f"prefetch multiplier {env.get('CELERY_PREFETCH_MULTIPLIER', '1')}")
    rounds = []
    for i in range(args.rounds):
        r = one_round(inv, env, n, p, mode)
        rounds.append(r)
        print(f"round {i + 1}: celery {r['celery_rate']:.0f} tasks/s end to end ({r['celery_s']:.1f}s; published in "
              f"{r['celery_publish_s']:.1f}s), kombu {r['kombu_rate']:.0f} msg/s ({r['kombu_s']:.1f}s), "
              f"ratio {r['ratio']:.0%}", flush=True)
    celery_rate = median([r["celery_rate"] for r in rounds])
    kombu_rate = median([r["kombu_rate"] for r in rounds])
    ratio = median([r["ratio"] for r in rounds])
    cpu = medians([r["cpu"] for r in rounds])
    kcpu = medians([r["kombu_cpu"] for r in rounds])

    print(f"celery: {celery_rate:.0f} tasks/s end to end (median of {len(rounds)})")
    print(f"kombu, same guarantees: {kombu_rate:.0f} msg/s")
    print(f"ratio celery/kombu: {ratio:.0%} (median of the rounds' ratios; target >= 60%)")
    print("\nCPU seconds per 1,000 tasks (medians)")
    print(f"{'process class':20} {'celery':>8} {'kombu':>8}")
    for k in sorted(set(cpu) | set(kcpu), key=lambda k: -cpu.get(k, 0.0)):
        if cpu.get(k, 0.0) >= 0.005 or kcpu.get(k, 0.0) >= 0.005:
            print(f"{k:20} {cpu.get(k, 0.0):8.2f} {kcpu.get(k, 0.0):8.2f}")
    print(f"{'total':20} {sum(cpu.values()):8.2f} {sum(kcpu.values()):8.2f}")
    (PROJECT / ".state" / "bench-throughput.json").write_text(json.dumps(
        {"mode": mode, "tasks": n, "celery_rate": celery_rate, "kombu_rate": kombu_rate, "ratio": ratio,
         "cpu": cpu, "kombu_cpu": kcpu, "rounds": rounds}, indent=2))


if __name__ == "__main__":
    main()
