"""SSH host keys: one known_hosts file per inventory, checked on every connection.

Fabric's default (paramiko's AutoAddPolicy with no known_hosts loaded) trusts any key, so
a man in the middle would receive the Erlang cookie, every password and passwordless sudo.
Here an unknown host is refused with its fingerprint shown until `fab trust-hosts` records
it (or the inventory chooses `ssh.host_key_policy: accept-new`), and a changed key stops
everything with both fingerprints, whatever the policy.
"""
from __future__ import annotations

import base64
import hashlib
import threading
from pathlib import Path

import paramiko


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH's SHA256 form, as `ssh-keygen -lf` and ssh's prompts show it."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return f"{key.get_name()} SHA256:{base64.b64encode(digest).decode().rstrip('=')}"


def known_name(address: str, port: int) -> str:
    """How known_hosts names a host: the address, or [address]:port off port 22."""
    return address if port == 22 else f"[{address}]:{port}"


class HostKeyError(paramiko.SSHException):
    pass


class UnknownHostKey(HostKeyError):
    def __init__(self, host: str, address: str, key: paramiko.PKey, path: Path):
        self.host, self.fingerprint = host, fingerprint(key)
        super().__init__(
            f"{host} ({address}): unknown SSH host key {self.fingerprint}, not in {path}. "
            f"Check it against the server (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub on "
            f"{host}), then run `fab trust-hosts` to record it.")


class ChangedHostKey(HostKeyError):
    def __init__(self, host: str, address: str, got: paramiko.PKey, expected: paramiko.PKey, path: Path):
        self.host = host
        super().__init__(
            f"{host} ({address}): the SSH host key CHANGED: {path} has {fingerprint(expected)}, the "
            f"host offered {fingerprint(got)}. Someone may be intercepting the connection; nothing "
            f"was sent. If the server was reinstalled, run `fab trust-hosts --replace {host}`.")


class KnownHosts:
    """The inventory's known_hosts file, shared by all connections of one run (thread-safe)."""

    def __init__(self, path: Path, policy: str = "strict"):
        self.path, self.policy = path, policy
        self._lock = threading.Lock()
        self._keys = paramiko.HostKeys()
        if path.exists():
            self._keys.load(str(path))

    def lookup(self, name: str) -> dict | None:
        with self._lock:
            return self._keys.lookup(name)

    def record(self, name: str, key: paramiko.PKey, replace: bool = False) -> None:
        with self._lock:
            if replace and name in self._keys:
                del self._keys[name]
            self._keys.add(name, key.get_name(), key)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(self.path.name + ".tmp")
            self._keys.save(str(tmp))
            tmp.replace(self.path)

    def prepare(self, client: paramiko.SSHClient, host: str, address: str, port: int,
                accept_new: bool | None = None, replace: bool = False) -> None:
        """Give a client the known keys of this host and the policy for a missing one."""
        name = known_name(address, port)
        known = self.lookup(name)
        if known and not replace:
            for keytype, key in known.items():
                client.get_host_keys().add(name, keytype, key)
        accept = self.policy == "accept-new" if accept_new is None else accept_new
        client.set_missing_host_key_policy(_Policy(self, host, address, accept or replace, replace))


class _Policy(paramiko.MissingHostKeyPolicy):
    def __init__(self, known: KnownHosts, host: str, address: str, accept: bool, replace: bool):
        self.known, self.host, self.address = known, host, address
        self.accept, self.replace = accept, replace

    def missing_host_key(self, client, hostname, key):
        # paramiko calls this only when no key of this TYPE is known for the host. A host that
        # offers a key of another type than the one recorded is treated as changed.
        recorded = self.known.lookup(hostname)
        if recorded and not self.replace:
            raise ChangedHostKey(self.host, self.address, key, next(iter(recorded.values())),
                                 self.known.path)
        if not self.accept:
            raise UnknownHostKey(self.host, self.address, key, self.known.path)
        self.known.record(hostname, key, replace=self.replace)


def explain(exc: Exception, host: str, address: str, known: KnownHosts) -> Exception:
    """paramiko's own mismatch error, restated with both fingerprints and the host's name."""
    if isinstance(exc, paramiko.BadHostKeyException):
        return ChangedHostKey(host, address, exc.key, exc.expected_key, known.path)
    return exc
