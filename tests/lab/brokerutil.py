"""Real AMQP and management-API clients for the lab tests (kombu/py-amqp, urllib)."""
from __future__ import annotations

import base64
import json
import threading
import time
import urllib.parse
import urllib.request

from kombu import Connection, Exchange, Producer, Queue


def api(inv, secrets, path: str, address: str | None = None):
    address = address or inv.with_role("rabbitmq")[0].address
    req = urllib.request.Request(f"http://{address}:{inv.rabbitmq.management_port}/api{path}")
    token = base64.b64encode(f"{inv.rabbitmq.admin_user}:{secrets['rabbitmq_admin_password']}".encode())
    req.add_header("Authorization", "Basic " + token.decode())
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.load(r)


def queue_info(inv, secrets, name: str, address: str | None = None) -> dict:
    vh = urllib.parse.quote(inv.rabbitmq.vhost, safe="")
    return api(inv, secrets, f"/queues/{vh}/{urllib.parse.quote(name, safe='')}", address)


def wait_for(predicate, timeout: float, what: str, interval: float = 0.25):
    """Poll predicate() until it returns something truthy (readiness, not a fixed sleep)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
            if last:
                return last
        except Exception as exc:       # not ready yet (connection refused, 404...)
            last = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


def connection(urls: list[str] | str) -> Connection:
    url = ";".join(urls) if isinstance(urls, list) else urls
    return Connection(url, failover_strategy="round-robin", connect_timeout=5,
                      transport_options={"confirm_publish": True})


def declare(urls, name: str, arguments: dict | None = None) -> Queue:
    q = Queue(name, Exchange(name, type="direct"), routing_key=name, durable=True,
              queue_arguments=arguments or {})
    with connection(urls) as conn:
        q(conn.default_channel).declare()
    return q


def publish(urls, queue: Queue, bodies: list[str]) -> None:
    """Persistent messages, each confirmed by the broker before the next."""
    with connection(urls) as conn:
        producer = Producer(conn.default_channel)
        for body in bodies:
            producer.publish(body, exchange=queue.exchange, routing_key=queue.routing_key,
                             delivery_mode=2, serializer="json")


def consume_all(urls, queue: Queue, expected: int, timeout: float) -> set[str]:
    got: set[str] = set()
    deadline = time.monotonic() + timeout
    while len(got) < expected and time.monotonic() < deadline:
        try:
            with connection(urls) as conn:
                simple = conn.SimpleQueue(queue)
                while len(got) < expected and time.monotonic() < deadline:
                    msg = simple.get(block=True, timeout=2)
                    got.add(msg.payload)
                    msg.ack()
        except Exception:          # queue empty for 2s, or a failover: go round again
            continue
    return got


class PubSubPair(threading.Thread):
    """A publisher and a consumer that keep working through broker restarts."""

    def __init__(self, urls, queue: Queue):
        super().__init__(daemon=True)
        self.urls, self.queue = urls, queue
        self.stop = threading.Event()
        self.published: list[str] = []
        self.published_at: list[float] = []
        self.consumed: set[str] = set()
        self.errors = 0
        self._consumer = threading.Thread(target=self._consume, daemon=True)

    def run(self):
        self._consumer.start()
        n = 0
        while not self.stop.is_set():
            try:
                with connection(self.urls) as conn:
                    producer = Producer(conn.default_channel)
                    while not self.stop.is_set():
                        body = f"m{n}"
                        producer.publish(body, exchange=self.queue.exchange,
                                         routing_key=self.queue.routing_key, delivery_mode=2,
                                         serializer="json")
                        self.published.append(body)            # confirmed by now
                        self.published_at.append(time.monotonic())
                        n += 1
                        time.sleep(0.02)                       # a steady trickle, not a flood
            except Exception:
                self.errors += 1
                time.sleep(0.2)

    def _consume(self):
        while not (self.stop.is_set() and set(self.published) <= self.consumed):
            try:
                with connection(self.urls) as conn:
                    simple = conn.SimpleQueue(self.queue)
                    while True:
                        msg = simple.get(block=True, timeout=1)
                        self.consumed.add(msg.payload)
                        msg.ack()
            except Exception:
                if self.stop.is_set() and set(self.published) <= self.consumed:
                    return
                time.sleep(0.1)

    def finish(self, timeout: float = 60) -> None:
        self.stop.set()
        self.join(timeout)
        self._consumer.join(timeout)

    def max_gap(self) -> float:
        t = self.published_at
        return max((b - a for a, b in zip(t, t[1:])), default=0.0)
