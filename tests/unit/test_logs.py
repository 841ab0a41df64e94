"""`fab logs`: units per host, the journalctl commands, recorded journalctl JSON -> records ->
one stream ordered by time, masking, the follow loop and its reorder buffer, and the task,
with fake hosts and fake channels: no SSH."""
from __future__ import annotations

import dataclasses
import io
import os
import shlex
import subprocess
import threading
import time
from datetime import timezone
from pathlib import Path
from types import SimpleNamespace as NS

import pytest
from invoke.exceptions import Exit

from deploy import commands, logs, tasks
from deploy.commands import mask
from deploy.transport import Result

from kit import FIXTURES, RECORDED, inventory

INV = inventory()
JOURNAL = RECORDED / "journal"
# The Redis password in the recordings (a worker's error message and Flower's startup line).
SECRET = "Zq7rV2mK9xLp4sTb8nWc3yHd6fJg1aEu5oRi0kPl"


def recorded(host: str) -> list[str]:
    return (JOURNAL / f"{host}.jsonl").read_text().splitlines()


def records() -> dict[str, list[logs.Record]]:
    return {h: logs.parse(h, recorded(h)) for h in ("node1", "node2", "node3")}


@pytest.fixture
def inv(tmp_path, monkeypatch):
    """The fixture inventory with its state (secrets.yaml) in tmp_path, and no secret
    registered for masking yet (other tests register theirs)."""
    monkeypatch.setattr(commands, "_SECRETS", set())
    for name in [k for k in os.environ if k.startswith("CELERYKIT_SECRET_")]:
        monkeypatch.delenv(name)
    return dataclasses.replace(inventory(), state_dir=tmp_path)


def with_secret(inv) -> None:
    path = inv.state_dir / "secrets.yaml"
    path.write_text(f"redis_password: {SECRET}\n")
    path.chmod(0o600)


# Units and commands --------------------------------------------------------------------------

def test_each_host_reads_the_kit_units_its_roles_run():
    req = logs.request(INV)
    assert req.units == {
        "node1": ("rabbitmq-server.service", "redis-server.service", "flower.service", "nginx.service"),
        "node2": ("rabbitmq-server.service", "celery-worker@*.service", "celery-beat.service",
                  "celery-worker@1.service", "celery-worker@2.service"),
        "node3": ("rabbitmq-server.service", "celery-worker@*.service",
                  "celery-worker@1.service", "celery-worker@2.service")}
    assert req.lines == 100 and not req.follow and req.since is None


def test_sentinel_runs_on_the_redis_and_rabbitmq_hosts_when_there_are_several_redis_hosts():
    inv = inventory("inventory.sentinel.yaml")
    req = logs.request(inv)
    for host in inv.hosts:
        assert ("redis-sentinel.service" in req.units[host.name]) == (host in inv.sentinel_hosts())
    assert inv.sentinel_hosts()
    redis = logs.request(inv, units=["redis"]).units
    assert all(set(u) <= {"redis-server.service", "redis-sentinel.service"} for u in redis.values())


def test_unit_short_names_narrow_each_host_to_what_it_runs():
    assert logs.request(INV, units=["worker"]).units == {
        "node2": ("celery-worker@*.service", "celery-worker@1.service", "celery-worker@2.service"),
        "node3": ("celery-worker@*.service", "celery-worker@1.service", "celery-worker@2.service")}
    assert logs.request(INV, units=["beat,flower"]).units == {"node2": ("celery-beat.service",),
                                                              "node1": ("flower.service",)}
    assert logs.request(INV, units=["nginx", "rabbitmq"]).units["node1"] == ("rabbitmq-server.service",
                                                                            "nginx.service")
    # a kit unit's own name narrows like its short name; "celery-worker@*" is the worker glob
    assert logs.request(INV, units=["celery-beat"]).units == {"node2": ("celery-beat.service",)}
    assert set(logs.request(INV, units=["celery-worker@*"]).units) == {"node2", "node3"}


def test_worker_instances_follow_scale_workers(inv):
    (inv.state_dir / "scale.yaml").write_text(
        "node3: {instances: 3, concurrency: 2, inventory: [2, 2]}\n")
    assert logs.request(inv, units=["worker"]).units["node3"][-1] == "celery-worker@3.service"


