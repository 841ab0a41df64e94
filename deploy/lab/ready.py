"""Readiness of a lab host: sshd answers for the deploy user and systemd finished booting."""
from __future__ import annotations

import socket
import time
from pathlib import Path

import paramiko


def wait_ready(address: str, user: str, key: Path, timeout: float) -> str:
    """Poll until `systemctl is-system-running --wait` answers over SSH; return its answer
    ('running', 'degraded', ...) or 'unreachable: <last error>' at the deadline."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((address, 22), timeout=1.0):
                pass
        except OSError as exc:
            last = str(exc)
            time.sleep(0.2)   # polling interval while sshd is not listening yet
            continue
        try:
            return _system_state(address, user, key, deadline - time.monotonic())
        except (paramiko.SSHException, OSError, EOFError) as exc:
            last = f"{type(exc).__name__}: {exc}"
            time.sleep(0.2)
    return f"unreachable: {last}"


def _system_state(address: str, user: str, key: Path, timeout: float) -> str:
    client = paramiko.SSHClient()
    # Lab hosts are on a private bridge we created; their keys are in .state/lab/known_hosts.
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    client.connect(address, username=user, key_filename=str(key), timeout=5,
                   banner_timeout=5, auth_timeout=5, look_for_keys=False, allow_agent=False)
    try:
        _, out, _ = client.exec_command("systemctl is-system-running --wait", timeout=max(timeout, 1))
        return out.read().decode().strip() or "unknown"
    finally:
        client.close()
