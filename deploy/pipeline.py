"""The order of stages, as data. `fab deploy` runs DEPLOY; day-2 operations run their own
lists, built from the same stages (operate.py)."""
from __future__ import annotations

from . import facts as F
from . import rabbitmq_model as M
from .stage import Parallel, Stage, StageEnv
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


def deploy() -> list:
    """Firewall right after base (which installs nftables), before any service listens.
    RabbitMQ, Redis (+ Sentinel, which monitors the master the redis stage set up) and the
    release depend on nothing in each other: they run side by side. The workers need all
    three; they come before Flower, which the workers stage marks when it switched a release
    on the flower host."""
    return [base.Base(), firewall.Firewall(),
            Parallel(rabbitmq.STAGES, [redis.Redis(), sentinel.Sentinel()], [release.Release()]),
            workers.Workers(), flower.Flower()]


def rollout(only: set[str] | None = None) -> list[Stage]:
    """Worker settings and units only (scale-workers)."""
    return [ClusterInfo(), workers.Workers(release_from="release", only=only)]


def rollback() -> list[Stage]:
    return [ClusterInfo(), release.Previous(), workers.Workers(release_from="previous release"),
            flower.Flower()]


def rabbitmq_restart() -> list[Stage]:
    return [rabbitmq.RollingRestart()]
