"""The runner (connect, lock, run, unlock, report) and the fab tasks' handling of options and
errors, with fake hosts: no SSH."""
from __future__ import annotations

from types import SimpleNamespace as NS

import pytest
from invoke.exceptions import Exit
from rich.console import Console

from deploy import lock, operate, runner, tasks
from deploy import commands as C
from deploy.progress import Progress
from deploy.stage import Stage
from deploy.steps import Change, Plan
from deploy.transport import Result

from kit import FIXTURES, inventory

INV = inventory()


class Host:
    def __init__(self, h, held_by=None):
        self.host, self.name = h, h.name
        self.ran, self.round_trips, self.closed = [], 0, False
        self.gathered, self.held_by = [], held_by

    def gather(self, facts):
        self.gathered.append([f.key for f in facts])
        # The deploy lock rides in the first round trip: exit 75 and the holder when held.
        return {f.key: f.parse(self.held_by or "", 75 if self.held_by else 0) if f.key == "lock" else None
                for f in facts}

    def run(self, c, check=True, timeout=None):
        self.ran.append(c)
        return Result(0, "", "")

    def close(self):
        self.closed = True


class Touch(Stage):
    name = "touch"

    def hosts(self, inv):
        return list(inv.hosts)

    def plan(self, ctx, host, facts, env):
        return Plan([Change("touch a file", [C.cmd("touch", "/tmp/x")])])


@pytest.fixture
def hosts(monkeypatch, tmp_path):
    made = {h.name: Host(h) for h in INV.hosts}

    def connect_all(inv, opts=runner.Options(), only=None):
        return {n: s for n, s in made.items() if only is None or n in only}
    monkeypatch.setattr(runner, "connect_all", connect_all)
    monkeypatch.setattr("deploy.runner.Ctx", lambda inv: NS(inv=inv, secret=None))
    return made


def out_progress(path):
    return Progress(Console(file=open(path, "w"), width=200, force_terminal=False))


def test_run_locks_runs_unlocks_closes_and_reports(hosts, tmp_path):
    log = tmp_path / "out.txt"
    e = runner.run(INV, [Touch()], progress=out_progress(log))
    for s in hosts.values():
        assert s.gathered[0][0] == "lock"               # the lock, in the first round trip
        kinds = [c.argv[2].split()[0] if c.argv[0] == "sh" else c.argv[0] for c in s.ran]
        assert kinds == ["touch", "grep"]               # the change, the owner-checked release
        assert s.closed
    rows = [line.split() for line in log.read_text().splitlines()]
    assert ["node1", "changed", "1"] in rows and ["node3", "changed", "1"] in rows
    assert "stages: touch" in log.read_text() and not e.failed


def test_a_dry_run_takes_no_lock_and_changes_nothing(hosts, tmp_path):
    e = runner.run(INV, [Touch()], runner.Options(dry_run=True), progress=out_progress(tmp_path / "o"))
    assert all(s.ran == [] for s in hosts.values())
    assert "DRY RUN" in (tmp_path / "o").read_text() and e.reports["node1"].changed == ["touch: touch a file"]


def test_a_refused_lock_runs_nothing_and_gives_back_the_others(hosts, tmp_path):
    hosts["node2"].held_by = "mallory@elsewhere pid 42 since yesterday"
    with pytest.raises(lock.Locked, match="node2: locked by mallory@elsewhere pid 42") as caught:
        runner.run(INV, [Touch()], progress=out_progress(tmp_path / "o"))
    assert "fab unlock" in str(caught.value)
    for s in hosts.values():
        assert [c.argv[2].split()[0] for c in s.ran] == ["grep"] and s.closed     # only the owner-checked release


def test_scale_workers_records_the_scale_and_limits_the_run(hosts, monkeypatch, tmp_path):
    inv = inventory()
    import dataclasses
    inv = dataclasses.replace(inv, state_dir=tmp_path)
    seen = {}

    def run(inv_, stages, opts, only=None, progress=None):
        seen.update(stages=[s.name for s in stages], only=only)
    monkeypatch.setattr(runner, "run", run)
    operate.scale_workers(inv, 4, None, "node3")
    assert seen == {"stages": ["rabbitmq version", "workers (rolling)"], "only": ["node1", "node3"]}
    assert "node3" in (tmp_path / "scale.yaml").read_text()
    with pytest.raises(Exception, match="node1 has no role worker"):
        operate.scale_workers(inv, 4, None, "node1")


def test_pipelines_are_data():
    from deploy import pipeline
    from deploy.stage import Parallel

    def names(item):
        if isinstance(item, Parallel):
            return [[s.name for s in seq] for seq in item.sequences]
        return item.name
    assert [names(i) for i in pipeline.deploy()] == [
        "base", "firewall",
        [["rabbitmq config", "rabbitmq first start", "rabbitmq nodes", "rabbitmq vhost, users, policy"],
         ["redis", "redis sentinel"], ["release"]],
        "workers (rolling)", "flower"]
    assert [s.name for s in pipeline.rollback()] == ["rabbitmq version", "previous release", "workers (rolling)",
                                                     "flower"]
    info = pipeline.ClusterInfo().plan(NS(inv=INV), INV.host("node1"), {"packages": {"rabbitmq-server": "4.0.5-6"}}, None)
    assert info.output == {"version": "4.0.5-6", "mode": "quorum"} and info.steps == []


# Tasks -------------------------------------------------------------------------------------

def c():
    from fabric import Config
    from invoke import Context
    return Context(config=Config())


def test_an_invalid_inventory_exits_2_with_file_and_line(tmp_path):
    bad = tmp_path / "inventory.yaml"
    bad.write_text((FIXTURES / "inventory.yaml").read_text().replace("roles: [rabbitmq, worker]",
                                                                     "roles: [rabbitmq, wroker]"))
    with pytest.raises(Exit) as caught:
        tasks.deploy(c(), inventory=str(bad))
    assert caught.value.code == 2 and "hosts.node3.roles[1]" in caught.value.message


def test_known_failures_exit_1_without_a_traceback(monkeypatch):
    def boom(inv, opts):
        raise runner.Unreachable("cannot reach:\n  node3 (deploy@192.0.2.13:22): timed out")
    monkeypatch.setattr(operate, "deploy", boom)
    with pytest.raises(Exit) as caught:
        tasks.deploy(c(), inventory=str(FIXTURES / "inventory.yaml"))
    assert caught.value.code == 1 and "node3 (deploy@192.0.2.13:22)" in caught.value.message


def test_a_failed_run_exits_1(monkeypatch):
    monkeypatch.setattr(operate, "deploy", lambda inv, opts: NS(failed=True))
    with pytest.raises(Exit, match="failed"):
        tasks.deploy(c(), inventory=str(FIXTURES / "inventory.yaml"))


def test_scale_workers_checks_its_numbers_before_anything():
    with pytest.raises(Exit, match="give --instances and/or --concurrency"):
        tasks.scale_workers(c(), inventory=str(FIXTURES / "inventory.yaml"))
    with pytest.raises(Exit, match="--concurrency must be between 1 and 256"):
        tasks.scale_workers(c(), concurrency="0", inventory=str(FIXTURES / "inventory.yaml"))


def test_trust_hosts_refuses_an_unknown_replace():
    with pytest.raises(Exit, match="--replace: no host named 'nodeX'"):
        tasks.trust_hosts(c(), replace="nodeX", inventory=str(FIXTURES / "inventory.yaml"))
