"""Transport: run Cmds on one host over SSH (fabric.Connection), read facts, upload files.

Reads always run; changes go through `apply`, which in dry-run mode records instead of
executing. All facts of a stage travel in one SSH round trip (`gather`).
"""
from __future__ import annotations

import hashlib
import select
import shlex
import time
from dataclasses import dataclass

from fabric import Connection

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


@dataclass
class Session:
    host: object                 # inventory.Host
    dry_run: bool = False
    # A worker restart waits for running tasks (up to the units' TimeoutStopSec), so one
    # command may legitimately take that long; runner sets it from the inventory.
    command_timeout: float = 3600
    round_trips: int = 0
    _conn: Connection | None = None
    _home: str | None = None

    @property
    def name(self) -> str:
        return self.host.name

    def connection(self) -> Connection:
        if self._conn is None:
            ssh = self.host.ssh
            kwargs = {"look_for_keys": ssh.key is None, "allow_agent": ssh.key is None,
                      "banner_timeout": 15}
            if ssh.key is not None:
                kwargs["key_filename"] = str(ssh.key)
            self._conn = Connection(self.host.address, user=ssh.user, port=ssh.port,
                                    connect_timeout=15, connect_kwargs=kwargs)
            self._conn.open()
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # Running ------------------------------------------------------------------------
    def exec(self, command: str, stdin: bytes | None = None, timeout: float | None = None) -> Result:
        """One round trip. Reads stdout and stderr together so neither pipe can fill up."""
        timeout = timeout or self.command_timeout
        self.round_trips += 1
        chan = self.connection().client.get_transport().open_session()
        chan.exec_command(command)
        if stdin is not None:
            chan.sendall(stdin)
        chan.shutdown_write()
        out, err = bytearray(), bytearray()
        deadline = time.monotonic() + timeout
        while True:
            if chan.recv_ready():
                out += chan.recv(65536)
            elif chan.recv_stderr_ready():
                err += chan.recv_stderr(65536)
            elif chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
                break
            else:
                if time.monotonic() > deadline:
                    chan.close()
                    raise CommandError(self.name, mask(command), -1, "timed out")
                select.select([chan], [], [], 0.5)
        rc = chan.recv_exit_status()
        chan.close()
        return Result(rc, out.decode(errors="replace"), err.decode(errors="replace"))

    def read(self, c: Cmd, check: bool = True) -> Result:
        res = self.exec(c.shell(), c.stdin)
        if check and res.rc != 0:
            raise CommandError(self.name, c.show(), res.rc, res.stderr or res.stdout)
        return res

    def apply(self, c: Cmd, check: bool = True) -> Result | None:
        """A change. Not executed in dry-run."""
        if self.dry_run:
            return None
        return self.read(c, check)

    def gather(self, facts: list[Fact], sudo: bool = True) -> dict:
        """Run every fact's command in one round trip and parse each output separately."""
        if not facts:
            return {}
        marker = "@@ck-" + hashlib.sha1(str(time.time_ns()).encode()).hexdigest()[:10]
        parts = []
        for f in facts:
            parts.append(f"echo {marker}; {shlex.join(f.argv)} 2>/dev/null; echo \"{marker}-rc $?\"")
        script = "\n".join(parts)
        words = ["sh", "-c", script]
        if sudo:
            words = ["sudo", "-n", "-H"] + words
        res = self.exec(shlex.join(words))
        if res.rc != 0 and marker not in res.stdout:
            raise CommandError(self.name, "gather facts", res.rc, res.stderr)
        sections = res.stdout.split(marker + "\n")[1:]
        values = {}
        for fact, section in zip(facts, sections):
            body, _, rc_line = section.rpartition(f"{marker}-rc ")
            values[fact.key] = fact.parse(body, int(rc_line.strip() or 1))
        return values

    # Files ----------------------------------------------------------------------------
    def stage(self, content: bytes) -> str:
        """Upload content to a private staging dir; returns the remote path. SFTP, so the
        content (secrets included) never appears on a command line."""
        if self._home is None:
            res = self.exec(shlex.join(["sh", "-c", f"install -d -m 0700 {STAGING} && pwd"]))
            if res.rc != 0 or not res.stdout.strip():
                raise CommandError(self.name, f"install -d -m 0700 ~/{STAGING}", res.rc,
                                   res.stderr or "the SSH user needs a writable home directory")
            self._home = res.stdout.strip()
        path = f"{self._home}/{STAGING}/{hashlib.sha256(content).hexdigest()[:16]}"
        self.round_trips += 1
        with self.connection().sftp().open(path, "wb") as f:
            f.write(content)
        return path
