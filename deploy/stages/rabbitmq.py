"""RabbitMQ cluster: config and cookie on every node (parallel), then nodes started or
restarted one at a time with a readiness check and joined if needed (serial), then the
cluster-level objects on the first node: vhost, users, permissions, HA policy."""
from __future__ import annotations

import json
import time
from pathlib import Path

from .. import commands as C
from .. import facts as F
from .. import rabbitmq_model as M
from ..context import Ctx
from ..engine import Change, DeployFailed, Engine, apply_plan, say
from ..files import from_template, managed
from ..ops import file_changes

UNIT = "rabbitmq-server.service"
COOKIE = "/var/lib/rabbitmq/.erlang.cookie"
# Written with a config change on a running node, removed after its rolling restart: a
# deploy that fails in between leaves it, so the next deploy still restarts that node.
RESTART_PENDING = "/var/lib/rabbitmq/.celery-kit-restart-pending"
STATE_SCRIPT = (Path(__file__).resolve().parents[1] / "hostscripts" / "rabbitmq_state.py").read_text()


def node_files(ctx: Ctx, host) -> list:
    inv = ctx.inv
    nodes = [h.name for h in inv.with_role("rabbitmq")]
    conf = {"nodes": nodes, "rabbitmq": inv.rabbitmq, "consumer_timeout_ms": M.consumer_timeout_ms(inv)}
    cookie = ctx.secret("erlang_cookie", 48).reveal()
    owner = dict(owner="rabbitmq", group="rabbitmq")
    return [
        from_template("/etc/rabbitmq/rabbitmq.conf", "rabbitmq.conf.j2", conf, mode=0o640, **owner),
        from_template("/etc/rabbitmq/rabbitmq-env.conf", "rabbitmq-env.conf.j2", {"host": host},
                      mode=0o644, **owner),
        managed("/etc/rabbitmq/enabled_plugins", "[rabbitmq_management,rabbitmq_prometheus].\n",
                mode=0o644, **owner),
        # The same cookie on every node is what lets them talk; root's copy is for the CLI.
        managed(COOKIE, cookie, mode=0o400, secret=True, **owner),
        managed("/root/.erlang.cookie", cookie, mode=0o400, secret=True),
    ]


def await_node() -> list[C.Cmd]:
    return [M.ctl("await_startup", "--timeout", "300")]


def restart_node_cmds() -> list[C.Cmd]:
    """One node of a running cluster: mirrors in sync first (stopping it must not lose the
    only up-to-date copy), drained (clients move to the other nodes), restarted, awaited,
    revived. The caller then waits until the cluster shows it running again."""
    return [C.cmd("rabbitmq-upgrade", "await_online_synchronized_mirror", "--timeout", "120"),
            C.cmd("rabbitmq-upgrade", "drain"),
            C.systemctl("restart", UNIT)] + await_node() + [C.cmd("rabbitmq-upgrade", "revive")]


