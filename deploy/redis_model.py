"""Redis and Redis Sentinel, decided purely: who logs in with which rights (ACL users), where
the kit's files live, what a host's state fact says, and which Redis is the master.

Logins (ACL users; the `default` user is disabled everywhere, so every connection must log
in as one of these). Passwords are 40 random characters from the kit's secrets; Redis and
Sentinel only ever see their sha256 (`#<hash>` in the ACL files), except where Redis itself
must present one (masterauth, Sentinel's auth-pass and sentinel-pass):

  user                 where                what for                             secret
  celery               Redis                Celery's result backend: results,    redis_password
                                            groups, chords, result pub/sub;
                                            keys and channels celery-task-meta-*,
                                            celery-taskset-meta-*, chord-unlock-*
  celery               Sentinel             clients find the master (read only)  redis_password
  celery-kit           Redis, Sentinel      the kit as root on the host (facts,  redis_admin_password
                                            `fab status`, setting the quorum):
                                            INFO, ROLE, PING; SENTINEL on
                                            Sentinels. With redis.
                                            allow_dangerous_commands: every
                                            command on Redis.
  celery-kit-replica   Redis                a replica syncing from its master    redis_replication_password
  celery-kit-sentinel  Redis, Sentinel      Sentinel monitoring and failing over redis_sentinel_password
                                            Redis (the documented minimal set),
                                            and Sentinels talking to each other

Nobody can run FLUSHALL, FLUSHDB, CONFIG (Sentinel: CONFIG REWRITE only), KEYS, EVAL,
FUNCTION, ACL, MIGRATE, REPLICAOF (Sentinel: SLAVEOF only), DEBUG, MODULE, SHUTDOWN or
MONITOR. Celery needs EVALSHA and SCRIPT LOAD (its chord scripts): a Lua script runs with its
caller's rights, so it can touch only Celery's keys with Celery's commands, but it does run in
Redis's Lua interpreter (keep Redis patched; see the README).

The `default` user is disabled (no login, no password) but keeps +@write on all keys: Redis
replays the AOF's MULTI/EXEC blocks (Celery's chord scripts and multi-key transactions end up
there) as `default` and re-checks that user's ACL rights at EXEC; without them it drops those
blocks on restart (redis/redis#14541, fixed upstream by #14545 in November 2025, after the
7.0.15 and 8.0.2 Debian ship; #14156 shows 7.2 even refusing to start). Checked on Debian 12's
7.0.15: chord state written before a kill -9 is gone after the restart without this rule,
kept with it.
"""
from __future__ import annotations

import hashlib
import ipaddress
import json
import re
from typing import Any

# Users -------------------------------------------------------------------------------------

CELERY_USER = "celery"
ADMIN_USER = "celery-kit"
REPLICA_USER = "celery-kit-replica"
SENTINEL_USER = "celery-kit-sentinel"

SECRETS = {CELERY_USER: "redis_password", ADMIN_USER: "redis_admin_password",
           REPLICA_USER: "redis_replication_password", SENTINEL_USER: "redis_sentinel_password"}

CELERY_KEYS = ("celery-task-meta-*", "celery-taskset-meta-*", "chord-unlock-*")
# What Celery 5.7's Redis result backend (redis-py 8.1) sends, checked against a real Redis:
CELERY_COMMANDS = (
    "ping",                                  # health checks, pub/sub keepalive
    "select",                                # a database other than 0
    "get", "mget", "set", "setex", "del", "exists", "incr", "incrby", "expire",
    "multi", "exec", "discard",              # store + publish in one transaction
    "publish", "subscribe", "unsubscribe",   # AsyncResult.get() waits on the result's channel
    "evalsha", "script|load",                # chord scripts (redis-py loads them on NOSCRIPT)
    "zadd", "zrange", "zcount", "rpush", "lrange", "llen", "sadd", "sismember",  # chords
)
ADMIN_COMMANDS = ("ping", "info", "role")
REPLICA_COMMANDS = ("psync", "replconf", "ping")
SENTINEL_COMMANDS = ("multi", "exec", "slaveof", "ping", "subscribe", "publish", "config|rewrite",
                     "role", "info", "client|setname", "client|kill", "script|kill")
SENTINEL_CHANNEL = "__sentinel__:hello"
# On the Sentinels themselves.
CLIENT_SENTINEL_COMMANDS = ("ping", "sentinel|get-master-addr-by-name", "sentinel|masters",
                            "sentinel|master")
ADMIN_SENTINEL_COMMANDS = ("ping", "info", "sentinel")
PEER_SENTINEL_COMMANDS = ("ping", "publish", "client|setname", "sentinel|is-master-down-by-addr")

# Files on the hosts ------------------------------------------------------------------------

