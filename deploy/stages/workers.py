"""Celery workers under systemd, rolled out one host at a time.

Per host: the settings files and unit templates, `current` switched to the new release,
instances 1..N enabled and running (higher ones stopped with a warm shutdown), then a
Celery ping of every instance before the next host. If a host's workers do not answer,
it is switched back to its previous release and the deploy stops."""
from __future__ import annotations

import json
import time

from .. import commands as C
from .. import facts as F
from ..celery_env import celery_env, env_file
from ..context import Ctx
from ..engine import Change, DeployFailed, Engine, apply_plan, say
from ..files import from_template, managed
from ..ops import file_changes, reload_if_units_changed
from ..scale import host_scale
from .release import BASE, CURRENT, RELEASES, app_hosts, releases_fact

ENV = "/etc/celery-kit/celery.env"
WORKER_ENV = "/etc/celery-kit/worker.env"
UNIT_DIR = "/etc/systemd/system"
TARGET = "celery-workers.target"
BEAT = "celery-beat.service"
PING_TIMEOUT = 120
FLOWER_RESTART_PENDING = f"{BASE}/.flower-restart-pending"


def instance(i: int) -> str:
    return f"celery-worker@{i}.service"


def node_names(host, n: int) -> list[str]:
    return [f"w{i}@{host.name}" for i in range(1, n + 1)]


def wanted_files(ctx: Ctx, host, concurrency: int) -> list:
    inv = ctx.inv
    env = celery_env(inv, ctx.secret("rabbitmq_app_password").reveal(), ctx.secret("redis_password").reveal())
    tpl = {"app": inv.celery.app, "host": host, "env_file": ENV, "worker_env_file": WORKER_ENV,
           "release_dir": BASE, "stop_timeout": inv.celery.stop_timeout}
    if not (host.has("worker") or host.has("beat")):
        return []        # a flower-only host: only its release is switched here
    files = [managed(ENV, env_file(env), group="celery", mode=0o640, secret=True)]
    if host.has("worker"):
        worker_env = {"CELERY_CONCURRENCY": str(concurrency), "CELERY_POOL": inv.celery.pool,
                      "CELERY_QUEUES": ",".join(inv.celery.queues), "CELERY_LOGLEVEL": inv.celery.loglevel}
        files += [managed(WORKER_ENV, "".join(f"{k}={v}\n" for k, v in worker_env.items())),
                  from_template(f"{UNIT_DIR}/celery-worker@.service", "celery-worker@.service.j2", tpl),
                  from_template(f"{UNIT_DIR}/{TARGET}", "celery-workers.target.j2", tpl)]
    if host.has("beat"):
        files.append(from_template(f"{UNIT_DIR}/{BEAT}", "celery-beat.service.j2", tpl))
    return files


def instances_fact() -> F.Fact:
    script = (f"ls {UNIT_DIR}/{TARGET}.wants 2>/dev/null | sed 's/^/enabled /'; "
              "systemctl list-units --all --plain --no-legend 'celery-worker@*' | awk '{print $3, $1}'")
    return F.Fact("instances", ("sh", "-c", script), parse_instances)


def parse_instances(out: str, rc: int = 0) -> dict[int, dict]:
    """-> {n: {"enabled": bool, "active": bool}} from the wants dir and list-units."""
    found: dict[int, dict] = {}
    for line in out.splitlines():
        state, _, unit = line.strip().partition(" ")
        if not unit.startswith("celery-worker@") or not unit.endswith(".service"):
            continue
        n = unit[len("celery-worker@"):-len(".service")]
        if not n.isdigit():
            continue
        entry = found.setdefault(int(n), {"enabled": False, "active": False})
        if state == "enabled":
            entry["enabled"] = True
        elif state in ("active", "activating", "reloading"):
            entry["active"] = True
    return found


def instance_plan(current: dict[int, dict], n: int, restart: bool) -> list[Change]:
    """Pure: instances 1..n enabled and running (restarted when code or settings changed);
    the ones above n stopped and disabled (stop = warm shutdown, running tasks finish)."""
    enable = [instance(i) for i in range(1, n + 1) if not current.get(i, {}).get("enabled")]
    start = [instance(i) for i in range(1, n + 1) if not current.get(i, {}).get("active")]
    again = [instance(i) for i in range(1, n + 1) if restart and current.get(i, {}).get("active")]
    extra = sorted(i for i, st in current.items() if i > n and (st["enabled"] or st["active"]))
    plan = []
    if extra:
        units = [instance(i) for i in reversed(extra)]
        plan.append(Change(f"stop and disable {', '.join(units)} (warm shutdown)",
                           [C.systemctl("disable", "--now", *units)]))
    if enable:
        plan.append(Change(f"enable {', '.join(enable)}", [C.systemctl("enable", *enable)]))
    if again:
        plan.append(Change(f"restart {', '.join(again)}", [C.systemctl("restart", *again)]))
    if start:
        plan.append(Change(f"start {', '.join(start)}", [C.systemctl("start", *start)]))
    return plan


def ping_cmd(app: str, names: list[str]) -> C.Cmd:
    # Runs on the host as the celery user with the host's own settings: it proves the
    # workers answer through the broker, and needs no access from the control machine.
    script = (f'set -a; . {ENV}; set +a; exec {CURRENT}/venv/bin/celery -A "$1" inspect ping '
              '-d "$2" --timeout 3 --json')
    return C.cmd("runuser", "-u", "celery", "--", "sh", "-c", script, "ping", app, ",".join(names))