def wait_cluster_running(s, nodes: set[str], timeout: float = 120) -> None:
    """Readiness of the cluster as this node sees it (cluster_status as JSON), polled."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        res = s.read(M.ctl("cluster_status", "--formatter", "json"), check=False)
        status = F.parse_json(res.stdout, res.rc) or {}
        if nodes <= set(status.get("running_nodes", [])):
            return
    raise DeployFailed(f"the cluster did not show {', '.join(sorted(nodes))} running within {timeout}s")


def state_cmd(ctx: Ctx) -> C.Cmd:
    r = ctx.inv.rabbitmq
    pw = ctx.secret("rabbitmq_admin_password").reveal() + "\n" + ctx.secret("rabbitmq_app_password").reveal()
    return C.cmd("python3", "-c", STATE_SCRIPT, r.admin_user, r.app_user, str(r.management_port),
                 r.vhost, sudo=False, stdin=pw)


def read_state(ctx: Ctx, s) -> dict:
    """Never raises: unknown state only means every cluster step is planned (idempotent)."""
    try:
        res = s.read(state_cmd(ctx), check=False)
        return json.loads(res.stdout)
    except Exception as exc:
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}


def join_if_alone(s, seed: str, me: str) -> list[Change]:
    """A node that came up outside the cluster (an earlier standalone start) is reset and
    joined to the seed. Reads cluster_status as JSON."""
    res = s.read(M.ctl("cluster_status", "--formatter", "json"), check=False)
    status = F.parse_json(res.stdout, res.rc)
    if status is None:
        raise DeployFailed(f"cannot read the cluster status of rabbit@{me}: {res.stderr.strip()[-300:]}")
    members = set(status.get("disk_nodes", [])) | set(status.get("running_nodes", []))
    # Reset only a node that is provably alone: a reset throws away its data.
    if me == seed or members != {f"rabbit@{me}"}:
        return []
    return [Change(f"join cluster via rabbit@{seed}",
                   [M.ctl("stop_app"), M.ctl("reset"), M.ctl("join_cluster", f"rabbit@{seed}"),
                    M.ctl("start_app")] + await_node())]


def run(ctx: Ctx, engine: Engine) -> None:
    inv = ctx.inv
    hosts = [h.name for h in inv.with_role("rabbitmq")]
    if not hosts:
        return
    warning = M.size_warning(len(hosts))
    if warning:
        say(f"  WARNING: {warning}")
    seed = hosts[0]

    def files(s, report):
        wanted = node_files(ctx, s.host)
        facts = s.gather([F.files([f.path for f in wanted]), F.packages(["rabbitmq-server"]),
                          F.units([UNIT])])
        problem = M.version_problem(inv, facts["packages"].get("rabbitmq-server"))
        if problem:
            raise DeployFailed(problem)
        plan = file_changes(wanted, facts["files"])
        if plan and facts["units"].get(UNIT, {}).get("ActiveState") == "active":
            plan.append(Change(f"mark rabbit@{s.name} for a rolling restart", [C.cmd("touch", RESTART_PENDING)]))
        apply_plan(s, plan, report, "rabbitmq")

    engine.stage("rabbitmq config", hosts, files)
    # Cluster membership as the seed's management API sees it (cheap); when it shows every
    # node running, nodes without changed files need no per-node check at all.
    cluster = read_state(ctx, engine.sessions[seed]) if not engine.failed else {}
    running = {n["name"] for n in cluster.get("nodes", []) if n.get("running")}

    def node(s, report):
        facts = s.gather([F.units([UNIT]), F.exit_ok("pending", "test", "-e", RESTART_PENDING)])
        # In a dry run the marker was only planned, not written: read the plan instead.
        planned = f"rabbitmq: mark rabbit@{s.name} for a rolling restart" in report.changed
        unit, pending = facts["units"].get(UNIT, {}), facts["pending"] or (s.dry_run and planned)
        active = unit.get("ActiveState") == "active"
        clear = [C.cmd("rm", "-f", RESTART_PENDING)] if facts["pending"] else []
        plan: list[Change] = []
        if unit.get("UnitFileState") != "enabled":
            plan.append(Change(f"enable {UNIT}", [C.systemctl("enable", UNIT)]))
        if not active:
            plan.append(Change(f"start {UNIT}", [C.systemctl("start", UNIT)] + await_node() + clear))
        elif pending:
            # Rolling: this node only (the stage is serial); the others keep serving.
            plan.append(Change(f"restart {UNIT} (config changed)", restart_node_cmds() + clear))
        apply_plan(s, plan, report, "rabbitmq")
        if not s.dry_run and (plan or f"rabbit@{s.name}" not in running):
            apply_plan(s, join_if_alone(s, seed, s.name), report, "rabbitmq")
            # Next node only once this one and those before it show as running members.
            wait_cluster_running(s, {f"rabbit@{h}" for h in hosts[:hosts.index(s.name) + 1]})

    engine.stage("rabbitmq nodes", hosts, node, serial=True)

    def objects(s, report):
        # Users and policies do not change with restarts: the earlier read is still good.
        state = cluster if cluster.get("ok") else read_state(ctx, s)
        plan = M.cluster_plan(inv, state, ctx.secret("rabbitmq_admin_password").reveal(),
                              ctx.secret("rabbitmq_app_password").reveal(), len(hosts))
        apply_plan(s, plan, report, "rabbitmq")

    engine.stage("rabbitmq vhost, users, policy", [seed], objects)