# The kit's own files: root-owned, readable by the redis group, not writable by Redis (its
# units see /etc/celery-kit read-only, and the directory is root's).
KIT_DIR = "/etc/celery-kit/redis"
REDIS_CONF = f"{KIT_DIR}/redis.conf"                # the kit's Redis settings
REDIS_REPLICATION = f"{KIT_DIR}/replication.conf"   # masteruser/masterauth (with Sentinel)
REDIS_ACL = f"{KIT_DIR}/redis-users.acl"
SENTINEL_CONF = f"{KIT_DIR}/sentinel.conf"          # the kit's Sentinel settings
SENTINEL_AUTH = f"{KIT_DIR}/sentinel-auth.conf"     # auth-pass, sentinel-pass
SENTINEL_ACL = f"{KIT_DIR}/sentinel-users.acl"
ADMIN_PASSWORD = f"{KIT_DIR}/admin.pass"            # root 0600: the kit's scripts log in with it
# Debian's files, which Redis and Sentinel rewrite at run time (CONFIG REWRITE).
REDIS_MAIN = "/etc/redis/redis.conf"
SENTINEL_MAIN = "/etc/redis/sentinel.conf"
LEGACY_AUTH = "/etc/redis/celery-kit-auth.conf"     # the password include of earlier kits

REDIS_UNIT = "redis-server.service"
SENTINEL_UNIT = "redis-sentinel.service"
DROPIN = "/etc/systemd/system/{unit}.d/celery-kit.conf"

# First lines of /etc/redis/{redis,sentinel}.conf: managed on every deploy, or written once.
MANAGED_MARK = "# Managed by celery-kit"
ONCE_MARK = "# celery-kit: written once"


def dropin(unit: str) -> str:
    return DROPIN.format(unit=unit)


# ACL files ---------------------------------------------------------------------------------

def version_tuple(version: str | None) -> tuple[int, int] | None:
    """(7, 0) from a Debian version such as "5:7.0.15-1~deb12u10"; None when unknown."""
    found = re.match(r"(\d+)\.(\d+)", (version or "").split(":", 1)[-1])
    return (int(found.group(1)), int(found.group(2))) if found else None


def has_client_setinfo(version: str | None) -> bool:
    """CLIENT SETINFO (which redis-py sends on connect, ignoring a refusal) exists from 7.2.
    An ACL rule naming a command the server does not know stops it from starting, so the
    rule is only written for a version known to have it."""
    v = version_tuple(version)
    return v is not None and v >= (7, 2)


def password_hash(password: str) -> str:
    return "#" + hashlib.sha256(password.encode()).hexdigest()


def acl_line(user: str, password: str | tuple | None, commands: tuple[str, ...], keys: tuple[str, ...] = (),
             channels: tuple[str, ...] = (), on: bool = True) -> str:
    """One ACL user. `password` may be several (a rotation in progress: old and new)."""
    words = ["user", user, "on" if on else "off", "resetpass"]
    passwords = password if isinstance(password, tuple) else (password,)
    words += [password_hash(p) for p in passwords if p is not None]
    words += ["resetkeys", *(f"~{k}" for k in keys), "resetchannels", *(f"&{c}" for c in channels),
              "-@all", *(f"+{c}" for c in commands)]
    return " ".join(words)


def both(secret, previous):
    """A login's passwords: the current one, and the previous one while a rotation runs."""
    def passwords(name):
        old = previous(name) if previous else None
        return (secret(name), old) if old else secret(name)
    return passwords


def redis_acl(secret, version: str | None, admin_everything: bool = False, previous=None) -> str:
    """The Redis ACL file. `secret(name)` gives a kit secret's value; `previous(name)` its old
    value during a rotation (both are accepted then)."""
    secret_str, secret = secret, both(secret, previous)
    setinfo = ("client|setinfo",) if has_client_setinfo(version) else ()
    admin = acl_line(ADMIN_USER, secret(SECRETS[ADMIN_USER]), ADMIN_COMMANDS)
    if admin_everything:       # redis.allow_dangerous_commands: the admin login may do anything
        admin = f"user {ADMIN_USER} on resetpass {password_hash(secret_str(SECRETS[ADMIN_USER]))} ~* &* +@all"
    lines = [
        # Disabled, but allowed the writes the AOF replays as `default` (see the docstring).
        "user default off resetpass ~* resetchannels -@all +@write +multi +exec +select",
        acl_line(CELERY_USER, secret(SECRETS[CELERY_USER]), CELERY_COMMANDS + setinfo, CELERY_KEYS,
                 CELERY_KEYS),
        admin,
        acl_line(REPLICA_USER, secret(SECRETS[REPLICA_USER]), REPLICA_COMMANDS),
        acl_line(SENTINEL_USER, secret(SECRETS[SENTINEL_USER]), SENTINEL_COMMANDS,
                 channels=(SENTINEL_CHANNEL,)),
    ]
    return "\n".join(lines) + "\n"


