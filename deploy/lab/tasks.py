"""`fab lab.*`: the lab of Debian hosts on this machine (systemd-nspawn on a private bridge)."""
from __future__ import annotations

import time
from pathlib import Path

from invoke import Collection, task
from invoke.exceptions import Exit

from . import runtime
from .spec import default_spec

PROJECT = Path(__file__).resolve().parents[2]


def _spec(count: int | None = None):
    return default_spec(PROJECT, count or 3)


def _guard(fn):
    try:
        return fn()
    except runtime.LabError as exc:
        raise Exit(str(exc), code=1)


@task(help={"count": "number of hosts (default 3)"})
def up(c, count=3):
    """Boot the lab hosts (no-op for hosts already running)."""
    t0 = time.monotonic()
    result = _guard(lambda: runtime.up(_spec(int(count))))
    for name, what in result.items():
        print(f"{name:8} {what}")
    spec = _spec(int(count))
    print(f"lab up in {time.monotonic() - t0:.1f}s; ssh -F {spec.state_dir / 'ssh_config'} node1")


@task
def down(c):
    """Stop and remove every lab host, mount, interface and the proxy. Safe to run twice."""
    removed = runtime.down(_spec())
    print("lab down: " + (", ".join(removed) if removed else "nothing was running"))


@task
def status(c):
    """Show each lab host and whether it runs."""
    for name, address, state in runtime.status(_spec()):
        print(f"{name:8} {address:15} {state}")


@task(help={"host": "lab host name, e.g. node2"})
def stop(c, host):
    """Power one host off (its disk is kept), for fault tests."""
    _guard(lambda: runtime.stop_one(_spec(), host))
    print(f"{host} stopped")


@task(help={"host": "lab host name, e.g. node2"})
def start(c, host):
    """Boot one stopped host again."""
    print(f"{host} {_guard(lambda: runtime.start_one(_spec(), host))}")


lab = Collection("lab", up, down, status, stop, start)
