"""The hosts: section: each host's address, roles, ssh and worker scale, then the checks across
hosts (which roles need which, how many hosts may have each role)."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from .checks import same_address
from .model import ROLES, SSH, Celery, Host, WorkerScale, settings_of
from .reader import Reader, resolve
from .yamlload import KeyPath, show

HOST_NAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
# What a role needs somewhere in the cluster: workers and beat talk to the broker and store
# results in Redis; Flower watches the broker's events, which only workers send.
NEEDS = {"worker": ("rabbitmq", "redis"), "beat": ("rabbitmq", "redis"),
         "flower": ("rabbitmq", "worker")}
# How many hosts may have a role: (least, most or None, the rule as the message says it).
COUNTS = {"redis": (1, None, "at least one host"), "flower": (0, 1, "at most one host"),
          "beat": (0, 1, "at most one host (a second scheduler would send every periodic "
                   "task twice)")}
# Keys of the top-level ssh: section that a host's own ssh: may not give, and why.
TOP_ONLY_SSH = {"known_hosts": "one known_hosts file per inventory",
                "host_key_policy": "one host key policy per inventory, for its one "
                                   "known_hosts file"}
# Redis Sentinel runs on these roles' hosts once there is more than one redis host.
SENTINEL_ROLES = frozenset({"redis", "rabbitmq"})


class HostChecks(Reader):
    roles_known = True      # False when some host's roles could not be read

    def ssh(self, values: dict[str, Any], base: Path, cls: type = SSH) -> Any:
        values = {k: v for k, v in values.items() if k in settings_of(cls)}
        for key in ("key", "known_hosts"):
            if values.get(key) is not None:
                values[key] = resolve(base, values[key])
        return cls(**values)

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
                self.add(here, f"host name {name!r} must be a lowercase RFC 1123 label (a-z, "
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
            own_ssh = self.read(self.own_ssh(raw.get("ssh"), here + ("ssh",)), here + ("ssh",),
                                settings_of(SSH))
            hosts.append(Host(name=name, address=address, ssh=self.ssh({**ssh, **own_ssh}, base),
                              roles=roles, worker=self.worker(raw, here, values, celery)))
        return hosts

    def own_ssh(self, data: Any, path: KeyPath) -> Any:
        """A host's ssh: without the keys that only the top level may give (reported here,
        with the reason, rather than as unknown keys)."""
        if not isinstance(data, dict):
            return data
        for key, why in TOP_ONLY_SSH.items():
            if key in data:
                self.add(path + (key,), f"only in the top-level ssh: section: {why}")
        return {k: v for k, v in data.items() if k not in TOP_ONLY_SSH}

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
        for role, (least, most, rule) in COUNTS.items():
            names = having[role]
            if (most is not None and len(names) > most) or (
                    len(names) < least and role not in explained and self.roles_known):
                found = f"found {len(names)}" + (f": {', '.join(names)}" if names else "")
                where = ("hosts", names[-1], "roles") if names else ("hosts",)
                self.add(where, f"{role} must be on {rule}, {found}")
        self.sentinels(hosts, having["redis"])

    def sentinels(self, hosts: list[Host], redis: list[str]) -> None:
        """More than one redis host means replicas and Sentinel, which fails over only when a
        majority of its instances agree: with 2, losing either one leaves no majority."""
        if len(redis) < 2 or not self.roles_known:
            return
        voters = [h.name for h in hosts if h.roles & SENTINEL_ROLES]
        if len(voters) < 3:
            self.add(("hosts", redis[-1], "roles"), (
                f"redis on {len(redis)} hosts ({', '.join(redis)}) runs Redis Sentinel on every "
                "host with role redis or rabbitmq, and a Sentinel majority needs at least 3 of "
                f"them (with 2, losing one stops failover); found {len(voters)}: "
                f"{', '.join(voters)}"))
