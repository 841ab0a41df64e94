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


# Deploying -----------------------------------------------------------------------------

import os
import subprocess
import sys
import threading

INVENTORY = PROJECT / "inventory.yaml"
FAB = [str(Path(sys.executable).with_name("fab"))]


def fab(*args: str, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run a fab task exactly as a user does, from the project directory."""
    proc = subprocess.run([*FAB, *args], cwd=PROJECT, text=True, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, timeout=1500)
    sys.stdout.write(proc.stdout)
    if check and proc.returncode != 0:
        raise AssertionError(f"fab {' '.join(args)} exited {proc.returncode}:\n{proc.stdout[-3000:]}")
    return proc


def summary_rows(output: str) -> dict[str, tuple[str, int]]:
    """The deploy's closing table: host -> (unchanged|changed|failed, number of changes)."""
    import re
    return {m.group(1): (m.group(2), int(m.group(3))) for m in
            re.finditer(r"^(\S+)\s+(unchanged|changed|failed)\s+(\d+)$", output, re.M)}


class PsSampler:
    """Samples `ps -eo args` on every host while a deploy runs, to prove no secret is
    ever on a command line."""

    def __init__(self, addresses, key):
        self.addresses, self.key = addresses, key
        self.samples: dict[str, list[str]] = {a: [] for a in addresses}
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(a,), daemon=True) for a in addresses]

    def _run(self, address):
        host = testinfra.get_host(f"paramiko://{DEPLOY_USER}@{address}", ssh_identity_file=str(self.key))
        while not self._stop.is_set():
            self.samples[address].append(host.run("ps -eo args").stdout)

    def __enter__(self):
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)


@pytest.fixture(scope="session")
def first_deploy(lab):
    """The one full deploy of the default scenario, with ps sampled on every host."""
    from deploy.inventory import load_inventory
    inv = load_inventory(INVENTORY)
    with PsSampler([h.address for h in inv.hosts], lab.key_path) as ps:
        proc = fab("deploy")
    return {"output": proc.stdout, "ps": ps.samples, "inv": inv}


@pytest.fixture(scope="session")
def inv(first_deploy):
    return first_deploy["inv"]


class MaskedDict(dict):
    """Secrets for assertions; a failing test's report must not print them."""

    def __repr__(self):
        return "{" + ", ".join(f"{k!r}: '***'" for k in self) + "}"


@pytest.fixture(scope="session")
def secrets(inv):
    from deploy.secrets import SecretStore
    store = SecretStore(inv.state_dir / "secrets.yaml")
    names = ["rabbitmq_app_password", "rabbitmq_admin_password", "redis_password", "redis_admin_password",
             "erlang_cookie"]
    return MaskedDict({n: store.get(n).reveal() for n in names})


@pytest.fixture(scope="session")
def celery_settings(inv, secrets):
    from deploy.celery_env import celery_env
    return MaskedDict(celery_env(inv, secrets["rabbitmq_app_password"], secrets["redis_password"]))


@pytest.fixture(scope="session")
def celery_app(celery_settings):
    """The task package's app, configured exactly like the workers (from .state settings)."""
    os.environ.update(celery_settings)
    from app.celery import app
    from app.config import from_env
    app.conf.update(from_env(celery_settings))
    return app


@pytest.fixture(scope="session")
def hosts(inv, lab):
    return {h.name: testinfra.get_host(f"paramiko://{DEPLOY_USER}@{h.address}",
                                       ssh_identity_file=str(lab.key_path), sudo=False)
            for h in inv.hosts}
