"""Celery settings of a celery-kit cluster, read from the environment.

Shipped by the kit: installed into every release's venv on the hosts (the workers, beat and
Flower load it through CELERY_CONFIG_MODULE=celery_kit_config, set in their environment file)
and written next to the producer environment by `fab client-env`. It holds no secret: the
URLs come from the environment (/etc/celery-kit/celery.env on the hosts).

An app that configures itself should start from these settings:
    app.config_from_object("celery_kit_config")
A Celery() app that sets no config at all picks them up by itself (CELERY_CONFIG_MODULE).

Why each group is set is said next to it; the kit's README has the measured effects.
"""
import functools
import os
from urllib.parse import unquote, urlsplit

_env = os.environ


def _int(key, default):
    return int(_env.get(key, default))


# Where. Every RabbitMQ node, in an order of this client's own (the kit rotates the list
# per host), so one node going away never takes every client with it.
broker_url = _env.get("CELERY_BROKER_URL", "amqp://guest@localhost//")
result_backend = _env.get("CELERY_RESULT_BACKEND", "redis://localhost:6379/0")
broker_failover_strategy = "round-robin"

# What travels. Tasks in msgpack (every message carries its content type). Results in JSON:
# Redis stores no content type, so a result is read back with the reader's own
# result_serializer, and JSON is what a stock Celery client (or another language) reads.
task_serializer = _env.get("CELERY_TASK_SERIALIZER", "msgpack")
result_serializer = "json"
accept_content = ["msgpack", "json"]
result_accept_content = ["json", "msgpack"]
result_expires = _int("CELERY_RESULT_EXPIRES", 86400)
result_extended = True
timezone = "UTC"

# At-least-once delivery: a task is acknowledged after it ran; a worker process that dies
# mid-task gives it back; the broker confirms every publish; queues are replicated.
task_acks_late = True
task_reject_on_worker_lost = True
broker_transport_options = {"confirm_publish": True}
worker_prefetch_multiplier = _int("CELERY_PREFETCH_MULTIPLIER", 1)
broker_heartbeat = _int("CELERY_BROKER_HEARTBEAT", 30)
broker_connection_retry_on_startup = True
broker_connection_max_retries = None
# When the broker connection breaks, a late-acked task's ack can no longer reach RabbitMQ,
# which redelivers it: stop the running copy (it would run twice at once) ...
worker_cancel_long_running_tasks_on_connection_loss = True
# ... and skip a redelivered task whose SUCCESS is already stored.
worker_deduplicate_successful_tasks = True

task_default_queue = _env.get("CELERY_DEFAULT_QUEUE", "celery")
task_time_limit = _int("CELERY_TIME_LIMIT", 1800)
if _env.get("CELERY_SOFT_TIME_LIMIT"):
    task_soft_time_limit = _int("CELERY_SOFT_TIME_LIMIT", 0)

if _env.get("CELERY_QUEUE_TYPE") == "quorum":
    task_default_queue_type = "quorum"
    # Celery's native delayed delivery (ETA/countdown on quorum queues) routes through topic
    # exchanges; with a direct exchange the worker would hold ETA tasks in its prefetch. The
    # topic exchange has a name of its own: a stock Celery client declares "celery" as a
    # direct exchange, and both then route into the same queue.
    task_default_exchange_type = "topic"
    task_default_exchange = task_default_queue + ".topic"

# Workers run the kit's consumer (below): cheaper task events, and delayed delivery set up
# through one node on quorum queues.
worker_consumer = "celery_kit_config:KitConsumer"

# Results survive a Redis restart or failover: a pooled connection that Redis reset is
# retried at once (retry_on_timeout), a dead one is found by a health check, and a store
# that still fails is retried with backoff, bounded, so a worker never blocks forever.
result_backend_always_retry = True
result_backend_max_retries = 30
result_backend_base_sleep_between_retries_ms = 100
result_backend_max_sleep_between_retries_ms = 3000
redis_retry_on_timeout = True
# Short timeouts, for a LAN: a master whose host is gone answers nothing (no reset), and each
# attempt waits them out before the retry that finds the promoted replica.
redis_socket_timeout = 5
redis_socket_connect_timeout = 2
redis_socket_keepalive = True
redis_backend_health_check_interval = 25

