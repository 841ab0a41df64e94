"""The inventory as immutable values: what the rest of the kit reads instead of raw YAML.

Everything is a frozen dataclass holding tuples and frozensets, so a loaded inventory can be
shared between tasks (and used as a dict key or cache key) without anyone changing it under
another's feet. Each field that the YAML file sets declares, next to its default, the kind of
value it takes and the rules that value must meet (see setting(); the rules are in checks.py);
validate.py enforces them, so a default and its rule cannot drift apart.
"""
from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from .checks import (MAXMEMORY, MODULE, NAME, PORT, QUEUE, URL_PATH, VHOST, Check, between,
                     host_address, matching, mirror_choice, network, not_empty, not_guest,
                     one_of, proxy_url)

ROLES = ("rabbitmq", "redis", "worker", "beat", "flower")
REDIS_POLICIES = ("noeviction", "allkeys-lru", "allkeys-lfu", "allkeys-random", "volatile-lru",
                  "volatile-lfu", "volatile-random", "volatile-ttl")
LOGLEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# The kit's own example task package: the project deployed when the inventory names none.
KIT_APP = Path(os.path.abspath(Path(__file__).parent / ".." / ".." / "app"))


class InventoryError(Exception):
    """An unusable inventory; `problems` holds one "<file>:<line>: <key.path>: <what>" each."""

    def __init__(self, file: str, problems: list[str]):
        super().__init__(file, problems)   # keeps the exception picklable
        self.file = file
        self.problems = list(problems)

    def __str__(self) -> str:
        header = f"invalid inventory {self.file}: {len(self.problems)} problem(s)"
        return "\n".join([header, *self.problems])


@dataclass(frozen=True)
class Spec:
    """How a field is written in the inventory file."""
    kind: str                        # int | bool | str | size | mirrors | strs | map
    checks: tuple[Check, ...] = ()   # run in order on a value of the right kind
    nullable: bool = False           # null means "not set", so the default (None) stands
    may_be_empty: bool = False       # strs only: [] is a meaningful value ("nobody else")


def setting(kind: str, *checks: Check, default: Any = MISSING, nullable: bool = False,
            may_be_empty: bool = False) -> Any:
    meta = {"yaml": Spec(kind, checks, nullable, may_be_empty)}
    return field(metadata=meta) if default is MISSING else field(default=default, metadata=meta)


def settings_of(cls: type) -> dict[str, Spec]:
    """The keys the file may give for cls, in declaration order."""
    return {f.name: f.metadata["yaml"] for f in fields(cls) if "yaml" in f.metadata}


def _known_role(role: str) -> str:
    # A typo such as has("workers") would otherwise just answer False and skip a host silently.
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; roles are {', '.join(ROLES)}")
    return role


@dataclass(frozen=True)
class SSH:
    """How the kit logs in to a host: the top-level ssh: section, and each host's ssh: over it."""
    user: str = setting("str", matching(r"[a-z_][a-z0-9_-]*", "a Unix user name"),
                        default="deploy")
    port: int = setting("int", PORT, default=22)
    # Absolute once loaded; None lets ssh and its agent pick a key.
    key: Path | None = setting("str", not_empty, default=None, nullable=True)


@dataclass(frozen=True)
class TopSSH(SSH):
    """The top-level ssh: section: the defaults every host's SSH is merged over, plus how host
    keys are checked. Those exist once per inventory (one known_hosts file that every
    connection reads and writes), so a host's own ssh: may not give them."""
    # Absolute once loaded; None: <state_dir>/known_hosts (see Inventory.known_hosts_path).
    known_hosts: Path | None = setting("str", not_empty, default=None, nullable=True)
    # strict: a host whose key is not in known_hosts is refused. accept-new: its key is
    # recorded on first connect. Under either, a key that CHANGED is always refused.
    host_key_policy: str = setting("str", one_of("strict", "accept-new"), default="strict")


@dataclass(frozen=True)
class WorkerScale:
    instances: int = setting("int", between(0, 64))       # systemd worker units on the host
    concurrency: int = setting("int", between(1, 256))    # processes/threads per unit


