"""The engine: the one loop that runs stages. For each stage and host it gathers facts, asks
the stage for a plan, and then prints it (dry-run) or applies it step by step, waiting where
the plan says to wait. Stages only decide (stage.py); nothing else runs, prints or waits.

Stages run in the order given. A stage runs on all its hosts in parallel, or one host at a
time when it is order-sensitive (serial: cluster starts, rolling restarts); a failure stops
the later stages (and, in a serial stage, the hosts after the failed one). Each stage's plan
returns an output (a release id, "config changed") that later stages read, instead of a
shared mutable context.

Facts of every stage are read up front in ONE round trip per host. While nothing has
changed anywhere those facts are still true and are used as they are: a deploy with nothing
to do costs one round trip per host. After any change, stages read their facts afresh.
"""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from . import commands as C
from .errors import DeployFailed, Interrupted
from .facts import file_content
from .files import unified_diff
from .progress import Progress
from .stage import Parallel, Stage, StageEnv
from .steps import STAGED, Await, Change, Plan, Replan, Step
from .transport import CommandError, Session

MAX_ROUNDS = 6          # replans of one stage on one host before it counts as not converging


@dataclass
class HostReport:
    name: str
    changed: list[str] = field(default_factory=list)
    failed: str | None = None
    notes: list[str] = field(default_factory=list)
    stopped_at: str | None = None        # the step an interrupt stopped before

    @property
    def result(self) -> str:
        if self.stopped_at is not None:
            return "interrupted"
        return "failed" if self.failed else ("changed" if self.changed else "unchanged")