if result_backend.startswith("sentinel://"):
    # The URL's login (user and password) is the client's ACL user on Redis; the kit gives the
    # same user, with discovery rights only, to the Sentinels, which are asked with
    # sentinel_kwargs. Without the user name there, redis-py would log in to Sentinel as
    # `default`, which the kit disables: every discovery would fail.
    _url = urlsplit(result_backend.split(";")[0])
    result_backend_transport_options = {
        "master_name": _env.get("CELERY_REDIS_MASTER", "celery-kit"),
        "sentinel_kwargs": {"username": unquote(_url.username or "") or None,
                            "password": unquote(_url.password or "") or None,
                            "socket_timeout": 2, "socket_connect_timeout": 1},
    }

# Task events, for Flower's task list (inventory celery.task_events). Producers send no
# "task-sent" event: Flower lists a task from the worker's "received", and the extra event
# cost every publish a second message (measured: publishing 20 % slower).
worker_send_task_events = _env.get("CELERY_TASK_EVENTS", "1") == "1"
task_send_sent_event = False


# The worker's consumer: Celery's, with three changes, each measured (README, per-task CPU).
# 1. Task events leave in batches. Celery buffers them but flushes at the next turn of the
#    event loop, so nearly every event was a broker message of its own (three per task). The
#    kit flushes at most every EVENT_FLUSH_SECONDS, or when 24 are waiting, as Celery does.
# 2. Events are published without confirms: they are transient monitoring data, and a confirm
#    made the worker's main loop wait a broker round trip per flush. Tasks keep theirs
#    (producers publish them; the worker's connection for events carries nothing else).
# 3. On quorum queues, Celery's native delayed delivery step declares its exchanges and queues
#    through every broker URL in turn, retrying one that refuses for ~4 s, before the worker
#    takes tasks again; with one node of the cluster down (a rolling restart, a dead host)
#    every reconnecting worker stood still that long, per node down (measured: a 6.5 s gap in
#    completions during `fab rabbitmq.restart`). A cluster shares its exchanges and queues,
#    so the kit's step declares them once, through the node the worker is connected to.
# Built on first use (PEP 562), so loading these settings never imports the worker.
EVENT_FLUSH_SECONDS = 0.25


def __getattr__(name):
    if name == "KitConsumer":
        return _kit_consumer()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@functools.cache
def _kit_consumer():
    import logging

    from celery.worker.consumer import Consumer
    from celery.worker.consumer.delayed_delivery import DelayedDelivery
    from kombu.transport import native_delayed_delivery

    log = logging.getLogger("celery_kit_config")

    class ClusterDelayedDelivery(DelayedDelivery):
        name = "celery_kit_config.ClusterDelayedDelivery"

        def start(self, c):
            self._validate_configuration(c.app)
            try:
                # A clone starts at the node the consumer is connected to; closing it closes
                # the channels the declarations opened.
                with c.connection.clone() as conn:
                    native_delayed_delivery.declare_native_delayed_delivery_exchanges_and_queues(
                        conn, c.app.conf.broker_native_delayed_delivery_queue_type)
                    self._bind_queues(c.app, conn)
            except Exception as exc:  # the next consumer start tries again, as Celery's does
                log.warning("delayed delivery not set up through %s: %s", c.connection.as_uri(), exc)

    steps = [ClusterDelayedDelivery if s.endswith(":DelayedDelivery") else s
             for s in Consumer.Blueprint.default_steps]

    class KitConsumer(Consumer):
        _event_flush_due = False

        class Blueprint(Consumer.Blueprint):
            default_steps = steps

        def connection_for_write(self, url=None, heartbeat=None):
            # Celery's one caller here is the Events step: the events' own connection.
            return self.ensure_connected(self.app.connection_for_write(
                url=url, heartbeat=heartbeat, transport_options={"confirm_publish": False}))

        def on_send_event_buffered(self):
            if self.hub and not self._event_flush_due:
                self._event_flush_due = True
                self.hub.call_later(EVENT_FLUSH_SECONDS, self._flush_events_due)

        def _flush_events_due(self):
            self._event_flush_due = False
            self._flush_events()

        def shutdown(self):
            # Events still waiting for their flush leave before the connection closes.
            try:
                self._flush_events()
            except Exception as exc:
                log.warning("task events not flushed at shutdown: %s", exc)
            super().shutdown()

    return KitConsumer
