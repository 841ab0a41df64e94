"""Fault injection with loss accounting.

A producer publishes `record_id` tasks at a steady rate, each with a unique tag, through the
kit's own client settings (publisher confirms): a call that returned is a confirmed task.
While it runs, one fault is injected through the lab and the hosts' own tools. Afterwards
every confirmed task's result is read back from Redis, and every execution is counted from
the workers' journals (each execution logs `chaos-exec <tag>`), giving:

  published   calls made            confirmed  calls that returned (the broker confirmed)
  completed   confirmed with SUCCESS stored     lost       confirmed without a stored SUCCESS
  executions  task bodies that ran  duplicates executions beyond one per executed tag
  max gap     longest time between two completions while the scenario ran
  recovery    seconds from the fault to the first completion after it

Only lab addresses are ever targeted (the fault functions act on lab hosts by name).
"""
from __future__ import annotations

import json
import re
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

EXEC_LINE = re.compile(r"chaos-exec (\S+)")


@dataclass
class Outcome:
    scenario: str
    mode: str
    published: int = 0
    confirmed: int = 0
    publish_errors: int = 0
    completed: int = 0
    lost: int = 0
    executions: int = 0
    duplicates: int = 0
    max_gap: float = 0.0
    recovery: float | None = None
    notes: list[str] = field(default_factory=list)

    def row(self) -> str:
        rec = "-" if self.recovery is None else f"{self.recovery:.1f}"
        return (f"{self.scenario:34} {self.mode:8} {self.published:6} {self.confirmed:6} {self.completed:6} "
                f"{self.lost:4} {self.duplicates:4} {self.max_gap:7.1f} {rec:>8}")

    @staticmethod
    def header() -> str:
        return (f"{'scenario':34} {'queues':8} {'publ':>6} {'conf':>6} {'done':>6} {'lost':>4} {'dup':>4} "
                f"{'max gap':>7} {'recovery':>8}")


class Load(threading.Thread):
    """Publishes record_id(tag, seconds) at `rate` per second until stopped."""

    def __init__(self, task, rate: float = 30.0, seconds: float = 0.0):
        super().__init__(daemon=True)
        self.task, self.rate, self.seconds = task, rate, seconds
        self.stop = threading.Event()
        self.run_id = uuid.uuid4().hex[:8]
        self.sent: dict[str, str] = {}            # tag -> task id, confirmed only
        self.confirmed_at: list[float] = []       # epoch seconds of each confirmed publish
        self.published = 0
        self.errors: list[str] = []

    def run(self) -> None:
        n, t0 = 0, time.monotonic()
        while not self.stop.is_set():
            tag = f"{self.run_id}-{n}"
            n += 1
            self.published += 1
            try:
                r = self.task.apply_async((tag,), {"seconds": self.seconds})
                self.sent[tag] = r.id
                self.confirmed_at.append(time.time())
            except Exception as exc:                      # not confirmed: not counted as lost
                self.errors.append(f"{type(exc).__name__}: {exc}"[:200])
            delay = t0 + n / self.rate - time.monotonic()
            if delay > 0:
                self.stop.wait(delay)

    def finish(self) -> None:
        self.stop.set()
        self.join(60)


def results(app, task_ids: list[str]) -> dict[str, dict]:
    """task id -> stored meta (status, date_done), read straight from Redis in batches."""
    client = app.backend.client
    out = {}
    for i in range(0, len(task_ids), 500):
        chunk = task_ids[i:i + 500]
        for tid, raw in zip(chunk, client.mget([f"celery-task-meta-{t}" for t in chunk])):
            if raw:
                out[tid] = json.loads(raw)
    return out


def wait_settled(app, task_ids: list[str], timeout: float) -> dict[str, dict]:
    """Poll until every task has a SUCCESS stored (or the deadline): a readiness wait."""
    deadline = time.monotonic() + timeout
    while True:
        got = results(app, task_ids)
        done = sum(1 for m in got.values() if m.get("status") == "SUCCESS")
        if done == len(task_ids) or time.monotonic() > deadline:
            return got
        time.sleep(1.0)


def executions(worker_hosts, since_epoch: float, run_id: str) -> dict[str, int]:
    """tag -> how many times its body ran, from every worker host's journal."""
    counts: dict[str, int] = {}
    for host in worker_hosts:
        out = host.run(f"sudo journalctl -u 'celery-worker@*' --since @{int(since_epoch) - 1} -o cat "
                       f"--no-pager | grep -F 'chaos-exec {run_id}-' || true").stdout
        for m in EXEC_LINE.finditer(out):
            counts[m.group(1)] = counts.get(m.group(1), 0) + 1
    return counts


def completion_times(metas: dict[str, dict]) -> list[float]:
    from datetime import datetime
    times = []
    for m in metas.values():
        if m.get("status") == "SUCCESS" and m.get("date_done"):
            times.append(datetime.fromisoformat(m["date_done"].replace("Z", "+00:00")).timestamp())
    return sorted(times)


def account(name: str, mode: str, app, load: Load, worker_hosts, started: float, fault_at: float | None,
            ended: float, settle: float = 240.0) -> Outcome:
    ids = list(load.sent.values())
    metas = wait_settled(app, ids, settle)
    done = {tid for tid, m in metas.items() if m.get("status") == "SUCCESS"}
    execs = executions(worker_hosts, started, load.run_id)
    times = [t for t in completion_times(metas) if started <= t <= ended]
    gaps = [b - a for a, b in zip(times, times[1:])]
    after = [t for t in times if fault_at is not None and t > fault_at]
    o = Outcome(name, mode, published=load.published, confirmed=len(ids), publish_errors=len(load.errors),
                completed=len(done), lost=len(ids) - len(done), executions=sum(execs.values()),
                duplicates=sum(n - 1 for n in execs.values() if n > 1), max_gap=max(gaps, default=0.0),
                recovery=(after[0] - fault_at) if after else None)
    if gaps:
        i = gaps.index(o.max_gap)
        where = f"{times[i] - fault_at:+.1f} s from the fault" if fault_at is not None else ""
        pub = [b - a for a, b in zip(load.confirmed_at, load.confirmed_at[1:])]
        o.notes.append(f"longest gap begins {where}; longest wait between confirmed publishes "
                       f"{max(pub, default=0.0):.1f} s")
    lost = [tag for tag, tid in load.sent.items() if tid not in done]
    if lost:
        o.notes.append(f"lost: {', '.join(lost[:10])}{' ...' if len(lost) > 10 else ''}; "
                       f"states: {sorted({metas.get(load.sent[t], {}).get('status', 'none') for t in lost})}")
    if load.errors:
        o.notes.append(f"publish errors ({len(load.errors)}): {load.errors[0]}")
    return o


def save(outcome: Outcome, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{outcome.scenario}-{outcome.mode}.json").write_text(json.dumps(asdict(outcome), indent=2))
