"""The order of stages, as data. `fab deploy` runs DEPLOY; day-2 operations run their own
lists, built from the same stages (operate.py)."""
from __future__ import annotations

from . import facts as F
from . import rabbitmq_model as M
from .stage import Stage, StageEnv
from .stages import base, firewall, flower, rabbitmq, redis, release, sentinel, workers
from .steps import Plan


class ClusterInfo(Stage):
    """The cluster's RabbitMQ version and queue mode, for operations that do not run the
    RabbitMQ config stage but render Celery settings (scale-workers, rollback)."""
    name = "rabbitmq version"

    def hosts(self, inv) -> list:
        return list(inv.with_role("rabbitmq")[:1])

    def facts(self, ctx, host) -> list:
        return [F.packages(["rabbitmq-server"])]

    def plan(self, ctx, host, facts: dict, env: StageEnv) -> Plan:
        version = facts["packages"].get("rabbitmq-server")
        return Plan([], output={"version": version, "mode": M.queue_mode(ctx.inv, version)})


def deploy() -> list[Stage]:
    # Firewall right after base (which installs nftables), before any service listens.
    # Workers before Flower: the workers stage marks a flower host whose release it switched.
    # Sentinel right after Redis: it monitors the master the redis stage set up.
    return [base.Base(), firewall.Firewall(), *rabbitmq.STAGES, redis.Redis(), sentinel.Sentinel(),
            release.Release(), workers.Workers(), flower.Flower()]


def rollout(only: set[str] | None = None) -> list[Stage]:
    """Worker settings and units only (scale-workers)."""
    return [ClusterInfo(), workers.Workers(release_from="release", only=only)]


def rollback() -> list[Stage]:
    return [ClusterInfo(), release.Previous(), workers.Workers(release_from="previous release"),
            flower.Flower()]


def rabbitmq_restart() -> list[Stage]:
    return [rabbitmq.RollingRestart()]
