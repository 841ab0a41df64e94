"""Redis Sentinel on every sentinel host (Inventory.sentinel_hosts(): the redis and rabbitmq
hosts, when there is more than one redis host), right after the redis stage.

The same split as for Redis (see stages/redis.py): the kit's settings are in files of its own
under /etc/celery-kit/redis (down-after 5 s, failover-timeout 30 s, the logins to Redis and
between Sentinels, ACL users), read after /etc/redis/sentinel.conf from redis-sentinel's
command line. /etc/redis/sentinel.conf is Sentinel's: Sentinel rewrites it all the time (the
master it follows, known replicas and Sentinels, epochs); the kit writes it once, with
`sentinel monitor` pointing at the current master, and marks it on its first line with the
master name. Afterwards the one kit-owned value in it, the quorum (a majority of the
Sentinels), is compared with the running Sentinel's and changed with SENTINEL SET, which
Sentinel records itself. A deploy after a failover therefore changes nothing here either.

One Sentinel at a time (serial): restarting them all at once would leave no majority.
"""
from __future__ import annotations

from .. import commands as C
from .. import facts as F
from .. import redis_model as RM
from ..errors import DeployFailed
from ..files import ManagedFile, from_template, managed
from ..ops import file_changes, reload_if_units_changed, service_changes
from ..stage import Stage, StageEnv
from ..steps import Await, Change, Plan, Replan
from .redis import (admin_file, dir_changes, dir_fact, dropin_file, first_line_fact, kit_file,
                    restarts, secret_of, started, state_fact)

UNIT = RM.SENTINEL_UNIT
DOWN_AFTER_MS = 5000
FAILOVER_TIMEOUT_MS = 30000
START_TIMEOUT = 60
# SENTINEL SET as the kit's admin user; the password file is root's, read here on the host.
QUORUM_SCRIPT = ('REDISCLI_AUTH=$(head -n 1 "$1"); export REDISCLI_AUTH; '
                 'out=$(redis-cli --no-auth-warning --user celery-kit -h 127.0.0.1 -p "$2" '
                 'SENTINEL SET "$3" quorum "$4" 2>&1); [ "$out" = OK ] || { echo "$out" >&2; exit 1; }')


def hostnames(inv) -> bool:
    """Some redis or sentinel address is a DNS name: Sentinel must resolve names."""
    return not all(RM.is_ip(h.address) for h in inv.sentinel_hosts())


def wanted_files(ctx, host, version: str | None = None) -> list[ManagedFile]:
    inv = ctx.inv
    name = inv.redis.master_name
    secret = secret_of(ctx)
    ctx_tpl = {"host": host, "redis": inv.redis, "name": name, "count": len(inv.sentinel_hosts()),
               "quorum": RM.quorum(inv), "acl_file": RM.SENTINEL_ACL, "auth_file": RM.SENTINEL_AUTH,
               "hostnames": hostnames(inv), "down_after_ms": DOWN_AFTER_MS,
               "failover_timeout_ms": FAILOVER_TIMEOUT_MS}
    auth = (f"sentinel auth-pass {name} {secret(RM.SECRETS[RM.SENTINEL_USER])}\n"
            f"sentinel sentinel-pass {secret(RM.SECRETS[RM.SENTINEL_USER])}\n")
    return [
        kit_file(RM.SENTINEL_CONF, "redis-sentinel.conf.j2", ctx_tpl),
        managed(RM.SENTINEL_AUTH, auth, owner="root", group="redis", mode=0o640, secret=True),
        managed(RM.SENTINEL_ACL, RM.sentinel_acl(secret, version, previous=getattr(ctx, "previous", None)),
                owner="root", group="redis",
                mode=0o640, secret=True),
        admin_file(ctx),
        dropin_file(UNIT, "/usr/bin/redis-sentinel", RM.SENTINEL_MAIN, RM.SENTINEL_CONF),
    ]


