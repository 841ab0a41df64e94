"""Schema checks and cross-checks for the inventory; builds the model when everything passes.

All problems are collected in one pass (fixing a file one error per run is tedious), each as
"<file>:<line>: <key.path>: <what is wrong>" so an editor can jump to it. A bad value is left
out, the model's default stands in for it, and checking goes on; checks that compare two values
skip a value that was already reported, so one mistake gives one problem, not a cascade.
Reading values is reader.py's, the hosts: section hostcheck.py's; the sections are here.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .checks import not_empty
from .hostcheck import HostChecks
from .model import (Apt, Celery, Firewall, Flower, Host, Inventory, InventoryError, Project,
                    RabbitMQ, Redis, Releases, Spec, TopSSH, settings_of)
from .reader import resolve
from .yamlload import load_yaml, show

SECTIONS = {"ssh": TopSSH, "apt": Apt, "rabbitmq": RabbitMQ, "redis": Redis, "celery": Celery,
            "flower": Flower, "releases": Releases, "firewall": Firewall, "project": Project}
TOP = {"state_dir": Spec("str", (not_empty,)), "hosts": Spec("map"),
       **{name: Spec("map") for name in SECTIONS}}


def load_inventory(path: str | Path) -> Inventory:
    """Load and validate the inventory at path; raise InventoryError listing every problem."""
    shown = str(path)
    loaded = load_yaml(Path(path), shown)
    return _Checker(loaded, shown).inventory(Path(os.path.abspath(path)))


class _Checker(HostChecks):
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
            path=path, hosts=tuple(hosts), ssh=self.ssh(ssh, base, TopSSH),
            apt=Apt(**self.section(data, "apt")), rabbitmq=self.rabbitmq(data, hosts, celery),
            redis=self.redis(data), celery=celery, flower=self.flower(data, base),
            releases=Releases(**self.section(data, "releases")),
            state_dir=resolve(base, top.get("state_dir") or ".state"),
            firewall=Firewall(**self.section(data, "firewall")),
            project=self.project(data, base))
        if self.found:
            self.found.sort(key=lambda found: found[0])     # file order; stable within a line
            raise InventoryError(self.shown, [text for _, text in self.found])
        return inventory

    def section(self, top: dict[str, Any], name: str) -> dict[str, Any]:
        return self.read(top.get(name), (name,), settings_of(SECTIONS[name]))

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

    def rabbitmq(self, top: dict[str, Any], hosts: list[Host], celery: Celery) -> RabbitMQ:
        path, data, values = ("rabbitmq",), top.get("rabbitmq"), self.section(top, "rabbitmq")
        given = data if isinstance(data, dict) else {}
        # Settings of the other queue mode are an error only when the file chose a mode; with
        # the automatic choice either mode may be deployed, so both sets of settings apply.
        mode = values.get("queue_mode")
        other = {"quorum": (("mirrors", "ha_sync_mode"), "only applies to queue_mode mirrored; "
                            "quorum queues replicate to all cluster members by design"),
                 "mirrored": (("delivery_limit",), "only applies to quorum queues; classic "
                              "mirrored queues redeliver a message without limit")}
        keys, why = other.get(mode, ((), ""))
        for key in keys:
            if key in given and path + (key,) not in self.bad:
                self.add(path + (key,), f"{key} {why}")
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
        dead = values.get("dead_letter_queue", RabbitMQ.dead_letter_queue)
        if dead in celery.queues and path + ("dead_letter_queue",) not in self.bad:
            self.add(path + ("dead_letter_queue",), f"{dead!r} is also in celery.queues; the "
                     "workers would consume the messages dead-lettered for failing them")
            values.pop("dead_letter_queue", None)
        return RabbitMQ(**values)

    def redis(self, top: dict[str, Any]) -> Redis:
        path, values = ("redis",), self.section(top, "redis")
        self.clash(path, top.get("redis"), values, Redis, ("port", "sentinel_port"),
                   "each listener needs its own port")
        return Redis(**values)

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
                values[key] = resolve(base, values[key])
                if not values[key].is_file():
                    self.add(path + (key,), f"file not found: {values[key]}")
        return Flower(**values)

    def project(self, top: dict[str, Any], base: Path) -> Project:
        """The directory must be a PEP 517 project and the lock must exist: a deploy builds a
        wheel from the one and installs exactly the other, and should not find out halfway."""
        path, values = ("project",), self.section(top, "project")
        if "path" in values:
            values["path"] = resolve(base, values["path"])
        if "lock" in values:        # relative to the project, which is what it pins
            values["lock"] = resolve(values.get("path", Project.path), values["lock"])
        project = Project(**values)
        if path + ("path",) in self.bad:
            return project          # the lock is relative to a directory we do not know
        if not project.path.is_dir():
            self.add(path + ("path",), f"directory not found: {project.path}")
        elif not (project.path / "pyproject.toml").is_file():
            self.add(path + ("path",), f"not a PEP 517 project: "
                     f"{project.path / 'pyproject.toml'} not found")
        elif path + ("lock",) not in self.bad and not project.lock.is_file():
            self.add(path + ("lock",), f"file not found: {project.lock} (the project's fully "
                     "pinned requirements)")
        return project