def test_other_unit_names_and_globs_are_read_where_they_can_run():
    units = logs.request(INV, units=["ssh.service", "celery-*", "celery-worker@1"]).units
    assert units["node1"] == ("ssh.service", "celery-*.service")
    assert units["node2"] == ("ssh.service", "celery-*.service", "celery-worker@1.service")


@pytest.mark.parametrize("kw,words", [
    ({"units": ["wroker"]}, ["unknown name 'wroker' (did you mean 'worker'?)",
                             "worker, beat, flower, rabbitmq, redis, sentinel, nginx"]),
    ({"units": ["ssh"]}, ["unknown name 'ssh'", "ssh.service"]),
    ({"units": ["a;b.service"]}, ["'a;b.service' is not a unit name or glob"]),
    ({"units": ["-x.service"]}, ["not a unit name"]),
    ({"hosts": ["node9,node2"]}, ["--host: no host named node9 in", "hosts are node1, node2, node3"]),
    ({"core_hosts": ["nodeX"]}, ["-H: no host named nodeX"]),
    ({"hosts": ["node1"], "units": ["worker", "beat"]},
     ["node1 runs none of celery-beat, celery-worker@*", "celery-beat runs on node2",
      "celery-worker@* runs on node2, node3"]),
    ({"hosts": ["node2", "node3"], "units": ["flower"]}, ["node2, node3 run none of flower; flower runs on node1"]),
    ({"since": "$(reboot)"}, ["--since: give a time journalctl understands"]),
    ({"since": "  "}, ["--since"]),
    ({"since": "x" * 65}, ["--since"]),
    ({"lines": 0}, ["--lines must be between 1 and 100000, got 0"]),
    ({"lines": 100001, "follow": True}, ["between 0 and 100000"]),
])
def test_usage_errors_say_what_is_wrong(kw, words):
    with pytest.raises(logs.UsageError) as caught:
        logs.request(INV, **kw)
    for word in words:
        assert word in str(caught.value)


def test_hosts_from_host_and_fab_h_together():
    assert list(logs.request(INV, hosts=["node3"], core_hosts=["node1"]).units) == ["node1", "node3"]
    assert list(logs.request(INV, hosts=["node2, node3"]).units) == ["node2", "node3"]


def test_the_read_command_is_journalctl_as_root_with_every_value_in_its_own_argument():
    req = logs.request(INV, hosts=["node2"], units=["beat"], since=" 5 min ago ", lines=20)
    c = logs.journal_cmd(req, "node2")
    assert c.stdin is None and shlex.split(c.shell()) == [
        "sudo", "-n", "-H", "journalctl", "--output=json", "--no-pager", "--all", "--quiet",
        "--lines=20", "--since=5 min ago", "--unit=celery-beat.service"]
    assert logs.request(INV, since="2026-11-28 10:00").since == "2026-11-28 10:00"


def test_the_follow_command_wraps_journalctl_so_that_eof_on_stdin_ends_it():
    req = logs.request(INV, hosts=["node1"], units=["nginx"], follow=True)
    argv = shlex.split(logs.follow_cmd(req, "node1").shell())
    assert argv[:6] == ["sudo", "-n", "-H", "sh", "-c", logs.FOLLOW_SCRIPT]
    assert argv[6:] == ["sh", "--output=json", "--no-pager", "--all", "--quiet", "--lines=10",
                        "--follow", "--unit=nginx.service"]
    assert logs.request(INV, follow=True, lines=0).lines == 0


def fake_journalctl(tmp_path: Path, body: str) -> dict:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "journalctl").write_text("#!/bin/sh\n" + body)
    (bin_dir / "journalctl").chmod(0o755)
    return dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}")


