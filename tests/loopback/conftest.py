"""Loopback tests: the kit's Redis and Sentinel files on a real redis-server and
redis-sentinel on this machine (Debian's packages: `apt-get install redis-server
redis-sentinel`; their services need not run, and are not touched). Not part of `make test`:
run them with `.venv/bin/pytest -q tests/loopback` (as root: the kit's files are owned by
root and the redis group). They skip when redis-server is missing, and never touch a host.

CELERYKIT_RECORD=1 also writes the host script's outputs to tests/unit/recorded/redis/, for
the unit tests of `fab status`.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from harness import Cluster

RECORDED = Path(__file__).resolve().parents[1] / "unit" / "recorded" / "redis"


def pytest_collection_modifyitems(items):
    missing = [b for b in ("redis-server", "redis-sentinel", "redis-cli") if not shutil.which(b)]
    if missing or os.geteuid() != 0:
        why = f"needs {', '.join(missing)} (Debian's redis packages)" if missing else "needs root"
        for item in items:
            item.add_marker(pytest.mark.skip(reason=why))


@pytest.fixture
def cluster_factory(tmp_path):
    made = []

    def make(roles: dict[str, list[str]]) -> Cluster:
        c = Cluster(tmp_path, roles)
        made.append(c)
        return c
    yield make
    for c in made:
        c.down()


@pytest.fixture
def record():
    def write(name: str, text: str) -> None:
        if os.environ.get("CELERYKIT_RECORD"):
            RECORDED.mkdir(parents=True, exist_ok=True)
            (RECORDED / name).write_text(text)
    return write
