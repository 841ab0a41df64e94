"""The kit's fab tasks. Each loads the inventory once, early, then calls into deploy.*."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import paramiko
from invoke import Collection
from invoke.exceptions import Exit

from . import hostkeys, lock, logs as journal, operate, runner, status as health
from .cli import kit_task, number, options
from .commands import mask
from .errors import DeployFailed
from .secrets import SecretError
from .inventory import InventoryError, load_inventory
from .transport import CommandError

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_INVENTORY = os.environ.get("CELERYKIT_INVENTORY", "inventory.yaml")
INV = {"inventory": "inventory file (default inventory.yaml or $CELERYKIT_INVENTORY)"}
DRY = {"dry_run": "only read the hosts and print what would change (with diffs)"}


def load(path: str):
    try:
        return load_inventory(path)
    except InventoryError as exc:
        raise Exit(str(exc), code=2)


def guarded(fn):
    """Known failures end with their message and exit 1, not a traceback."""
    try:
        result = fn()
    except (runner.Unreachable, lock.Locked, DeployFailed, CommandError, KeyError, SecretError,
            PermissionError, ValueError, paramiko.SSHException, OSError) as exc:
        raise Exit(f"error: {mask(str(exc).strip(chr(39)))}", code=1)
    if getattr(result, "failed", False):     # an Engine whose stages failed or were stopped
        raise Exit("failed (see above)", code=1)
    return result


@kit_task(help={**INV, **DRY})
def deploy(c, dry_run=False, inventory=DEFAULT_INVENTORY):
    """Provision the whole cluster from the inventory (idempotent)."""
    inv = load(inventory)
    guarded(lambda: operate.deploy(inv, options(c, dry_run)))


@kit_task(name="scale-workers", help={**INV, **DRY, "instances": "worker instances per host (0-64)",
                                      "concurrency": "processes per instance (1-256)",
                                      "host": "one worker host (default: all worker hosts; or fab -H)"})
def scale_workers(c, instances=None, concurrency=None, host=None, dry_run=False, inventory=DEFAULT_INVENTORY):
    """Set the number of worker instances (and concurrency); kept by later deploys."""
    n = number(instances, "--instances", 0, 64)
    k = number(concurrency, "--concurrency", 1, 256)
    if n is None and k is None:
        raise Exit("scale-workers: give --instances and/or --concurrency", code=2)
    inv = load(inventory)
    opts = options(c, dry_run)
    hosts = [host] if host else list(opts.hosts or []) or [None]
    for h in hosts:
        guarded(lambda: operate.scale_workers(inv, n, k, h, opts))


@kit_task(help={**INV, **DRY})
def rollback(c, dry_run=False, inventory=DEFAULT_INVENTORY):
    """Switch every app host back to its previous release and restart its services."""
    inv = load(inventory)
    guarded(lambda: operate.rollback(inv, options(c, dry_run)))


@kit_task(name="client-env", help={**INV, "out": "directory to write to (default <state_dir>/client)"})
def client_env(c, out=None, inventory=DEFAULT_INVENTORY):
    """Write producer settings: celery.env (0600) and the settings module celery_kit_config.py."""
    inv = load(inventory)
    path = guarded(lambda: operate.client_env(inv, Path(out) if out else None, opts=options(c)))
    print(f"wrote {path} and {path.parent / 'celery_kit_config.py'}\n"
          f"use: set -a; . {path}; set +a")


@kit_task(help={**INV, "check": "exit 1 when anything is unhealthy (for cron and monitoring)"})
def status(c, check=False, inventory=DEFAULT_INVENTORY):
    """Hosts, roles, releases, workers answering ping; RabbitMQ and Redis health."""
    inv = load(inventory)
    result = guarded(lambda: health.report(inv, options(c)))
    from .stages import flower
    print("\n" + flower.dashboard_info(inv))
    if check and result.problems:
        raise Exit(f"status: {len(result.problems)} problem(s)", code=1)


@kit_task(iterable=["host", "unit"], help={
    **INV,
    "host": "read only this host (repeat, or a comma list; also fab -H); default: all hosts",
    "unit": f"only these units: {', '.join(journal.SHORT)}, or a unit name or glob "
            "(repeat, or a comma list); default: the kit's units each host runs",
    "since": "from this time on, as journalctl takes it: '10 min ago', '2026-11-28 10:00', yesterday",
    "follow": "keep printing new lines as they come, until Ctrl-C",
    "lines": f"the last N entries of each host (default {journal.DEFAULT_LINES}, "
             f"{journal.DEFAULT_FOLLOW_LINES} before following)"})
def logs(c, host=None, unit=None, since=None, follow=False, lines=None, inventory=DEFAULT_INVENTORY):
    """The hosts' journals merged by time, each line prefixed with host and unit; secrets masked."""
    n = number(lines, "--lines", 0, journal.MAX_LINES)
    inv = load(inventory)
    opts = options(c)
    try:
        req = journal.request(inv, host or (), opts.hosts or (), unit or (), since, n, follow)
    except journal.UsageError as exc:
        raise Exit(str(exc), code=2)
    code = guarded(lambda: journal.show(inv, req, opts))
    if code == 130:                      # Ctrl-C before a read ended (it said so)
        raise Exit(code=130)
    if code:
        raise Exit("logs: some hosts could not be read (see above)", code=code)


