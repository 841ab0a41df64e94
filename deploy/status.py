"""`fab status`: what runs where and whether it is healthy, read in one round trip per host.

Facts per host (hosts' own tools, machine-readable output), then one pure function turns
them into rows and a list of problems: RabbitMQ nodes not running, partitions, alarms,
unsynchronised mirrors or offline quorum members, queues with messages but no consumer;
Redis unreachable, failing AOF writes, evicted keys; with Sentinel, the master as the
Sentinels see it, each replica's link, and Sentinels that are down, disagree or cannot reach
a quorum; workers not answering ping.
`fab status --check` exits non-zero when there is any problem (for cron and monitoring).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from . import facts as F
from . import rabbitmq_model as M
from . import redis_model as RM
from .scale import host_scale
from .stages import rabbitmq, release, workers
from .stages import redis as redis_stage

HOSTSCRIPTS = Path(__file__).resolve().parent / "hostscripts"
QUEUES_SCRIPT = (HOSTSCRIPTS / "rabbitmq_queues.py").read_text()


def host_facts(inv, host) -> list[F.Fact]:
    out: list[F.Fact] = []
    if any(host.has(r) for r in release.APP_ROLES):
        out.append(release.releases_fact())
    sc = host_scale(inv, host)
    if sc and sc.instances:
        names = workers.node_names(host, sc.instances)
        out.append(workers.ping_fact(inv.celery.app, names, [workers.instance(i) for i in range(1, sc.instances + 1)]))
    if host.has("rabbitmq"):
        out.append(rabbitmq.view_fact(inv))
        if host.name == inv.with_role("rabbitmq")[0].name:
            r = inv.rabbitmq
            out.append(F.json_command("queues", "python3", "-I", "-S", "-c", QUEUES_SCRIPT, M.USERS_FILE,
                                      str(r.management_port), r.vhost))
    if host.has("redis") or host in inv.sentinel_hosts():
        # INFO of the local Redis, the local Sentinel's view (hostscripts/redis_state.sh).
        out.append(redis_stage.state_fact(inv, host, "redis"))
    return out


@dataclass
class Health:
    rows: list[tuple[str, ...]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def evaluate(inv, facts: dict[str, dict | None]) -> Health:
    """Pure: facts per host (None: the host could not be read) -> rows and problems."""
    h = Health()
    nodes = {f"rabbit@{x.name}" for x in inv.with_role("rabbitmq")}
    for host in inv.hosts:
        f = facts.get(host.name)
        if f is None:
            h.problems.append(f"{host.name}: cannot be reached over SSH")
            h.rows.append((host.name, host.address, ",".join(sorted(host.roles)), "?", "?"))
            continue
        rel = (f.get("releases") or {}).get("current") or ("none" if "releases" in f else "-")
        pong = "-"
        if "ping" in f:
            sc = host_scale(inv, host)
            want = set(workers.node_names(host, sc.instances))
            answered = set(f["ping"]["answered"]) & want
            pong = f"{len(answered)}/{len(want)} answer ping ({sc.source})"
            if answered != want:
                h.problems.append(f"{host.name}: workers not answering ping: {', '.join(sorted(want - answered))}")
        h.rows.append((host.name, host.address, ",".join(sorted(host.roles)), rel, pong))
        if host.has("rabbitmq"):
            _rabbitmq_node(h, host, f.get("cluster"), nodes)
        if "queues" in f:
            _queues(h, inv, f["queues"])
        if host.has("redis"):
            state = f.get("redis") or {}
            _redis(h, host, state.get("redis"), state.get("redis_error"))
    if inv.sentinel_hosts():
        _sentinels(h, inv, facts)
    return h


def _rabbitmq_node(h: Health, host, view: dict | None, nodes: set[str]) -> None:
    me = f"rabbit@{host.name}"
    if not view:
        h.problems.append(f"rabbitmq: {me} does not answer (management API and rabbitmqctl)")
        return
    missing = sorted(nodes - set(view.get("running", [])))
    if missing:
        h.problems.append(f"rabbitmq: {me} sees {', '.join(missing)} not running")
    for node, others in (view.get("partitions") or {}).items():
        h.problems.append(f"rabbitmq: partition: {node} is cut off from {', '.join(others)}")
    for alarm in view.get("alarms") or []:
        h.problems.append(f"rabbitmq: resource alarm {alarm}")


def _queues(h: Health, inv, queues) -> None:
    if not isinstance(queues, list):
        h.problems.append(f"rabbitmq: cannot list the queues of {inv.rabbitmq.vhost}: "
                          f"{(queues or {}).get('error', 'no answer')}")
        return
    for q in queues:
        name = q.get("name", "?")
        if q.get("type") == "quorum":
            offline = sorted(set(q.get("members") or []) - set(q.get("online") or []))
            if offline:
                h.problems.append(f"rabbitmq: quorum queue {name}: members offline: {', '.join(offline)}")
        elif q.get("slave_nodes") is not None:
            unsynced = sorted(set(q.get("slave_nodes") or []) - set(q.get("synchronised_slave_nodes") or []))
            if unsynced:
                h.problems.append(f"rabbitmq: mirrored queue {name}: unsynchronised mirrors on {', '.join(unsynced)}")
        if name in inv.celery.queues:
            h.notes.append(f"queue {name} ({q.get('type')}): {q.get('messages', 0)} messages, "
                           f"{q.get('messages_unacknowledged', 0)} unacknowledged, {q.get('consumers', 0)} consumers")
            if q.get("messages", 0) and not q.get("consumers", 0):
                h.problems.append(f"rabbitmq: queue {name} has {q['messages']} messages and no consumer")


def _redis(h: Health, host, info: dict | None, error: str | None = None) -> None:
    if info is None:
        h.problems.append(f"redis on {host.name}: does not answer" + (f" ({error})" if error else ""))
        return
    h.notes.append(f"redis on {host.name}: {info.get('role')}, {info.get('used_memory_human')} used, "
                   f"{info.get('evicted_keys', '0')} evicted keys, AOF {'on' if info.get('aof_enabled') == '1' else 'off'}")
    if info.get("aof_enabled") == "1" and info.get("aof_last_write_status", "ok") != "ok":
        h.problems.append(f"redis on {host.name}: AOF writes failing ({info['aof_last_write_status']})")
    if info.get("rdb_last_bgsave_status", "ok") != "ok":
        h.problems.append(f"redis on {host.name}: background save failing")
    if int(info.get("evicted_keys", "0") or 0):
        h.problems.append(f"redis on {host.name}: {info['evicted_keys']} keys evicted (results lost to "
                          "maxmemory; raise redis.maxmemory)")


def _where(inv, addr: tuple[str, int]) -> str:
    for host in inv.redis_hosts():
        if (host.address, inv.redis.port) == addr:
            return f"{host.name} ({addr[0]}:{addr[1]})"
    return f"{addr[0]}:{addr[1]}"


def _sentinels(h: Health, inv, facts: dict[str, dict | None]) -> None:
    """The master as the Sentinels see it, each Sentinel's health, each replica's link."""
    name = inv.redis.master_name
    states = {x.name: (facts.get(x.name) or {}).get("redis") or {} for x in inv.sentinel_hosts()
              if facts.get(x.name) is not None}
    others = len(inv.sentinel_hosts()) - 1
    for host in inv.sentinel_hosts():
        if host.name not in states:
            continue            # unreachable: said above
        s = states[host.name].get("sentinel") or {}
        view = s.get("master")
        if not RM.address_of(view):
            h.problems.append(f"sentinel on {host.name}: no master {name} known"
                              + (f" ({s['error']})" if s.get("error") else ""))
            continue
        flags = set(view.get("flags", "").split(","))
        if flags & {"s_down", "o_down", "disconnected"}:
            h.problems.append(f"sentinel on {host.name}: sees the master {_where(inv, RM.address_of(view))} "
                              f"down ({view.get('flags')})")
        if not str(s.get("ckquorum", "")).startswith("OK"):
            h.problems.append(f"sentinel on {host.name}: {s.get('ckquorum') or 'no quorum check'}")
        seen = int(view.get("num-other-sentinels") or 0)
        if seen != others:
            h.problems.append(f"sentinel on {host.name}: sees {seen} other Sentinels, the inventory has {others}")
    master, problem = RM.agreed_master(states)
    if problem:
        h.problems.append(f"redis: {problem}")
    if master is None:
        if not problem:
            h.problems.append(f"redis: no Sentinel knows the master {name}")
        return
    where = _where(inv, master)
    h.notes.append(f"redis master {name} (as the Sentinels see it): {where}; quorum {RM.quorum(inv)} "
                   f"of {len(inv.sentinel_hosts())} Sentinels")
    if where == f"{master[0]}:{master[1]}":
        h.problems.append(f"redis: the Sentinels' master {where} is not a redis host of the inventory")
    for host in inv.redis_hosts():
        info = (states.get(host.name) or {}).get("redis")
        if not info:
            continue            # does not answer: said by _redis
        role = info.get("role")
        if (host.address, inv.redis.port) == master:
            if role != "master":
                h.problems.append(f"redis on {host.name}: the Sentinels' master, but it runs as {role}")
            continue
        if role != "slave":
            h.problems.append(f"redis on {host.name}: runs as {role}, not as a replica of {where}")
            continue
        following = (info.get("master_host"), int(info.get("master_port") or 0))
        link = info.get("master_link_status")
        if following != master:
            h.problems.append(f"redis on {host.name}: replicates {following[0]}:{following[1]}, "
                              f"not the master {where}")
        elif link != "up":
            h.problems.append(f"redis on {host.name}: replica not linked to {where} "
                              f"(master_link_status {link})")
        else:
            h.notes.append(f"redis replica on {host.name}: linked to {where}, last contact "
                           f"{info.get('master_last_io_seconds_ago', '?')} s ago")


def report(inv, opts) -> Health:
    """Read every host, print the table, the notes and the problems; return the Health."""
    from . import runner
    from .progress import make_console
    from .report import table
    result = evaluate(inv, runner.gather_all(inv, lambda h: host_facts(inv, h), opts))
    console = make_console()
    t = table("host", "address", "roles", "release", "workers")
    for row in result.rows:
        t.add_row(*row)
    console.print(t)
    for note in result.notes:
        console.print(note, markup=False)
    if result.problems:
        console.print(f"\n{len(result.problems)} problem(s):", markup=False)
        for p in result.problems:
            console.print(f"  {p}", markup=False)
    else:
        console.print("\nhealthy: every node running, no partition, no alarm, replicas in sync, "
                      "Redis answering (with Sentinel: replicas linked), every worker answering ping", markup=False)
    return result
