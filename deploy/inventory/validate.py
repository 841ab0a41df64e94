"""Schema checks and cross-checks for the inventory; builds the model when everything passes.

All problems are collected in one pass (fixing a file one error per run is tedious), each as
"<file>:<line>: <key.path>: <what is wrong>" so an editor can jump to it. A bad value is left
out, the model's default stands in for it, and checking goes on; checks that compare two values
skip a value that was already reported, so one mistake gives one problem, not a cascade.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from .model import (ROLES, SSH, Apt, Celery, Flower, Host, Inventory, InventoryError, RabbitMQ,
                    Redis, Releases, Spec, WorkerScale, not_empty, same_address, settings_of,
                    suggest)
from .yamlload import KINDS, KeyPath, Loaded, format_path, load_yaml, show

HOST_NAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
# What a role needs somewhere in the cluster: workers and beat talk to the broker and store
# results in Redis; Flower watches the broker's events, which only workers send.
NEEDS = {"worker": ("rabbitmq", "redis"), "beat": ("rabbitmq", "redis"),
         "flower": ("rabbitmq", "worker")}
SECTIONS = {"ssh": SSH, "apt": Apt, "rabbitmq": RabbitMQ, "redis": Redis, "celery": Celery,
            "flower": Flower, "releases": Releases}
TOP = {"state_dir": Spec("str", (not_empty,)), "hosts": Spec("map"),
       **{name: Spec("map") for name in SECTIONS}}
_BAD = object()          # marks a value that was reported and left out


def load_inventory(path: str | Path) -> Inventory:
    """Load and validate the inventory at path; raise InventoryError listing every problem."""
    shown = str(path)
    loaded = load_yaml(Path(path), shown)
    return _Checker(loaded, shown).inventory(Path(os.path.abspath(path)))


def _resolve(base: Path, value: str) -> Path:
    # Relative to the inventory file, not to wherever fab happens to be run from.
    return Path(os.path.abspath(base / os.path.expanduser(value)))


class _Checker:
    def __init__(self, loaded: Loaded, shown: str):
        self.loaded = loaded
        self.shown = shown
        self.found: list[tuple[int, str]] = []
        self.bad: set[KeyPath] = set()
        self.roles_known = True      # False when some host's roles could not be read
        for line, path, message in loaded.problems:
            self.add(path, message, line)

    def add(self, path: KeyPath, message: str, line: int | None = None) -> None:
        line = line or self.loaded.line(path)
        self.bad.add(path)
        self.found.append((line, f"{self.shown}:{line}: {format_path(path)}: {message}"))

    def inventory(self, path: Path) -> Inventory:
        data = self.loaded.data
        if not isinstance(data, dict):
            got = "the file is empty" if data is None else f"got {show(data)}"
            raise InventoryError(self.shown, [
                f"{self.shown}:{self.loaded.line(())}: top level: expected a mapping of "
                f"sections (hosts:, celery:, ...); {got}"])
        base = path.parent
        top = self.read(data, (), TOP)
        ssh = self.section(data, "ssh")
        celery = self.celery(data)
        hosts = self.hosts(data, ssh, celery, base)
        if hosts:
            self.roles(hosts)
        inventory = Inventory(
            path=path, hosts=tuple(hosts), ssh=self.ssh(ssh, base),
            apt=Apt(**self.section(data, "apt")), rabbitmq=self.rabbitmq(data, hosts, celery),
            redis=Redis(**self.section(data, "redis")), celery=celery,
            flower=self.flower(data, base), releases=Releases(**self.section(data, "releases")),
            state_dir=_resolve(base, top.get("state_dir") or ".state"))
        if self.found:
            self.found.sort(key=lambda found: found[0])     # file order; stable within a line
            raise InventoryError(self.shown, [text for _, text in self.found])
        return inventory

    def section(self, top: dict[str, Any], name: str) -> dict[str, Any]:
        return self.read(top.get(name), (name,), settings_of(SECTIONS[name]))

    def read(self, data: Any, path: KeyPath, fields: dict[str, Spec]) -> dict[str, Any]:
        """The valid values of a mapping's known keys. Absent or null means an empty mapping:
        a section whose every line is commented out is just a section of defaults."""
        if data is None:
            return {}
        if not isinstance(data, dict):
            self.add(path, f"expected a mapping, got {show(data)}")
            return {}
        for key in data:
            if key not in fields:
                hint = suggest(key, fields) or f"; known keys: {', '.join(fields)}"
                self.add(path + (key,), f"unknown key '{key}'{hint}")
        values = {}
        for key, spec in fields.items():
            if key in data:
                value = self.value(data[key], path + (key,), spec)
                if value is not _BAD:
                    values[key] = value
        return values

    def value(self, value: Any, path: KeyPath, spec: Spec) -> Any:
        if (value is None and spec.nullable) or spec.kind == "map":
            return value              # a sub-mapping is read by whoever knows its keys
        accepts, expected = KINDS[spec.kind]
        if not accepts(value):
            self.add(path, f"expected {expected}, got {show(value)}")
            return _BAD
        if spec.kind == "strs":
            return self.str_list(value, path, spec)
        if spec.kind == "size":
            value = str(value)
        for check in spec.checks:
            if message := check(value):
                self.add(path, message)
                return _BAD
        return value

    def str_list(self, value: list[Any], path: KeyPath, spec: Spec) -> Any:
        """A non-empty list of unique strings; every bad item is reported at its own index."""
        if not value:
            self.add(path, "must not be empty")
            return _BAD
        first: dict[str, int] = {}
        ok = True
        for index, item in enumerate(value):
            if not isinstance(item, str):
                problem = f"expected a string, got {show(item)}"
            elif item in first:
                problem = f"'{item}' is listed twice (also as [{first[item]}])"
            else:
                first[item] = index
                problem = next((m for check in spec.checks if (m := check(item))), None)
            if problem:
                self.add(path + (index,), problem)
                ok = False
        return tuple(value) if ok else _BAD

    def clash(self, section: KeyPath, data: Any, values: dict[str, Any], defaults: Any,
              keys: tuple[str, ...], why: str) -> None:
        """Report keys of one section that must all differ but have the same value, at the
        later of the two keys that the file gives (a default has no line)."""
        seen: dict[Any, str] = {}
        for key in keys:
            if section + (key,) in self.bad:
                continue
            value = values.get(key, getattr(defaults, key))
            if value in seen:
                given = [k for k in (seen[value], key) if isinstance(data, dict) and k in data]
                self.add(section + tuple(given[-1:]),
                         f"{key} and {seen[value]} are both {value!r}; {why}")
            else:
                seen[value] = key

    def ssh(self, values: dict[str, Any], base: Path) -> SSH:
        values = dict(values)
        if values.get("key") is not None:
            values["key"] = _resolve(base, values["key"])
        return SSH(**values)

    def celery(self, top: dict[str, Any]) -> Celery:
        path, values = ("celery",), self.section(top, "celery")
        limit = values.get("time_limit", Celery.time_limit)
        if path + ("time_limit",) not in self.bad:
            soft, stop = values.get("soft_time_limit"), values.get("stop_timeout")
            if soft is not None and soft >= limit:
                self.add(path + ("soft_time_limit",), f"{soft} must be less than time_limit "
                         f"({limit}): the soft limit is the task's warning before the hard one")
                del values["soft_time_limit"]
            if stop is not None and stop <= limit:
                self.add(path + ("stop_timeout",), f"{stop} must be greater than time_limit "
                         f"({limit}): systemd would SIGKILL a task that is still allowed to run")
                del values["stop_timeout"]
        return Celery(**values)

    def hosts(self, top: dict[str, Any], ssh: dict[str, Any], celery: Celery,
              base: Path) -> list[Host]:
        path, data = ("hosts",), top.get("hosts")
        if not isinstance(data, dict) or not data:
            got = ("missing" if "hosts" not in top else "empty" if data in (None, {})
                   else f"got {show(data)}")
            self.add(path, f"required: a non-empty mapping of host name to host; {got}")
            return []
        hosts, address_of = [], {}
        for name, raw in data.items():
            here = path + (name,)
            if not HOST_NAME.fullmatch(name):
                self.add(here, f"host name '{name}' must be a lowercase RFC 1123 label (a-z, "
                         "0-9 and '-', at most 63): it becomes a name in /etc/hosts and a RabbitMQ node name")
            if not isinstance(raw, dict):
                self.add(here, f"expected a mapping with address and roles, got {show(raw)}")
                self.roles_known = False
                continue
            values = self.read(raw, here, settings_of(Host))
            for key in ("address", "roles"):
                if key not in raw:
                    self.add(here + (key,), f"missing: every host needs {key}")
            self.roles_known &= "roles" in values
            given = raw.get("roles") if isinstance(raw.get("roles"), list) else []
            roles = frozenset(r for r in given if isinstance(r, str) and r in ROLES)
            address = values.get("address", "")
            if address:
                same = same_address(address)
                if same in address_of:
                    self.add(here + ("address",), f"{address} is also the address of host "
                             f"'{address_of[same]}'; two hosts cannot share an address")
                address_of.setdefault(same, name)
            own_ssh = self.read(raw.get("ssh"), here + ("ssh",), settings_of(SSH))
            hosts.append(Host(name=name, address=address, ssh=self.ssh({**ssh, **own_ssh}, base),
                              roles=roles, worker=self.worker(raw, here, values, celery)))
        return hosts

    def worker(self, raw: dict[str, Any], here: KeyPath, values: dict[str, Any],
               celery: Celery) -> WorkerScale | None:
        roles = values.get("roles", ())
        if raw.get("worker") is not None and "roles" in values and "worker" not in roles:
            self.add(here + ("worker",), "only hosts with role 'worker' may have a worker: "
                     f"section; this host's roles are {', '.join(sorted(roles)) or 'none'}")
        scale = self.read(raw.get("worker"), here + ("worker",), settings_of(WorkerScale))
        if "worker" not in roles:
            return None
        return WorkerScale(instances=scale.get("instances", celery.instances),
                           concurrency=scale.get("concurrency", celery.concurrency))

    def roles(self, hosts: list[Host]) -> None:
        """Checks across hosts. When some host's roles could not be read, a missing role may
        just be in that list, so only "too many" is checked then."""
        having = {role: [h.name for h in hosts if role in h.roles] for role in ROLES}
        explained = set()        # required roles already reported through a role that needs them
        for host in hosts if self.roles_known else ():
            for role in (r for r in ROLES if r in host.roles and r in NEEDS):
                for needed in NEEDS[role]:
                    if not having[needed]:
                        explained.add(needed)
                        self.add(("hosts", host.name, "roles"), f"role '{role}' on {host.name} "
                                 f"needs a host with role '{needed}'; none has it")
        for role in ("rabbitmq", "worker"):
            if not having[role] and role not in explained and self.roles_known:
                self.add(("hosts",), f"no host has role '{role}'; at least one must")
        rules = {"redis": (1, 1, "exactly one host"), "flower": (0, 1, "at most one host"),
                 "beat": (0, 1, "at most one host (a second scheduler would send every "
                          "periodic task twice)")}
        for role, (least, most, rule) in rules.items():
            names = having[role]
            if len(names) > most or (len(names) < least and role not in explained
                                     and self.roles_known):
                found = f"found {len(names)}" + (f": {', '.join(names)}" if names else "")
                where = ("hosts", names[-1], "roles") if names else ("hosts",)
                self.add(where, f"{role} must be on {rule}, {found}")

    def rabbitmq(self, top: dict[str, Any], hosts: list[Host], celery: Celery) -> RabbitMQ:
        path, data, values = ("rabbitmq",), top.get("rabbitmq"), self.section(top, "rabbitmq")
        given = data if isinstance(data, dict) else {}
        if values.get("queue_mode") == "quorum":
            for key in ("mirrors", "ha_sync_mode"):
                if key in given and path + (key,) not in self.bad:
                    self.add(path + (key,), f"{key} only applies to queue_mode mirrored; quorum "
                             "queues replicate to all cluster members by design")
                    values.pop(key, None)
        nodes = [h.name for h in hosts if "rabbitmq" in h.roles]
        mirrors = values.get("mirrors")
        if isinstance(mirrors, int) and nodes and mirrors > len(nodes):
            self.add(path + ("mirrors",), f"{mirrors} is more than the {len(nodes)} host(s) "
                     f"with role 'rabbitmq' ({', '.join(nodes)})")
            del values["mirrors"]
        self.clash(path, data, values, RabbitMQ, ("app_user", "admin_user"),
                   "the application must not log in as the administrator")
        self.clash(path, data, values, RabbitMQ, ("amqp_port", "management_port"),
                   "each listener needs its own port")
        timeout = values.get("consumer_timeout")
        if timeout is not None and ("celery", "time_limit") not in self.bad \
                and timeout <= celery.time_limit:
            self.add(path + ("consumer_timeout",), f"{timeout} must be greater than "
                     f"celery.time_limit ({celery.time_limit}): RabbitMQ would cut off a task "
                     "that is still allowed to run")
            del values["consumer_timeout"]
        return RabbitMQ(**values)

    def flower(self, top: dict[str, Any], base: Path) -> Flower:
        path, data, values = ("flower",), top.get("flower"), self.section(top, "flower")
        given = data if isinstance(data, dict) else {}
        self.clash(path, data, values, Flower, ("port", "http_port", "https_port"),
                   "each listener needs its own port")
        for key, other in (("tls_cert", "tls_key"), ("tls_key", "tls_cert")):
            if values.get(key) is not None and given.get(other) is None:
                self.add(path + (key,), f"{key} is given without {other}; give both or neither")
        for key in ("tls_cert", "tls_key"):
            if values.get(key) is not None:
                values[key] = _resolve(base, values[key])
                if not values[key].is_file():
                    self.add(path + (key,), f"file not found: {values[key]}")
        return Flower(**values)

