"""Celery workers (and beat) under systemd, rolled out one host at a time.

Per host: a restart-pending marker first, then the settings files and unit templates,
`current` switched to the release the release stage built, instances 1..N enabled and
running (higher ones stopped with a warm shutdown), a Celery ping of every instance, and
only then the marker cleared. A deploy that stops anywhere in between (Ctrl-C, a failed
restart) leaves the marker, so the next deploy restarts the workers even though `current`
already points at the new release. If a host's workers do not answer, it is switched back
to its previous release and the rollout stops before the next host.
"""
from __future__ import annotations

import json

from .. import commands as C
from .. import facts as F
from .. import rabbitmq_model as M
from ..celery_env import broker_start, celery_env, env_file
from ..files import from_template, managed
from ..ops import file_changes, reload_if_units_changed
from ..scale import host_scale
from ..stage import Stage, StageEnv
from ..steps import Await, Change, Plan
from .release import BASE, CURRENT, RELEASES, app_hosts, releases_fact

ENV = "/etc/celery-kit/celery.env"
WORKER_ENV = "/etc/celery-kit/worker.env"
UNIT_DIR = "/etc/systemd/system"
TARGET = "celery-workers.target"
BEAT = "celery-beat.service"
PING_TIMEOUT = 120
RESTART_PENDING = f"{BASE}/.restart-pending"              # workers and beat of this host
FLOWER_RESTART_PENDING = f"{BASE}/.flower-restart-pending"


def instance(i: int) -> str:
    return f"celery-worker@{i}.service"


def node_names(host, n: int) -> list[str]:
    return [f"w{i}@{host.name}" for i in range(1, n + 1)]


def queue_mode(ctx, env: StageEnv | None) -> str:
    """The cluster's queue mode as the RabbitMQ stages found it (from the nodes' version)."""
    seed = ctx.inv.with_role("rabbitmq")[0].name
    for stage in ("rabbitmq config", "rabbitmq version"):
        found = env.output(stage, seed) if env is not None else None
        if found and found.get("mode"):
            return found["mode"]
    return M.queue_mode(ctx.inv, None)


def host_env(ctx, host, mode: str) -> dict[str, str]:
    return celery_env(ctx.inv, ctx.secret("rabbitmq_app_password").reveal(),
                      ctx.secret("redis_password").reveal(), mode, broker_start(ctx.inv, host))


def wanted_files(ctx, host, mode: str = "mirrored") -> list:
    inv = ctx.inv
    if not (host.has("worker") or host.has("beat")):
        return []        # a flower-only host: only its release is switched here
    scale = host_scale(inv, host)
    tpl = {"app": inv.celery.app, "host": host, "env_file": ENV, "worker_env_file": WORKER_ENV,
           "release_dir": BASE, "stop_timeout": inv.celery.stop_timeout}
    files = [managed(ENV, env_file(host_env(ctx, host, mode), "Managed by celery-kit. Contains "
                                   "secrets: mode 0640, root:celery."), group="celery", mode=0o640, secret=True)]
    if host.has("worker"):
        worker_env = {"CELERY_CONCURRENCY": str(scale.concurrency), "CELERY_POOL": inv.celery.pool,
                      "CELERY_QUEUES": ",".join(inv.celery.queues), "CELERY_LOGLEVEL": inv.celery.loglevel}
        files += [managed(WORKER_ENV, "".join(f"{k}={v}\n" for k, v in worker_env.items())),
                  from_template(f"{UNIT_DIR}/celery-worker@.service", "celery-worker@.service.j2", tpl),
                  from_template(f"{UNIT_DIR}/{TARGET}", "celery-workers.target.j2", tpl)]
    if host.has("beat"):
        files.append(from_template(f"{UNIT_DIR}/{BEAT}", "celery-beat.service.j2", tpl))
    return files


# Facts -------------------------------------------------------------------------------------

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


# Runs on the host as the celery user with the host's own settings: it proves the workers
# answer through the broker, and needs no access from the control machine. The first line
# is how often systemd had to restart the instances (a crash loop shows there first).
_PING = f"""app="$1"; names="$2"; shift 2
n=0; for x in $(systemctl show -p NRestarts --value "$@"); do n=$((n + x)); done; echo "$n"
exec runuser -u celery -- sh -c 'set -a; . {ENV}; set +a; exec {CURRENT}/venv/bin/celery -A "$1" \
  inspect ping -d "$2" --timeout 3 --json' ping "$app" "$names"
"""


def ping_fact(app: str, names: list[str], units: list[str]) -> F.Fact:
    return F.Fact("ping", ("sh", "-c", _PING, "ping", app, ",".join(names), *units), parse_ping)


def restarts_fact(units: list[str]) -> F.Fact:
    return F.Fact("restarts", ("systemctl", "show", "-p", "NRestarts", "--value", *units),
                  lambda out, rc: sum(int(x) for x in out.split() if x.isdigit()))


def parse_ping(out: str, rc: int = 0) -> dict:
    """{"answered": [node names that answered pong], "restarts": int}"""
    lines = out.strip().splitlines()
    restarts = int(lines[0]) if lines and lines[0].strip().isdigit() else 0
    answered: list[str] = []
    for line in reversed(lines[1:]):
        try:
            data = json.loads(line)
        except ValueError:
            continue
        if isinstance(data, dict):
            answered = sorted(k for k, v in data.items() if isinstance(v, dict) and v.get("ok") == "pong")
            break
    return {"answered": answered, "restarts": restarts}


