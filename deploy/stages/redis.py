"""Redis as the Celery result backend: ACL logins with least privilege, AOF persistence,
Debian's unit; on more than one redis host, a master and replicas that Redis Sentinel fails
over (the Sentinel stage, stages/sentinel.py, runs right after this one).

Who decides what -- the kit owns settings, Redis and Sentinel own the replication role:

- The kit's settings live in files of the kit's own, root-owned and only readable by Redis:
  /etc/celery-kit/redis/redis.conf (bind, persistence, memory, ACL file, replication login),
  its ACL file and the replication login's include. They are rendered on every deploy and
  compared by sha256 like every other managed file; a change restarts Redis (one host at a
  time: this stage is serial).
- redis-server reads them AFTER /etc/redis/redis.conf: a drop-in for Debian's unit adds
  `--include /etc/celery-kit/redis/redis.conf` to its command line. That matters because
  CONFIG REWRITE (which Sentinel sends on every failover, to record the new role) copies every
  running setting into the main file, below any `include` line there: settings read from an
  include inside the main file would be frozen by the first failover and win over the kit's
  later changes. Read from the command line they always come last and always win. (Checked
  with Debian 12's 7.0.15; `save` lines add up instead of replacing, hence `save ""` first.)
- With Sentinel, /etc/redis/redis.conf is Redis's: the kit writes it ONCE (marked on its first
  line) -- on the first redis host, or on the one already running as master, nothing; on the
  others `replicaof <master>` -- and never again. Sentinel then moves `replicaof` around with
  CONFIG REWRITE on each failover. A deploy after a failover finds the mark, compares only the
  kit's own files, and changes nothing: it never re-uploads a role, so it can neither demote
  the new master nor fight Sentinel. A host whose file has no mark yet (a new or reinstalled
  redis host) is pointed at the master the Sentinels agree on (their SENTINEL MASTER answers,
  highest config epoch first), read in the same round trip as every other fact; the inventory
  order is only used before any Sentinel ever ran.
- Without Sentinel, /etc/redis/redis.conf is an empty stub the kit manages on every deploy.

Facts come from one round trip per host: files, unit, package version, and a host script
(hostscripts/redis_state.sh) that logs in as the kit's admin user (password from a root-only
file, passed in the environment) and prints the local Redis's INFO and the local Sentinel's
view as JSON.
"""
from __future__ import annotations

from pathlib import Path

from .. import commands as C
from .. import facts as F
from .. import redis_model as RM
from ..errors import DeployFailed
from ..files import ManagedFile, from_template, managed
from ..ops import file_changes, reload_if_units_changed, service_changes
from ..stage import Stage, StageEnv
from ..steps import Await, Change, Plan

HOSTSCRIPTS = Path(__file__).resolve().parents[1] / "hostscripts"
STATE_SCRIPT = (HOSTSCRIPTS / "redis_state.sh").read_text()
UNIT = RM.REDIS_UNIT
CONF = RM.REDIS_CONF
START_TIMEOUT = 180          # a large AOF takes a while to load


# Facts shared with the Sentinel stage and `fab status` ---------------------------------------

def state_fact(inv, host, key: str = "state") -> F.Fact:
    """The local Redis's INFO and the local Sentinel's view of the master (RM.parse_state)."""
    rport = str(inv.redis.port) if host.has("redis") else ""
    sport = str(inv.redis.sentinel_port) if host in inv.sentinel_hosts() else ""
    return F.Fact(key, ("sh", "-c", STATE_SCRIPT, "redis-state", rport, sport, inv.redis.master_name,
                        RM.ADMIN_PASSWORD), RM.parse_state)


def parse_stat(out: str, rc: int = 0) -> tuple[str, str, int] | None:
    parts = out.split()
    return (parts[0], parts[1], int(parts[2], 8)) if rc == 0 and len(parts) == 3 else None


def dir_fact() -> F.Fact:
    return F.Fact("dir", ("stat", "-c", "%U %G %a", RM.KIT_DIR), parse_stat)


def first_line_fact(key: str, path: str) -> F.Fact:
    """The first line of a file (where the kit marks a file it wrote once); None if missing."""
    return F.Fact(key, ("head", "-n", "1", path), lambda out, rc: out.rstrip("\n") if rc == 0 else None)


def dir_changes(actual) -> list[Change]:
    """/etc/celery-kit/redis: root's, readable by the redis group, nobody else."""
    if actual == ("root", "redis", 0o750):
        return []
    return [Change(f"directory {RM.KIT_DIR}", [C.mkdir(RM.KIT_DIR, "root", "redis", 0o750),
                                               *C.set_attrs(RM.KIT_DIR, "root", "redis", 0o750)])]


def secret_of(ctx):
    return lambda name: ctx.secret(name).reveal()


def admin_file(ctx) -> ManagedFile:
    return managed(RM.ADMIN_PASSWORD, ctx.secret(RM.SECRETS[RM.ADMIN_USER]).reveal() + "\n",
                   mode=0o600, secret=True)


def kit_file(path: str, template: str, context: dict, secret: bool = False) -> ManagedFile:
    return from_template(path, template, context, owner="root", group="redis", mode=0o640, secret=secret)


def dropin_file(unit: str, binary: str, main: str, kit_conf: str) -> ManagedFile:
    return from_template(RM.dropin(unit), "redis-dropin.conf.j2",
                         {"binary": binary, "main": main, "kit_conf": kit_conf})


def restarts(steps: list[Change]) -> bool:
    """A file the service reads changed (the admin password file is only read by the kit)."""
    return any(s.file is not None and s.file.path != RM.ADMIN_PASSWORD for s in steps)


