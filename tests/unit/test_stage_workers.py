"""Workers stage, pyinfra style: recorded facts in, exact steps out. Restart-pending markers
(an interrupted deploy converges), rollback on a release that cannot start, scaling."""
from __future__ import annotations

import pytest

from deploy import facts as F
from deploy.files import ManagedFile
from deploy.stages import workers as W
from deploy.stages.release import CURRENT
from deploy.steps import Await, Change

from kit import FakeCtx, argvs, env, inventory, recorded, step, whats

INV = inventory()
CTX = FakeCtx(INV)
INSTANCES = W.parse_instances(recorded("trixie/node2-instances.txt"))
PING = W.parse_ping(recorded("trixie/node2-ping.txt"))


def synced(files: list[ManagedFile]) -> dict:
    return {f.path: F.FileState(f.owner, f.group, f.mode, f.sha256) for f in files}


def facts(name="node2", current="r1", pending=False, instances=None, drift=None, mode="mirrored"):
    files = synced(W.wanted_files(CTX, INV.host(name), mode))
    if drift:
        files.pop(drift)
    return {"files": files, "releases": {"current": current, "complete": [current, "r0"] if current else []},
            "instances": INSTANCES if instances is None else instances,
            "units": {W.TARGET: {"UnitFileState": "enabled"},
                      W.BEAT: {"UnitFileState": "enabled", "ActiveState": "active"}},
            "pending": pending, "restarts": 0}


def plan_for(name="node2", rid="r1", **kw):
    return W.Workers().plan(CTX, INV.host(name), facts(name, **kw), env({"release": {name: rid}}))


def test_recorded_instances_and_ping_parse():
    assert INSTANCES == {1: {"enabled": True, "active": True}, 2: {"enabled": True, "active": True}}
    assert PING == {"answered": ["w1@node2", "w2@node2"], "restarts": 0}
    assert W.parse_ping("3\nnot json\n") == {"answered": [], "restarts": 3}


def test_nothing_changed_is_an_empty_plan():
    plan = plan_for()
    assert whats(plan) == [] and plan.output == {"switched": False, "release": "r1"}


def test_a_new_release_is_marked_switched_restarted_pinged_then_unmarked():
    plan = plan_for(rid="r2")
    assert whats(plan) == [
        "mark workers and beat for a restart",
        "switch current to release r2",
        "restart celery-worker@1.service, celery-worker@2.service",
        "restart celery-beat.service",
        "await: w1@node2, w2@node2 answer ping on release r2; switched back to r1",
        "restart done: clear the marker"]
    assert argvs(plan.steps[0]) == [("touch", W.RESTART_PENDING)]
    assert argvs(plan.steps[-1]) == [("rm", "-f", W.RESTART_PENDING)]
    assert plan.output == {"switched": True, "release": "r2"}


def test_the_marker_is_written_before_current_is_switched():
    order = whats(plan_for(rid="r2"))
    assert order.index("mark workers and beat for a restart") < order.index("switch current to release r2")


def test_an_interrupted_deploy_restarts_the_workers_onto_the_release_already_current():
    """Stopped after the switch, before the restart: current is new, the marker is there."""
    plan = plan_for(rid="r2", current="r2", pending=True)
    assert whats(plan) == ["restart celery-worker@1.service, celery-worker@2.service",
                           "restart celery-beat.service",
                           "await: w1@node2, w2@node2 answer ping on release r2",
                           "restart done: clear the marker"]


def test_workers_that_do_not_answer_are_rolled_back_to_the_previous_release():
    wait = step(plan_for(rid="r2"), "await: w1@node2, w2@node2 answer ping on release r2; switched back to r1")
    assert isinstance(wait, Await)
    rollback, again = wait.on_fail
    assert rollback.what == "roll back to release r1"
    assert argvs(rollback)[1] == ("systemctl", "restart", "celery-worker@1.service", "celery-worker@2.service",
                                  "celery-beat.service")
    assert argvs(rollback)[0][-1] == "/opt/celery-kit/releases/r1"
    assert isinstance(again, Await) and again.on_fail == ()
    assert wait.until({"answered": ["w1@node2", "w2@node2"], "restarts": 0})
    assert not wait.until({"answered": ["w1@node2"], "restarts": 0})
    assert wait.give_up({"answered": [], "restarts": 1}) == "systemd is restarting them"
    assert wait.give_up({"answered": [], "restarts": 0}) is None


def test_a_first_release_has_nothing_to_roll_back_to():
    plan = plan_for(rid="r1", current=None, instances={})
    wait = [s for s in plan.steps if isinstance(s, Await)][0]
    assert wait.on_fail == () and "switched back" not in wait.what


