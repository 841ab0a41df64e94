"""Day-2 operations behind the fab tasks: deploy, scale workers, roll back, rolling RabbitMQ
restart, client settings. Each is a list of stages run by runner.run (pipeline.py)."""
from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

from . import pipeline, runner
from .celery_env import CONFIG_SOURCE, broker_start, celery_env, env_file
from .context import Ctx
from .engine import Engine
from .errors import DeployFailed
from .progress import Progress
from .scale import host_scale, set_scale


def deploy(inv, opts: runner.Options = runner.Options()) -> Engine:
    return runner.run(inv, pipeline.deploy(), opts)


def scale_workers(inv, instances: int | None, concurrency: int | None, host: str | None,
                  opts: runner.Options = runner.Options()) -> Engine:
    targets = [inv.host(host)] if host else list(inv.with_role("worker"))
    for h in targets:
        if not h.has("worker"):
            raise DeployFailed(f"{h.name} has no role worker")
    names = [h.name for h in targets]
    progress = Progress()
    if not opts.dry_run:
        for h in targets:
            before = host_scale(inv, h)
            after = set_scale(inv, h, instances, concurrency)
            progress.say(f"{h.name}: instances {before.instances} -> {after.instances}, "
                         f"concurrency {before.concurrency} -> {after.concurrency}")
    seed = inv.with_role("rabbitmq")[0].name
    return runner.run(inv, pipeline.rollout(set(names)), opts, only=sorted(set(names) | {seed}),
                      progress=progress)


def rollback(inv, opts: runner.Options = runner.Options()) -> Engine:
    """Every app host back to its previous complete release, rolled like a deploy."""
    return runner.run(inv, pipeline.rollback(), opts)


def rabbitmq_restart(inv, opts: runner.Options = runner.Options()) -> Engine:
    """Rolling restart: one node at a time, replicas in sync first, node drained (clients move
    to the others), restarted, revived, and back in the cluster before the next."""
    return runner.run(inv, pipeline.rabbitmq_restart(), opts)


def client_env(inv, out_dir: Path | None = None, opts: runner.Options = runner.Options()) -> Path:
    """Settings for a producer: <state_dir>/client/celery.env (secrets, 0600) and the kit's
    settings module celery_kit_config.py next to it. The queue mode is read off the cluster."""
    out = out_dir or inv.state_dir / "client"
    sessions = runner.connect_all(inv, opts, only=[inv.with_role("rabbitmq")[0].name])
    try:
        engine = Engine(Ctx(inv), sessions, progress=Progress())
        engine.progress.live_mode = False
        stage = pipeline.ClusterInfo()
        facts = {h.name: engine._gather(h, stage) for h in stage.hosts(inv)}
        (info,) = [stage.plan(engine.ctx, h, facts[h.name], None).output for h in stage.hosts(inv)]
    finally:
        runner.close_all(sessions)
    ctx = Ctx(inv)
    env = celery_env(inv, ctx.secret("rabbitmq_app_password").reveal(), ctx.secret("redis_password").reveal(),
                     info["mode"], broker_start(inv, client=socket.gethostname()))
    # The settings module is found through PYTHONPATH once the file is sourced.
    env["PYTHONPATH"] = str(out.resolve())
    out.mkdir(parents=True, exist_ok=True)
    os.chmod(out, 0o700)
    path = out / "celery.env"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(env_file(env, "Written by `fab client-env`. Contains secrets: keep it mode 0600, "
                              "readable by the producer's user only."))
    shutil.copyfile(CONFIG_SOURCE, out / CONFIG_SOURCE.name)
    return path