@dataclass(frozen=True)
class Host:
    name: str
    address: str = setting("str", host_address)
    ssh: SSH = setting("map")                    # merged over the top-level ssh: section
    roles: frozenset[str] = setting("strs", one_of(*ROLES))
    worker: WorkerScale | None = setting("map")  # set exactly when the host has role "worker"

    def has(self, role: str) -> bool:
        return _known_role(role) in self.roles


def _package_release(version: str | None) -> tuple[str, int] | None:
    """("4.0.5", 4) from a Debian package version such as "1:4.0.5-6+deb13u2" (epoch and
    Debian revision dropped); None when there is no version or it does not start N.N."""
    upstream = (version or "").split(":", 1)[-1].rsplit("-", 1)[0]
    found = re.match(r"(\d+)\.\d+", upstream)
    return (upstream, int(found.group(1))) if found else None


@dataclass(frozen=True)
class RabbitMQ:
    # None: automatic, chosen per deploy from the installed RabbitMQ (effective_queue_mode):
    # one inventory then deploys onto Debian 12 (RabbitMQ 3.x) and Debian 13 (4.x) alike.
    queue_mode: str | None = setting("str", one_of("mirrored", "quorum"), default=None,
                                     nullable=True)
    mirrors: str | int = setting("mirrors", mirror_choice, default="majority")
    ha_sync_mode: str = setting("str", one_of("automatic", "manual"), default="automatic")
    vhost: str = setting("str", not_empty, VHOST, default="/celery")
    app_user: str = setting("str", NAME, not_guest, default="celery")
    admin_user: str = setting("str", NAME, not_guest, default="admin")
    partition_handling: str = setting("str", one_of("pause_minority", "autoheal", "ignore"),
                                      default="pause_minority")
    amqp_port: int = setting("int", PORT, default=5672)
    management_port: int = setting("int", PORT, default=15672)
    # Seconds. None: derived later from the Celery time limits, so that it always follows them.
    consumer_timeout: int | None = setting("int", between(60), default=None, nullable=True)
    # Quorum queues count deliveries: a message that keeps crashing or timing out its worker
    # goes to the dead-letter queue after this many, instead of looping forever.
    delivery_limit: int = setting("int", between(1, 1000), default=5)
    dead_letter_queue: str = setting("str", QUEUE, default="celery.dead-letter")

    def mirror_count(self, n_nodes: int) -> int:
        """How many nodes hold a copy of each queue in a cluster of n_nodes."""
        if self.mirrors == "majority":
            return n_nodes // 2 + 1
        if self.mirrors == "all":
            return n_nodes
        return int(self.mirrors)

    def effective_queue_mode(self, version: str | None) -> str:
        """The queue mode to deploy onto RabbitMQ `version` (a Debian package version such as
        3.10.8-1.1+deb12u2). The file's choice if it made one; else quorum from 4.0 on (classic
        mirroring is gone there), mirrored before. Unknown version: mirrored, the mode every
        release this kit supports before 4.0 has."""
        if self.queue_mode is not None:
            return self.queue_mode
        release = _package_release(version)
        return "quorum" if release and release[1] >= 4 else "mirrored"

    def queue_mode_problem(self, version: str | None, inventory_file: Path | str) -> str | None:
        """Why this inventory cannot deploy onto RabbitMQ `version`, or None. Only an explicit
        queue_mode: mirrored can fail: the automatic choice never picks it on 4.x."""
        release = _package_release(version)
        if self.queue_mode != "mirrored" or not release or release[1] < 4:
            return None
        return (f"RabbitMQ {release[0]} has no classic mirrored queues (removed in 4.0); write "
                f"`queue_mode: quorum` in the rabbitmq: section of {inventory_file} (or leave "
                "queue_mode out: it is chosen from the RabbitMQ version)")


