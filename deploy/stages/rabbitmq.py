"""RabbitMQ cluster, in three stages:

- config (parallel): cookie, config files and the kit's users file on every node; a running
  node whose files changed is marked for a rolling restart (a marker file, so a deploy that
  stops before the restart still restarts it next time).
- nodes (serial): each node enabled, started or restarted (drained first), joined to the
  cluster if it stands alone, and seen running by the cluster before the next node.
- objects (once, on the first node): vhost, users, permissions, policy, guest removed.
"""
from __future__ import annotations

from pathlib import Path

from .. import commands as C
from .. import facts as F
from .. import rabbitmq_model as M
from ..errors import DeployFailed
from ..files import from_template, managed
from ..ops import file_changes
from ..stage import Stage, StageEnv
from ..steps import Await, Change, Plan, Replan

UNIT = "rabbitmq-server.service"
COOKIE = "/var/lib/rabbitmq/.erlang.cookie"
RESTART_PENDING = "/var/lib/rabbitmq/.celery-kit-restart-pending"
HOSTSCRIPTS = Path(__file__).resolve().parents[1] / "hostscripts"
FACTS_SCRIPT = (HOSTSCRIPTS / "rabbitmq_facts.py").read_text()
START_TIMEOUT = 300


def nodes(inv) -> list[str]:
    return [h.name for h in inv.with_role("rabbitmq")]


def discovery_retries(version: str | None) -> int | None:
    """RabbitMQ 3.x forms a new cluster under a lock: the node holding it waits its retries
    for peers that are themselves waiting for the lock, then starts alone and the others join
    it. Retrying longer only delays that (the default is 10 x 0.5 s). 4.x waits for the
    declared peers instead: its own defaults stand."""
    major = M.version_major(version)
    return 2 if major is not None and major < 4 else None


def node_files(ctx, host, version: str | None = None) -> list:
    inv = ctx.inv
    conf = {"nodes": nodes(inv), "rabbitmq": inv.rabbitmq, "consumer_timeout_ms": M.consumer_timeout_ms(inv),
            "discovery_retries": discovery_retries(version)}
    cookie = ctx.secret("erlang_cookie", 48).reveal()
    owner = dict(owner="rabbitmq", group="rabbitmq")
    return [
        from_template("/etc/rabbitmq/rabbitmq.conf", "rabbitmq.conf.j2", conf, mode=0o640, **owner),
        from_template("/etc/rabbitmq/rabbitmq-env.conf", "rabbitmq-env.conf.j2", {"host": host},
                      mode=0o644, **owner),
        # The shovel plugin only acts on shovels defined at run time: `fab rabbitmq.migrate`.
        managed("/etc/rabbitmq/enabled_plugins", "[rabbitmq_management,rabbitmq_prometheus,rabbitmq_shovel].\n",
                mode=0o644, **owner),
        # The same cookie on every node is what lets them talk; root's copy is for the CLI.
        managed(COOKIE, cookie, mode=0o400, secret=True, **owner),
        managed("/root/.erlang.cookie", cookie, mode=0o400, secret=True),
        managed(M.USERS_FILE, M.users_file(inv, lambda n: ctx.secret(n).reveal()), mode=0o600,
                secret=True),
    ]


def facts_argv(inv, parts: str) -> tuple[str, ...]:
    r = inv.rabbitmq
    return ("python3", "-I", "-S", "-c", FACTS_SCRIPT, M.USERS_FILE, str(r.management_port), r.vhost,
            r.dead_letter_queue, parts)


def part(name: str):
    return lambda out, rc: (F.parse_json(out, rc) or {}).get(name)


def view_fact(inv, with_state: bool = False) -> F.Fact:
    """How the node sees the cluster (hostscripts/rabbitmq_facts.py): running, members,
    partitions, alarms; None when neither the API nor rabbitmqctl answered. with_state: the
    same command as the objects stage's state fact, so the first node starts Python once."""
    view = part("view")
    return F.Fact("cluster", facts_argv(inv, "view,state" if with_state else "view"),
                  lambda out, rc: (v := view(out, rc)) and v.get("source") and v)


def state_fact(inv) -> F.Fact:
    state = part("state")
    return F.Fact("state", facts_argv(inv, "view,state"), lambda out, rc: state(out, rc) or {"ok": False})


def await_node() -> C.Cmd:
    return M.ctl("await_startup", "--timeout", str(START_TIMEOUT))


