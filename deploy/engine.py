"""The deploy engine: plans, applying them, and stages across hosts.

A stage function reads facts, decides what the host needs and returns a plan: a list of
Changes. An empty plan means "unchanged". The engine applies plans (or only prints them in
dry-run), runs a stage on all its hosts in parallel (or serially for order-sensitive
steps), and stops later stages when a host failed.
"""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

from . import commands as C
from .facts import file_content
from .files import ManagedFile, unified_diff
from .transport import CommandError, Session


@dataclass
class Change:
    what: str                                  # one line for people, e.g. "file /etc/x"
    commands: list[C.Cmd] = field(default_factory=list)
    file: ManagedFile | None = None            # upload + atomic install


@dataclass
class HostReport:
    name: str
    changed: list[str] = field(default_factory=list)
    failed: str | None = None
    notes: list[str] = field(default_factory=list)


class DeployFailed(RuntimeError):
    pass


_print_lock = threading.Lock()


def say(line: str) -> None:
    with _print_lock:
        print(C.mask(line), flush=True)


def apply_plan(s: Session, plan: list[Change], report: HostReport, stage: str) -> None:
    """Execute a plan in the order the stage built it (stages put files before the
    daemon-reload and restarts that depend on them). In dry-run, print it instead."""
    if not plan:
        return
    for ch in plan:
        report.changed.append(f"{stage}: {ch.what}")
        if s.dry_run:
            _print_dry(s, ch)
            continue
        if ch.file is not None:
            staged = s.stage(ch.file.content)
            s.apply(C.install_file(staged, ch.file.path, ch.file.owner, ch.file.group, ch.file.mode))
        for c in ch.commands:
            s.apply(c)


def _print_dry(s: Session, ch: Change) -> None:
    lines = [f"  {s.name}: would change {ch.what}"]
    if ch.file is not None:
        if ch.file.secret:
            lines.append("    (secret file: content not shown)")
        else:
            old = s.gather([file_content("old", ch.file.path)]).get("old")
            lines.append(_indent(unified_diff(ch.file.path, old, ch.file.content.decode())))
    lines += [f"    $ {c.show()}" for c in ch.commands]
    say("\n".join(l for l in lines if l))


def _indent(text: str) -> str:
    return "\n".join("    " + l for l in text.splitlines())


StageFn = Callable[[Session, HostReport], None]


class Engine:
    def __init__(self, sessions: dict[str, Session], dry_run: bool = False):
        self.sessions = sessions
        self.dry_run = dry_run
        self.reports = {name: HostReport(name) for name in sessions}
        self.failed = False

    def stage(self, name: str, hosts: list[str], fn: StageFn, serial: bool = False) -> None:
        """Run fn on every host of the stage (parallel unless serial). A failure marks
        the deploy failed and later stages are skipped by the caller's loop."""
        if self.failed or not hosts:
            return
        t0 = time.monotonic()
        say(f"[{name}] {', '.join(hosts)}{' (one host at a time)' if serial else ''}")

        def one(host: str) -> None:
            report = self.reports[host]
            before = len(report.changed)
            try:
                fn(self.sessions[host], report)
            except CommandError as exc:
                report.failed = f"stage {name}: `{exc.command}` exited {exc.rc}\n{exc.stderr_tail}"
            except DeployFailed as exc:
                report.failed = f"stage {name}: {C.mask(str(exc))}"
            except Exception as exc:  # an SSH failure, a bug: still name host and stage
                report.failed = f"stage {name}: {type(exc).__name__}: {C.mask(str(exc))}"
            n = len(report.changed) - before
            state = "FAILED" if report.failed else (f"{n} changed" if n else "ok")
            say(f"  {host}: {state}")

        if serial:
            for h in hosts:
                one(h)
                if self.reports[h].failed:
                    break
        else:
            with ThreadPoolExecutor(max_workers=len(hosts)) as pool:
                list(pool.map(one, hosts))
        if any(self.reports[h].failed for h in hosts):
            self.failed = True
        say(f"  ({time.monotonic() - t0:.1f}s)")

    def summary(self) -> str:
        rows = [f"{'host':10} {'result':10} {'changes':>7}"]
        for r in self.reports.values():
            result = "failed" if r.failed else ("changed" if r.changed else "unchanged")
            rows.append(f"{r.name:10} {result:10} {len(r.changed):>7}")
        for r in self.reports.values():
            if r.changed:
                rows.append(f"\n{r.name} {'would change' if self.dry_run else 'changed'}:\n  " +
                            "\n  ".join(r.changed))
            if r.failed:
                rows.append(f"\n{r.name} FAILED in {r.failed}")
        return "\n".join(rows)