def mark(inv) -> str:
    return f"{RM.ONCE_MARK} for master name {inv.redis.master_name};"


def main_file(inv, master: tuple[str, int]) -> ManagedFile:
    return from_template(RM.SENTINEL_MAIN, "sentinel-main.conf.j2",
                         {"mark": RM.ONCE_MARK, "name": inv.redis.master_name, "master": master,
                          "quorum": RM.quorum(inv), "hostnames": hostnames(inv),
                          "kit_conf": RM.SENTINEL_CONF},
                         owner="redis", group="redis", mode=0o640)


def view_of(facts: dict) -> dict | None:
    return ((facts.get("state") or {}).get("sentinel") or {}).get("master")


def await_sentinel(inv, host) -> Await:
    return Await(f"sentinel on {host.name} follows a master", state_fact(inv, host, "sentinel state"),
                 lambda s: RM.address_of(((s or {}).get("sentinel") or {}).get("master")) is not None,
                 START_TIMEOUT, f"sentinel on {host.name} did not answer with a master; see "
                 f"journalctl -u {UNIT} and /var/log/redis/redis-sentinel.log")


class Sentinel(Stage):
    name = "redis sentinel"
    serial = True

    def hosts(self, inv) -> list:
        return list(inv.sentinel_hosts())

    def facts(self, ctx, host) -> list:
        return [F.files([f.path for f in wanted_files(ctx, host)]), F.units([UNIT]),
                F.packages(["redis-sentinel"]), dir_fact(), first_line_fact("head", RM.SENTINEL_MAIN),
                state_fact(ctx.inv, host)]

    def prepare(self, ctx, facts: dict) -> dict:
        """The master a Sentinel whose file is written now must monitor: the one the other
        Sentinels follow; before any ran, the master the redis stage just set up."""
        master, problem = RM.initial_master(ctx.inv, {n: f.get("state") or {} for n, f in facts.items()})
        return {"master": master, "problem": problem}

    def plan(self, ctx, host, facts: dict, env: StageEnv) -> Plan:
        inv = ctx.inv
        version = facts["packages"].get("redis-sentinel")
        steps: list = dir_changes(facts["dir"])
        files = file_changes(wanted_files(ctx, host, version), facts["files"])
        steps += files + reload_if_units_changed(files)
        main: list[Change] = []
        if not (facts.get("head") or "").startswith(mark(inv)):
            master = env.prepared.get("master")
            if master is None:
                raise DeployFailed(f"cannot write {RM.SENTINEL_MAIN} on {host.name}: it needs the "
                                   f"current master, and {env.prepared.get('problem')}; see `fab status`")
            addr = RM.master_address(inv, master)
            main = [Change(f"file {RM.SENTINEL_MAIN} (written once: monitor {inv.redis.master_name} "
                           f"at {addr[0]}:{addr[1]})", file=main_file(inv, addr))]
        steps += main
        service = service_changes(UNIT, facts["units"].get(UNIT), restart=restarts(files + main))
        steps += service
        if started(service):
            # Then read it again: the quorum is checked on the running Sentinel.
            return Plan(steps + [await_sentinel(inv, host), Replan(f"sentinel on {host.name} started")])
        view = view_of(facts)
        want = RM.quorum(inv)
        if view and view.get("quorum") != str(want):
            steps.append(Change(f"sentinel quorum {want} (was {view.get('quorum')})",
                                [C.sh(QUORUM_SCRIPT, RM.ADMIN_PASSWORD, str(inv.redis.sentinel_port),
                                      inv.redis.master_name, str(want))]))
        notes = []
        others = int((view or {}).get("num-other-sentinels") or 0)
        if others > len(inv.sentinel_hosts()) - 1:
            notes.append(f"sentinel on {host.name} still counts {others} other Sentinels, more than "
                         "the inventory has: run SENTINEL RESET (README: removing a Sentinel)")
        if env.prepared.get("problem"):
            notes.append(env.prepared["problem"])
        return Plan(steps, notes=notes)