def test_the_follow_wrapper_ends_journalctl_at_eof_on_its_stdin(tmp_path):
    env = fake_journalctl(tmp_path, 'echo "{\\"MESSAGE\\": \\"$*\\"}"\nexec sleep 30\n')
    p = subprocess.Popen(["sh", "-c", logs.FOLLOW_SCRIPT, "sh", "--follow", "--unit=x.service"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    try:
        assert p.stdout.readline() == b'{"MESSAGE": "--follow --unit=x.service"}\n'
        time.sleep(0.3)
        assert p.poll() is None                      # still following while stdin is open
        t0 = time.monotonic()
        p.stdin.close()                              # what closing the SSH channel does
        assert p.wait(10) != 0 and time.monotonic() - t0 < 5
        assert p.stdout.read() == b""                # journalctl (the sleep) is gone: EOF
    finally:
        p.kill()


def test_the_follow_wrapper_ends_with_journalctl_and_its_status(tmp_path):
    env = fake_journalctl(tmp_path, 'echo "Failed to add filter for units: No data available" >&2\nexit 1\n')
    # stdin stays open, as the SSH channel's does while following (closing it ends journalctl).
    p = subprocess.Popen(["sh", "-c", logs.FOLLOW_SCRIPT, "sh", "--unit=nope-*.service"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    rc = p.wait(timeout=10)
    p.stdin.close()
    assert rc == 1 and logs.NO_DATA in p.stderr.read().decode()


# Records -------------------------------------------------------------------------------------

def test_recorded_journal_lines_become_records():
    r = records()
    assert [len(v) for v in r.values()] == [9, 6, 5]
    first = r["node1"][0]
    assert first == logs.Record("node1", 1795860000120000 + first.ts % 1000, "rabbitmq-server",
                                "Starting rabbitmq-server.service - RabbitMQ broker...", 6)
    # systemd's own message about a unit is shown under that unit, not init.scope
    assert r["node2"][0].unit == "celery-worker@1" and r["node2"][0].message.startswith("Started")
    assert {x.unit for x in r["node2"]} == {"celery-worker@1", "celery-worker@2", "celery-beat"}
    assert r["node2"][-1].priority == 3 and "\nTrying again" in r["node2"][-1].message
    # not UTF-8: an array of bytes, decoded with a replacement character
    assert r["node3"][2].message.endswith("caf\ufffd au lait")
    # not printable (a terminal escape): also bytes, decoded as they are
    assert "\x1b[31mred" in r["node3"][3].message
    # null (too large for journalctl without --all): no message rather than an error
    assert r["node1"][7].unit == "nginx" and r["node1"][7].message == ""


@pytest.mark.parametrize("line", ["", "   ", "-- No entries --", "{not json", "[1, 2]", "{}"])
def test_anything_else_is_skipped_or_harmless(line):
    r = logs.parse_line("node1", line)
    assert r is None or r == logs.Record("node1", 0, "?", "", 6)


def test_field_values_in_every_json_shape():
    assert logs.text(None) == "" and logs.text("x") == "x" and logs.text(5) == "5"
    assert logs.text([104, 105]) == "hi"
    assert logs.text(["a", [98]]) == "a\nb"                  # a field given twice
    r = logs.parse_line("n", b'{"__REALTIME_TIMESTAMP": "x", "PRIORITY": "?", "SYSLOG_IDENTIFIER": "sshd",'
                             b' "MESSAGE": "m"}')
    assert (r.ts, r.priority, r.unit, r.message) == (0, 6, "sshd", "m")


def test_merge_orders_all_hosts_by_time_and_keeps_host_order_for_equal_times():
    merged = logs.merge(records())
    assert [r.ts for r in merged] == sorted(r.ts for r in merged) and len(merged) == 20
    assert [(r.host, r.unit) for r in merged[5:9]] == [
        ("node2", "celery-worker@1"), ("node3", "celery-worker@1"), ("node2", "celery-worker@1"),
        ("node2", "celery-worker@1")]
    same = {"b": [logs.Record("b", 5, "u", "b1"), logs.Record("b", 5, "u", "b2")],
            "a": [logs.Record("a", 5, "u", "a1"), logs.Record("a", 1, "u", "a0")]}
    assert [r.message for r in logs.merge(same)] == ["a0", "b1", "b2", "a1"]


def test_lines_are_prefixed_aligned_split_cleaned_and_masked():
    from deploy.commands import register_secret
    register_secret(SECRET)
    fmt = logs.Formatter(["node1", "node2", "node3"], ["rabbitmq-server", "celery-worker@1"], timezone.utc)
    out = [line for r in logs.merge(records()) for line in fmt.lines(r)]
    assert out[0] == "Nov 28 10:00:00.120 node1 rabbitmq-server | Starting rabbitmq-server.service - RabbitMQ broker..."
    assert "Nov 28 10:00:11.020 node2 celery-worker@1 | Started celery-worker@1.service" in out[5]
    assert any(line.startswith("Nov 28 10:00:14.001 node2 celery-beat     | ") for line in out)
    assert len({line.index(" | ") for line in out}) == 1                     # one column
    assert SECRET not in "\n".join(out)
    assert any("redis://:********@node1:6379/0" in line for line in out)
    assert any("amqp://celery-app:********@node1" in line for line in out)
    assert any(line.endswith("] \\x1b[31mred\\x1b[0m text from a task") for line in out)
    assert any(line.endswith("rabbitmq-server | client unexpectedly closed TCP connection") for line in out)
    assert len(out) == 22                                                    # 2 messages of 2 lines
    wide = fmt.lines(logs.Record("node10", 0, "a-much-longer-unit-name", "x\ty"))
    assert wide == ["Jan 01 00:00:00.000 node10 a-much-longer-unit-name | x\ty"]


def test_clean_shows_control_characters():
    assert logs.clean("a\x1b]0;pwned\x07b\x7f\x9bc\td") == "a\\x1b]0;pwned\\x07b\\x7f\\x9bc\td"
    assert logs.clean("user \u202eexe.txt") == "user \\u202eexe.txt"


def test_what_is_said_about_an_ended_journalctl_is_masked():
    from deploy.commands import register_secret
    register_secret(SECRET)
    assert logs._ended("node1", 1, f"bad {SECRET}") == ("node1: journalctl exited 1: bad ********", True)
    assert mask(SECRET) == "********"


# Reorder buffer ------------------------------------------------------------------------------

def rec(ts: int, host: str = "h") -> logs.Record:
    return logs.Record(host, ts, "u", str(ts))


def test_reorder_holds_lines_for_the_delay_and_releases_them_in_time_order():
    r = logs.Reorder(1.0)
    r.push(rec(20), 0.0)
    r.push(rec(10), 0.5)              # earlier line of another host, arrived later
    assert r.ready(0.9) == []
    assert r.ready(1.0) == []         # 20 is due, but 10 (earlier) is not yet: 20 waits
    assert [x.ts for x in r.ready(1.5)] == [10, 20]
    assert len(r) == 0


def test_reorder_holds_nothing_longer_than_twice_the_delay():
    r = logs.Reorder(1.0)
    r.push(rec(100), 0.0)
    for i in range(5):                # a host whose clock is behind keeps sending earlier lines
        r.push(rec(i), 0.4 * (i + 1))
    out = [x.ts for x in r.ready(2.0)]
    assert 100 in out and out == sorted(out)
    r.push(rec(1), 3.0)
    assert [x.ts for x in r.drain()] == sorted([1] + [i for i in range(5) if i not in out])


# Following -----------------------------------------------------------------------------------

class FakeStream:
    """A host's followed journalctl: chunks split anywhere, then an end (or a hang until stop)."""

    def __init__(self, chunks, rc=None, stderr="", hang=False):
        self._chunks, self.rc, self.stderr, self.hang = chunks, rc, stderr, hang
        self.stopped = threading.Event()

    def chunks(self):
        for c in self._chunks:
            if isinstance(c, Exception):
                raise c
            yield c
        if self.hang:
            self.stopped.wait(10)
            raise OSError("Socket is closed")

    def finish(self):
        return self.rc, self.stderr

    def stop(self):
        self.stopped.set()


def split_anywhere(lines: list[str], size: int = 97) -> list[bytes]:
    data = "".join(line + "\n" for line in lines).encode()
    return [data[i:i + size] for i in range(0, len(data), size)]


def test_follow_prints_every_host_in_time_order_and_says_how_hosts_ended():
    streams = {"node1": FakeStream(split_anywhere(recorded("node1")), rc=0),
               "node2": FakeStream(split_anywhere(recorded("node2")), rc=1,
                                   stderr="Failed to add filter for units: No data available"),
               "node3": FakeStream(split_anywhere(recorded("node3"), 5), rc=255,
                                   stderr="sudo: a password is required")}
    seen, notes = [], []
    problems, interrupted = logs.follow(streams, seen.append, notes.append, delay=0.05, poll=0.01)
    assert not interrupted and len(seen) == 20
    assert [r.ts for r in seen] == sorted(r.ts for r in seen)
    assert "node2: no journal entries for those units yet" in notes
    assert problems == ["node3: journalctl exited 255: sudo: a password is required"]
    assert all(s.stopped.is_set() for s in streams.values())


def test_follow_takes_a_last_line_without_newline_and_a_broken_channel():
    last = recorded("node1")[0]
    streams = {"node1": FakeStream([last.encode()], rc=0),
               "node2": FakeStream([OSError("connection reset")])}
    seen, notes = [], []
    problems, _ = logs.follow(streams, seen.append, notes.append, delay=0, poll=0.01)
    assert len(seen) == 1 and problems == ["node2: connection reset"] == notes


def test_ctrl_c_ends_following_cleanly_and_stops_every_channel():
    streams = {"node1": FakeStream(split_anywhere(recorded("node1")), hang=True),
               "node2": FakeStream([], hang=True)}
    seen = []

    def write(record):
        seen.append(record)
        if len(seen) == 3:
            raise KeyboardInterrupt
    problems, interrupted = logs.follow(streams, write, lambda s: None, delay=0, poll=0.01)
    assert interrupted and problems == [] and all(s.stopped.is_set() for s in streams.values())
    assert len(seen) >= 3        # the lines that had arrived are printed, not lost


def test_the_first_ctrl_c_asks_following_to_end_and_a_second_one_aborts():
    import signal
    flag = threading.Event()
    restore = logs._on_ctrl_c(flag)
    try:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.01)
        assert flag.is_set()
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.01)
    finally:
        restore()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


class FakeChannel:
    def __init__(self, out: list[bytes], err: bytes = b"", rc: int = 0):
        self.out, self.err, self.rc = list(out), err, rc
        self.ran, self.calls = None, []

    def exec_command(self, command):
        self.ran = command

    def recv(self, n):
        return self.out.pop(0) if self.out else b""

    def recv_exit_status(self):
        return self.rc

    def recv_stderr_ready(self):
        return bool(self.err)

    def recv_stderr(self, n):
        err, self.err = self.err, b""
        return err

    def shutdown_write(self):
        self.calls.append("eof")

    def close(self):
        self.calls.append("close")


def test_a_channel_stream_runs_the_command_reads_as_it_comes_and_ends_with_eof_then_close():
    chan = FakeChannel([b"a\nb", b"\n"], err=b"oops\n", rc=3)
    transport = NS(set_keepalive=lambda s: None, open_session=lambda timeout: chan)
    session = NS(connection=lambda: NS(client=NS(get_transport=lambda: transport)))
    stream = logs.ChannelStream(session, "sudo -n -H sh -c ...")
    assert chan.ran == "sudo -n -H sh -c ..." and list(stream.chunks()) == [b"a\nb", b"\n"]
    assert stream.finish() == (3, "oops\n")
    stream.stop()
    assert chan.calls == ["eof", "close"]


# The task's work -----------------------------------------------------------------------------

class FakeSession:
    def __init__(self, host, reply):
        self.host, self.name, self.reply = host, host.name, reply
        self.ran, self.closed = [], False

    def where(self):
        return f"{self.name} (deploy@{self.host.address}:22)"

    def run(self, c, check=True, timeout=None):
        self.ran.append(c)
        if isinstance(self.reply, Exception):
            raise self.reply
        return self.reply

    def close(self):
        self.closed = True


def fake_sessions(inv, replies):
    return {n: FakeSession(inv.host(n), r) for n, r in replies.items()}


def journal(host: str) -> Result:
    return Result(0, "\n".join(recorded(host)) + "\n", "")


def test_show_prints_the_merged_journals_with_every_known_secret_masked(inv):
    with_secret(inv)
    req = logs.request(inv)
    sessions = fake_sessions(inv, {"node1": journal("node1"), "node2": journal("node2"),
                                   "node3": journal("node3")})
    out, err = io.StringIO(), io.StringIO()
    assert logs.show(inv, req, sessions=sessions, out=out, err=err, tz=timezone.utc) == 0
    lines = out.getvalue().splitlines()
    assert len(lines) == 22 and SECRET not in out.getvalue()
    assert lines[0].startswith("Nov 28 10:00:00.120 node1 rabbitmq-server | Starting")
    assert all(s.closed for s in sessions.values())
    assert [c.argv[0] for s in sessions.values() for c in s.ran] == ["journalctl"] * 3
    assert err.getvalue() == ""
    assert (inv.state_dir / "secrets.yaml").read_text() == f"redis_password: {SECRET}\n"  # nothing generated


def test_show_goes_on_without_the_hosts_it_cannot_read_and_exits_1(inv):
    req = logs.request(inv, lines=5)
    sessions = fake_sessions(inv, {
        "node1": journal("node1"),
        "node2": Result(1, "", "Failed to add filter for units: No data available\n"),
        "node3": OSError("timed out")})
    out, err = io.StringIO(), io.StringIO()
    assert logs.show(inv, req, sessions=sessions, out=out, err=err) == 1
    assert len(out.getvalue().splitlines()) == 10                   # node1's 9 entries, one of 2 lines
    assert err.getvalue().splitlines() == [
        "node1: the last 5 entries only (--lines N for more)",
        "node2: no journal entries for those units yet",
        "node3 (deploy@192.0.2.13:22): timed out"]


def test_show_says_when_there_is_nothing(inv):
    req = logs.request(inv, hosts=["node2"], since="1 min ago")
    err = io.StringIO()
    assert logs.show(inv, req, sessions=fake_sessions(inv, {"node2": Result(0, "", "")}),
                     out=io.StringIO(), err=err) == 0
    assert err.getvalue() == "no journal entries since 1 min ago\n"


def test_show_follows_every_host_on_its_own_channel(inv):
    with_secret(inv)
    req = logs.request(inv, follow=True)
    sessions = fake_sessions(inv, {n: None for n in ("node1", "node2", "node3")})
    opened = {}

    def open_stream(session, command, timeout):
        if session.name == "node3":
            raise OSError("No route to host")
        opened[session.name] = command
        return FakeStream(split_anywhere(recorded(session.name)), rc=0)
    out, err = io.StringIO(), io.StringIO()
    code = logs.show(inv, req, sessions=sessions, open_stream=open_stream, out=out, err=err, delay=0)
    assert code == 1 and err.getvalue() == "node3 (deploy@192.0.2.13:22): No route to host\n"
    assert set(opened) == {"node1", "node2"} and "--follow" in opened["node2"]
    assert len(out.getvalue().splitlines()) == 17 and SECRET not in out.getvalue()
    assert all(s.closed for s in sessions.values())


def test_ctrl_c_ends_show_with_0_when_following_and_130_otherwise(inv, monkeypatch):
    def interrupted(*a, **kw):
        raise KeyboardInterrupt
    sessions = fake_sessions(inv, {"node1": None})
    req = logs.request(inv, hosts=["node1"], follow=True)
    assert logs.show(inv, req, sessions=sessions, open_stream=interrupted, out=io.StringIO(),
                     err=io.StringIO()) == 0
    assert sessions["node1"].closed
    err = io.StringIO()
    req = logs.request(inv, hosts=["node1"])
    monkeypatch.setattr(logs, "read", interrupted)
    assert logs.show(inv, req, sessions=fake_sessions(inv, {"node1": None}), out=io.StringIO(),
                     err=err) == 130
    assert err.getvalue() == "interrupted\n"


def test_a_closed_pipe_ends_show_quietly(inv):
    class Closed(io.StringIO):
        def write(self, s):
            raise BrokenPipeError
    req = logs.request(inv, hosts=["node1"])
    assert logs.show(inv, req, sessions=fake_sessions(inv, {"node1": journal("node1")}),
                     out=Closed(), err=io.StringIO()) == 0


# Real channels: a paramiko SSH server on loopback runs the commands locally ----------------

class LoopbackServer:
    """An in-process SSH server on 127.0.0.1 that runs each exec request with sh, stdin,
    stdout, stderr and exit status wired to the channel: the kit's ChannelStream against a
    real paramiko transport, with no host."""

    def __init__(self, env: dict):
        import socket
        import paramiko
        self.env, self.exits = env, []
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        client = socket.create_connection(listener.getsockname())
        server_sock, _ = listener.accept()
        listener.close()
        self.server = paramiko.Transport(server_sock)
        self.server.add_server_key(paramiko.RSAKey.generate(1024))
        outer = self

        class Interface(paramiko.ServerInterface):
            def check_channel_request(self, kind, chanid):
                return paramiko.OPEN_SUCCEEDED

            def get_allowed_auths(self, username):
                return "none"

            def check_auth_none(self, username):
                return paramiko.AUTH_SUCCESSFUL

            def check_channel_exec_request(self, channel, command):
                threading.Thread(target=outer.run, args=(channel, command.decode()), daemon=True).start()
                return True

        started = threading.Thread(target=self.server.start_server, kwargs={"server": Interface()},
                                   daemon=True)
        started.start()
        self.client = paramiko.Transport(client)
        self.client.start_client(timeout=10)
        started.join(10)
        self.client.auth_none("deploy")

    def run(self, chan, command):
        p = subprocess.Popen(["sh", "-c", command], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env=self.env)

        def to_stdin():
            while data := chan.recv(4096):
                p.stdin.write(data)
            p.stdin.close()                  # the client's EOF (or close)
        threading.Thread(target=to_stdin, daemon=True).start()
        while data := p.stdout.read1(4096):
            chan.sendall(data)
        chan.sendall_stderr(p.stderr.read())
        self.exits.append(p.wait())
        chan.send_exit_status(p.returncode)
        chan.close()

    def session(self):
        return NS(connection=lambda: NS(client=NS(get_transport=lambda: self.client)))

    def close(self):
        self.client.close()
        self.server.close()


@pytest.fixture
def loopback(tmp_path):
    lines = tmp_path / "lines.jsonl"
    lines.write_text("\n".join(recorded("node2")) + "\n")
    env = fake_journalctl(tmp_path, f'echo $$ > {tmp_path}/pid\ncat {lines}\nexec sleep 20\n')
    server = LoopbackServer(env)
    yield server, tmp_path / "pid"
    server.close()


def follow_command(host="node2"):
    req = logs.request(INV, hosts=[host], follow=True)
    return dataclasses.replace(logs.follow_cmd(req, host), sudo=False).shell()   # no sudo here


def gone(pid: int, within: float = 5.0) -> bool:
    end = time.monotonic() + within
    while time.monotonic() < end:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def test_a_real_channel_streams_lines_as_they_come_and_stop_ends_the_remote_journalctl(loopback):
    server, pid_file = loopback
    stream = logs.ChannelStream(server.session(), follow_command())
    got = b""
    for chunk in stream.chunks():           # the fake journalctl never ends: lines come while it runs
        got += chunk
        if got.count(b"\n") == 6:
            break
    assert [r.unit for r in logs.parse("node2", got.split(b"\n"))][:2] == ["celery-worker@1"] * 2
    pid = int(pid_file.read_text())
    stream.stop()                           # what Ctrl-C does
    assert gone(pid), "journalctl still runs after the channel was closed"


def test_sigint_while_following_a_real_channel_ends_cleanly(loopback):
    import signal
    server, pid_file = loopback
    stream = logs.ChannelStream(server.session(), follow_command())
    seen = []

    def write(record):
        seen.append(record)
        if len(seen) == 6:                  # everything has arrived: now the user presses Ctrl-C
            threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGINT)).start()
    problems, interrupted = logs.follow({"node2": stream}, write, lambda s: None, delay=0, poll=0.05)
    assert interrupted and problems == [] and len(seen) == 6
    assert gone(int(pid_file.read_text()))