def restarts_cmd(n: int) -> C.Cmd:
    return C.cmd("systemctl", "show", "-p", "NRestarts", "--value", *[instance(i) for i in range(1, n + 1)],
                 sudo=False)


def wait_for_workers(s, app: str, names: list[str], timeout: float = PING_TIMEOUT) -> set[str]:
    """Poll Celery ping until every node name answered; returns the ones that did.
    Gives up early when systemd has to restart an instance (a release that cannot start
    crash-loops under Restart=always; waiting out the timeout would only delay the rollback)."""
    deadline = time.monotonic() + timeout
    answered: set[str] = set()
    baseline = _restarts(s, len(names))
    while time.monotonic() < deadline:
        res = s.read(ping_cmd(app, names), check=False)
        answered |= set(parse_ping(res.stdout))
        if answered >= set(names) or _restarts(s, len(names)) > baseline:
            break
    return answered


def _restarts(s, n: int) -> int:
    out = s.read(restarts_cmd(n), check=False).stdout.split()
    return sum(int(x) for x in out if x.isdigit())


def parse_ping(out: str) -> list[str]:
    for line in reversed(out.strip().splitlines()):
        try:
            data = json.loads(line)
        except ValueError:
            continue
        if isinstance(data, dict):
            return [k for k, v in data.items() if isinstance(v, dict) and v.get("ok") == "pong"]
    return []


def switch_cmd(rid: str) -> C.Cmd:
    # A new symlink renamed over the old one: `current` always points somewhere valid.
    return C.sh(f'ln -sfn "$1" {CURRENT}.new && mv -T {CURRENT}.new {CURRENT} && touch "$1"',
                f"{RELEASES}/{rid}")


def run(ctx: Ctx, engine: Engine, only: set[str] | None = None) -> None:
    wanted_release = ctx.release
    inv = ctx.inv
    # Worker hosts first: if a release cannot start there, the rollout stops before any
    # host without workers (beat- or flower-only) has been switched to it.
    ordered = sorted(app_hosts(inv), key=lambda h: not h.has("worker"))
    hosts = [h.name for h in ordered if only is None or h.name in only]

    def one(s, report):
        host = s.host
        scale = host_scale(inv, host)
        files = wanted_files(ctx, host, scale.concurrency if scale else 1)
        facts = s.gather([F.files([f.path for f in files]), releases_fact(), instances_fact(),
                          F.units([TARGET, BEAT])])
        plan = file_changes(files, facts["files"])
        settings_changed = bool(plan)
        plan += reload_if_units_changed(plan)
        rid, previous = wanted_release.get(s.name), facts["releases"]["current"]
        switched = rid is not None and rid != previous
        if switched:
            plan.append(Change(f"switch current to release {rid}", [switch_cmd(rid)]))
        if switched and host.has("flower"):
            # Flower runs from the release too; the flower stage restarts it and clears this.
            plan[-1].commands.append(C.cmd("touch", FLOWER_RESTART_PENDING))
        restart = settings_changed or switched
        if host.has("worker"):
            if facts["units"].get(TARGET, {}).get("UnitFileState") != "enabled":
                plan.append(Change(f"enable {TARGET}", [C.systemctl("enable", TARGET)]))
            plan += instance_plan(facts["instances"], scale.instances, restart)
        if host.has("beat"):
            beat = facts["units"].get(BEAT, {})
            if beat.get("UnitFileState") != "enabled":
                plan.append(Change(f"enable {BEAT}", [C.systemctl("enable", BEAT)]))
            if beat.get("ActiveState") != "active" or restart:
                plan.append(Change(f"{'restart' if beat.get('ActiveState') == 'active' else 'start'} {BEAT}",
                                   [C.systemctl("restart", BEAT)]))
        apply_plan(s, plan, report, "workers")
        if s.dry_run or not host.has("worker") or not plan or scale.instances == 0:
            return
        names = node_names(host, scale.instances)
        answered = wait_for_workers(s, inv.celery.app, names)
        if answered >= set(names):
            say(f"  {s.name}: {len(names)} worker instance(s) answer ping")
            return
        missing = sorted(set(names) - answered)
        if switched and previous:
            units = [instance(i) for i in range(1, scale.instances + 1)] + ([BEAT] if host.has("beat") else [])
            apply_plan(s, [Change(f"roll back to release {previous}",
                                  [switch_cmd(previous), C.systemctl("restart", *units)])], report, "workers")
            back = wait_for_workers(s, inv.celery.app, names)
            say(f"  {s.name}: back on {previous}, {len(back)}/{len(names)} worker instance(s) answer ping")
            raise DeployFailed(f"workers {', '.join(missing)} did not come up on release {rid} "
                               f"(no ping answer, or systemd restarting them); switched back to {previous}. "
                               f"See `journalctl -u 'celery-worker@*'` on {s.name}")
        raise DeployFailed(f"workers {', '.join(missing)} did not come up (no ping answer, or systemd "
                           "restarting them); "
                           f"see `journalctl -u 'celery-worker@*'` on {s.name}")

    engine.stage("workers (rolling)", hosts, one, serial=True)