def started(steps: list[Change]) -> bool:
    return any(s.what.startswith(("start ", "restart ")) for s in steps)


# Redis -----------------------------------------------------------------------------------------

def wanted_files(ctx, host, version: str | None = None) -> list[ManagedFile]:
    """The kit's files: rendered on every deploy, restarting Redis when they change."""
    inv = ctx.inv
    replicated = bool(inv.sentinel_hosts())
    secret = secret_of(ctx)
    files = [
        kit_file(CONF, "redis.conf.j2", {"host": host, "redis": inv.redis, "acl_file": RM.REDIS_ACL,
                                         "replicated": replicated,
                                         "replication_file": RM.REDIS_REPLICATION}),
        managed(RM.REDIS_ACL, RM.redis_acl(secret, version, inv.redis.allow_dangerous_commands,
                                           previous=getattr(ctx, "previous", None)),
                owner="root", group="redis", mode=0o640, secret=True),
        admin_file(ctx),
        dropin_file(UNIT, "/usr/bin/redis-server", RM.REDIS_MAIN, CONF),
    ]
    if replicated:
        files.insert(1, managed(RM.REDIS_REPLICATION,
                                f"masteruser {RM.REPLICA_USER}\n"
                                f"masterauth {secret(RM.SECRETS[RM.REPLICA_USER])}\n",
                                owner="root", group="redis", mode=0o640, secret=True))
    return files


def main_file(replicaof: tuple[str, int] | None, once: bool) -> ManagedFile:
    """/etc/redis/redis.conf, with Debian's owner and mode (its dpkg-statoverride)."""
    return from_template(RM.REDIS_MAIN, "redis-main.conf.j2",
                         {"once": once, "replicaof": replicaof, "kit_conf": CONF,
                          "mark": RM.ONCE_MARK if once else RM.MANAGED_MARK},
                         owner="redis", group="redis", mode=0o640)


def main_changes(ctx, host, facts: dict, prepared: dict | None) -> tuple[list[Change], list[str]]:
    """Without Sentinel: the stub, managed. With Sentinel: written once, then left to Redis."""
    inv = ctx.inv
    if not inv.sentinel_hosts():
        return file_changes([main_file(None, once=False)], facts["files"]), []
    if (facts.get("head") or "").startswith(RM.ONCE_MARK):
        return [], []
    master = (prepared or {}).get("master")
    if master is None:
        raise DeployFailed(f"cannot write {RM.REDIS_MAIN} on {host.name}: it needs the current "
                           f"master, and {(prepared or {}).get('problem') or 'no master is known'}; "
                           "see `fab status`")
    addr = RM.master_address(inv, master)
    if addr == (host.address, inv.redis.port):
        return [Change(f"file {RM.REDIS_MAIN} (written once: the master)", file=main_file(None, True))], []
    return ([Change(f"file {RM.REDIS_MAIN} (written once: replica of {addr[0]}:{addr[1]})",
                    file=main_file(addr, True))],
            [f"starts as a replica of {addr[0]}:{addr[1]}"])


def await_redis(inv, host) -> Await:
    fact = state_fact(inv, host, "redis state")
    return Await(f"redis on {host.name} answers the kit's login",
                 fact, lambda s: bool((s or {}).get("redis")) and s["redis"].get("loading") == "0",
                 START_TIMEOUT, f"redis on {host.name} did not answer; see journalctl -u {UNIT} "
                 "and /var/log/redis/redis-server.log")


class Redis(Stage):
    name = "redis"
    serial = True       # replicated: never two Redis restarting at once

    def hosts(self, inv) -> list:
        return list(inv.redis_hosts())

    def facts(self, ctx, host) -> list:
        paths = [f.path for f in wanted_files(ctx, host)] + [RM.REDIS_MAIN, RM.LEGACY_AUTH]
        if RM.REDIS_REPLICATION not in paths:       # to remove it when replicas are gone
            paths.append(RM.REDIS_REPLICATION)
        return [F.files(paths), F.units([UNIT]), F.packages(["redis-server"]), dir_fact(),
                first_line_fact("head", RM.REDIS_MAIN), state_fact(ctx.inv, host)]

    def prepare(self, ctx, facts: dict) -> dict | None:
        """With Sentinel: the master a Redis whose main file is written now must follow,
        decided once from every host's facts (the Sentinels' view first)."""
        if not ctx.inv.sentinel_hosts():
            return None
        master, problem = RM.initial_master(ctx.inv, {n: f.get("state") or {} for n, f in facts.items()})
        return {"master": master, "problem": problem}

    def plan(self, ctx, host, facts: dict, env: StageEnv) -> Plan:
        inv = ctx.inv
        version = facts["packages"].get("redis-server")
        steps: list = dir_changes(facts["dir"])
        files = file_changes(wanted_files(ctx, host, version), facts["files"])
        main, notes = main_changes(ctx, host, facts, env.prepared)
        steps += files + reload_if_units_changed(files) + main
        if RM.LEGACY_AUTH in facts["files"]:
            steps.append(Change(f"remove {RM.LEGACY_AUTH} (the password is in the ACL file now)",
                                [C.cmd("rm", "-f", RM.LEGACY_AUTH)]))
        if RM.REDIS_REPLICATION in facts["files"] and not inv.sentinel_hosts():
            steps.append(Change(f"remove {RM.REDIS_REPLICATION} (no replicas)",
                                [C.cmd("rm", "-f", RM.REDIS_REPLICATION)]))
        service = service_changes(UNIT, facts["units"].get(UNIT), restart=restarts(files + main))
        steps += service
        if started(service):
            steps.append(await_redis(inv, host))
        problem = (env.prepared or {}).get("problem")
        return Plan(steps, notes=notes + ([problem] if problem else []))
