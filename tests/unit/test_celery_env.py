"""The Celery environment the kit renders, and the settings module that reads it."""
from __future__ import annotations

import importlib
import sys

from deploy.celery_env import CONFIG_SOURCE, broker_start, broker_urls, celery_env, env_file, result_backend_url

from kit import inventory

INV = inventory()
SENTINEL = inventory("inventory.sentinel.yaml")


def test_broker_urls_list_every_node_rotated_per_client():
    urls = broker_urls(INV, "p/w")
    assert urls == [f"amqp://celery:p%2Fw@192.0.2.1{i}:5672/%2Fcelery" for i in (1, 2, 3)]
    assert broker_urls(INV, "x", 1)[0].endswith("@192.0.2.12:5672/%2Fcelery")
    assert broker_start(INV, INV.host("node3")) == 2           # a RabbitMQ host: its own node first
    # Producers spread over the nodes by a hash of their name, the same every time.
    assert broker_start(INV, client="ctl") == broker_start(INV, client="ctl")
    assert len({broker_start(INV, client=n) % 3 for n in "abcdef"}) > 1


def test_backend_url_logs_in_as_the_celery_acl_user():
    assert result_backend_url(INV, "x") == "redis://celery:x@192.0.2.11:6379/0"
    url = result_backend_url(SENTINEL, "p")
    assert url.split(";") == [f"sentinel://celery:p@192.0.2.1{i}:26380/0" for i in (1, 2, 3)]
    assert celery_env(SENTINEL, "a", "b")["CELERY_REDIS_MASTER"] == "results"
    # Each client asks the Sentinels in an order of its own, like its broker URLs.
    assert [u[-10:-8] for u in result_backend_url(SENTINEL, "p", 1).split(";")] == ["12", "13", "11"]
    assert [u[-10:-8] for u in celery_env(SENTINEL, "a", "b", start=5)["CELERY_RESULT_BACKEND"].split(";")] == \
        ["13", "11", "12"]
    # Quoted: a secret may hold / + = (secrets.SAFE).
    assert result_backend_url(INV, "a/b+c=") == "redis://celery:a%2Fb%2Bc%3D@192.0.2.11:6379/0"


def test_backend_url_host_is_bracketed_for_ipv6(monkeypatch):
    import dataclasses
    host = dataclasses.replace(INV.host("node1"), address="2001:db8::11")
    inv = dataclasses.replace(INV, hosts=(host, *INV.hosts[1:]))
    assert result_backend_url(inv, "x") == "redis://celery:x@[2001:db8::11]:6379/0"


def test_env_has_the_settings_module_and_queue_type():
    env = celery_env(INV, "a", "b")
    assert env["CELERY_CONFIG_MODULE"] == "celery_kit_config" and env["CELERY_QUEUE_TYPE"] == "classic"
    assert env["CELERY_BROKER_URL"].count(";") == 2 and env["CELERY_TASK_SERIALIZER"] == "msgpack"
    assert celery_env(INV, "a", "b", "quorum")["CELERY_QUEUE_TYPE"] == "quorum"
    assert env_file({"A": "1"}).splitlines()[1:] == ["A='1'"]


def test_env_file_refuses_values_that_would_break_out():
    import pytest
    with pytest.raises(ValueError, match="A: a value with a quote"):
        env_file({"A": "x'; rm -rf /"})


def load_settings(monkeypatch, **env):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.syspath_prepend(str(CONFIG_SOURCE.parent))
    sys.modules.pop("celery_kit_config", None)
    return importlib.import_module("celery_kit_config")


def test_settings_keep_at_least_once_delivery(monkeypatch):
    s = load_settings(monkeypatch, CELERY_BROKER_URL="amqp://a;amqp://b", CELERY_PREFETCH_MULTIPLIER="4")
    assert s.task_acks_late and s.task_reject_on_worker_lost
    assert s.broker_transport_options == {"confirm_publish": True}
    assert s.worker_prefetch_multiplier == 4 and s.broker_url == "amqp://a;amqp://b"
    assert s.worker_cancel_long_running_tasks_on_connection_loss and s.worker_deduplicate_successful_tasks


def test_results_are_json_so_any_client_reads_them(monkeypatch):
    s = load_settings(monkeypatch)
    assert s.task_serializer == "msgpack" and s.result_serializer == "json"
    assert "json" in s.accept_content and "json" in s.result_accept_content


def test_result_writes_retry_bounded(monkeypatch):
    s = load_settings(monkeypatch)
    assert s.result_backend_always_retry and 0 < s.result_backend_max_retries < 100
    assert s.redis_retry_on_timeout and s.redis_backend_health_check_interval


def test_quorum_settings_and_sentinel_options(monkeypatch):
    s = load_settings(monkeypatch, CELERY_QUEUE_TYPE="quorum", CELERY_REDIS_MASTER="results",
                      CELERY_RESULT_BACKEND="sentinel://celery:pw%2F1@h1:26379/0;sentinel://celery:pw%2F1@h2:26379/0")
    assert s.task_default_queue_type == "quorum" and s.task_default_exchange_type == "topic"
    assert s.result_backend_transport_options["master_name"] == "results"
    # The Sentinels know the same login (and disable `default`): user and password both.
    kwargs = s.result_backend_transport_options["sentinel_kwargs"]
    assert (kwargs["username"], kwargs["password"]) == ("celery", "pw/1")


def test_sentinel_settings_from_the_rendered_env(monkeypatch):
    env = celery_env(SENTINEL, "a", "redis/pw+1")
    s = load_settings(monkeypatch, **{k: v for k, v in env.items() if k.startswith("CELERY_RE")})
    opts = s.result_backend_transport_options
    assert opts["master_name"] == "results"
    assert (opts["sentinel_kwargs"]["username"], opts["sentinel_kwargs"]["password"]) == ("celery", "redis/pw+1")


