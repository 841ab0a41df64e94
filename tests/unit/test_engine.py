"""The engine loop with fake sessions and stages: gather -> plan -> print or apply -> await,
dry-run in one place, serial and parallel stages, outputs between stages, interrupts."""
from __future__ import annotations

import threading
from types import SimpleNamespace as NS

import pytest

from deploy import commands as C
from deploy.engine import Engine
from deploy.errors import DeployFailed
from deploy.facts import Fact
from deploy.files import managed
from deploy.progress import Progress
from deploy.stage import Stage
from deploy.steps import STAGED, Await, Change, Plan, Replan
from deploy.transport import CommandError, Result

from rich.console import Console


class FakeSession:
    """Records what would be sent to a host; facts come from a dict (or a callable)."""

    def __init__(self, name: str, facts=None):
        self.name = name
        self.host = NS(name=name)
        self.facts = facts if facts is not None else {}
        self.ran: list[str] = []
        self.uploads: list[bytes] = []
        self.gathers = 0
        self.fail_on: str | None = None
        self.round_trips = 0

    def gather(self, facts):
        self.gathers += 1
        values = self.facts(facts) if callable(self.facts) else self.facts
        # What the host sees is the command: the test stages' facts are `echo <key>`.
        return {f.key: f.parse(values.get(f.key if f.key in values else f.argv[-1]), 0) for f in facts}

    def run(self, c, check=True, timeout=None):
        text = " ".join(c.argv)
        self.ran.append(text)
        if self.fail_on and self.fail_on in text:
            raise CommandError(self.name, text, 1, "boom")
        return Result(0, "", "")

    def upload(self, content: bytes) -> str:
        self.uploads.append(content)
        return f"/home/deploy/.staging/{len(self.uploads)}"


class ScriptStage(Stage):
    """A stage whose plan is a function of (host name, facts, env)."""

    def __init__(self, name, hosts, plan, facts=("x",), serial=False, prepare=None):
        self.name, self._hosts, self._plan, self._facts = name, hosts, plan, facts
        self.serial = serial
        self._prepare = prepare

    def hosts(self, inv):
        return [NS(name=h) for h in self._hosts]

    def facts(self, ctx, host):
        return [Fact(k, ("echo", k), lambda out, rc: out) for k in self._facts]

    def prepare(self, ctx, facts):
        return self._prepare(facts) if self._prepare else None

    def plan(self, ctx, host, facts, env):
        return self._plan(host.name, facts, env)


def quiet() -> Progress:
    return Progress(Console(file=open("/dev/null", "w"), width=200, force_terminal=False))


class Capture(Progress):
    def __init__(self):
        super().__init__(Console(file=open("/dev/null", "w"), width=200, force_terminal=False))
        self.lines: list[str] = []

    def say(self, text):
        self.lines.append(text)


def engine(sessions, dry_run=False, progress=None):
    return Engine(NS(inv=None), {s.name: s for s in sessions}, dry_run, progress or quiet())


def test_changes_are_applied_in_plan_order_and_reported():
    s = FakeSession("a", {"x": "1"})
    st = ScriptStage("s", ["a"], lambda h, f, e: Plan([Change("one", [C.cmd("true", "1")]),
                                                      Change("two", [C.cmd("true", "2")])]))
    e = engine([s])
    e.run([st])
    assert s.ran == ["true 1", "true 2"]
    assert e.reports["a"].changed == ["s: one", "s: two"] and e.reports["a"].result == "changed"


def test_empty_plan_is_unchanged_and_runs_nothing():
    s = FakeSession("a", {"x": "1"})
    e = engine([s])
    e.run([ScriptStage("s", ["a"], lambda h, f, e: Plan([]))])
    assert s.ran == [] and e.reports["a"].result == "unchanged"


def test_dry_run_prints_every_step_and_executes_nothing():
    s = FakeSession("a", {"x": "1", "old": "old line\n"})
    f = managed("/etc/thing", "new line\n")
    plan = Plan([Change("file /etc/thing", [C.cmd("systemctl", "reload", "thing")], file=f),
                 Await("it answers", Fact("ok", ("true",), lambda o, r: True), bool, 5, "no"),
                 Replan("started"), Change("never planned in a dry run", [C.cmd("false")])])
    cap = Capture()
    e = engine([s], dry_run=True, progress=cap)
    e.run([ScriptStage("s", ["a"], lambda h, facts, env: plan)])
    text = "\n".join(cap.lines)
    assert s.ran == [] and s.uploads == []
    assert "would change file /etc/thing" in text and "-old line" in text and "+new line" in text
    assert "$ systemctl reload thing" in text
    assert "would wait until it answers" in text
    assert "read the host again and plan the rest (started)" in text
    assert e.reports["a"].changed == ["s: file /etc/thing"]


