"""Day-2 operations behind the fab tasks: scale workers, roll back, rolling RabbitMQ
restart, client settings, status. Each reuses the engine and the deploy stages."""
from __future__ import annotations

import os
from pathlib import Path

from .celery_env import celery_env, env_file
from .context import Ctx
from .engine import Change, DeployFailed, Engine, apply_plan, say
from .runner import connect_all, run_locked
from .scale import host_scale, set_scale
from .stages import rabbitmq, release, workers


def scale_workers(inv, instances: int | None, concurrency: int | None, host: str | None) -> Engine:
    targets = [inv.host(host)] if host else list(inv.with_role("worker"))
    for h in targets:
        if not h.has("worker"):
            raise DeployFailed(f"{h.name} has no role worker")
    names = [h.name for h in targets]

    def body(ctx, engine):
        for h in targets:
            before = host_scale(inv, h)
            after = set_scale(inv, h, instances, concurrency)
            say(f"{h.name}: instances {before.instances} -> {after.instances}, "
                f"concurrency {before.concurrency} -> {after.concurrency}")
        workers.run(ctx, engine, only=set(names))

    return run_locked(inv, body, only=names)


def rollback(inv) -> Engine:
    """Every app host back to its previous complete release, rolled like a deploy."""
    hosts = [h.name for h in release.app_hosts(inv)]

    def body(ctx, engine):
        def pick(s, report):
            rel = s.gather([release.releases_fact()])["releases"]
            older = [r for r in rel["complete"] if r != rel["current"]]
            if not older:
                raise DeployFailed("no previous release to roll back to")
            ctx.release[s.name] = older[0]
            say(f"  {s.name}: {rel['current']} -> {older[0]}")
        engine.stage("find previous release", hosts, pick)
        workers.run(ctx, engine)
        _flower_stage().run(ctx, engine)

    return run_locked(inv, body, only=hosts)


def _flower_stage():
    from .stages import flower
    return flower


def rabbitmq_restart(inv) -> Engine:
    """Rolling restart: one node at a time, mirrors in sync first, node drained (clients
    move to the others), restarted, revived, and back in the cluster before the next."""
    hosts = [h.name for h in inv.with_role("rabbitmq")]
    every = {f"rabbit@{h}" for h in hosts}

    def body(ctx, engine):
        def one(s, report):
            plan = [Change(f"rolling restart of rabbit@{s.name}", rabbitmq.restart_node_cmds())]
            apply_plan(s, plan, report, "rabbitmq")
            if not s.dry_run:
                rabbitmq.wait_cluster_running(s, every)
        engine.stage("rabbitmq rolling restart", hosts, one, serial=True)

    return run_locked(inv, body, only=hosts)


def client_env(inv) -> Path:
    """Settings for producers on this machine: <state_dir>/celery.env, mode 0600."""
    ctx = Ctx(inv)
    env = celery_env(inv, ctx.secret("rabbitmq_app_password").reveal(), ctx.secret("redis_password").reveal())
    path = inv.state_dir / "celery.env"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(env_file(env))
    return path


def status(inv) -> str:
    """Hosts and roles, the release each app host runs, worker instances answering ping."""
    sessions = connect_all(inv, False)
    rows = [f"{'host':8} {'address':15} {'roles':28} {'release':14} workers"]
    try:
        for h in inv.hosts:
            s = sessions[h.name]
            rel, pong = "-", "-"
            if any(h.has(r) for r in release.APP_ROLES):
                rel = s.gather([release.releases_fact()])["releases"]["current"] or "none"
            sc = host_scale(inv, h)
            if sc and sc.instances:
                names = workers.node_names(h, sc.instances)
                answered = workers.wait_for_workers(s, inv.celery.app, names, timeout=5)
                pong = f"{len(answered)}/{len(names)} answer ping ({sc.source})"
            rows.append(f"{h.name:8} {h.address:15} {','.join(sorted(h.roles)):28} {rel:14} {pong}")
    finally:
        for s in sessions.values():
            s.close()
    return "\n".join(rows)
