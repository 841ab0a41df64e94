"""A deploy lock on every host, so two deploys cannot interleave.

mkdir is atomic, so `mkdir /run/celery-kit.lock` either takes the lock or fails because
someone holds it; the owner file says who and since when (first line) and carries a random
token (second line): a deploy releases only a lock that still holds ITS token (after
`fab unlock` another deploy may hold it). /run is cleared on reboot, so a host that crashed mid-deploy does not keep a
stale lock forever; `fab unlock` breaks one.
"""
from __future__ import annotations

import getpass
import os
import secrets
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from . import commands as C
from .facts import Fact
from .transport import Session

LOCK_DIR = "/run/celery-kit.lock"


@dataclass(frozen=True)
class Owner:
    token: str
    who: str

    @classmethod
    def me(cls) -> "Owner":
        who = (f"{getpass.getuser()}@{socket.gethostname()} pid {os.getpid()} since "
               f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
        return cls(secrets.token_hex(8), who)


def acquire_cmd(owner: Owner) -> C.Cmd:
    return C.sh(f'mkdir {LOCK_DIR} 2>/dev/null || {{ head -n 1 {LOCK_DIR}/owner 2>/dev/null; exit 75; }}; '
                f'cat > {LOCK_DIR}/owner', stdin=f"{owner.who}\ntoken {owner.token}\n")


def acquire_fact(owner: Owner) -> Fact:
    """Taking the lock as the first "fact" of the first round trip (engine.prefetch): None when
    it was taken, else who holds it. Owner and token go in argv: neither is a secret (the
    token only lets a deploy tell its own lock from another's)."""
    script = (f'mkdir {LOCK_DIR} 2>/dev/null || {{ head -n 1 {LOCK_DIR}/owner 2>/dev/null; exit 75; }}; '
              f'printf "%s\\ntoken %s\\n" "$1" "$2" > {LOCK_DIR}/owner')
    return Fact("lock", ("sh", "-c", script, "lock", owner.who, owner.token),
                lambda out, rc: None if rc == 0 else (out.strip() or f"could not take the lock (exit {rc})"))


def check_taken(sessions: list[Session], owner: Owner, results: dict[str, dict]) -> None:
    """After acquire_fact ran on every host: all taken, or give back what was and refuse."""
    held = []
    for s in sessions:
        if s.name not in results:
            held.append(f"{s.name}: could not take the lock (the host could not be read)")
        elif results[s.name]["lock"] is not None:
            why = results[s.name]["lock"]
            held.append(f"{s.name}: locked by {why}" if "could not" not in why else f"{s.name}: {why}")
    if held:
        release_all(sessions, owner)
        raise Locked("another deploy holds the lock:\n  " + "\n  ".join(held) +
                     "\nIf it is stale (that deploy is gone), run `fab unlock`.")


def release_cmd(owner: Owner) -> C.Cmd:
    """Remove the lock only if it is still ours."""
    return C.sh(f'grep -qx "token $1" {LOCK_DIR}/owner 2>/dev/null && rm -rf {LOCK_DIR} || true',
                owner.token)


def break_cmd() -> C.Cmd:
    return C.cmd("rm", "-rf", LOCK_DIR)


class Locked(RuntimeError):
    pass


def acquire_all(sessions: list[Session], owner: Owner) -> None:
    """Take the lock on every host (in parallel), or on none: what was taken is given back
    if one host is held or cannot be reached."""
    def one(s: Session) -> tuple[Session, str | None]:
        try:
            res = s.run(acquire_cmd(owner), check=False)
        except Exception as exc:          # SSH dropped
            return s, f"{s.name}: could not take the lock: {type(exc).__name__}: {exc}"
        if res.rc == 0:
            return s, None
        if res.rc == 75:
            return s, f"{s.name}: locked by {res.stdout.strip()}"
        return s, f"{s.name}: could not take the lock: {res.stderr.strip()}"

    with ThreadPoolExecutor(max_workers=max(1, len(sessions))) as pool:
        results = list(pool.map(one, sessions))
    held = [problem for _, problem in results if problem]
    if held:
        release_all([s for s, problem in results if problem is None], owner)
        raise Locked("another deploy holds the lock:\n  " + "\n  ".join(held) +
                     "\nIf it is stale (that deploy is gone), run `fab unlock`.")


def release_all(sessions: list[Session], owner: Owner) -> None:
    def one(s: Session) -> None:
        try:
            s.run(release_cmd(owner), check=False)
        except Exception:
            pass
    with ThreadPoolExecutor(max_workers=max(1, len(sessions))) as pool:
        list(pool.map(one, sessions))