def test_secret_files_are_not_diffed_in_a_dry_run():
    s = FakeSession("a", {"x": "1"})
    cap = Capture()
    f = managed("/etc/secret", "password=hunter2hunter2\n", secret=True)
    engine([s], True, cap).run([ScriptStage("s", ["a"], lambda h, facts, env: Plan([Change("file /etc/secret", file=f)]))])
    assert "hunter2" not in "\n".join(cap.lines) and "content not shown" in "\n".join(cap.lines)


def test_files_are_uploaded_then_installed_atomically():
    s = FakeSession("a", {"x": "1"})
    f = managed("/etc/conf", "A=1\n", owner="root", group="celery", mode=0o640)
    engine([s]).run([ScriptStage("s", ["a"], lambda h, facts, env: Plan([Change("file /etc/conf", file=f)]))])
    assert s.uploads == [b"A=1\n"]
    assert s.ran[0].startswith("sh -c") and "root celery 0640 /home/deploy/.staging/1 /etc/conf.ck-new /etc/conf" in s.ran[0]


def test_an_uploaded_artefact_replaces_the_staged_placeholder(tmp_path):
    art = tmp_path / "release.tar.gz"
    art.write_bytes(b"tarball")
    s = FakeSession("a", {"x": "1"})
    step = Change("release r1", [C.cmd("tar", "-xzf", STAGED)], upload=art)
    engine([s]).run([ScriptStage("s", ["a"], lambda h, f, e: Plan([step]))])
    assert s.uploads == [b"tarball"] and s.ran == ["tar -xzf /home/deploy/.staging/1"]


def test_await_polls_until_the_predicate_holds():
    answers = iter([False, False, True])
    s = FakeSession("a", lambda facts: {"x": "1", "ready": next(answers) if facts[0].key == "ready" else None})
    wait = Await("ready", Fact("ready", ("check",), lambda o, r: o), bool, 5, "never ready", interval=0)
    engine([s]).run([ScriptStage("s", ["a"], lambda h, f, e: Plan([Change("go", [C.cmd("go")]), wait]))])
    assert s.gathers == 1 + 3        # the stage's facts, then three polls


def test_await_timeout_runs_recovery_then_fails_the_host():
    s = FakeSession("a", {"x": "1", "ready": False})
    wait = Await("ready", Fact("ready", ("check",), lambda o, r: o), bool, 0, "not ready",
                 on_fail=[Change("switch back", [C.cmd("switch", "old")])])
    e = engine([s])
    e.run([ScriptStage("s", ["a"], lambda h, f, e: Plan([wait]))])
    assert s.ran == ["switch old"]
    assert e.failed and "not ready (not within 0s)" in e.reports["a"].failed


def test_await_gives_up_early_with_the_reason():
    s = FakeSession("a", {"x": "1", "ready": {"restarts": 2}})
    wait = Await("ready", Fact("ready", ("check",), lambda o, r: o), lambda v: False, 60, "crashed",
                 give_up=lambda v: "systemd is restarting them" if v["restarts"] else None)
    e = engine([s])
    e.run([ScriptStage("s", ["a"], lambda h, f, e: Plan([wait]))])
    assert "crashed (systemd is restarting them)" in e.reports["a"].failed


def test_replan_reads_the_host_again_and_plans_the_rest():
    state = {"x": "stopped"}
    s = FakeSession("a", lambda facts: dict(state))

    class Starter(ScriptStage):
        def plan(self, ctx, host, facts, env):
            if facts["x"] == "stopped":
                state["x"] = "running"        # what the start command does on the host
                return Plan([Change("start", [C.cmd("start")]), Replan("started")])
            return Plan([Change("join", [C.cmd("join")])])

    e = engine([s])
    e.run([Starter("s", ["a"], None)])
    assert s.ran == ["start", "join"]


def test_a_plan_that_never_settles_fails():
    s = FakeSession("a", {"x": "1"})
    e = engine([s])
    e.run([ScriptStage("s", ["a"], lambda h, f, e: Plan([Change("again", [C.cmd("x")]), Replan("loop")]))])
    assert "did not settle" in e.reports["a"].failed


