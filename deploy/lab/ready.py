"""Readiness of a lab host: systemd finished booting with nothing failed, and a real SSH login
as the deploy user works within seconds.

systemd's state is read and repaired from the control machine, through the container's
namespaces (nsenter), never over SSH: a host whose boot went wrong may refuse every login
(a failed systemd-user-sessions.service leaves /run/nologin behind), and SSH would then
report only "Authentication failed". Only after systemd says "running" is a real login
tried, with the host key checked against the lab's known_hosts.
"""
from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import paramiko

from . import procs

LOGIN_TIMEOUT = 5.0        # a login that takes longer than this counts as failed
REPAIR_ROUNDS = 3


@dataclass
class Readiness:
    state: str              # systemd's is-system-running answer, or what went wrong
    login_s: float | None   # seconds the last login took; None when it failed
    repaired: list[str]     # what had to be repaired on the way, for the log

    @property
    def ok(self) -> bool:
        return self.state == "running" and self.login_s is not None

    def describe(self) -> str:
        login = f"login {self.login_s:.1f}s" if self.login_s is not None else "login FAILED"
        extra = f" (repaired: {', '.join(self.repaired)})" if self.repaired else ""
        return f"{self.state}, {login}{extra}"


def init_pid(root: Path) -> int | None:
    """PID (on the control machine) of the host's systemd: the process under `root` that is
    PID 1 in its own namespace."""
    for pid in procs.pids_with_root(root):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("NSpid:") and line.split()[-1] == "1" and len(line.split()) > 2:
                return pid
    return None


def inside(pid: int, command: str, timeout: float) -> tuple[int, str]:
    """Run a shell command inside the container as its root, from the control machine."""
    argv = ["nsenter", "--target", str(pid), "--mount", "--uts", "--ipc", "--net", "--pid",
            "--cgroup", "--root", "--wd", "--", "/bin/sh", "-c", command]
    try:
        proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return 124, f"timed out after {timeout:.0f}s: {command}"
    return proc.returncode, proc.stdout.strip()


# Answers of `systemctl is-system-running` once the boot has finished, one way or another.
SETTLED = ("running", "degraded", "maintenance", "stopping")


def system_state(pid: int, timeout: float) -> str:
    """systemd's state once its boot finished. Right after the container starts, systemctl
    cannot connect yet ("Failed to connect to bus", "offline"): asked again until it can."""
    deadline = time.monotonic() + timeout
    answer = "no answer"
    while True:
        left = max(1.0, deadline - time.monotonic())
        rc, out = inside(pid, f"timeout {int(left) + 1} systemctl is-system-running --wait", left + 5)
        lines = out.splitlines()
        answer = lines[-1] if lines else f"no answer (exit {rc})"
        if answer in SETTLED or time.monotonic() >= deadline:
            return answer
        time.sleep(0.1)      # systemd is not listening on its private socket yet


def repair_failed_units(pid: int) -> list[str]:
    """Start again the units that failed during boot, and forget the failure. Seen here:
    early-boot units occasionally failing in containers; starting them again works."""
    _, out = inside(pid, "systemctl --failed --plain --no-legend | awk '{print $1}'", 30)
    failed = [u for u in out.split() if u.endswith((".service", ".socket", ".mount", ".target"))]
    if failed:
        inside(pid, "systemctl restart " + " ".join(failed) + "; systemctl reset-failed", 60)
    return failed


def repair_logins(pid: int) -> list[str]:
    """What keeps an sshd from letting the deploy user in quickly, set right from inside."""
    done = []
    rc, _ = inside(pid, "test -e /run/nologin", 10)
    if rc == 0:
        inside(pid, "systemctl restart systemd-user-sessions.service || rm -f /run/nologin", 30)
        done.append("/run/nologin")
    for unit in ("dbus.service", "systemd-logind.service", "ssh.service"):
        rc, _ = inside(pid, f"systemctl is-active --quiet {unit}", 10)
        if rc != 0:
            inside(pid, f"systemctl restart {unit}", 30)
            done.append(unit)
    return done


def try_login(address: str, user: str, key: Path, known_hosts: Path | None,
              timeout: float = LOGIN_TIMEOUT) -> float | None:
    """Seconds a fresh login plus one command took, or None if it failed or took too long."""
    t0 = time.monotonic()
    client = paramiko.SSHClient()
    if known_hosts is not None and known_hosts.exists():
        client.load_host_keys(str(known_hosts))
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
    else:      # before the lab has written its known_hosts (first boot of a new lab)
        client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    try:
        client.connect(address, username=user, key_filename=str(key), timeout=timeout,
                       banner_timeout=timeout, auth_timeout=timeout, look_for_keys=False,
                       allow_agent=False)
        _, out, _ = client.exec_command("true", timeout=timeout)
        if out.channel.recv_exit_status() != 0:
            return None
    except (paramiko.SSHException, OSError, EOFError):
        return None
    finally:
        client.close()
    took = time.monotonic() - t0
    return took if took <= timeout else None


def wait_ready(root: Path, address: str, user: str, key: Path, known_hosts: Path | None,
               timeout: float = 90.0) -> Readiness:
    """Wait for the host to boot, repair what the boot left broken, prove a login."""
    deadline = time.monotonic() + timeout
    pid = None
    while pid is None and time.monotonic() < deadline:
        pid = init_pid(root)
        if pid is None:
            time.sleep(0.1)      # systemd-nspawn has not started the host's init yet
    if pid is None:
        return Readiness("no init process", None, [])
    repaired: list[str] = []
    state = "unknown"
    for _ in range(REPAIR_ROUNDS):
        state = system_state(pid, max(1.0, deadline - time.monotonic()))
        if state == "degraded":
            repaired += repair_failed_units(pid)
            state = system_state(pid, 30)
        if state != "running":
            continue
        login = try_login(address, user, key, known_hosts)
        if login is None:
            # sshd may still be starting its listener: one more try before repairing.
            _wait_port(address, 22, min(10.0, max(0.0, deadline - time.monotonic())))
            login = try_login(address, user, key, known_hosts)
        if login is not None:
            return Readiness(state, login, repaired)
        repaired += repair_logins(pid) or ["(login failed, nothing found to repair)"]
    return Readiness(state, None, repaired)


def _wait_port(address: str, port: int, timeout: float) -> None:
    import socket
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((address, port), timeout=1.0):
                return
        except OSError:
            time.sleep(0.1)