def sentinel_acl(secret, version: str | None, previous=None) -> str:
    secret = both(secret, previous)
    setinfo = ("client|setinfo",) if has_client_setinfo(version) else ()
    lines = [
        acl_line("default", None, (), on=False),
        acl_line(CELERY_USER, secret(SECRETS[CELERY_USER]), CLIENT_SENTINEL_COMMANDS + setinfo),
        acl_line(ADMIN_USER, secret(SECRETS[ADMIN_USER]), ADMIN_SENTINEL_COMMANDS),
        acl_line(SENTINEL_USER, secret(SECRETS[SENTINEL_USER]), PEER_SENTINEL_COMMANDS,
                 channels=(SENTINEL_CHANNEL,)),
    ]
    return "\n".join(lines) + "\n"


# Sentinel sizing ---------------------------------------------------------------------------

def quorum(inv) -> int:
    """Sentinels that must agree a master is down: a majority of them."""
    return len(inv.sentinel_hosts()) // 2 + 1


def is_ip(address: str) -> bool:
    try:
        ipaddress.ip_address(address)
        return True
    except ValueError:
        return False


# The state fact (hostscripts/redis_state.sh) -------------------------------------------------

def parse_state(out: str, rc: int = 0) -> dict:
    """The host script's JSON: {"redis": INFO fields | None, "redis_error": str,
    "sentinel": {"master": {...} | None, "replicas": [...], "ckquorum": str, "error": str}};
    a key is missing when the host has no such role. {} when the output is unreadable."""
    try:
        value = json.loads(out)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def address_of(view: dict | None) -> tuple[str, int] | None:
    """(ip, port) of a Sentinel's master view."""
    if not view or not view.get("ip") or not str(view.get("port", "")).isdigit():
        return None
    return (view["ip"], int(view["port"]))


def sentinel_views(states: dict[str, dict]) -> dict[str, dict]:
    """host name -> its Sentinel's view of the master, for the Sentinels that gave one."""
    out = {}
    for name, state in states.items():
        view = ((state or {}).get("sentinel") or {}).get("master")
        if address_of(view):
            out[name] = view
    return out


def agreed_master(states: dict[str, dict]) -> tuple[tuple[str, int] | None, str | None]:
    """The master the Sentinels name, and a problem when they disagree. Sentinels settle on
    the configuration with the highest epoch; while they have not, the newest one wins, and
    two different masters at the same newest epoch is a disagreement (no answer)."""
    views = sentinel_views(states)
    if not views:
        return None, None
    by_addr: dict[tuple[str, int], list[str]] = {}
    for name, view in views.items():
        by_addr.setdefault(address_of(view), []).append(name)
    if len(by_addr) == 1:
        return next(iter(by_addr)), None
    said = "; ".join(f"{', '.join(sorted(names))}: {a[0]}:{a[1]}" for a, names in sorted(by_addr.items()))
    epoch = {name: int(view.get("config-epoch") or 0) for name, view in views.items()}
    newest = max(epoch.values())
    top = {address_of(views[n]) for n in views if epoch[n] == newest}
    problem = f"the Sentinels disagree on the master ({said})"
    return (next(iter(top)) if len(top) == 1 else None), problem


def running_master(inv, states: dict[str, dict]) -> str | None:
    """A redis host already running as a master (a single Redis turning into a replicated
    one keeps its data: it must stay the master); the one with most replicas, then the first."""
    found = []
    for i, h in enumerate(inv.redis_hosts()):
        info = (states.get(h.name) or {}).get("redis")
        if info and info.get("role") == "master":
            found.append((-int(info.get("connected_slaves") or 0), i, h.name))
    return min(found)[2] if found else None


def initial_master(inv, states: dict[str, dict]) -> tuple[Any, str | None]:
    """Where a Redis or Sentinel whose file the kit writes for the first time must point:
    the master the Sentinels agree on; before any Sentinel ran, a Redis already running as
    master; on new hosts, the first redis host of the inventory. -> (host or (ip, port), problem)."""
    agreed, problem = agreed_master(states)
    if agreed:
        for h in inv.redis_hosts():
            if (h.address, inv.redis.port) == agreed:
                return h, problem
        return agreed, problem
    if problem:
        return None, problem
    name = running_master(inv, states)
    return (inv.host(name) if name else inv.redis_hosts()[0]), None


def master_address(inv, master) -> tuple[str, int]:
    return (master.address, inv.redis.port) if hasattr(master, "address") else master