def test_serial_stage_stops_at_the_first_failed_host_and_later_stages_are_skipped():
    a, b = FakeSession("a", {"x": "1"}), FakeSession("b", {"x": "1"})
    a.fail_on = "restart"
    st = ScriptStage("roll", ["a", "b"], lambda h, f, e: Plan([Change("restart", [C.cmd("restart", h)])]),
                     serial=True)
    later = ScriptStage("later", ["a", "b"], lambda h, f, e: Plan([Change("x", [C.cmd("later")])]))
    e = engine([a, b])
    e.run([st, later])
    assert a.ran == ["restart a"] and b.ran == []
    assert "`restart a` exited 1" in e.reports["a"].failed and e.reports["b"].result == "unchanged"


def test_serial_stage_reads_the_next_host_again_after_a_change():
    a, b = FakeSession("a", {"x": "1"}), FakeSession("b", {"x": "1"})
    st = ScriptStage("roll", ["a", "b"], lambda h, f, e: Plan([Change("restart", [C.cmd("restart", h)])]),
                     serial=True)
    e = engine([a, b])
    e.prefetch([st])
    e.run_stage(st)
    assert (a.gathers, b.gathers) == (1, 2)     # prefetched; b again after a's restart


def test_facts_of_all_stages_are_prefetched_in_one_round_trip_while_nothing_changes():
    s = FakeSession("a", {"x": "1", "y": "2"})
    st1 = ScriptStage("one", ["a"], lambda h, f, e: Plan([]), facts=("x",))
    st2 = ScriptStage("two", ["a"], lambda h, f, e: Plan([]), facts=("y",))
    engine([s]).run([st1, st2])
    assert s.gathers == 1


def test_after_a_change_later_stages_read_their_facts_afresh():
    s = FakeSession("a", {"x": "1", "y": "2"})
    st1 = ScriptStage("one", ["a"], lambda h, f, e: Plan([Change("c", [C.cmd("c")])]), facts=("x",))
    st2 = ScriptStage("two", ["a"], lambda h, f, e: Plan([]), facts=("y",))
    engine([s]).run([st1, st2])
    assert s.gathers == 2


def test_outputs_of_a_stage_reach_later_stages_and_prepare_sees_every_host():
    a, b = FakeSession("a", {"x": "A"}), FakeSession("b", {"x": "B"})
    seen = {}
    first = ScriptStage("first", ["a", "b"], lambda h, f, e: Plan([], output=f"{h}:{f['x']}"),
                        prepare=lambda facts: sorted(v["x"] for v in facts.values()))

    def second(h, f, env):
        seen[h] = (env.output("first", h), env.prepared)
        return Plan([])

    e = engine([a, b])
    e.run([first, ScriptStage("second", ["a", "b"], second, prepare=lambda facts: "p")])
    assert seen == {"a": ("a:A", "p"), "b": ("b:B", "p")}
    assert e.outputs["first"] == {"a": "a:A", "b": "b:B"}


def test_a_failing_prepare_fails_every_host_of_the_stage():
    a = FakeSession("a", {"x": "1"})

    def bad(facts):
        raise DeployFailed("versions differ")

    e = engine([a])
    e.run([ScriptStage("s", ["a"], lambda h, f, e: Plan([]), prepare=bad)])
    assert e.reports["a"].failed == "stage s: versions differ"


def test_notes_are_said_once_per_host():
    cap = Capture()
    s = FakeSession("a", {"x": "1"})
    e = engine([s], progress=cap)
    e.run([ScriptStage("s", ["a"], lambda h, f, e: Plan([], notes=["queue mode quorum"]))])
    assert e.reports["a"].notes == ["queue mode quorum"]
    assert sum("queue mode quorum" in line for line in cap.lines) == 1


def test_an_interrupt_stops_between_steps_and_says_where():
    s = FakeSession("a", {"x": "1"})
    e = engine([s])

    class Stopper(ScriptStage):
        def plan(self, ctx, host, facts, env):
            return Plan([Change("first", [C.cmd("first")]), Change("second", [C.cmd("second")])])

    original = s.run

    def run(c, check=True, timeout=None):
        e.interrupt.set()                  # Ctrl-C while the first command runs
        return original(c, check, timeout)

    s.run = run
    e.run([Stopper("s", ["a"], None), ScriptStage("later", ["a"], lambda h, f, e: Plan([Change("x", [C.cmd("x")])]))])
    assert s.ran == ["first"]
    r = e.reports["a"]
    assert r.result == "interrupted" and "stopped before: second" in r.stopped_at