# The task ------------------------------------------------------------------------------------

def c():
    from fabric import Config
    from invoke import Context
    return Context(config=Config())


FIXTURE = str(FIXTURES / "inventory.yaml")


def test_the_task_checks_its_arguments_before_connecting(monkeypatch):
    monkeypatch.setattr(logs, "show", lambda *a, **kw: pytest.fail("connected"))
    with pytest.raises(Exit) as caught:
        tasks.logs(c(), unit=["wroker"], inventory=FIXTURE)
    assert caught.value.code == 2 and "did you mean 'worker'" in caught.value.message
    with pytest.raises(Exit, match="--lines must be a whole number"):
        tasks.logs(c(), lines="many", inventory=FIXTURE)
    with pytest.raises(Exit, match="--host: no host named node7"):
        tasks.logs(c(), host=["node7"], inventory=FIXTURE)


def test_the_task_passes_the_request_and_turns_the_outcome_into_an_exit_code(monkeypatch):
    from deploy import cli
    seen = []
    monkeypatch.setattr(logs, "show", lambda inv, req, opts: seen.append((req, opts)) or 0)
    cli._CORE_HOSTS[:] = ["node3"]
    try:
        tasks.logs(c(), host=["node2"], unit=["worker"], since="5 min ago", follow=True, lines="0",
                   inventory=FIXTURE)
    finally:
        cli._CORE_HOSTS[:] = []
    req, opts = seen[0]
    assert list(req.units) == ["node2", "node3"] and req.follow and req.lines == 0
    assert req.since == "5 min ago"
    monkeypatch.setattr(logs, "show", lambda inv, req, opts: 1)
    with pytest.raises(Exit) as caught:
        tasks.logs(c(), inventory=FIXTURE)
    assert caught.value.code == 1 and "could not be read" in caught.value.message
    monkeypatch.setattr(logs, "show", lambda inv, req, opts: 130)
    with pytest.raises(Exit) as caught:
        tasks.logs(c(), inventory=FIXTURE)
    assert caught.value.code == 130 and not caught.value.message


