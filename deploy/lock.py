"""A deploy lock on every host, so two deploys cannot interleave.

mkdir is atomic, so `mkdir /run/celery-kit.lock` either takes the lock or fails because
someone holds it; the owner file says who and since when. /run is cleared on reboot, so a
host that crashed mid-deploy does not keep a stale lock forever; `fab unlock` breaks one.
"""
from __future__ import annotations

import getpass
import os
import socket
import time

from . import commands as C
from .transport import Session

LOCK_DIR = "/run/celery-kit.lock"


def owner_line() -> str:
    return f"{getpass.getuser()}@{socket.gethostname()} pid {os.getpid()} since " \
           f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}"


def acquire_cmd(owner: str) -> C.Cmd:
    return C.sh(f'mkdir {LOCK_DIR} 2>/dev/null || {{ cat {LOCK_DIR}/owner; exit 75; }}; '
                f'cat > {LOCK_DIR}/owner', stdin=owner + "\n")


def release_cmd() -> C.Cmd:
    return C.cmd("rm", "-rf", LOCK_DIR)


class Locked(RuntimeError):
    pass


def acquire_all(sessions: list[Session], owner: str) -> None:
    """Take the lock on every host, or on none: release what was taken if one is held."""
    taken, held = [], []
    for s in sessions:
        try:
            res = s.read(acquire_cmd(owner), check=False)
        except Exception as exc:          # SSH dropped: give back what was taken
            held.append(f"{s.name}: could not take the lock: {type(exc).__name__}: {exc}")
            break
        if res.rc == 0:
            taken.append(s)
        elif res.rc == 75:
            held.append(f"{s.name}: locked by {res.stdout.strip()}")
        else:
            held.append(f"{s.name}: could not take the lock: {res.stderr.strip()}")
    if held:
        for s in taken:
            s.read(release_cmd(), check=False)
        raise Locked("another deploy holds the lock:\n  " + "\n  ".join(held) +
                     "\nIf it is stale (that deploy is gone), run `fab unlock`.")


def release_all(sessions: list[Session]) -> None:
    for s in sessions:
        try:
            s.read(release_cmd(), check=False)
        except Exception:
            pass
