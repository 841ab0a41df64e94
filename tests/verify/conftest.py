"""`fab verify`: checks of a deployed cluster, for any inventory (not only the lab).
The inventory comes from $CELERYKIT_INVENTORY; hosts are reached as the inventory says."""
from __future__ import annotations

import os

import pytest
import testinfra

from deploy.inventory import load_inventory
from deploy.scale import host_scale


@pytest.fixture(scope="session")
def inv():
    return load_inventory(os.environ.get("CELERYKIT_INVENTORY", "inventory.yaml"))


def _connect(h):
    kw = {"ssh_identity_file": str(h.ssh.key)} if h.ssh.key else {}
    return testinfra.get_host(f"paramiko://{h.ssh.user}@{h.address}:{h.ssh.port}", sudo=True, **kw)


@pytest.fixture(scope="session")
def connect(inv):
    cache = {}

    def get(host):
        if host.name not in cache:
            cache[host.name] = _connect(host)
        return cache[host.name]
    return get


@pytest.fixture(scope="session")
def scale(inv):
    return lambda h: host_scale(inv, h)
