"""Tasks. `add` is the classic; the others exist for operating and testing the cluster."""
from __future__ import annotations

import os
import signal
import socket
import sys
import time
from pathlib import Path

from celery.utils.log import get_task_logger

from .celery import app

logger = get_task_logger(__name__)


@app.task
def add(x, y):
    return x + y


@app.task
def noop():
    return None


@app.task
def sleep(seconds):
    """Runs for `seconds`: for shutdown and rollout tests (tasks must finish, not die)."""
    time.sleep(float(seconds))
    return {"slept": seconds, "host": socket.gethostname()}


@app.task
def fail(message="failed on purpose"):
    raise RuntimeError(message)


@app.task(bind=True)
def record_id(self, tag=None, seconds=0):
    """Returns who ran it, and logs one line per execution: the fault suite counts lost
    tasks from the results and duplicate executions from these lines."""
    logger.info("chaos-exec %s", tag)
    if seconds:
        time.sleep(float(seconds))
    return {"id": self.request.id, "tag": tag, "hostname": self.request.hostname,
            "host": socket.gethostname(), "release": release_id()}


@app.task
def crash(tag=None):
    """Kills the worker process that runs it, every time (a segfaulting C extension, the OOM
    killer): with quorum queues it ends in the dead-letter queue after the delivery limit."""
    logger.info("crash-exec %s", tag)
    os.kill(os.getpid(), signal.SIGKILL)


@app.task
def release():
    return release_id()


@app.task
def greeting():
    """Reads a data file shipped inside the package (package data reaches the hosts)."""
    from importlib.resources import files
    return files("app").joinpath("data/greeting.txt").read_text().strip()


def release_id() -> str:
    """The release this worker runs: releases/<id>/venv is sys.prefix."""
    marker = Path(sys.prefix).parent / "RELEASE"
    return marker.read_text().strip() if marker.exists() else os.environ.get("CELERYKIT_RELEASE", "dev")
