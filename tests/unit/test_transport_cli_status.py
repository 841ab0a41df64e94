"""Transport (facts in one round trip, stdin for secrets), the CLI conventions, `fab status`
health from recorded facts, and progress output."""
from __future__ import annotations

import json
import shlex
from types import SimpleNamespace as NS

import pytest
from invoke.exceptions import Exit
from rich.console import Console

from deploy import cli, facts as F, runner, status
from deploy.commands import cmd, register_secret
from deploy.hostkeys import KnownHosts
from deploy.progress import Progress
from deploy.transport import CommandError, Result, Session, Timeouts

from kit import inventory, recorded

INV = inventory()


def session(tmp_path, reply):
    s = Session(INV.host("node1"), KnownHosts(tmp_path / "kh"), Timeouts())
    sent = []

    def exec(command, stdin=None, timeout=None):
        sent.append((command, stdin))
        s.round_trips += 1
        return reply(command) if callable(reply) else reply
    s.exec = exec
    return s, sent


def test_gather_runs_every_fact_as_root_in_one_round_trip_and_parses_each(tmp_path):
    def reply(command):
        import re
        marker = re.search(r"@@ck-[0-9a-f]+", command).group(0)
        return Result(0, f"{marker}\nhello\n{marker}-rc 0\n{marker}\n{marker}-rc 3\n", "")
    s, sent = session(tmp_path, reply)
    values = s.gather([F.Fact("a", ("echo", "hello"), lambda o, rc: (o.strip(), rc)),
                       F.Fact("b", ("false",), lambda o, rc: rc)])
    assert values == {"a": ("hello", 0), "b": 3} and len(sent) == 1
    argv = shlex.split(sent[0][0])
    assert argv[:5] == ["sudo", "-n", "-H", "sh", "-c"] and "echo hello </dev/null" in argv[5]


def test_gather_failing_before_any_fact_is_an_error(tmp_path):
    s, _ = session(tmp_path, Result(1, "", "sudo: a password is required"))
    with pytest.raises(CommandError, match="sudo: a password is required"):
        s.gather([F.Fact("a", ("true",), lambda o, rc: rc)])


def test_run_sends_secrets_on_stdin_and_raises_with_a_masked_command(tmp_path):
    register_secret("pw-123456789-secret")
    s, sent = session(tmp_path, Result(2, "", "bad"))
    with pytest.raises(CommandError) as caught:
        s.run(cmd("rabbitmqctl", "change_password", "u", stdin="pw-123456789-secret\n"))
    assert sent[0][1] == b"pw-123456789-secret\n" and "pw-123456789" not in sent[0][0]
    assert caught.value.rc == 2 and "< (stdin)" in caught.value.command
    assert s.run(cmd("x"), check=False).rc == 2


# CLI ---------------------------------------------------------------------------------------

def test_numbers_are_checked_with_a_message():
    assert cli.number(None, "--instances", 0, 64) is None and cli.number("4", "--instances", 0, 64) == 4
    with pytest.raises(Exit, match="--instances must be a whole number, got 'abc'"):
        cli.number("abc", "--instances", 0, 64)
    with pytest.raises(Exit, match="between 0 and 64, got 65"):
        cli.number("65", "--instances", 0, 64)


def config(**kw):
    base = {"connect_kwargs": {}, "timeouts": NS(connect=None, command=None), "_runtime_ssh_path": None}
    base.update(kw)
    return NS(config=NS(**base))


def test_fabric_core_flags_become_run_options(tmp_path):
    cli._CORE_HOSTS[:] = ["node2"]
    try:
        opts = cli.options(config(connect_kwargs={"key_filename": [str(tmp_path / "k")], "timeout": 7},
                                  timeouts=NS(connect=None, command=99)), dry_run=True)
    finally:
        cli._CORE_HOSTS[:] = []
    assert opts.hosts == ("node2",) and opts.dry_run and opts.key == tmp_path / "k"
    assert opts.timeouts == Timeouts(7.0, 99.0)
    assert cli.options(config()).hosts is None


@pytest.mark.parametrize("kw,word", [({"connect_kwargs": {"password": "x"}}, "password prompts"),
                                     ({"_runtime_ssh_path": "/x"}, "-S/--ssh-config"),
                                     ({"connect_kwargs": {"key_filename": ["a", "b"]}}, "one key")])
def test_core_flags_the_kit_cannot_honour_are_refused(kw, word):
    with pytest.raises(Exit, match=word):
        cli.options(config(**kw))


def test_short_flags_are_the_same_in_every_task():
    from deploy import tasks
    def names(task):
        return {a.name: set(a.names) for a in task.get_arguments()}
    assert names(tasks.scale_workers)["inventory"] == {"inventory", "i"}
    assert names(tasks.scale_workers)["instances"] == {"instances", "n"}
    assert names(tasks.deploy)["inventory"] == {"inventory", "i"}
    assert names(tasks.deploy)["dry_run"] == {"dry-run", "d"}
    assert names(tasks.status)["check"] == {"check", "k"}