def test_a_celery_app_picks_the_settings_up(monkeypatch):
    load_settings(monkeypatch, CELERY_CONFIG_MODULE="celery_kit_config", CELERY_QUEUE_TYPE="quorum")
    from celery import Celery
    app = Celery("x")
    app.config_from_object("celery_kit_config")
    assert app.conf.task_default_queue_type == "quorum" and app.conf.result_serializer == "json"


def test_quorum_workers_set_delayed_delivery_up_through_the_node_they_are_connected_to(monkeypatch):
    """Celery's own step declares through every broker URL and waits on each node that is down;
    the kit's declares once, through a clone of the consumer's connection."""
    s = load_settings(monkeypatch, CELERY_QUEUE_TYPE="quorum",
                      CELERY_BROKER_URL="amqp://u:p@10.0.0.1//v;amqp://u:p@10.0.0.2//v")
    assert s.worker_consumer == "celery_kit_config:KitConsumer"
    from celery import Celery
    from kombu.utils.imports import symbol_by_name
    consumer = symbol_by_name(s.worker_consumer)
    step = next(st for st in consumer.Blueprint.default_steps if not isinstance(st, str))
    assert [x for x in consumer.Blueprint.default_steps if isinstance(x, str) and "DelayedDelivery" in x] == []
    app = Celery("x")
    app.config_from_object("celery_kit_config")
    seen = []

    class Conn:
        def __init__(self, name): self.name = name
        def clone(self): return Conn("clone")
        def as_uri(self): return self.name
        def __enter__(self): return self
        def __exit__(self, *a): seen.append(("closed", self.name))

    import celery_kit_config
    monkeypatch.setattr("kombu.transport.native_delayed_delivery.declare_native_delayed_delivery_exchanges_and_queues",
                        lambda conn, qtype: seen.append(("declare", conn.name, qtype)))
    monkeypatch.setattr(step, "_bind_queues", lambda self, app, conn: seen.append(("bind", conn.name)))
    consumer_stub = type("C", (), {"app": app, "connection": Conn("consumer")})()
    step.start(object.__new__(step), consumer_stub)
    assert seen == [("declare", "clone", "quorum"), ("bind", "clone"), ("closed", "clone")]
    assert celery_kit_config._kit_consumer() is consumer           # built once


def test_every_worker_runs_the_kits_consumer(monkeypatch):
    """On mirrored queues too: its event batching is not about queue types. Its delayed
    delivery step is only included where Celery's would be (quorum queues)."""
    s = load_settings(monkeypatch, CELERY_QUEUE_TYPE="classic")
    assert s.worker_consumer == "celery_kit_config:KitConsumer"
    from celery.worker.consumer.delayed_delivery import DelayedDelivery
    from kombu.utils.imports import symbol_by_name
    step = next(st for st in symbol_by_name(s.worker_consumer).Blueprint.default_steps if not isinstance(st, str))
    assert issubclass(step, DelayedDelivery) and step.include_if is DelayedDelivery.include_if


def kit_consumer(monkeypatch, **env):
    s = load_settings(monkeypatch, **env)
    from kombu.utils.imports import symbol_by_name
    return s, object.__new__(symbol_by_name(s.worker_consumer))


def test_task_events_connection_publishes_without_confirms(monkeypatch):
    """Events are transient monitoring data: a confirm per flush only made the worker wait."""
    s, c = kit_consumer(monkeypatch)
    assert s.broker_transport_options == {"confirm_publish": True}     # tasks keep theirs
    asked = []
    c.app = type("App", (), {"connection_for_write": lambda self, **kw: asked.append(kw) or "conn"})()
    c.ensure_connected = lambda conn: ("ensured", conn)
    assert c.connection_for_write(heartbeat=30) == ("ensured", "conn")
    assert asked == [{"url": None, "heartbeat": 30, "transport_options": {"confirm_publish": False}}]


class Hub:
    def __init__(self):
        self.timers = []

    def call_later(self, delay, fn):
        self.timers.append((delay, fn))


def test_task_events_are_flushed_in_batches_not_at_every_loop_turn(monkeypatch):
    s, c = kit_consumer(monkeypatch)
    c.hub, flushed = Hub(), []
    c._flush_events = lambda: flushed.append(1)
    for _ in range(5):                      # five events buffered: one timer
        c.on_send_event_buffered()
    assert [d for d, _ in c.hub.timers] == [s.EVENT_FLUSH_SECONDS] and flushed == []
    c.hub.timers.pop()[1]()                 # the timer fires: one flush, and the next event arms anew
    assert flushed == [1]
    c.on_send_event_buffered()
    assert [d for d, _ in c.hub.timers] == [s.EVENT_FLUSH_SECONDS] and s.EVENT_FLUSH_SECONDS <= 1


def test_waiting_task_events_leave_before_the_consumer_shuts_down(monkeypatch):
    from celery.worker.consumer import Consumer
    s, c = kit_consumer(monkeypatch)
    order = []
    c._flush_events = lambda: order.append("flush")
    monkeypatch.setattr(Consumer, "shutdown", lambda self: order.append("shutdown"))
    c.shutdown()
    assert order == ["flush", "shutdown"]
    c._flush_events = lambda: (_ for _ in ()).throw(ConnectionError("broker gone"))
    order.clear()
    c.shutdown()                            # a failed flush never stops the shutdown
    assert order == ["shutdown"]
