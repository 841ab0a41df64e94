"""RabbitMQ, decided purely: queue mode, config values, policies, and the cluster-level plan
(vhost, users, permissions, policies, guest) from the state read off the management API."""
from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass

from . import commands as C
from .files import managed
from .steps import Change

POLICY = "celery-kit-ha"
# Every queue of the app's vhost except RabbitMQ's own (amq.*) and Celery's transient
# per-client queues (events, pidbox replies): those are auto-delete and recreated by their
# clients; replicating them only costs.
POLICY_PATTERN = r"^(?!amq\.)(?!celeryev\.)(?!celery_delayed_)(?!.*\.pidbox$).*"
USERS_FILE = "/etc/celery-kit/rabbitmq-users.json"     # root 0600, read by the facts
DEFINITIONS = "/var/lib/rabbitmq/.celery-kit-definitions.json"   # only while importing


def queue_mode(inv, version: str | None) -> str:
    """The inventory's choice, or when it leaves queue_mode out: quorum on RabbitMQ >= 4
    (classic mirroring no longer exists there), mirrored on 3.x."""
    return inv.rabbitmq.effective_queue_mode(version)


def version_problem(inv, version: str | None) -> str | None:
    """Classic mirroring was removed in RabbitMQ 4.0."""
    return inv.rabbitmq.queue_mode_problem(version, inv.path)


def version_major(version: str | None) -> int | None:
    """3 from "3.10.8-1.1+deb12u2", 4 from "4.0.5-6+deb13u2"; None when unknown."""
    if not version:
        return None
    major = version.split(":")[-1].split(".")[0]
    return int(major) if major.isdigit() else None


def consumer_timeout_ms(inv) -> int:
    """Above the longest task the inventory allows: a late-acked task holds its delivery
    for up to time_limit, and a prefetched message can wait behind one more."""
    if inv.rabbitmq.consumer_timeout:
        return inv.rabbitmq.consumer_timeout * 1000
    return max(1800, 2 * inv.celery.time_limit + 60) * 1000


def size_warning(n_nodes: int) -> str | None:
    if n_nodes < 3:
        return (f"{n_nodes} RabbitMQ node(s): pause_minority needs at least 3 to survive "
                "the loss of one node")
    if n_nodes % 2 == 0:
        return f"{n_nodes} RabbitMQ nodes: an even count cannot break ties on a partition; use an odd number"
    return None


def policy_definition(inv, mode: str, n_nodes: int) -> dict:
    """The one policy on the app's queues. Mirrored: copies on `mirrors` nodes, synchronised
    automatically, and a mirror is promoted only when it is in sync (an unsynchronised one
    would drop the messages it never received). Quorum: a delivery limit with a dead-letter
    queue, so a task that kills its worker every time stops being redelivered."""
    r = inv.rabbitmq
    if mode == "mirrored":
        ha = ({"ha-mode": "all"} if r.mirrors == "all" else
              {"ha-mode": "exactly", "ha-params": r.mirror_count(n_nodes)})
        return {**ha, "ha-sync-mode": r.ha_sync_mode, "ha-promote-on-failure": "when-synced",
                "ha-promote-on-shutdown": "when-synced"}
    # RabbitMQ dead-letters a message when its delivery count EXCEEDS the limit, so a message
    # is delivered limit + 1 times: delivery_limit in the inventory counts deliveries.
    return {"delivery-limit": r.delivery_limit - 1, "dead-letter-exchange": "",
            "dead-letter-routing-key": r.dead_letter_queue,
            "dead-letter-strategy": "at-least-once", "overflow": "reject-publish"}


def ctl(*args: str, stdin: str | None = None) -> C.Cmd:
    return C.cmd("rabbitmqctl", *args, stdin=stdin)


@dataclass(frozen=True)
class Login:
    name: str
    password: str
    tags: tuple[str, ...]
    perms: tuple[str, str, str] | None    # configure, write, read on the app vhost; None: none


ALL_PERMS = (".*", ".*", ".*")
NO_PERMS = ("^$", "^$", "^$")


def logins(inv, secret, mode: str = "mirrored") -> list[Login]:
    """Who logs in to RabbitMQ, with the least each needs. The app user (workers, producers,
    Flower's event consumer) works in the app vhost. The administrator manages (management
    UI, the kit's reads) but has no rights in the app vhost and may log in from localhost
    only. Flower reads queue lengths through the management API as a monitoring user."""
    r = inv.rabbitmq
    return [Login(r.admin_user, secret("rabbitmq_admin_password"), ("administrator",), None),
            Login(r.app_user, secret("rabbitmq_app_password"), (), ALL_PERMS),
            Login(monitoring_user(inv), secret("rabbitmq_monitoring_password"), ("monitoring",), NO_PERMS)]


def monitoring_user(inv) -> str:
    """Flower's read-only login to the management API (a name the kit owns)."""
    return "celery-kit-monitor"


def users_file(inv, secret) -> str:
    """The logins the kit's facts read on a node (root only): JSON."""
    r = inv.rabbitmq
    doc = {"admin": {"user": r.admin_user, "password": secret("rabbitmq_admin_password")},
           "app": {"user": r.app_user, "password": secret("rabbitmq_app_password")},
           "monitoring": {"user": monitoring_user(inv), "password": secret("rabbitmq_monitoring_password")}}
    return json.dumps(doc, indent=1, sort_keys=True) + "\n"


