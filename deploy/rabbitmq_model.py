"""RabbitMQ, decided purely: config values, the HA policy, and the cluster-level plan
(vhost, users, permissions, policy, guest) from the state read off the management API."""
from __future__ import annotations

import json

from . import commands as C
from .engine import Change

POLICY = "celery-kit-ha"
# Mirror every queue of the app's vhost except RabbitMQ's own (amq.*) and Celery's
# transient per-client queues (events, pidbox replies): those are auto-delete and
# recreated by their clients; mirroring them only costs.
POLICY_PATTERN = r"^(?!amq\.)(?!celeryev\.)(?!.*\.pidbox$).*"
ALL_PERMS = [".*", ".*", ".*"]


def consumer_timeout_ms(inv) -> int:
    """Above the longest task the inventory allows: a late-acked task holds its delivery
    for up to time_limit, and a prefetched message can wait behind one more."""
    if inv.rabbitmq.consumer_timeout:
        return inv.rabbitmq.consumer_timeout * 1000
    return max(1800, 2 * inv.celery.time_limit + 60) * 1000


def policy_definition(inv, n_nodes: int) -> dict | None:
    r = inv.rabbitmq
    if r.queue_mode != "mirrored":
        return None
    if r.mirrors == "all":
        return {"ha-mode": "all", "ha-sync-mode": r.ha_sync_mode}
    return {"ha-mode": "exactly", "ha-params": r.mirror_count(n_nodes), "ha-sync-mode": r.ha_sync_mode}


def version_problem(inv, version: str | None) -> str | None:
    """Classic mirroring was removed in RabbitMQ 4.0."""
    if version and inv.rabbitmq.queue_mode == "mirrored":
        major = version.split(":")[-1].split(".")[0]
        if major.isdigit() and int(major) >= 4:
            return (f"RabbitMQ {version} has no classic mirrored queues (removed in 4.0); "
                    "set rabbitmq.queue_mode: quorum in the inventory")
    return None


def size_warning(n_nodes: int) -> str | None:
    if n_nodes < 3:
        return (f"{n_nodes} RabbitMQ node(s): pause_minority needs at least 3 to survive "
                "the loss of one node")
    if n_nodes % 2 == 0:
        return f"{n_nodes} RabbitMQ nodes: an even count cannot break ties on a partition; use an odd number"
    return None


def ctl(*args: str, stdin: str | None = None) -> C.Cmd:
    return C.cmd("rabbitmqctl", *args, stdin=stdin)


def cluster_plan(inv, state: dict, admin_pw: str, app_pw: str, n_nodes: int) -> list[Change]:
    """state: the JSON of hostscripts/rabbitmq_state.py, or {"ok": False} when the API
    could not be read (first deploy): then every step is planned; each is idempotent."""
    r = inv.rabbitmq
    known = state.get("ok", False)
    users = state.get("users", {}) if known else {}
    plan: list[Change] = []
    if not known or r.vhost not in state.get("vhosts", []):
        plan.append(Change(f"vhost {r.vhost}", [ctl("add_vhost", r.vhost)]))
    for name, pw, tags in ((r.admin_user, admin_pw, ["administrator"]), (r.app_user, app_pw, [])):
        u = users.get(name)
        if u is None:
            # add_user fails if the user exists; change_password then sets it. The password
            # comes on stdin and goes on through printf, a shell builtin: never in argv.
            plan.append(Change(f"user {name}", [C.sh(
                'pw=$(cat); printf "%s\\n" "$pw" | rabbitmqctl add_user "$1" || '
                'printf "%s\\n" "$pw" | rabbitmqctl change_password "$1"', name, stdin=pw + "\n")]))
        elif u.get("password_ok") is False:
            plan.append(Change(f"password of {name}", [ctl("change_password", name, stdin=pw + "\n")]))
        if u is None or sorted(u.get("tags", [])) != tags:
            plan.append(Change(f"tags of {name}", [ctl("set_user_tags", name, *tags)]))
        if not known or state.get("permissions", {}).get(name) != ALL_PERMS:
            plan.append(Change(f"permissions of {name} on {r.vhost}",
                               [ctl("set_permissions", "-p", r.vhost, name, *ALL_PERMS)]))
    if not known or "guest" in users:
        plan.append(Change("remove user guest", [C.sh("rabbitmqctl delete_user guest || true")]))
    plan += policy_plan(inv, state.get("policies", {}) if known else None, n_nodes)
    return plan


def policy_plan(inv, policies: dict | None, n_nodes: int) -> list[Change]:
    r = inv.rabbitmq
    want = policy_definition(inv, n_nodes)
    have = (policies or {}).get(POLICY)
    if want is None:
        if policies is None or have is not None:
            return [Change(f"remove policy {POLICY} (quorum mode)",
                           [C.sh(f'rabbitmqctl clear_policy -p "$1" {POLICY} || true', r.vhost)])]
        return []
    wanted = {"pattern": POLICY_PATTERN, "apply-to": "queues", "definition": want, "priority": 0}
    if have == wanted:
        return []
    return [Change(f"policy {POLICY} {json.dumps(want, sort_keys=True)}",
                   [ctl("set_policy", "-p", r.vhost, "--priority", "0", "--apply-to", "queues",
                        POLICY, POLICY_PATTERN, json.dumps(want, sort_keys=True))])]