# Plans -------------------------------------------------------------------------------------

def switch_cmd(rid: str) -> C.Cmd:
    # A new symlink renamed over the old one: `current` always points somewhere valid.
    return C.sh(f'ln -sfn "$1" {CURRENT}.new && mv -T {CURRENT}.new {CURRENT} && touch "$1"',
                f"{RELEASES}/{rid}")


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
                           [C.systemctl("disable", "--now", *units)], slow=True))
    if enable:
        plan.append(Change(f"enable {', '.join(enable)}", [C.systemctl("enable", *enable)]))
    if again:
        plan.append(Change(f"restart {', '.join(again)}", [C.systemctl("restart", *again)], slow=True))
    if start:
        plan.append(Change(f"start {', '.join(start)}", [C.systemctl("start", *start)]))
    return plan


def ping_await(inv, host, n: int, baseline: int, what: str, on_fail: list = ()) -> Await:
    names = node_names(host, n)
    units = [instance(i) for i in range(1, n + 1)]
    return Await(f"{', '.join(names)} answer ping{what}", ping_fact(inv.celery.app, names, units),
                 lambda v: set(names) <= set(v["answered"]), PING_TIMEOUT,
                 f"workers {', '.join(names)} did not come up{what}",
                 interval=0.2,
                 # A release that cannot start crash-loops under Restart=always: waiting out
                 # the timeout would only delay the rollback.
                 give_up=lambda v: "systemd is restarting them" if v["restarts"] > baseline else None,
                 on_fail=on_fail)


class Workers(Stage):
    name = "workers (rolling)"
    serial = True

    def __init__(self, release_from: str = "release", only: set[str] | None = None):
        self.release_from = release_from
        self.only = only

    def hosts(self, inv) -> list:
        # Worker hosts first: if a release cannot start there, the rollout stops before any
        # host without workers (beat- or flower-only) has been switched to it.
        ordered = sorted(app_hosts(inv), key=lambda h: not h.has("worker"))
        return [h for h in ordered if self.only is None or h.name in self.only]

    def serial_for(self, facts: dict[str, dict]) -> bool:
        """Rolling while any host runs a release; the very first rollout protects nothing
        (no worker is serving yet) and starts every host at once."""
        return any(f["releases"]["current"] for f in facts.values())

    def facts(self, ctx, host) -> list:
        scale = host_scale(ctx.inv, host)
        n = scale.instances if scale else 0
        return [F.files([f.path for f in wanted_files(ctx, host)]), releases_fact(), instances_fact(),
                F.units([TARGET, BEAT]), F.exit_ok("pending", "test", "-e", RESTART_PENDING),
                restarts_fact([instance(i) for i in range(1, n + 1)] or ["celery-worker@1.service"])]

    def plan(self, ctx, host, facts: dict, env: StageEnv) -> Plan:
        inv = ctx.inv
        scale = host_scale(inv, host)
        rid = env.output(self.release_from, host.name)
        previous = facts["releases"]["current"]
        switched = rid is not None and rid != previous
        files = file_changes(wanted_files(ctx, host, queue_mode(ctx, env)), facts["files"])
        runs_celery = host.has("worker") or host.has("beat")
        restart = bool(files) or switched or facts["pending"]
        steps: list = []
        if runs_celery and (files or switched) and not facts["pending"]:
            steps.append(Change("mark workers and beat for a restart", [C.cmd("touch", RESTART_PENDING)]))
        steps += files + reload_if_units_changed(files)
        if switched:
            cmds = [switch_cmd(rid)] + ([C.cmd("touch", FLOWER_RESTART_PENDING)] if host.has("flower") else [])
            steps.append(Change(f"switch current to release {rid}", cmds))
        restarted = False
        if host.has("worker"):
            if facts["units"].get(TARGET, {}).get("UnitFileState") != "enabled":
                steps.append(Change(f"enable {TARGET}", [C.systemctl("enable", TARGET)]))
            inst = instance_plan(facts["instances"], scale.instances, restart)
            restarted = any(c.what.startswith(("restart", "start")) for c in inst)
            steps += inst
        if host.has("beat"):
            beat = facts["units"].get(BEAT, {})
            if beat.get("UnitFileState") != "enabled":
                steps.append(Change(f"enable {BEAT}", [C.systemctl("enable", BEAT)]))
            if beat.get("ActiveState") != "active" or restart:
                verb = "restart" if beat.get("ActiveState") == "active" else "start"
                steps.append(Change(f"{verb} {BEAT}", [C.systemctl("restart", BEAT)]))
        if restarted and scale.instances:
            rollback = []
            if switched and previous:
                units = [instance(i) for i in range(1, scale.instances + 1)] + ([BEAT] if host.has("beat") else [])
                rollback = [Change(f"roll back to release {previous}",
                                   [switch_cmd(previous), C.systemctl("restart", *units),
                                    C.cmd("rm", "-f", RESTART_PENDING)]),
                            ping_await(inv, host, scale.instances, facts["restarts"],
                                       f" again on release {previous}")]
            what = f" on release {rid}" + (f"; switched back to {previous}" if rollback else "")
            steps.append(ping_await(inv, host, scale.instances, facts["restarts"], what, rollback))
        if facts["pending"] or any(isinstance(s, Change) and s.what.startswith("mark workers") for s in steps):
            steps.append(Change("restart done: clear the marker", [C.cmd("rm", "-f", RESTART_PENDING)]))
        return Plan(steps, output={"switched": switched, "release": rid or previous})
