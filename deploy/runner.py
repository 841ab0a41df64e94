"""`fab deploy`: connect, lock, run the stages in order, report per host."""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from . import lock
from .context import Ctx
from .engine import Engine, say
from .stages import base, flower, rabbitmq, redis, release, workers
from .transport import Session

# workers before flower: it marks a flower host whose release was switched.
STAGES = [base, rabbitmq, redis, release, workers, flower]


class Unreachable(RuntimeError):
    pass


def connect_all(inv, dry_run: bool, only: list[str] | None = None) -> dict[str, Session]:
    timeout = max(3600, 2 * inv.celery.stop_timeout + 300)
    sessions = {h.name: Session(h, dry_run, command_timeout=timeout)
                for h in inv.hosts if only is None or h.name in only}

    def connect(s: Session):
        try:
            s.connection()
            return None
        except Exception as exc:
            return f"{s.name} ({s.host.ssh.user}@{s.host.address}:{s.host.ssh.port}): {exc}"

    with ThreadPoolExecutor(max_workers=len(sessions)) as pool:
        errors = [e for e in pool.map(connect, sessions.values()) if e]
    if errors:
        for s in sessions.values():
            s.close()
        raise Unreachable("cannot reach:\n  " + "\n  ".join(errors))
    return sessions


def run_locked(inv, body, dry_run: bool = False, only: list[str] | None = None) -> Engine:
    """Connect, take the deploy lock (not for a dry run), run body(ctx, engine), release,
    disconnect, print the per-host summary. body runs only with the lock held, so nothing
    is done or recorded for an operation the lock refused."""
    t0 = time.monotonic()
    ctx = Ctx(inv, dry_run)
    sessions = connect_all(inv, dry_run, only)
    engine = Engine(sessions, dry_run)
    try:
        if not dry_run:
            lock.acquire_all(list(sessions.values()), lock.owner_line())
        try:
            body(ctx, engine)
        finally:
            if not dry_run:
                lock.release_all(list(sessions.values()))
    finally:
        for s in sessions.values():
            s.close()
    engine.elapsed = time.monotonic() - t0
    say(("\nDRY RUN: nothing was changed.\n" if dry_run else "\n") + engine.summary())
    say(f"{'planned' if dry_run else 'done'} in {engine.elapsed:.1f}s, SSH round trips: " +
        ", ".join(f"{n} {s.round_trips}" for n, s in sessions.items()))
    return engine


def deploy(inv, dry_run: bool = False, stages=None) -> Engine:
    def body(ctx, engine):
        for stage in stages or STAGES:
            stage.run(ctx, engine)
            if engine.failed:
                break
    return run_locked(inv, body, dry_run)