def test_fab_logs_parses_its_flags():
    import fabfile
    from invoke.parser import Parser
    assert "logs" in fabfile.ns.task_names
    parsed = Parser(contexts=fabfile.ns.to_contexts()).parse_argv(
        ["logs", "-u", "worker", "--unit", "beat", "--host", "node2,node3", "--host", "node1",
         "-s", "5 min ago", "-f", "--lines", "20", "-i", "x.yaml"])
    args = {k: v.value for k, v in parsed[0].args.items()}
    assert args == {"host": ["node2,node3", "node1"], "unit": ["worker", "beat"], "since": "5 min ago",
                    "follow": True, "lines": "20", "inventory": "x.yaml"}
    names = {a.name: set(a.names) for a in tasks.logs.get_arguments()}
    assert names["unit"] == {"unit", "u"} and names["since"] == {"since", "s"}
    assert names["follow"] == {"follow", "f"} and names["inventory"] == {"inventory", "i"}
    assert names["host"] == {"host"} and names["lines"] == {"lines"}


FAB_FOLLOW = '''
import sys, threading
sys.path[:0] = [{root!r}, {tests!r}]
from types import SimpleNamespace as NS
from deploy import logs
from test_logs import FakeStream, recorded, split_anywhere

class Session:
    def __init__(self, host, *a):
        self.host, self.name = host, host.name
    def where(self):
        return self.name
    def close(self):
        pass

logs.Session = Session
logs.ChannelStream = lambda s, command, timeout: FakeStream(split_anywhere(recorded(s.name)), hang=True)
from fabric.main import make_program
make_program().run(["fab", "--search-root", {root!r}, "logs", "--follow", "-i", {inventory!r}])
'''


def test_ctrl_c_ends_fab_logs_follow_with_0_and_no_traceback(tmp_path):
    """The whole fab process, its SSH channels faked: SIGINT as a terminal's Ctrl-C sends it."""
    import signal
    import sys
    inv_file = tmp_path / "inventory.yaml"
    inv_file.write_text((FIXTURES / "inventory.yaml").read_text().replace("path: project",
                                                                          f"path: {FIXTURES / 'project'}"))
    root = Path(__file__).resolve().parents[2]
    script = FAB_FOLLOW.format(root=str(root), tests=str(Path(__file__).parent), inventory=str(inv_file))
    p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         stdin=subprocess.DEVNULL, cwd=tmp_path)
    try:
        first = p.stdout.readline()
        assert b" | " in first, p.stderr.read()
        p.send_signal(signal.SIGINT)
        p.wait(10)
    finally:
        p.kill()
    out, err = p.stdout.read(), p.stderr.read()     # not communicate(): readline() read ahead
    assert p.returncode == 0 and err == b""
    assert len((first + out).decode().splitlines()) == 22