@dataclass(frozen=True)
class Redis:
    port: int = setting("int", PORT, default=6379)
    # "size": a YAML number is taken as bytes, so "maxmemory: 0" (unlimited) needs no quotes.
    maxmemory: str = setting("size", MAXMEMORY, default="256mb")
    # Results carry a TTL; under memory pressure evict those nearest to expiry first.
    maxmemory_policy: str = setting("str", one_of(*REDIS_POLICIES), default="volatile-ttl")
    appendonly: bool = setting("bool", default=True)
    appendfsync: str = setting("str", one_of("always", "everysec", "no"), default="everysec")
    # FLUSHALL, CONFIG, ... stay refused to every login unless this is true; then the kit's
    # admin login (root-only on the redis host) may run them. Celery's login never may.
    allow_dangerous_commands: bool = setting("bool", default=False)
    db: int = setting("int", between(0, 15), default=0)
    # Only used with more than one redis host (see Inventory.sentinel_hosts): the port of
    # Redis Sentinel, and the name clients ask Sentinel for to find the current master.
    sentinel_port: int = setting("int", PORT, default=26379)
    master_name: str = setting("str", NAME, default="celery-kit")


@dataclass(frozen=True)
class Celery:
    app: str = setting("str", MODULE, default="app")    # the module of the Celery app
    queues: tuple[str, ...] = setting("strs", QUEUE, default=("celery",))
    instances: int = setting("int", between(0, 64), default=2)      # worker units per host
    concurrency: int = setting("int", between(1, 256), default=2)   # processes/threads per unit
    pool: str = setting("str", one_of("prefork", "threads", "solo"), default="prefork")
    prefetch_multiplier: int = setting("int", between(0), default=1)
    # Task events feed Flower's task list and graphs; the kit's workers send them in batches,
    # about 0.2 CPU-s per 1,000 tasks (README, per-task CPU). Off: Flower still shows workers
    # and queues.
    task_events: bool = setting("bool", default=True)
    time_limit: int = setting("int", between(1), default=1800)      # seconds, hard limit
    soft_time_limit: int | None = setting("int", between(1), default=None, nullable=True)
    # None becomes time_limit + 60: systemd must give a running task its whole time limit
    # (plus a margin to shut down) before it SIGKILLs the worker.
    stop_timeout: int | None = setting("int", between(1), default=None, nullable=True)
    result_expires: int = setting("int", between(0), default=86400)
    serializer: str = setting("str", one_of("msgpack", "json"), default="msgpack")
    # Case does not matter in the file ("info" is fine); the model keeps Celery's spelling.
    loglevel: str = setting("str", lambda v: one_of(*LOGLEVELS)(v.upper()), default="INFO")

    def __post_init__(self) -> None:
        if self.stop_timeout is None:
            object.__setattr__(self, "stop_timeout", self.time_limit + 60)
        object.__setattr__(self, "loglevel", self.loglevel.upper())


@dataclass(frozen=True)
class Flower:
    port: int = setting("int", PORT, default=5555)    # Flower itself, on localhost behind nginx
    # "" serves Flower at the site root.
    url_prefix: str = setting("str", lambda v: URL_PATH(v.strip("/")), default="flower")
    users: tuple[str, ...] = setting("strs", NAME, default=("admin",))
    http_port: int = setting("int", PORT, default=80)
    https_port: int = setting("int", PORT, default=443)
    # Absolute once loaded; both or neither.
    tls_cert: Path | None = setting("str", not_empty, default=None, nullable=True)
    tls_key: Path | None = setting("str", not_empty, default=None, nullable=True)
    # The name users type to reach Flower; HTTP redirects only to it (never to whatever Host
    # header a request brought). None: the address of the flower host.
    server_name: str | None = setting("str", host_address, default=None, nullable=True)

    def __post_init__(self) -> None:
        # "/flower/", "flower/" and "flower" all mean the same prefix; keep one spelling.
        object.__setattr__(self, "url_prefix", self.url_prefix.strip("/"))


@dataclass(frozen=True)
class Releases:
    keep: int = setting("int", between(2, 50, "rollback needs the previous release"), default=5)


