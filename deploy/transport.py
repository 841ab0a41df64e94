"""Transport: run Cmds on one host over SSH (Fabric's Connection.run), read facts in one round
trip, upload files by SFTP. It executes what it is given; deciding what to run, and dry-run,
belong to the engine.
"""
from __future__ import annotations

import hashlib
import secrets
import shlex
import threading
from dataclasses import dataclass
from pathlib import Path

from fabric import Config, Connection
from invoke.exceptions import CommandTimedOut

from . import hostkeys
from .commands import Cmd, mask
from .facts import Fact

STAGING = ".celery-kit-staging"   # in the SSH user's home, mode 0700


@dataclass
class Result:
    rc: int
    stdout: str
    stderr: str


class CommandError(RuntimeError):
    def __init__(self, host: str, command: str, rc: int, stderr: str):
        self.host, self.command, self.rc = host, command, rc
        self.stderr_tail = "\n".join(mask(stderr).strip().splitlines()[-12:])
        super().__init__(f"{host}: `{command}` exited {rc}\n{self.stderr_tail}")


@dataclass(frozen=True)
class Timeouts:
    connect: float = 15
    # A worker restart waits for running tasks (up to the units' TimeoutStopSec), so one
    # command may legitimately take that long; the runner raises it from the inventory.
    command: float = 3600


class Session:
    """One SSH connection to one inventory host, opened on first use and reused."""

    def __init__(self, host, known_hosts: hostkeys.KnownHosts, timeouts: Timeouts = Timeouts(),
                 key_override: Path | None = None):
        self.host = host
        self.known_hosts = known_hosts
        self.timeouts = timeouts
        self.key_override = key_override
        self.round_trips = 0
        self._conn: Connection | None = None
        self._home: str | None = None
        self._lock = threading.Lock()
        self._sftp_lock = threading.Lock()     # stages running in parallel share the SFTP session

    @property
    def name(self) -> str:
        return self.host.name

    def where(self) -> str:
        ssh = self.host.ssh
        return f"{self.name} ({ssh.user}@{self.host.address}:{ssh.port})"

    def connection(self) -> Connection:
        with self._lock:
            if self._conn is None:
                self._conn = self._open()
            return self._conn

    def _open(self) -> Connection:
        ssh = self.host.ssh
        key = self.key_override or ssh.key
        kwargs = {"look_for_keys": key is None, "allow_agent": key is None, "banner_timeout": 15,
                  "auth_timeout": 15}
        if key is not None:
            kwargs["key_filename"] = str(key)
        # load_ssh_configs=False: every setting comes from the inventory, not ~/.ssh/config.
        config = Config(overrides={"load_ssh_configs": False, "run": {"hide": True, "warn": True}})
        conn = Connection(self.host.address, user=ssh.user, port=ssh.port, config=config,
                          connect_timeout=int(self.timeouts.connect), connect_kwargs=kwargs)
        self.known_hosts.prepare(conn.client, self.name, self.host.address, ssh.port)
        try:
            conn.open()
        except Exception as exc:
            raise hostkeys.explain(exc, self.name, self.host.address, self.known_hosts) from exc
        return conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # Running ------------------------------------------------------------------------
    def exec(self, command: str, stdin: bytes | None = None, timeout: float | None = None) -> Result:
        """One round trip: the command, its stdin (secrets travel here, never in argv)."""
        self.round_trips += 1
        timeout = timeout or self.timeouts.command
        if stdin is not None:
            return self._exec_stdin(command, stdin, timeout)
        try:
            r = self.connection().run(command, in_stream=False, timeout=timeout)
        except CommandTimedOut as exc:
            raise CommandError(self.name, mask(command), -1, f"timed out after {exc.timeout}s")
        return Result(r.exited, r.stdout, r.stderr)

    def _exec_stdin(self, command: str, stdin: bytes, timeout: float) -> Result:
        """Fabric's run feeds stdin from a thread that fails ("Socket is closed") when the
        command exits without reading it (a refused lock, for one): a channel of our own
        sends it in one piece and tolerates a command that did not want it."""
        chan = self.connection().client.get_transport().open_session()
        chan.settimeout(timeout)
        try:
            chan.exec_command(command)
            try:
                chan.sendall(stdin)
                chan.shutdown_write()
            except OSError:
                pass                       # the command ended before reading its stdin
            out, err = chan.makefile("rb").read(), chan.makefile_stderr("rb").read()
            return Result(chan.recv_exit_status(), out.decode(errors="replace"), err.decode(errors="replace"))
        except TimeoutError:
            raise CommandError(self.name, mask(command), -1, f"timed out after {timeout}s")
        finally:
            chan.close()

    def run(self, c: Cmd, check: bool = True, timeout: float | None = None) -> Result:
        res = self.exec(c.shell(), c.stdin, timeout)
        if check and res.rc != 0:
            raise CommandError(self.name, c.show(), res.rc, res.stderr or res.stdout)
        return res

    def gather(self, facts: list[Fact]) -> dict:
        """Run every fact's command (as root) in one round trip; parse each output apart."""
        if not facts:
            return {}
        marker = "@@ck-" + secrets.token_hex(5)
        parts = [f"echo {marker}; {shlex.join(f.argv)} </dev/null 2>/dev/null; echo \"{marker}-rc $?\""
                 for f in facts]
        res = self.exec(shlex.join(["sudo", "-n", "-H", "sh", "-c", "\n".join(parts)]))
        if marker not in res.stdout:
            raise CommandError(self.name, "gather facts", res.rc, res.stderr)
        sections = res.stdout.split(marker + "\n")[1:]
        values = {}
        for fact, section in zip(facts, sections):
            body, _, rc_line = section.rpartition(f"{marker}-rc ")
            values[fact.key] = fact.parse(body, int(rc_line.strip() or 1))
        return values

    # Files ----------------------------------------------------------------------------
    def upload(self, content: bytes) -> str:
        """Upload content to a private staging dir; returns the remote path. SFTP, so the
        content (secrets included) never appears on a command line."""
        with self._sftp_lock:
            self._staging_dir()
        return self._put(content)

    def _staging_dir(self) -> None:
        if self._home is None:
            res = self.exec(shlex.join(["sh", "-c", f"install -d -m 0700 {STAGING} && pwd"]))
            if res.rc != 0 or not res.stdout.strip():
                raise CommandError(self.name, f"install -d -m 0700 ~/{STAGING}", res.rc,
                                   res.stderr or "the SSH user needs a writable home directory")
            self._home = res.stdout.strip()

    def _put(self, content: bytes) -> str:
        path = f"{self._home}/{STAGING}/{hashlib.sha256(content).hexdigest()[:16]}"
        self.round_trips += 1
        with self._sftp_lock, self.connection().sftp().open(path, "wb") as f:
            f.set_pipelined(True)
            f.write(content)
        return path
