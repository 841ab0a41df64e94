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
        state = _run(client, "systemctl is-system-running --wait", timeout)
        for _ in range(3):
            if state != "degraded":
                break
            # Early-boot units sometimes fail in these containers with "Failed to attach ...
            # to compat systemd cgroup" (cgroup v1 race, seen on ~1 boot in 20). Starting
            # them again works; anything that fails again still leaves the host degraded.
            failed = _run(client, "systemctl --failed --plain --no-legend | awk '{print $1}'", timeout).split()
            _run(client, "sudo -n systemctl restart " + " ".join(failed) + "; sudo -n systemctl reset-failed",
                 timeout)
            state = _run(client, "systemctl is-system-running --wait", timeout)
        return state
    finally:
        client.close()


def _run(client: paramiko.SSHClient, command: str, timeout: float) -> str:
    _, out, _ = client.exec_command(command, timeout=max(timeout, 1))
    return out.read().decode().strip() or "unknown"