@kit_task(help=INV)
def flower(c, inventory=DEFAULT_INVENTORY):
    """Print the Flower dashboard URL and where its credentials are."""
    from .stages import flower as stage
    print(stage.dashboard_info(load(inventory)))


@kit_task(help={**INV, "pytest_args": "extra arguments for pytest"})
def verify(c, inventory=DEFAULT_INVENTORY, pytest_args=""):
    """Check the deployed cluster with the kit's testinfra suite (any inventory)."""
    load(inventory)
    env = dict(os.environ, CELERYKIT_INVENTORY=str(Path(inventory).resolve()))
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(ROOT / "tests" / "verify"),
            *pytest_args.split()]
    rc = subprocess.call(argv, env=env, cwd=ROOT)
    if rc:
        raise Exit("verify: some checks failed", code=rc)


@kit_task(help=INV)
def unlock(c, inventory=DEFAULT_INVENTORY):
    """Break a stale deploy lock on every host (only when no deploy is running)."""
    inv = load(inventory)
    sessions = guarded(lambda: runner.connect_all(inv, options(c)))
    try:
        for s in sessions.values():
            guarded(lambda: s.run(lock.break_cmd()))
            print(f"{s.name}: unlocked")
    finally:
        runner.close_all(sessions)


@kit_task(name="trust-hosts", help={**INV, "replace": "host whose recorded key is replaced (a reinstalled server)"})
def trust_hosts(c, replace=None, inventory=DEFAULT_INVENTORY):
    """Record the SSH host keys of the inventory's hosts that are not known yet."""
    inv = load(inventory)
    opts = options(c)
    if replace and replace not in inv.names():
        raise Exit(f"--replace: no host named {replace!r} in {inv.path}", code=2)
    guarded(lambda: hostkeys_trust(inv, opts, replace))


def hostkeys_trust(inv, opts, replace: str | None) -> None:
    keys = runner.known_hosts(inv)
    for h in runner.select(inv, opts):
        name = hostkeys.known_name(h.address, h.ssh.port)
        before = keys.lookup(name)
        if before and h.name != replace:
            print(f"{h.name} {h.address}: known ({', '.join(hostkeys.fingerprint(k) for k in before.values())})")
            continue
        transport = paramiko.Transport((h.address, h.ssh.port))
        try:
            transport.start_client(timeout=opts.timeouts.connect)
            key = transport.get_remote_server_key()
        finally:
            transport.close()
        keys.record(name, key, replace=h.name == replace)
        print(f"{h.name} {h.address}: recorded {hostkeys.fingerprint(key)} in {keys.path}")


@kit_task(name="rotate-secrets", iterable=["name"],
          help={**INV, **DRY, "name": "a secret to rotate (repeatable; default: every password)",
                "finish": "retire the old values once every producer uses the new settings"})
def rotate_secrets(c, name=None, finish=False, dry_run=False, inventory=DEFAULT_INVENTORY):
    """New passwords, rolled out host by host without stopping the cluster."""
    from . import rotate
    inv = load(inventory)
    opts = options(c, dry_run)
    guarded(lambda: rotate.finish(inv, opts) if finish else rotate.rotate(inv, list(name or []), opts))


@kit_task(name="restart", help=INV)
def rabbitmq_restart(c, inventory=DEFAULT_INVENTORY):
    """Rolling restart of the RabbitMQ nodes, one at a time, each drained and awaited."""
    inv = load(inventory)
    guarded(lambda: operate.rabbitmq_restart(inv, options(c)))


@kit_task(name="migrate", help={**INV, **DRY, "from_vhost": "the vhost the cluster used before (e.g. /celery)",
                                 "delete_old": "delete that vhost once it is empty"})
def rabbitmq_migrate(c, from_vhost, delete_old=False, dry_run=False, inventory=DEFAULT_INVENTORY):
    """Move the tasks left in a former vhost into the inventory's (mirrored -> quorum)."""
    from . import migrate
    inv = load(inventory)
    guarded(lambda: runner.run(inv, [migrate.MoveTasks(from_vhost, delete_old)], options(c, dry_run),
                               only=[inv.with_role("rabbitmq")[0].name]))


rabbitmq = Collection("rabbitmq", rabbitmq_restart, rabbitmq_migrate)
