"""The kit's fab tasks. Each loads the inventory once, early, then calls into deploy.*."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from invoke import Collection, task
from invoke.exceptions import Exit

import paramiko

from . import lock, operate, runner
from .commands import mask
from .transport import CommandError
from .engine import DeployFailed
from .inventory import InventoryError, load_inventory

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_INVENTORY = os.environ.get("CELERYKIT_INVENTORY", "inventory.yaml")
INV = {"inventory": "inventory file (default inventory.yaml or $CELERYKIT_INVENTORY)"}


def load(path: str):
    try:
        return load_inventory(path)
    except InventoryError as exc:
        raise Exit(str(exc), code=2)


def guarded(fn):
    """Known failures end with their message and exit 1, not a traceback."""
    try:
        result = fn()
    except (runner.Unreachable, lock.Locked, DeployFailed, CommandError, KeyError,
            PermissionError, paramiko.SSHException, OSError) as exc:
        raise Exit(f"error: {mask(str(exc))}", code=1)
    if getattr(result, "failed", False):     # an Engine whose stages failed
        raise Exit("failed (see above)", code=1)
    return result


@task(help={**INV, "dry_run": "only read the hosts and print what would change (with diffs)"})
def deploy(c, dry_run=False, inventory=DEFAULT_INVENTORY):
    """Provision the whole cluster from the inventory (idempotent)."""
    inv = load(inventory)
    guarded(lambda: runner.deploy(inv, dry_run=dry_run))


@task(name="scale-workers", help={**INV, "instances": "worker instances per host",
                                  "concurrency": "processes per instance",
                                  "host": "one worker host (default: all worker hosts)"})
def scale_workers(c, instances=None, concurrency=None, host=None, inventory=DEFAULT_INVENTORY):
    """Set the number of worker instances (and concurrency); kept by later deploys."""
    if instances is None and concurrency is None:
        raise Exit("scale-workers: give --instances and/or --concurrency", code=2)
    inv = load(inventory)
    n = None if instances is None else int(instances)
    k = None if concurrency is None else int(concurrency)
    if (n is not None and not 0 <= n <= 64) or (k is not None and not 1 <= k <= 256):
        raise Exit("scale-workers: instances must be 0..64 and concurrency 1..256", code=2)
    guarded(lambda: operate.scale_workers(inv, n, k, host))


@task(help=INV)
def rollback(c, inventory=DEFAULT_INVENTORY):
    """Switch every app host back to its previous release and restart its services."""
    inv = load(inventory)
    guarded(lambda: operate.rollback(inv))


@task(name="client-env", help=INV)
def client_env(c, inventory=DEFAULT_INVENTORY):
    """Write the Celery settings for producers on this machine (.state/celery.env, 0600)."""
    path = guarded(lambda: operate.client_env(load(inventory)))
    print(f"wrote {path}\nuse: set -a; . {path}; set +a; python -c 'from app.tasks import add; "
          f"print(add.delay(4, 4).get(timeout=10))'")


@task(help=INV)
def status(c, inventory=DEFAULT_INVENTORY):
    """Hosts, roles, running release and workers answering ping."""
    inv = load(inventory)
    print(guarded(lambda: operate.status(inv)))
    from .stages import flower
    print("\n" + flower.dashboard_info(inv))


@task(help=INV)
def flower(c, inventory=DEFAULT_INVENTORY):
    """Print the Flower dashboard URL and where its credentials are."""
    from .stages import flower as stage
    print(stage.dashboard_info(load(inventory)))


@task(help={**INV, "pytest_args": "extra arguments for pytest"})
def verify(c, inventory=DEFAULT_INVENTORY, pytest_args=""):
    """Check the deployed cluster with the kit's testinfra suite (any inventory)."""
    load(inventory)
    env = dict(os.environ, CELERYKIT_INVENTORY=str(Path(inventory).resolve()))
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(ROOT / "tests" / "verify"),
            *pytest_args.split()]
    rc = subprocess.call(argv, env=env, cwd=ROOT)
    if rc:
        raise Exit("verify: some checks failed", code=rc)


@task(help=INV)
def unlock(c, inventory=DEFAULT_INVENTORY):
    """Break a stale deploy lock on every host (only when no deploy is running)."""
    inv = load(inventory)
    sessions = guarded(lambda: runner.connect_all(inv, False))
    for s in sessions.values():
        guarded(lambda: s.read(lock.release_cmd()))
        print(f"{s.name}: unlocked")
        s.close()


@task(name="restart", help=INV)
def rabbitmq_restart(c, inventory=DEFAULT_INVENTORY):
    """Rolling restart of the RabbitMQ nodes, one at a time, each drained and awaited."""
    inv = load(inventory)
    guarded(lambda: operate.rabbitmq_restart(inv))


rabbitmq = Collection("rabbitmq", rabbitmq_restart)
