"""The Celery environment every worker and client uses, rendered from inventory + secrets.
No hand-written URLs anywhere: this is the one place broker and backend URLs are made.
The settings themselves live in deploy/client/celery_kit_config.py, which reads these."""
from __future__ import annotations

import ipaddress
import zlib
from pathlib import Path
from urllib.parse import quote

from . import redis_model as RM

CONFIG_MODULE = "celery_kit_config"
CONFIG_SOURCE = Path(__file__).resolve().parent / "client" / f"{CONFIG_MODULE}.py"


def url_host(address: str) -> str:
    """An address as it goes into a URL: IPv6 in brackets."""
    try:
        return f"[{address}]" if ipaddress.ip_address(address).version == 6 else address
    except ValueError:
        return address


def rotated(items: list, start: int) -> list:
    """`items` beginning at `start` (wrapped), so that clients with different starts spread
    their first connections over different hosts."""
    start %= max(1, len(items))
    return items[start:] + items[:start]


def broker_urls(inv, password: str, start: int = 0) -> list[str]:
    """One URL per RabbitMQ node, rotated to begin at node `start`: clients fail over to the
    next when one goes away, and clients with different starts spread over the nodes."""
    r = inv.rabbitmq
    vhost = quote(r.vhost, safe="")
    user = quote(r.app_user, safe="")
    pw = quote(password, safe="")
    return rotated([f"amqp://{user}:{pw}@{url_host(h.address)}:{r.amqp_port}/{vhost}"
                    for h in inv.with_role("rabbitmq")], start)


def broker_start(inv, host=None, client: str | None = None) -> int:
    """Where a client's broker list begins: a RabbitMQ host's own node; other hosts by their
    place in the inventory; a producer by a hash of its name."""
    nodes = [h.name for h in inv.with_role("rabbitmq")]
    if host is not None:
        if host.name in nodes:
            return nodes.index(host.name)
        return list(inv.names()).index(host.name)
    return zlib.crc32((client or "").encode())


def result_backend_url(inv, password: str, start: int = 0) -> str:
    """Celery logs in as the kit's `celery` ACL user (redis_model.py), on Redis and, with
    Sentinel, on the Sentinels too (celery_kit_config passes the URL's login to both)."""
    r = inv.redis
    login = f"{quote(RM.CELERY_USER, safe='')}:{quote(password, safe='')}"
    if inv.sentinel_hosts():
        # Sentinel: the sentinels are asked in turn where the master is (see celery_kit_config),
        # in an order of the client's own, like the broker URLs: with one list for everyone,
        # every client's first question went to the same host, and when that host was gone
        # each new connection waited out a connect timeout there first (lab: results stalled
        # 20-50 s after the master's host stopped).
        return ";".join(f"sentinel://{login}@{url_host(h.address)}:{r.sentinel_port}/{r.db}"
                        for h in rotated(list(inv.sentinel_hosts()), start))
    (host,) = inv.redis_hosts()
    return f"redis://{login}@{url_host(host.address)}:{r.port}/{r.db}"


def celery_env(inv, broker_password: str, redis_password: str, queue_mode: str = "mirrored",
               start: int = 0) -> dict[str, str]:
    c = inv.celery
    env = {
        "CELERY_CONFIG_MODULE": CONFIG_MODULE,
        "CELERY_BROKER_URL": ";".join(broker_urls(inv, broker_password, start)),
        "CELERY_RESULT_BACKEND": result_backend_url(inv, redis_password, start),
        "CELERY_TASK_SERIALIZER": c.serializer,
        "CELERY_RESULT_EXPIRES": str(c.result_expires),
        "CELERY_PREFETCH_MULTIPLIER": str(c.prefetch_multiplier),
        "CELERY_TASK_EVENTS": "1" if c.task_events else "0",
        "CELERY_TIME_LIMIT": str(c.time_limit),
        "CELERY_DEFAULT_QUEUE": c.queues[0],
        "CELERY_QUEUE_TYPE": "quorum" if queue_mode == "quorum" else "classic",
    }
    if c.soft_time_limit:
        env["CELERY_SOFT_TIME_LIMIT"] = str(c.soft_time_limit)
    if inv.sentinel_hosts():
        env["CELERY_REDIS_MASTER"] = inv.redis.master_name
    return env


def env_file(env: dict[str, str], header: str = "Managed by celery-kit. Contains secrets.") -> str:
    """systemd EnvironmentFile and POSIX sh compatible (values single-quoted)."""
    lines = [f"# {header}"]
    for k, v in env.items():
        if "'" in v or "\n" in v:
            raise ValueError(f"{k}: a value with a quote or a line break cannot go into an env file")
        lines.append(f"{k}='{v}'")
    return "\n".join(lines) + "\n"
