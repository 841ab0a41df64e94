"""The deploy lock (all or nothing, released only by its owner) and SSH host keys (unknown
refused with a fingerprint, changed refused always, accept-new records)."""
from __future__ import annotations


import paramiko
import pytest

from deploy import hostkeys, lock
from deploy.transport import Result


class LockHost:
    def __init__(self, name, held_by=None, broken=False):
        self.name, self.held_by, self.broken = name, held_by, broken
        self.commands = []

    def run(self, c, check=True, timeout=None):
        self.commands.append(c)
        if self.broken:
            raise OSError("connection reset")
        if "mkdir" in c.argv[2]:
            if self.held_by:
                return Result(75, self.held_by + "\n", "")
            self.held_by = c.stdin.decode().splitlines()[0]
            return Result(0, "", "")
        return Result(0, "", "")


def test_release_removes_only_a_lock_that_holds_our_token():
    c = lock.release_cmd(lock.Owner("abc123", "me"))
    assert c.argv[-1] == "abc123" and 'grep -qx "token $1" /run/celery-kit.lock/owner' in c.argv[2]
    assert "rm -rf /run/celery-kit.lock" in c.argv[2]
    assert lock.break_cmd().argv == ("rm", "-rf", "/run/celery-kit.lock")


def test_owner_tokens_differ():
    assert lock.Owner.me().token != lock.Owner.me().token


def test_acquire_all_or_nothing_names_the_holder():
    a, b = LockHost("a"), LockHost("b", held_by="mallory@elsewhere pid 42")
    with pytest.raises(lock.Locked, match="b: locked by mallory@elsewhere pid 42") as caught:
        lock.acquire_all([a, b], lock.Owner("t", "me"))
    assert "fab unlock" in str(caught.value)
    assert any("rm -rf" in c.argv[2] for c in a.commands if c.argv[0] == "sh")   # given back


def test_an_unreachable_host_while_locking_gives_back_the_others():
    a, b = LockHost("a"), LockHost("b", broken=True)
    with pytest.raises(lock.Locked, match="b: could not take the lock: OSError"):
        lock.acquire_all([a, b], lock.Owner("t", "me"))
    assert len(a.commands) == 2


# Host keys -------------------------------------------------------------------------------

def key():
    return paramiko.Ed25519Key.generate() if hasattr(paramiko.Ed25519Key, "generate") else _ed25519()


def _ed25519():
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    import io
    pem = Ed25519PrivateKey.generate().private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                                     serialization.NoEncryption())
    return paramiko.Ed25519Key.from_private_key(io.StringIO(pem.decode()))


def test_fingerprint_is_openssh_sha256():
    k = key()
    fp = hostkeys.fingerprint(k)
    assert fp.startswith("ssh-ed25519 SHA256:") and "=" not in fp


def test_known_name_uses_brackets_off_port_22():
    assert hostkeys.known_name("10.0.0.1", 22) == "10.0.0.1"
    assert hostkeys.known_name("10.0.0.1", 2222) == "[10.0.0.1]:2222"


def test_strict_refuses_an_unknown_host_with_its_fingerprint(tmp_path):
    known = hostkeys.KnownHosts(tmp_path / "known_hosts")
    client = paramiko.SSHClient()
    known.prepare(client, "node1", "10.0.0.1", 22)
    k = key()
    with pytest.raises(hostkeys.UnknownHostKey, match="fab trust-hosts") as caught:
        client._policy.missing_host_key(client, "10.0.0.1", k)
    assert hostkeys.fingerprint(k) in str(caught.value) and "node1 (10.0.0.1)" in str(caught.value)
    assert not (tmp_path / "known_hosts").exists()


def test_accept_new_records_an_unknown_host(tmp_path):
    known = hostkeys.KnownHosts(tmp_path / "known_hosts", "accept-new")
    client = paramiko.SSHClient()
    known.prepare(client, "node1", "10.0.0.1", 22)
    k = key()
    client._policy.missing_host_key(client, "10.0.0.1", k)
    again = hostkeys.KnownHosts(tmp_path / "known_hosts")
    assert again.lookup("10.0.0.1")["ssh-ed25519"] == k


def test_a_changed_key_is_refused_whatever_the_policy(tmp_path):
    known = hostkeys.KnownHosts(tmp_path / "known_hosts", "accept-new")
    old, new = key(), key()
    known.record("10.0.0.1", old)
    exc = hostkeys.explain(paramiko.BadHostKeyException("10.0.0.1", new, old), "node1", "10.0.0.1", known)
    assert isinstance(exc, hostkeys.ChangedHostKey)
    assert hostkeys.fingerprint(old) in str(exc) and hostkeys.fingerprint(new) in str(exc)
    assert "fab trust-hosts --replace node1" in str(exc)
    # A key of another type for a host we know is also a change, not a new host.
    client = paramiko.SSHClient()
    known.prepare(client, "node1", "10.0.0.1", 22)
    rsa = paramiko.RSAKey.generate(1024)
    with pytest.raises(hostkeys.ChangedHostKey):
        client._policy.missing_host_key(client, "10.0.0.1", rsa)


def test_known_keys_are_loaded_into_the_client(tmp_path):
    known = hostkeys.KnownHosts(tmp_path / "known_hosts")
    k = key()
    known.record("[10.0.0.1]:2222", k)
    client = paramiko.SSHClient()
    known.prepare(client, "node1", "10.0.0.1", 2222)
    assert client.get_host_keys().lookup("[10.0.0.1]:2222")["ssh-ed25519"] == k
    other = hostkeys.explain(OSError("x"), "n", "a", known)
    assert isinstance(other, OSError)


def test_the_lock_as_the_first_fact_of_the_first_round_trip():
    owner = lock.Owner("t0k3n", "alice@ctl pid 1")
    f = lock.acquire_fact(owner)
    assert f.argv[-2:] == ("alice@ctl pid 1", "t0k3n") and "mkdir /run/celery-kit.lock" in f.argv[2]
    assert f.parse("", 0) is None and f.parse("bob@x pid 2\n", 75) == "bob@x pid 2"
    sessions = [LockHost("a"), LockHost("b")]
    lock.check_taken(sessions, owner, {"a": {"lock": None}, "b": {"lock": None}})
    with pytest.raises(lock.Locked, match="b: locked by bob@x pid 2"):
        lock.check_taken(sessions, owner, {"a": {"lock": None}, "b": {"lock": "bob@x pid 2"}})
    with pytest.raises(lock.Locked, match="b: could not take the lock \\(the host could not be read\\)"):
        lock.check_taken(sessions, owner, {"a": {"lock": None}})