def test_a_host_whose_facts_cannot_be_read_fails_with_the_reason():
    s = FakeSession("a")

    def broken(facts):
        raise OSError("connection reset")

    s.facts = broken
    e = engine([s])
    e.run([ScriptStage("s", ["a"], lambda h, f, e: Plan([]))])
    assert e.reports["a"].failed == "stage s: OSError: connection reset"


def test_parallel_hosts_run_at_the_same_time():
    barrier = threading.Barrier(2, timeout=5)
    a, b = FakeSession("a", {"x": "1"}), FakeSession("b", {"x": "1"})

    def plan(h, f, e):
        barrier.wait()          # deadlocks (and fails) unless both hosts plan concurrently
        return Plan([])

    e = engine([a, b])
    e.run([ScriptStage("s", ["a", "b"], plan)])
    assert not e.failed


def test_commands_in_reports_are_masked():
    C.register_secret("s3cr3t-value-for-masking")
    s = FakeSession("a", {"x": "1"})
    e = engine([s])
    s.fail_on = "use"
    e.run([ScriptStage("s", ["a"], lambda h, f, e: Plan([Change("use", [C.cmd("use", "s3cr3t-value-for-masking")])]))])
    assert "s3cr3t" not in e.reports["a"].failed


@pytest.mark.parametrize("result,expected", [("changed", "changed"), ("unchanged", "unchanged")])
def test_summary_rows(result, expected):
    from deploy import report
    s = FakeSession("a", {"x": "1"})
    e = engine([s])
    plan = Plan([Change("c", [C.cmd("c")])]) if result == "changed" else Plan([])
    e.run([ScriptStage("s", ["a"], lambda h, f, env: plan)])
    console = Console(width=120, record=True, file=open("/dev/null", "w"))
    console.print(report.summary(e))
    rows = console.export_text().splitlines()
    assert rows[0].split() == ["host", "result", "changes"]
    assert rows[1].split() == ["a", expected, "1" if result == "changed" else "0"]


def test_parallel_sequences_run_side_by_side_and_in_order_within():
    from deploy.stage import Parallel
    order = []
    barrier = threading.Barrier(2, timeout=5)
    a = FakeSession("a", {"x": "1"})

    def first(h, f, e):
        barrier.wait()               # both sequences are here at once
        order.append("first")
        return Plan([])

    def second(h, f, e):
        order.append("second")
        return Plan([])

    seq1 = [ScriptStage("one", ["a"], first), ScriptStage("one-b", ["a"], second)]
    seq2 = [ScriptStage("two", ["a"], first)]
    e = engine([a])
    e.run([Parallel(seq1, seq2), ScriptStage("after", ["a"], lambda h, f, e: Plan([], output="done"))])
    assert order.count("first") == 2 and order.index("second") > 0 and not e.failed
    assert e.outputs["after"] == {"a": "done"}


def test_a_stage_may_decide_per_run_whether_it_is_serial():
    a, b = FakeSession("a", {"x": "1"}), FakeSession("b", {"x": "1"})
    barrier = threading.Barrier(2, timeout=5)

    class Roll(ScriptStage):
        def serial_for(self, facts):
            return False                      # e.g. the very first rollout

    def plan(h, f, e):
        barrier.wait()
        return Plan([])

    e = engine([a, b])
    e.run([Roll("roll", ["a", "b"], plan, serial=True)])
    assert not e.failed


def test_an_early_prepare_overlaps_earlier_stages_and_is_used_when_its_facts_held():
    calls = []
    a = FakeSession("a", {"x": "1"})

    class Build(ScriptStage):
        prepare_early = True

        def prepare(self, ctx, facts):
            calls.append(dict(facts))
            return "built"

    seen = {}
    first = ScriptStage("first", ["a"], lambda h, f, e: Plan([]))
    build = Build("build", ["a"], lambda h, f, e: seen.setdefault(h, e.prepared) and Plan([]))
    engine([a]).run([first, build])
    assert calls == [{"a": {"x": "1"}}] and seen == {"a": "built"}       # prepared once, early