@dataclass(frozen=True)
class Apt:
    # An http(s) proxy for apt on every host; None: hosts reach their mirrors directly.
    proxy: str | None = setting("str", proxy_url, default=None, nullable=True)


def _networks(values: tuple[str, ...]) -> tuple[str, ...]:
    # One spelling each: "10.77.0.1" is stored as "10.77.0.1/32", "2001:DB8::/32" lower case;
    # two spellings of one network are then kept once.
    return tuple(dict.fromkeys(str(ipaddress.ip_network(v)) for v in values))


@dataclass(frozen=True)
class Firewall:
    """Who may reach each service. The inventory's own hosts always reach what the cluster
    needs between them; these lists only add networks outside it."""
    enabled: bool = setting("bool", default=True)
    # Clients that send tasks or read results: AMQP and Redis (and Sentinel).
    clients: tuple[str, ...] = setting("strs", network, default=(), may_be_empty=True)
    # Operators and monitoring: RabbitMQ management UI/API and metrics.
    admin: tuple[str, ...] = setting("strs", network, default=(), may_be_empty=True)
    # sshd; the default leaves it open, as a firewall must not lock the kit out of its hosts.
    ssh: tuple[str, ...] = setting("strs", network, default=("0.0.0.0/0", "::/0"))

    def __post_init__(self) -> None:
        for name in ("clients", "admin", "ssh"):
            object.__setattr__(self, name, _networks(getattr(self, name)))


@dataclass(frozen=True)
class Project:
    """The task package shipped to the workers: any PEP 517 project (a pyproject.toml)."""
    # Absolute once loaded: the project directory.
    path: Path = setting("str", not_empty, default=KIT_APP)
    # A fully pinned requirements file; relative to path, absolute once built.
    lock: Path = setting("str", not_empty, default=Path("requirements.lock"))

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))
        object.__setattr__(self, "lock", self.path / self.lock)   # an absolute lock stays


@dataclass(frozen=True)
class Inventory:
    path: Path                       # absolute path of the inventory file
    hosts: tuple[Host, ...]          # in file order
    ssh: TopSSH = field(default_factory=TopSSH)   # the top-level defaults hosts are merged over
    apt: Apt = field(default_factory=Apt)
    rabbitmq: RabbitMQ = field(default_factory=RabbitMQ)
    redis: Redis = field(default_factory=Redis)
    celery: Celery = field(default_factory=Celery)
    flower: Flower = field(default_factory=Flower)
    releases: Releases = field(default_factory=Releases)
    state_dir: Path | None = None    # None: <inventory dir>/.state; always a Path once built
    firewall: Firewall = field(default_factory=Firewall)
    project: Project = field(default_factory=Project)

    def __post_init__(self) -> None:
        if self.state_dir is None:
            object.__setattr__(self, "state_dir", self.path.parent / ".state")

    @property
    def known_hosts_path(self) -> Path:
        """The one known_hosts file every connection checks host keys against."""
        return self.ssh.known_hosts or self.state_dir / "known_hosts"

    def with_role(self, role: str) -> tuple[Host, ...]:
        _known_role(role)
        return tuple(h for h in self.hosts if role in h.roles)

    def redis_hosts(self) -> tuple[Host, ...]:
        """In file order; the first is the initial master, any others its replicas (after a
        failover Sentinel knows the master, not the inventory)."""
        return self.with_role("redis")

    def sentinel_hosts(self) -> tuple[Host, ...]:
        """Where Redis Sentinel runs, in file order: every redis and rabbitmq host when there
        is more than one redis host (enough voters for a majority); none with a single one."""
        if len(self.redis_hosts()) < 2:
            return ()
        return tuple(h for h in self.hosts if h.roles & {"redis", "rabbitmq"})

    def host(self, name: str) -> Host:
        for h in self.hosts:
            if h.name == name:
                return h
        raise KeyError(f"no host named {name!r} in {self.path}; "
                       f"hosts are {', '.join(self.names())}")

    def names(self) -> tuple[str, ...]:
        return tuple(h.name for h in self.hosts)
