"""One way to run stages against the inventory's hosts: connect (host keys checked), take the
deploy lock, let the engine run the stages, release the lock, report. Used by `fab deploy`
and by every day-2 operation that changes hosts.

Ctrl-C is taken between steps: the first one lets the step in progress finish (a remote
command is never cut off half-way), stops, releases the lock and says what state each host
is in; a second one aborts at once and leaves the lock (remote commands may still run).
"""
from __future__ import annotations

import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from . import lock, report
from .context import Ctx
from .engine import Engine, stages_of
from .hostkeys import KnownHosts
from .progress import Progress
from .transport import Session, Timeouts


class Unreachable(RuntimeError):
    pass


@dataclass(frozen=True)
class Options:
    dry_run: bool = False
    hosts: tuple[str, ...] | None = None     # fab -H: limit the run to these inventory hosts
    timeouts: Timeouts = field(default_factory=Timeouts)
    key: Path | None = None                  # fab -i: one SSH key for every host


def known_hosts(inv) -> KnownHosts:
    return KnownHosts(inv.known_hosts_path, inv.ssh.host_key_policy)


def select(inv, opts: Options, only: list[str] | None = None) -> list:
    hosts = [h for h in inv.hosts if only is None or h.name in only]
    if opts.hosts:
        unknown = sorted(set(opts.hosts) - set(inv.names()))
        if unknown:
            raise KeyError(f"-H: no host named {', '.join(unknown)} in {inv.path}; "
                           f"hosts are {', '.join(inv.names())}")
        hosts = [h for h in hosts if h.name in opts.hosts]
    return hosts


def connect_all(inv, opts: Options = Options(), only: list[str] | None = None) -> dict[str, Session]:
    command = max(opts.timeouts.command, 2 * inv.celery.stop_timeout + 300)
    timeouts = Timeouts(opts.timeouts.connect, command)
    keys = known_hosts(inv)
    sessions = {h.name: Session(h, keys, timeouts, opts.key) for h in select(inv, opts, only)}

    def connect(s: Session):
        try:
            s.connection()
            return None
        except Exception as exc:
            return f"{s.where()}: {exc}"

    with ThreadPoolExecutor(max_workers=max(1, len(sessions))) as pool:
        errors = [e for e in pool.map(connect, sessions.values()) if e]
    if errors:
        close_all(sessions)
        raise Unreachable("cannot reach:\n  " + "\n  ".join(errors))
    return sessions


def gather_all(inv, facts_for, opts: Options = Options()) -> dict[str, dict | None]:
    """Read-only: each host's facts (facts_for(host)) in one round trip, in parallel. A host
    that cannot be reached or read gives None instead of stopping the others."""
    keys = known_hosts(inv)
    sessions = {h.name: Session(h, keys, opts.timeouts, opts.key) for h in select(inv, opts)}

    def one(s: Session):
        try:
            return s.name, s.gather(facts_for(s.host))
        except Exception:
            return s.name, None

    try:
        with ThreadPoolExecutor(max_workers=max(1, len(sessions))) as pool:
            return dict(pool.map(one, sessions.values()))
    finally:
        close_all(sessions)


def close_all(sessions: dict[str, Session]) -> None:
    for s in sessions.values():
        s.close()


def run(inv, stages, opts: Options = Options(), only: list[str] | None = None,
        progress: Progress | None = None) -> Engine:
    """Connect, lock (not for a dry run), run the stages, unlock, disconnect, report."""
    t0 = time.monotonic()
    progress = progress or Progress()
    sessions = connect_all(inv, opts, only)
    engine = Engine(Ctx(inv), sessions, opts.dry_run, progress)
    owner = lock.Owner.me()
    aborted = False
    restore = _on_interrupt(engine)
    try:
        if not opts.dry_run:
            # The lock travels in the first round trip, ahead of every stage's facts.
            taken = engine.prefetch(stages_of(stages), {n: [lock.acquire_fact(owner)] for n in sessions})
            lock.check_taken(list(sessions.values()), owner, taken)
        try:
            engine.run(stages)
        except KeyboardInterrupt:
            aborted = True
            raise
        finally:
            if not opts.dry_run and not aborted:
                lock.release_all(list(sessions.values()), owner)
            elif aborted:
                progress.say("aborted: the deploy lock stays on the hosts (commands may still run "
                             "there); check, then `fab unlock`")
    finally:
        restore()
        close_all(sessions)
        progress.close()
    engine.elapsed = time.monotonic() - t0
    progress.say("\nDRY RUN: nothing was changed." if opts.dry_run else "")
    progress.console.print(report.summary(engine))
    text = report.details(engine)
    if text:
        progress.say(text)
    progress.say(report.timings(engine))
    progress.say(f"{'planned' if opts.dry_run else 'done'} in {engine.elapsed:.1f}s, SSH round trips: " +
                 ", ".join(f"{n} {s.round_trips}" for n, s in sessions.items()))
    return engine


def _on_interrupt(engine: Engine):
    """First Ctrl-C: stop between steps. Second: the default (KeyboardInterrupt)."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum, frame):
        if engine.interrupt.is_set():
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt
        engine.interrupt.set()
        engine.say("\nCtrl-C: stopping after the step in progress (Ctrl-C again to abort now)")

    signal.signal(signal.SIGINT, handler)
    return lambda: signal.signal(signal.SIGINT, previous)
