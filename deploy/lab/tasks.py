"""`fab lab.*`: the lab of Debian hosts on this machine (systemd-nspawn on a private bridge)."""
from __future__ import annotations

import time
from pathlib import Path

from invoke import Collection, task
from invoke.exceptions import Exit

from . import runtime
from .spec import RELEASES, default_spec

PROJECT = Path(__file__).resolve().parents[2]


def _count(value) -> int:
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise Exit(f"lab: --count must be a whole number, got {value!r}", code=2)
    if not 1 <= n <= 9:
        raise Exit(f"lab: --count must be between 1 and 9, got {n}", code=2)
    return n


def _spec(count: int = 3, release: str | None = None):
    """A given release wins; else the release the lab was brought up with; else
    $CELERYKIT_LAB_RELEASE or bookworm."""
    if release is not None and release not in RELEASES:
        raise Exit(f"lab: --release must be one of {', '.join(RELEASES)}, got {release!r}", code=2)
    state_dir = default_spec(PROJECT).state_dir
    return default_spec(PROJECT, count, release or runtime.recorded_release(state_dir))


def _guard(fn):
    try:
        return fn()
    except runtime.LabError as exc:
        raise Exit(str(exc), code=1)


@task(help={"count": "number of hosts (default 3)",
            "release": f"Debian release of the hosts: {' or '.join(RELEASES)} (default bookworm)"})
def up(c, count=None, release=None):
    """Boot the lab hosts (no-op for hosts already running)."""
    t0 = time.monotonic()
    spec = _spec(_count(3 if count is None else count), release or None)
    result = _guard(lambda: runtime.up(spec))
    for name, what in result.items():
        print(f"{name:8} {what}")
    print(f"lab up (Debian {spec.release}) in {time.monotonic() - t0:.1f}s; "
          f"ssh -F {spec.state_dir / 'ssh_config'} node1")


@task
def down(c):
    """Stop and remove every lab host, mount, interface and the proxy. Safe to run twice."""
    removed = runtime.down(_spec())
    print("lab down: " + (", ".join(removed) if removed else "nothing was running"))


@task
def status(c):
    """Each lab host: stopped, or systemd's state and how long a real SSH login takes."""
    spec = _spec()
    rows = runtime.status(spec)
    print(f"Debian {spec.release}")
    for name, address, state in rows:
        print(f"{name:8} {address:15} {state}")
    if any(st != "stopped" and not st.startswith("running, login ") for _, _, st in rows):
        raise Exit("lab: some hosts are not ready", code=1)


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