def test_a_changed_setting_restarts_the_workers_without_a_switch():
    plan = plan_for(drift=W.ENV)
    assert whats(plan)[:2] == ["mark workers and beat for a restart", f"file {W.ENV}"]
    assert "switch current to release r1" not in whats(plan)


def test_a_changed_unit_file_reloads_systemd():
    plan = plan_for(drift="/etc/systemd/system/celery-worker@.service")
    assert "systemd daemon-reload" in whats(plan)


@pytest.mark.parametrize("have,n,expected", [
    ({1: {"enabled": True, "active": True}}, 3,
     ["enable celery-worker@2.service, celery-worker@3.service",
      "start celery-worker@2.service, celery-worker@3.service"]),
    ({i: {"enabled": True, "active": True} for i in range(1, 5)}, 2,
     ["stop and disable celery-worker@4.service, celery-worker@3.service (warm shutdown)"]),
    ({1: {"enabled": True, "active": False}}, 1, ["start celery-worker@1.service"]),
])
def test_instance_plans(have, n, expected):
    assert whats(W.instance_plan(have, n, restart=False)) == expected


def test_scaling_down_uses_a_warm_shutdown():
    (stop,) = W.instance_plan({i: {"enabled": True, "active": True} for i in range(1, 4)}, 2, False)
    assert argvs(stop) == [("systemctl", "disable", "--now", "celery-worker@3.service")]


def test_env_file_is_secret_root_celery_0640_and_rotates_broker_order_per_host():
    (env2, *_) = W.wanted_files(CTX, INV.host("node2"))
    (env3, *_) = W.wanted_files(CTX, INV.host("node3"))
    assert (env2.path, env2.owner, env2.group, env2.mode, env2.secret) == (W.ENV, "root", "celery", 0o640, True)
    first = lambda f: [l for l in f.content.decode().splitlines() if l.startswith("CELERY_BROKER_URL")][0]  # noqa
    assert "@192.0.2.12:5672" in first(env2).split(";")[0] and "@192.0.2.13:5672" in first(env3).split(";")[0]
    assert "CELERY_CONFIG_MODULE='celery_kit_config'" in env2.content.decode()


def test_beat_host_gets_the_beat_unit_and_worker_only_host_does_not():
    paths2 = [f.path for f in W.wanted_files(CTX, INV.host("node2"))]
    paths3 = [f.path for f in W.wanted_files(CTX, INV.host("node3"))]
    assert f"{W.UNIT_DIR}/{W.BEAT}" in paths2 and f"{W.UNIT_DIR}/{W.BEAT}" not in paths3
    assert W.wanted_files(CTX, INV.host("node1")) == []      # flower-only: release only


def test_a_flower_only_host_is_switched_and_flower_marked():
    f = {"files": {}, "releases": {"current": "r1", "complete": ["r1"]}, "instances": {}, "units": {},
         "pending": False, "restarts": 0}
    plan = W.Workers().plan(CTX, INV.host("node1"), f, env({"release": {"node1": "r2"}}))
    assert whats(plan) == ["switch current to release r2"]
    assert argvs(plan.steps[0])[1] == ("touch", W.FLOWER_RESTART_PENDING)


def test_worker_hosts_roll_first_and_only_limits_them():
    assert [h.name for h in W.Workers().hosts(INV)] == ["node2", "node3", "node1"]
    assert [h.name for h in W.Workers(only={"node3"}).hosts(INV)] == ["node3"]


def test_rollback_reads_the_previous_release_stage():
    plan = W.Workers(release_from="previous release").plan(
        CTX, INV.host("node2"), facts(), env({"previous release": {"node2": "r0"}}))
    assert "switch current to release r0" in whats(plan)


def test_quorum_mode_reaches_the_workers_env():
    plan = W.Workers().plan(CTX, INV.host("node2"), facts(mode="mirrored"),
                            env({"release": {"node2": "r1"}, "rabbitmq config": {"node1": {"mode": "quorum"}}}))
    (env_change,) = [s for s in plan.steps if isinstance(s, Change) and s.what == f"file {W.ENV}"]
    assert "CELERY_QUEUE_TYPE='quorum'" in env_change.file.content.decode()


def test_ping_runs_on_the_host_as_celery_with_the_hosts_settings():
    fact = W.ping_fact("app", ["w1@node2"], ["celery-worker@1.service"])
    script = fact.argv[2]
    assert "runuser -u celery" in script and W.ENV in script and f"{CURRENT}/venv/bin/celery" in script
    assert fact.argv[3:] == ("ping", "app", "w1@node2", "celery-worker@1.service")


def test_the_first_rollout_starts_every_host_at_once_later_ones_roll():
    fresh = {"node2": {"releases": {"current": None}}, "node3": {"releases": {"current": None}}}
    assert W.Workers().serial_for(fresh) is False
    fresh["node3"]["releases"]["current"] = "r1"
    assert W.Workers().serial_for(fresh) is True
