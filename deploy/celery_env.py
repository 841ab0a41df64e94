"""The Celery settings every worker and client uses, rendered from inventory + secrets.
No hand-written URLs anywhere: this is the one place broker and backend URLs are made."""
from __future__ import annotations

import ipaddress
from urllib.parse import quote


def url_host(address: str) -> str:
    """An address as it goes into a URL: IPv6 in brackets."""
    try:
        return f"[{address}]" if ipaddress.ip_address(address).version == 6 else address
    except ValueError:
        return address


def broker_urls(inv, password: str) -> list[str]:
    """One URL per RabbitMQ node, so clients fail over when one goes away."""
    r = inv.rabbitmq
    vhost = quote(r.vhost, safe="")
    user = quote(r.app_user, safe="")
    pw = quote(password, safe="")
    return [f"amqp://{user}:{pw}@{url_host(h.address)}:{r.amqp_port}/{vhost}" for h in inv.with_role("rabbitmq")]


def result_backend_url(inv, password: str) -> str:
    (host,) = inv.with_role("redis")
    return f"redis://:{quote(password, safe='')}@{url_host(host.address)}:{inv.redis.port}/{inv.redis.db}"


def celery_env(inv, broker_password: str, redis_password: str) -> dict[str, str]:
    c = inv.celery
    env = {
        "CELERY_BROKER_URL": ";".join(broker_urls(inv, broker_password)),
        "CELERY_RESULT_BACKEND": result_backend_url(inv, redis_password),
        "CELERY_SERIALIZER": c.serializer,
        "CELERY_RESULT_EXPIRES": str(c.result_expires),
        "CELERY_PREFETCH_MULTIPLIER": str(c.prefetch_multiplier),
        "CELERY_TIME_LIMIT": str(c.time_limit),
        "CELERY_DEFAULT_QUEUE": c.queues[0],
        "CELERY_QUEUE_TYPE": "quorum" if inv.rabbitmq.queue_mode == "quorum" else "classic",
    }
    if c.soft_time_limit:
        env["CELERY_SOFT_TIME_LIMIT"] = str(c.soft_time_limit)
    return env


def env_file(env: dict[str, str], group: str = "celery") -> str:
    """systemd EnvironmentFile and POSIX sh compatible (values single-quoted)."""
    lines = [f"# Managed by celery-kit. Contains secrets: mode 0640, root:{group}."]
    for k, v in env.items():
        lines.append(f"{k}='{v}'")
    return "\n".join(lines) + "\n"