def restart_node_cmds(mode: str) -> list[C.Cmd]:
    """One node of a running cluster: replicas in sync first (stopping it must not lose the
    only up-to-date copy), drained (clients move to the other nodes), restarted, awaited,
    revived."""
    sync = (C.cmd("rabbitmq-upgrade", "await_online_synchronized_mirror", "--timeout", "120")
            if mode == "mirrored" else
            C.cmd("rabbitmq-upgrade", "await_online_quorum_plus_one", "--timeout", "120"))
    # drain closes the node's client connections; on 3.10 it can fail when one of them closes
    # by itself meanwhile ("noproc"). The restart right after closes whatever is left, so a
    # failed drain only means clients learn of the restart a moment later.
    drain = C.sh("rabbitmq-upgrade drain || echo 'drain failed; the restart closes the connections' >&2")
    return [sync, drain, C.systemctl("restart", UNIT), await_node(), C.cmd("rabbitmq-upgrade", "revive")]


def cluster_running(inv, wanted: list[str], timeout: float = 120) -> Await:
    names = {f"rabbit@{n}" for n in wanted}
    return Await(f"the cluster shows {', '.join(sorted(names))} running", view_fact(inv),
                 lambda v: bool(v) and names <= set(v.get("running", [])) and not v.get("partitions"),
                 timeout, f"the cluster did not show {', '.join(sorted(names))} running")


class Config(Stage):
    name = "rabbitmq config"

    def hosts(self, inv) -> list:
        return list(inv.with_role("rabbitmq"))

    def facts(self, ctx, host) -> list:
        return [F.files([f.path for f in node_files(ctx, host)]), F.packages(["rabbitmq-server"]),
                F.units([UNIT])]

    def prepare(self, ctx, facts: dict) -> dict:
        """One queue mode for the cluster, from the nodes' RabbitMQ version."""
        versions = {name: f["packages"].get("rabbitmq-server") for name, f in facts.items()}
        majors = {M.version_major(v) for v in versions.values() if v}
        if len(majors) > 1:
            raise DeployFailed("RabbitMQ versions differ between nodes: " +
                               ", ".join(f"{n} {v}" for n, v in sorted(versions.items())))
        version = next((v for v in versions.values() if v), None)
        problem = M.version_problem(ctx.inv, version)
        if problem:
            raise DeployFailed(problem)
        return {"version": version, "mode": M.queue_mode(ctx.inv, version)}

    def plan(self, ctx, host, facts: dict, env: StageEnv) -> Plan:
        steps = file_changes(node_files(ctx, host, env.prepared["version"]), facts["files"])
        active = facts["units"].get(UNIT, {}).get("ActiveState") == "active"
        # The kit's users file is read by the kit's own facts, never by RabbitMQ.
        restart = [s for s in steps if not s.what.endswith(M.USERS_FILE)]
        if restart and active:
            steps.append(Change(f"mark rabbit@{host.name} for a rolling restart", [C.cmd("touch", RESTART_PENDING)]))
        notes = []
        if host.name == nodes(ctx.inv)[0]:
            if not ctx.inv.rabbitmq.queue_mode and env.prepared["version"]:
                notes.append(f"queue mode {env.prepared['mode']} (RabbitMQ {env.prepared['version']}; "
                             "rabbitmq.queue_mode is not set)")
            warning = M.size_warning(len(nodes(ctx.inv)))
            if warning:
                notes.append(f"WARNING: {warning}")
        return Plan(steps, output={"restart": bool(restart) and active, **env.prepared}, notes=notes)


def virgin_fact(host) -> F.Fact:
    """True while the node has never run (no database directory yet)."""
    return F.Fact("virgin", ("test", "-e", f"/var/lib/rabbitmq/mnesia/rabbit@{host.name}"),
                  lambda out, rc: rc != 0)


class FirstStart(Stage):
    """A cluster none of whose nodes ever ran: every node started at once. A virgin node runs
    peer discovery against the declared node list: RabbitMQ 4.0 waits there until the others
    answer (started alone, the first node never finishes booting), and 3.10 takes a cluster-
    wide lock, so parallel starts form one cluster either way. Clusters that ran before are
    started and restarted one node at a time by the next stage."""
    name = "rabbitmq first start"

    def hosts(self, inv) -> list:
        return list(inv.with_role("rabbitmq"))

    def facts(self, ctx, host) -> list:
        return [F.units([UNIT]), virgin_fact(host)]

    def prepare(self, ctx, facts: dict) -> bool:
        return bool(facts) and all(f["virgin"] and f["units"].get(UNIT, {}).get("ActiveState") != "active"
                                   for f in facts.values())

    def plan(self, ctx, host, facts: dict, env: StageEnv) -> Plan:
        if not env.prepared:
            return Plan([])
        return Plan([Change(f"start {UNIT} (new cluster: all nodes at once)",
                            [C.systemctl("enable", UNIT), C.systemctl("start", UNIT), await_node()],
                            slow=True)])


