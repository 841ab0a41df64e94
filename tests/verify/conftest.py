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


def _connect(h, known_hosts):
    """testinfra over the kit's own SSH connection: the inventory's known_hosts is checked
    exactly as for `fab deploy` (no trust on first use)."""
    from deploy.transport import Session
    s = Session(h, known_hosts)
    host = testinfra.get_host(f"paramiko://{h.ssh.user}@{h.address}:{h.ssh.port}", sudo=True)
    host.backend.__dict__["client"] = s.connection().client      # testinfra's cached_property
    return host


@pytest.fixture(scope="session")
def connect(inv):
    cache = {}

    from deploy.runner import known_hosts
    keys = known_hosts(inv)

    def get(host):
        if host.name not in cache:
            cache[host.name] = _connect(host, keys)
        return cache[host.name]
    return get


@pytest.fixture(scope="session")
def scale(inv):
    return lambda h: host_scale(inv, h)