def test_host_limit_checks_names():
    opts = runner.Options(hosts=("node2",))
    assert [h.name for h in runner.select(INV, opts)] == ["node2"]
    with pytest.raises(KeyError, match="-H: no host named nodeX"):
        runner.select(INV, runner.Options(hosts=("nodeX",)))


# Status ------------------------------------------------------------------------------------

VIEW = json.loads(recorded("trixie/node1-view.json"))
QUEUES = json.loads(recorded("trixie/node1-queues.json"))
def info_fields(text: str) -> dict:
    """INFO's key:value lines, as hostscripts/redis_state.sh turns them into JSON."""
    return dict(line.strip().split(":", 1) for line in text.splitlines() if ":" in line and line[0] != "#")


INFO = info_fields(recorded("trixie/node1-redis-info.txt"))
PONG2 = {"answered": ["w1@node2", "w2@node2"], "restarts": 0}
PONG3 = {"answered": ["w1@node3", "w2@node3"], "restarts": 0}


def healthy():
    rel = {"current": "r1", "complete": ["r1"]}
    return {"node1": {"releases": rel, "cluster": VIEW, "queues": QUEUES, "redis": {"redis": INFO}},
            "node2": {"releases": rel, "ping": PONG2, "cluster": VIEW},
            "node3": {"releases": rel, "ping": PONG3, "cluster": VIEW}}


def test_recorded_facts_of_a_healthy_cluster_have_no_problem():
    assert INFO["role"] == "master" and INFO["aof_enabled"] == "1"
    h = status.evaluate(INV, healthy())
    assert h.problems == []
    assert [r[0] for r in h.rows] == ["node1", "node2", "node3"]
    assert h.rows[1][4] == "2/2 answer ping (inventory)"
    assert any(n.startswith("queue celery (quorum)") for n in h.notes)


def test_problems_are_named():
    f = healthy()
    f["node3"] = None
    f["node2"]["ping"] = {"answered": ["w1@node2"], "restarts": 0}
    f["node2"]["cluster"] = dict(VIEW, running=["rabbit@node2"], partitions={"rabbit@node2": ["rabbit@node1"]})
    q = [dict(x) for x in QUEUES]
    q[0].update(online=["rabbit@node1"], messages=7, consumers=0)
    f["node1"]["queues"] = q + [{"name": "old", "type": "classic", "slave_nodes": ["rabbit@node2"],
                                 "synchronised_slave_nodes": []}]
    f["node1"]["redis"] = {"redis": dict(INFO, evicted_keys="3", aof_last_write_status="err")}
    problems = "\n".join(status.evaluate(INV, f).problems)
    for word in ["node3: cannot be reached over SSH", "not answering ping: w2@node2",
                 "rabbit@node2 sees rabbit@node1, rabbit@node3 not running",
                 "partition: rabbit@node2 is cut off from rabbit@node1",
                 "quorum queue celery: members offline: rabbit@node2, rabbit@node3",
                 "queue celery has 7 messages and no consumer",
                 "mirrored queue old: unsynchronised mirrors on rabbit@node2",
                 "AOF writes failing", "3 keys evicted"]:
        assert word in problems, word


def test_unreadable_broker_and_redis_are_problems():
    f = healthy()
    f["node1"].update(cluster=None, queues={"error": "HTTPError 401"},
                      redis={"redis": None, "redis_error": "AUTH failed: WRONGPASS"})
    problems = "\n".join(status.evaluate(INV, f).problems)
    assert "rabbit@node1 does not answer" in problems and "HTTPError 401" in problems
    assert "redis on node1: does not answer (AUTH failed: WRONGPASS)" in problems
    f["node1"]["redis"] = {}            # the host script's output was unreadable
    assert "redis on node1: does not answer" in status.evaluate(INV, f).problems


# Progress ----------------------------------------------------------------------------------

def test_plain_progress_prints_start_and_end_of_long_steps_masked(tmp_path):
    out = tmp_path / "out.txt"
    register_secret("very-secret-progress-value")
    with open(out, "w") as f:
        p = Progress(Console(file=f, width=200, force_terminal=False))
        with p.step("node1", "apt install very-secret-progress-value"):
            pass
        with pytest.raises(RuntimeError):
            with p.step("node2", "upload"):
                raise RuntimeError("x")
        p.close()
    text = out.read_text()
    assert "node1: apt install ******** ..." in text and "done (" in text
    assert "node2: upload FAILED" in text and "very-secret" not in text


def test_fab_runs_a_task_once_with_h_as_its_host_limit(monkeypatch):
    """Through fab itself: fabric.yaml must name the kit's executor, or Fabric's would run the
    task once per -H host, each time for the whole inventory."""
    from pathlib import Path
    from fabric.main import make_program
    from kit import FIXTURES
    seen = []
    monkeypatch.setattr(runner, "connect_all", lambda inv, opts: seen.append(opts.hosts) or {})
    root = Path(__file__).resolve().parents[2]
    try:
        make_program().run(["fab", "--search-root", str(root), "-H", "node2,node3", "unlock",
                            "-i", str(FIXTURES / "inventory.yaml")], exit=False)
    finally:
        cli._CORE_HOSTS[:] = []
    assert seen == [("node2", "node3")]
