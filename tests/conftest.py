"""Shared fixtures. Lab tests boot one lab for the whole session and never skip: if the
lab cannot start, they fail (CI must not go green without having touched a host)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import testinfra

from deploy.lab import runtime
from deploy.lab.spec import DEPLOY_USER, default_spec

PROJECT = Path(__file__).resolve().parents[1]


# The fault suite shares the lab tests' AMQP and management helpers (tests/lab/brokerutil.py).
sys.path.insert(0, str(PROJECT / "tests" / "lab"))


def pytest_collection_modifyitems(items):
    for item in items:
        if any(f"/tests/{d}/" in str(item.fspath) for d in ("lab", "chaos", "teardown")):
            item.add_marker(pytest.mark.lab)


@pytest.fixture(scope="session")
def lab():
    spec = default_spec(PROJECT)
    runtime.up(spec)          # raises (test error, not skip) when the lab cannot start
    return spec


@pytest.fixture(scope="session")
def lab_hosts(lab):
    """testinfra hosts for every lab host, connected as the deploy user."""
    return {h.name: lab_host(lab, h.address) for h in lab.hosts()}


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
    """The deploy's closing table: host -> (unchanged|changed|failed|interrupted, changes)."""
    import re
    return {m.group(1): (m.group(2), int(m.group(3))) for m in
            re.finditer(r"^(\S+)\s+(unchanged|changed|failed|interrupted)\s+(\d+)\s*$", output, re.M)}


class PsSampler:
    """Samples `ps -eo args` on every host while a deploy runs, to prove no secret is
    ever on a command line."""

    def __init__(self, addresses, key):
        self.addresses, self.key = addresses, key
        self.samples: dict[str, list[str]] = {a: [] for a in addresses}
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(a,), daemon=True) for a in addresses]

    def _run(self, address):
        from deploy.lab.spec import default_spec
        host = lab_host(default_spec(PROJECT), address)
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


def inventory_variant(directory: Path, *replace: tuple[str, str], append: str = "") -> Path:
    """A copy of the lab's inventory in another directory, with (old, new) replacements,
    sharing the lab's state (secrets, keys, known hosts) through absolute paths."""
    text = INVENTORY.read_text()
    text = text.replace("key: .state/lab/id_ed25519", f"key: {PROJECT}/.state/lab/id_ed25519")
    text = text.replace("known_hosts: .state/lab/known_hosts", f"known_hosts: {PROJECT}/.state/lab/known_hosts")
    for old, new in replace:
        assert old in text, f"{old!r} not in the lab inventory"
        text = text.replace(old, new)
    path = directory / "inventory.yaml"
    path.write_text(f"state_dir: {PROJECT}/.state\nproject:\n  path: {PROJECT}/app\n" + text + append)
    return path


@pytest.fixture(scope="session")
def queue_mode(lab) -> str:
    """What the deploy chooses for the lab's release: RabbitMQ 3.10 mirrored, 4.0 quorum."""
    return "quorum" if lab.release == "trixie" else "mirrored"


class MaskedDict(dict):
    """Secrets for assertions; a failing test's report must not print them."""

    def __repr__(self):
        return "{" + ", ".join(f"{k!r}: '***'" for k in self) + "}"


@pytest.fixture(scope="session")
def secrets(inv):
    from deploy.secrets import SecretStore
    store = SecretStore(inv.state_dir / "secrets.yaml")
    names = ["rabbitmq_app_password", "rabbitmq_admin_password", "rabbitmq_monitoring_password",
             "redis_password", "redis_admin_password", "erlang_cookie"]
    return MaskedDict({n: store.get(n).reveal() for n in names})


def client_env(inv_path=INVENTORY, out: Path | None = None) -> dict[str, str]:
    """What a producer gets from `fab client-env`: the environment file, read like a shell does."""
    from deploy.inventory import load_inventory
    out = out or load_inventory(inv_path).state_dir / "client"
    fab("client-env", "--inventory", str(inv_path), "--out", str(out))
    path = out / "celery.env"
    env = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            k, _, v = line.partition("=")
            env[k] = v.strip("'")
    return env


@pytest.fixture(scope="session")
def celery_settings(first_deploy):
    return MaskedDict(client_env())


def fresh_connections(app) -> None:
    """Drop an app's broker and backend connections (and their pools): the next use connects
    anew, with whatever settings the app has then."""
    from kombu import pools
    app.pool.force_close_all()
    app._pool = None                         # a closed pool cannot be used again: a new one
    app.amqp._producer_pool = None
    pools.reset()                            # kombu's own registry of producer pools too
    old = getattr(app._local, "backend", None)
    if old is None:
        return
    # The old backend's result consumer forgets its subscriptions and closes: an AsyncResult
    # of the old settings, garbage-collected later, would otherwise unsubscribe through it,
    # and once `rotate-secrets --finish` retired the old password, retry logging in with it
    # (20 tries, a second apart) inside whatever the main thread was doing, e.g. a .get().
    consumer = getattr(old, "result_consumer", None)
    if consumer is not None:
        consumer.subscribed_to.clear()
        consumer.stop()
        consumer._pubsub = None
    old.client.close()
    del app._local.backend


@pytest.fixture(scope="session")
def celery_app(celery_settings):
    """The task package's app, configured exactly like a producer after `fab client-env`."""
    os.environ.update(celery_settings)
    sys.path.insert(0, celery_settings["PYTHONPATH"])
    sys.modules.pop("celery_kit_config", None)
    from app.celery import app
    return app


@pytest.fixture(scope="session")
def hosts(inv, lab):
    return {h.name: lab_host(lab, h.address) for h in inv.hosts}


def lab_host(lab, address: str):
    """A testinfra host over SSH with the lab's host keys checked (no trust on first use)."""
    import paramiko
    host = testinfra.get_host(f"paramiko://{DEPLOY_USER}@{address}", ssh_identity_file=str(lab.key_path))
    client = paramiko.SSHClient()
    client.load_host_keys(str(lab.known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(address, username=DEPLOY_USER, key_filename=str(lab.key_path), look_for_keys=False,
                   allow_agent=False, timeout=10)
    host.backend.__dict__["client"] = client          # testinfra's cached_property, pre-filled
    return host