def vhost_plan(inv, state: dict, mode: str, major: int | None) -> list[Change]:
    """The app's vhost. With quorum queues its default queue type is quorum too, so that a
    client declaring `celery` without x-queue-type (a stock Celery client) gets the same
    queue instead of a PRECONDITION_FAILED. RabbitMQ 3.10 can set it only when the vhost is
    created (4.0 also later, with update_vhost_metadata)."""
    r = inv.rabbitmq
    known = state.get("ok", False)
    quorum = ("--default-queue-type", "quorum") if mode == "quorum" else ()
    if not known or r.vhost not in state.get("vhosts", []):
        return [Change(f"vhost {r.vhost}" + (" (default queue type quorum)" if quorum else ""),
                       [C.sh('rabbitmqctl add_vhost "$@" || true', r.vhost, *quorum)])]
    if quorum and state.get("default_queue_type", "classic") != "quorum" and (major or 0) >= 4:
        return [Change(f"default queue type of {r.vhost}: quorum",
                       [ctl("update_vhost_metadata", r.vhost, *quorum)])]
    return []


def password_hash(password: str, salt: bytes | None = None) -> str:
    """RabbitMQ's rabbit_password_hashing_sha256: base64(salt(4) + sha256(salt + password))."""
    salt = salt if salt is not None else os.urandom(4)
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


@dataclass(frozen=True)
class Objects:
    """What the cluster lacks: a list of names for people, and the definitions to import."""
    whats: tuple[str, ...]
    definitions: dict

    def __bool__(self) -> bool:
        return bool(self.whats)


def missing_objects(inv, state: dict, users: list[Login], mode: str, n_nodes: int) -> Objects:
    """Pure: users, permissions, the policy and the dead-letter queue that differ from state
    (the JSON of hostscripts/rabbitmq_facts.py; {"ok": False} when the API could not be read,
    as on a first deploy: then everything is wanted, and importing it is idempotent)."""
    r = inv.rabbitmq
    known = state.get("ok", False)
    present = state.get("users", {}) if known else {}
    perms = state.get("permissions", {}) if known else {}
    whats: list[str] = []
    defs: dict = {"users": [], "permissions": [], "policies": [], "queues": []}
    for login in users:
        u = present.get(login.name)
        change = ("user" if u is None else "password of" if u.get("password_ok") is False else
                  "tags of" if tuple(sorted(u.get("tags", []))) != login.tags else None)
        if change:
            whats.append(f"{change} {login.name}")
            defs["users"].append({"name": login.name, "password_hash": password_hash(login.password),
                                  "hashing_algorithm": "rabbit_password_hashing_sha256",
                                  "tags": ",".join(login.tags)})
        if login.perms is not None and (not known or tuple(perms.get(login.name) or ()) != login.perms):
            whats.append(f"permissions of {login.name} on {r.vhost}")
            configure, write, read = login.perms
            defs["permissions"].append({"user": login.name, "vhost": r.vhost, "configure": configure,
                                        "write": write, "read": read})
    want = policy_definition(inv, mode, n_nodes)
    wanted = {"pattern": POLICY_PATTERN, "apply-to": "queues", "definition": want, "priority": 0}
    if (state.get("policies", {}) if known else {}).get(POLICY) != wanted:
        whats.append(f"policy {POLICY} {json.dumps(want, sort_keys=True)}")
        defs["policies"].append({"vhost": r.vhost, "name": POLICY, **wanted})
    if mode == "quorum" and (not known or state.get("dlq") != "quorum"):
        whats.append(f"queue {r.dead_letter_queue} (quorum, where tasks go after {r.delivery_limit} deliveries)")
        defs["queues"].append({"name": r.dead_letter_queue, "vhost": r.vhost, "durable": True,
                               "auto_delete": False, "arguments": {"x-queue-type": "quorum"}})
    return Objects(tuple(whats), {k: v for k, v in defs.items() if v})


def cluster_plan(inv, state: dict, users: list[Login], mode: str, n_nodes: int,
                 major: int | None = None) -> list[Change]:
    """The vhost (its own command: its default queue type), then one import of every missing
    object: users with their password hashes, permissions, the policy, the dead-letter queue
    (one Erlang VM start instead of one per object, and secrets on stdin, never in argv).
    Administrator rights taken away and guest removed are commands of their own."""
    r = inv.rabbitmq
    known = state.get("ok", False)
    present = state.get("users", {}) if known else {}
    perms = state.get("permissions", {}) if known else {}
    plan: list[Change] = vhost_plan(inv, state, mode, major)
    objects = missing_objects(inv, state, users, mode, n_nodes)
    if objects:
        # A file only the rabbitmq user can read (rabbitmqctl runs as that user; RabbitMQ 4's
        # CLI does not take definitions on stdin), removed right after the import.
        defs = managed(DEFINITIONS, json.dumps(objects.definitions, sort_keys=True), owner="rabbitmq",
                       group="rabbitmq", mode=0o600, secret=True)
        plan.append(Change("; ".join(objects.whats), [ctl("import_definitions", DEFINITIONS),
                                                      C.cmd("rm", "-f", DEFINITIONS)], file=defs))
    for login in users:
        if login.perms is None and (not known or perms.get(login.name) is not None):
            plan.append(Change(f"no permissions for {login.name} on {r.vhost}",
                               [C.sh('rabbitmqctl clear_permissions -p "$1" "$2" || true', r.vhost, login.name)]))
    if not known or "guest" in present:
        plan.append(Change("remove user guest", [C.sh("rabbitmqctl delete_user guest || true")]))
    return plan
