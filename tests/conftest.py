"""Shared fixtures. Lab tests boot one lab for the whole session and never skip: if the
lab cannot start, they fail (CI must not go green without having touched a host)."""
from __future__ import annotations

from pathlib import Path

import pytest
import testinfra

from deploy.lab import runtime
from deploy.lab.spec import DEPLOY_USER, default_spec

PROJECT = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(items):
    for item in items:
        if "/tests/lab/" in str(item.fspath):
            item.add_marker(pytest.mark.lab)


@pytest.fixture(scope="session")
def lab():
    spec = default_spec(PROJECT)
    runtime.up(spec)          # raises (test error, not skip) when the lab cannot start
    return spec


@pytest.fixture(scope="session")
def lab_hosts(lab):
    """testinfra hosts for every lab host, connected as the deploy user."""
    return {h.name: testinfra.get_host(f"paramiko://{DEPLOY_USER}@{h.address}",
                                       ssh_identity_file=str(lab.key_path))
            for h in lab.hosts()}
