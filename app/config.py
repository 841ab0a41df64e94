"""Celery settings from the environment.

On the hosts the kit renders /etc/celery-kit/celery.env; on a control machine,
`fab client-env` writes the same variables to .state/celery.env. Producers that do not
have this package use `settings()` semantics from their own copy of these variables.
"""
from __future__ import annotations

import os


def _int(env, key, default):
    return int(env.get(key, default))


def from_env(env=None) -> dict:
    env = os.environ if env is None else env
    serializer = env.get("CELERY_SERIALIZER", "msgpack")
    quorum = env.get("CELERY_QUEUE_TYPE", "classic") == "quorum"
    conf = {
        # Every RabbitMQ node, so a producer or worker fails over when one goes away.
        "broker_url": env.get("CELERY_BROKER_URL", "amqp://guest@localhost//"),
        "result_backend": env.get("CELERY_RESULT_BACKEND", "redis://localhost:6379/0"),
        "task_serializer": serializer,
        "result_serializer": serializer,
        "accept_content": ["msgpack", "json"],
        "result_accept_content": ["msgpack", "json"],
        "result_expires": _int(env, "CELERY_RESULT_EXPIRES", 86400),
        "result_extended": True,
        # At-least-once: ack after the task ran; a worker that dies mid-task gives it back.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": _int(env, "CELERY_PREFETCH_MULTIPLIER", 1),
        "broker_transport_options": {"confirm_publish": True},
        "broker_heartbeat": _int(env, "CELERY_BROKER_HEARTBEAT", 30),
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,
        "task_default_queue": env.get("CELERY_DEFAULT_QUEUE", "celery"),
        "task_time_limit": _int(env, "CELERY_TIME_LIMIT", 1800),
        # Events for Flower.
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "timezone": "UTC",
    }
    if env.get("CELERY_SOFT_TIME_LIMIT"):
        conf["task_soft_time_limit"] = int(env["CELERY_SOFT_TIME_LIMIT"])
    if quorum:
        conf["task_default_queue_type"] = "quorum"
        conf["task_default_exchange_type"] = "direct"
    return conf