class Nodes(Stage):
    name = "rabbitmq nodes"
    serial = True

    def hosts(self, inv) -> list:
        return list(inv.with_role("rabbitmq"))

    def facts(self, ctx, host) -> list:
        seed = host.name == nodes(ctx.inv)[0]
        return [F.units([UNIT]), F.exit_ok("pending", "test", "-e", RESTART_PENDING),
                view_fact(ctx.inv, with_state=seed)]

    def plan(self, ctx, host, facts: dict, env: StageEnv) -> Plan:
        inv = ctx.inv
        all_nodes = nodes(inv)
        seed, me = all_nodes[0], host.name
        config = env.output("rabbitmq config", me, {})
        mode = config.get("mode") or M.queue_mode(inv, None)
        unit = facts["units"].get(UNIT, {})
        clear = [C.cmd("rm", "-f", RESTART_PENDING)] if facts["pending"] or config.get("restart") else []
        steps: list = []
        if unit.get("UnitFileState") != "enabled":
            steps.append(Change(f"enable {UNIT}", [C.systemctl("enable", UNIT)]))
        if unit.get("ActiveState") != "active":
            steps += [Change(f"start {UNIT}", [C.systemctl("start", UNIT), await_node(), *clear], slow=True),
                      Replan(f"rabbit@{me} started")]
            return Plan(steps)
        wanted = all_nodes[:all_nodes.index(me) + 1]
        if facts["pending"] or config.get("restart"):
            # Rolling: this node only (the stage is serial); the others keep serving. A member
            # stays a member across a restart: no join check, only the cluster's view after.
            steps += [Change(f"restart {UNIT} (config changed)", [*restart_node_cmds(mode), *clear], slow=True),
                      cluster_running(inv, wanted)]
            return Plan(steps)
        view = facts["cluster"]
        if not view:
            raise DeployFailed(f"cannot read the cluster status of rabbit@{me} (management API and "
                               "rabbitmqctl cluster_status both failed); see `journalctl -u rabbitmq-server`")
        # Reset only a node that is provably alone: a reset throws away its data.
        if me != seed and set(view["members"]) == {f"rabbit@{me}"}:
            steps += [Change(f"join cluster via rabbit@{seed}",
                             [M.ctl("stop_app"), M.ctl("reset"), M.ctl("join_cluster", f"rabbit@{seed}"),
                              M.ctl("start_app"), await_node()], slow=True),
                      Replan(f"rabbit@{me} joined")]
            return Plan(steps)
        # Next node only once this one and those before it show as running members.
        if not {f"rabbit@{n}" for n in wanted} <= set(view["running"]) or view.get("partitions"):
            steps.append(cluster_running(inv, wanted))
        return Plan(steps)


class Objects(Stage):
    name = "rabbitmq vhost, users, policy"

    def hosts(self, inv) -> list:
        return list(inv.with_role("rabbitmq")[:1])

    def facts(self, ctx, host) -> list:
        return [state_fact(ctx.inv)]

    def plan(self, ctx, host, facts: dict, env: StageEnv) -> Plan:
        inv = ctx.inv
        config = env.output("rabbitmq config", host.name, {})
        mode = config.get("mode") or M.queue_mode(inv, None)
        users = M.logins(inv, lambda n: ctx.secret(n).reveal(), mode)
        n = len(nodes(inv))
        steps = M.cluster_plan(inv, facts["state"], users, mode, n, M.version_major(config.get("version")))
        imports = [i for i, s in enumerate(steps) if s.commands and
                   s.commands[0].argv[:2] == ("rabbitmqctl", "import_definitions")]
        if imports:
            # The import runs asynchronously in the node: done when the state shows it.
            done = Await("the imported definitions are in place", state_fact(inv),
                         lambda s: s.get("ok") and not M.missing_objects(inv, s, users, mode, n), 60,
                         "the definitions import did not show in the management API")
            i = imports[0] + 1
            if facts["state"].get("ok"):
                steps = steps[:i] + [done] + steps[i:]
            else:
                # First deploy: the API answers once the admin exists; what is left (guest,
                # rights to take away) is then planned from what it says, not blindly.
                steps = steps[:i] + [done, Replan("the management API answers now")]
        return Plan(steps)


class RollingRestart(Stage):
    """`fab rabbitmq.restart`: every node, one at a time, drained and awaited."""
    name = "rabbitmq rolling restart"
    serial = True

    def hosts(self, inv) -> list:
        return list(inv.with_role("rabbitmq"))

    def facts(self, ctx, host) -> list:
        return [F.packages(["rabbitmq-server"])]

    def plan(self, ctx, host, facts: dict, env: StageEnv) -> Plan:
        mode = M.queue_mode(ctx.inv, facts["packages"].get("rabbitmq-server"))
        return Plan([Change(f"rolling restart of rabbit@{host.name}", restart_node_cmds(mode), slow=True),
                     cluster_running(ctx.inv, nodes(ctx.inv))])


STAGES = [Config(), FirstStart(), Nodes(), Objects()]