class Engine:
    def __init__(self, ctx, sessions: dict[str, Session], dry_run: bool = False,
                 progress: Progress | None = None):
        self.ctx = ctx
        self.sessions = sessions
        self.dry_run = dry_run
        self.progress = progress or Progress()
        self.reports = {name: HostReport(name) for name in sessions}
        self.outputs: dict[str, dict[str, Any]] = {}
        self.timings: list[tuple[str, float]] = []
        self.failed = False
        self.interrupt = threading.Event()
        self._dirty = False                          # something changed since the prefetch
        self._changes = 0                            # Change steps applied so far
        self._lock = threading.Lock()
        self._prefetched: dict[str, dict[str, dict]] = {}
        self._prefetch_done = False
        self._early: dict = {}                       # stage name -> Future of its prepare()

    def say(self, text: str) -> None:
        self.progress.say(text)

    # Running stages ----------------------------------------------------------------------
    def run(self, items: list) -> None:
        """Items are stages, or Parallel groups of stage sequences (pipeline.py)."""
        if not self._prefetch_done:
            self.prefetch(stages_of(items))
        for item in items:
            if self.failed or self.interrupt.is_set():
                break
            if isinstance(item, Parallel):
                self._parallel(list(item.sequences), self._sequence)
            else:
                self.run_stage(item)

    def _sequence(self, stages) -> None:
        for stage in stages:
            if self.failed or self.interrupt.is_set():
                return
            self.run_stage(stage)

    def prefetch(self, stages: list[Stage], first: dict[str, list] | None = None) -> dict[str, dict]:
        """Every stage's facts, per host, in one round trip. `first`: facts per host that go
        at the head of that round trip (the deploy lock: taking it costs no trip of its own);
        their values are returned (a host that could not be read is missing)."""
        self._prefetch_done = True
        first = first or {}
        firsts: dict[str, dict] = {}
        wanted: dict[str, list] = {name: [] for name in self.sessions}
        for stage in stages:
            for h in self._hosts(stage):
                for f in stage.facts(self.ctx, h):
                    wanted[h.name].append((stage.name, f))

        def one(name: str) -> None:
            pairs = wanted[name]
            head = first.get(name, [])
            if not pairs and not head:
                return
            # Several stages read the same thing (a unit's state, the releases): once each.
            unique = list({f.argv: f for _, f in pairs}.values())
            keyed = [type(f)(f"f{i}", f.argv, lambda out, rc: (out, rc)) for i, f in enumerate(unique)]
            try:
                raw = self.sessions[name].gather(head + keyed)
            except Exception:       # the stages will read (and report) on their own
                return
            firsts[name] = {f.key: raw[f.key] for f in head}
            by_argv = {f.argv: raw[k.key] for f, k in zip(unique, keyed)}
            out: dict[str, dict] = {}
            for st, f in pairs:
                out.setdefault(st, {})[f.key] = f.parse(*by_argv[f.argv])
            self._prefetched[name] = out

        self._parallel(list(self.sessions), one)
        for stage in stages:
            if stage.prepare_early:
                self._start_early(stage)
        return firsts

    def _start_early(self, stage: Stage) -> None:
        facts = {h.name: self._prefetched.get(h.name, {}).get(stage.name) for h in self._hosts(stage)}
        if facts and all(f is not None for f in facts.values()):
            pool = ThreadPoolExecutor(max_workers=1)
            self._early[stage.name] = pool.submit(stage.prepare, self.ctx, facts)
            pool.shutdown(wait=False)

    def _hosts(self, stage: Stage) -> list:
        return [h for h in stage.hosts(self.ctx.inv) if h.name in self.sessions]

    def run_stage(self, stage: Stage) -> None:
        hosts = self._hosts(stage)
        if not hosts:
            return
        t0 = time.monotonic()
        self.say(f"[{stage.name}] {', '.join(h.name for h in hosts)}")
        facts: dict[str, dict] = {}
        outputs: dict[str, Any] = {}

        def read(h) -> None:
            try:
                facts[h.name] = self._facts(stage, h)
            except Exception as exc:
                self._fail(h.name, stage, exc)

        self._parallel(hosts, read)
        prepared = None
        if not self.failed:
            try:
                prepared = self._prepared(stage, facts)
            except Exception as exc:
                for h in hosts:
                    self._fail(h.name, stage, exc)
        env = StageEnv(self.outputs, prepared, facts)

        def one(h) -> None:
            report = self.reports[h.name]
            before = len(report.changed)
            try:
                outputs[h.name] = self._host(stage, h, facts[h.name], env)
            except Exception as exc:
                self._fail(h.name, stage, exc)
            n = len(report.changed) - before
            state = ("INTERRUPTED" if report.stopped_at else "FAILED" if report.failed
                     else f"{n} {'to change' if self.dry_run else 'changed'}" if n else "ok")
            self.say(f"  {h.name}: {state}")

        if not self.failed:
            if stage.serial_for(facts):
                read_at = self._changes
                for h in hosts:
                    if self._changes > read_at:
                        # An earlier host of this stage changed things this host may see.
                        try:
                            facts[h.name] = self._gather(h, stage)
                        except Exception as exc:
                            self._fail(h.name, stage, exc)
                            break
                    one(h)
                    if self.reports[h.name].failed or self.interrupt.is_set():
                        break
            else:
                self._parallel(hosts, one)
        self.outputs[stage.name] = outputs
        took = time.monotonic() - t0
        self.timings.append((stage.name, took))
        self.say(f"  ({took:.1f}s)")

    def _prepared(self, stage: Stage, facts: dict) -> Any:
        """prepare() of the stage, or what its early start gave when it saw the same facts."""
        early = self._early.pop(stage.name, None)
        if early is not None:
            try:
                result = early.result()
                started_with = {n: self._prefetched.get(n, {}).get(stage.name) for n in facts}
                if started_with == facts:
                    return result
            except Exception:
                pass                    # decided again below, with the facts as they are now
        return stage.prepare(self.ctx, facts)

    def _facts(self, stage: Stage, h) -> dict:
        if not self._dirty and stage.name in self._prefetched.get(h.name, {}):
            return self._prefetched[h.name][stage.name]
        return self._gather(h, stage)

    def _gather(self, h, stage: Stage) -> dict:
        return self.sessions[h.name].gather(stage.facts(self.ctx, h))

    def _host(self, stage: Stage, h, facts: dict, env: StageEnv) -> Any:
        s, report = self.sessions[h.name], self.reports[h.name]
        for _ in range(MAX_ROUNDS):
            plan: Plan = stage.plan(self.ctx, h, facts, env)
            for note in plan.notes:
                if note not in report.notes:
                    report.notes.append(note)
                    self.say(f"  {h.name}: {note}")
            if not self.apply(s, plan.steps, stage.name):
                return plan.output
            facts = self._gather(h, stage)
        raise DeployFailed(f"stage {stage.name} did not settle on {h.name} after {MAX_ROUNDS} rounds")

    def _fail(self, host: str, stage: Stage, exc: Exception) -> None:
        report = self.reports[host]
        if isinstance(exc, Interrupted):
            report.stopped_at = report.stopped_at or f"{stage.name}: {exc}"
        elif isinstance(exc, CommandError):
            report.failed = C.mask(f"stage {stage.name}: `{exc.command}` exited {exc.rc}\n{exc.stderr_tail}")
        elif isinstance(exc, DeployFailed):
            report.failed = f"stage {stage.name}: {C.mask(str(exc))}"
        else:           # an SSH failure, a bug: still name host and stage
            report.failed = f"stage {stage.name}: {type(exc).__name__}: {C.mask(str(exc))}"
        self.failed = True

    def _parallel(self, items: list, fn) -> None:
        if not items:
            return
        with ThreadPoolExecutor(max_workers=len(items)) as pool:
            list(pool.map(fn, items))

    # Applying steps -------------------------------------------------------------------------
    def apply(self, s: Session, steps: list[Step], stage: str) -> bool:
        """Apply (or, in dry-run, print) steps in order. True when a Replan was reached."""
        report = self.reports[s.name]
        for step in steps:
            if self.interrupt.is_set():
                raise Interrupted(f"stopped before: {getattr(step, 'what', getattr(step, 'why', ''))}")
            if isinstance(step, Replan):
                if self.dry_run:
                    self.say(f"  {s.name}: then read the host again and plan the rest ({step.why})")
                    return False
                return True
            if isinstance(step, Change):
                report.changed.append(f"{stage}: {step.what}")
                with self._lock:
                    self._dirty = True
                    self._changes += 1
                if self.dry_run:
                    self._print_dry(s, step)
                else:
                    self._change(s, step)
            elif isinstance(step, Await):
                if self.dry_run:
                    self.say(f"  {s.name}: would wait until {step.what}")
                else:
                    self._await(s, step, stage)
        return False

    def _change(self, s: Session, step: Change) -> None:
        long = step.slow or step.upload is not None or step.file is not None and len(step.file.content) > 1 << 20
        with self.progress.step(s.name, step.what, announce=long):
            commands = list(step.commands)
            if step.file is not None:
                f = step.file
                staged = s.upload(f.content)
                commands.insert(0, C.install_file(staged, f.path, f.owner, f.group, f.mode))
            if step.upload is not None:
                staged = s.upload(step.upload.read_bytes())
                commands = [C.Cmd(tuple(staged if a == STAGED else a for a in c.argv), c.sudo, c.stdin, c.env)
                            for c in commands]
            for c in commands:
                s.run(c)

    def _await(self, s: Session, step: Await, stage: str) -> None:
        deadline = time.monotonic() + step.timeout
        last: Any = None
        with self.progress.step(s.name, f"waiting until {step.what}"):
            while True:
                if self.interrupt.is_set():
                    raise Interrupted(f"stopped while waiting until {step.what}")
                last = s.gather([step.fact])[step.fact.key]
                if step.until(last):
                    return
                reason = step.give_up(last) if step.give_up else None
                if reason or time.monotonic() > deadline:
                    break
                time.sleep(step.interval)
        why = reason or f"not within {step.timeout:.0f}s"
        if step.on_fail:
            self.apply(s, list(step.on_fail), stage)
        raise DeployFailed(f"{step.fail} ({why})")

    def _print_dry(self, s: Session, step: Change) -> None:
        lines = [f"  {s.name}: would change {step.what}"]
        if step.file is not None:
            if step.file.secret:
                lines.append("    (secret file: content not shown)")
            else:
                old = s.gather([file_content("old", step.file.path)]).get("old")
                lines.append(_indent(unified_diff(step.file.path, old, step.file.content.decode())))
        if step.upload is not None:
            lines.append(f"    upload {step.upload.name} ({step.upload.stat().st_size} bytes)")
        lines += [f"    $ {c.show()}" for c in step.commands]
        self.say("\n".join(line for line in lines if line))


def stages_of(items: list) -> list[Stage]:
    return [st for item in items for st in (item.stages if isinstance(item, Parallel) else [item])]


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())
