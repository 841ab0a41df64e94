"""End-to-end Celery throughput on the deployed lab cluster, and raw kombu for comparison.

    .venv/bin/python bench/throughput.py [N] [publishers]

Celery: N `noop` tasks with the kit's defaults (msgpack, acks late, publisher confirms,
prefetch 1, mirrored queue, results in Redis), published by `publishers` processes on the
control machine; the clock stops when every result is in Redis.
Kombu: N messages published (confirms on, persistent) to a mirrored queue and consumed by
a plain consumer, same cluster: the broker's own ceiling for this path.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT))


def settings() -> dict:
    from deploy.celery_env import celery_env
    from deploy.inventory import load_inventory
    from deploy.secrets import SecretStore
    inv = load_inventory(PROJECT / "inventory.yaml")
    s = SecretStore(inv.state_dir / "secrets.yaml")
    return celery_env(inv, s.get("rabbitmq_app_password").reveal(), s.get("redis_password").reveal())


def publish_tasks(env: dict, n: int, q: mp.Queue) -> None:
    os.environ.update(env)
    from app.tasks import noop
    ids = []
    with noop.app.producer_or_acquire() as producer:
        for _ in range(n):
            ids.append(noop.apply_async(producer=producer).id)
    q.put(ids)


def celery_run(env: dict, n: int, publishers: int) -> tuple[float, float]:
    os.environ.update(env)
    from app.celery import app
    from celery.result import ResultSet
    q: mp.Queue = mp.Queue()
    t0 = time.monotonic()
    procs = [mp.Process(target=publish_tasks, args=(env, n // publishers, q)) for _ in range(publishers)]
    for p in procs:
        p.start()
    ids = [i for _ in procs for i in q.get()]
    for p in procs:
        p.join()
    t_pub = time.monotonic() - t0
    ResultSet([app.AsyncResult(i) for i in ids]).join_native(timeout=600)
    return t_pub, time.monotonic() - t0


def kombu_run(env: dict, n: int) -> tuple[float, float]:
    from kombu import Connection, Exchange, Producer, Queue
    url = env["CELERY_BROKER_URL"]
    queue = Queue("bench-kombu", Exchange("bench-kombu", "direct"), "bench-kombu", durable=True)
    with Connection(url, transport_options={"confirm_publish": True}) as conn:
        queue(conn.default_channel).declare()
        queue(conn.default_channel).purge()
        t0 = time.monotonic()
        producer = Producer(conn.default_channel)
        for i in range(n):
            producer.publish(b"x", exchange=queue.exchange, routing_key="bench-kombu", delivery_mode=2)
        t_pub = time.monotonic() - t0
    got = 0
    with Connection(url) as conn:
        def on(body, message):
            nonlocal got
            got += 1
            message.ack()
        with conn.Consumer(queue, callbacks=[on], prefetch_count=100):
            while got < n:
                conn.drain_events(timeout=30)
    return t_pub, time.monotonic() - t0


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10000
    publishers = int(sys.argv[2]) if len(sys.argv) > 2 else 4
    env = settings()
    t_pub, t_all = celery_run(env, n, publishers)
    print(f"celery: {n} noop tasks, {publishers} publisher processes: published in {t_pub:.1f}s "
          f"({n / t_pub:.0f}/s), all results in {t_all:.1f}s -> {n / t_all:.0f} tasks/s end to end")
    k_pub, k_all = kombu_run(env, n)
    print(f"kombu: {n} persistent confirmed messages, 1 publisher: published in {k_pub:.1f}s "
          f"({n / k_pub:.0f}/s), all consumed in {k_all:.1f}s -> {n / k_all:.0f} msg/s")


if __name__ == "__main__":
    main()
