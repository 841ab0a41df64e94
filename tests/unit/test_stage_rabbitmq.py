"""RabbitMQ stages, pyinfra style: recorded facts in, exact steps out. The risky decisions
(reset and join a node, restart a running one, first start of a new cluster) are here."""
from __future__ import annotations

import json

import pytest

from deploy import facts as F
from deploy import rabbitmq_model as M
from deploy.errors import DeployFailed
from deploy.files import ManagedFile
from deploy.stages import rabbitmq as R
from deploy.steps import Await

from kit import FakeCtx, argvs, env, inventory, recorded, whats

INV = inventory()
CTX = FakeCtx(INV)
UNITS = F.parse_systemctl_show(recorded("trixie/node1-units.txt"))
RUNNING = UNITS["rabbitmq-server.service"]
STOPPED = {"Id": "rabbitmq-server.service", "ActiveState": "inactive", "UnitFileState": "disabled"}
VIEW = json.loads(recorded("trixie/node1-view.json"))


def synced(files: list[ManagedFile]) -> dict:
    return {f.path: F.FileState(f.owner, f.group, f.mode, f.sha256) for f in files}


def host(name):
    return INV.host(name)


# Config ----------------------------------------------------------------------------------

def config_facts(name, active=True, drift=None):
    files = synced(R.node_files(CTX, host(name), "3.10.8-1.1+deb12u2"))
    if drift:
        files.pop(drift)
    return {"files": files, "packages": {"rabbitmq-server": "3.10.8-1.1+deb12u2"},
            "units": {"rabbitmq-server.service": RUNNING if active else STOPPED}}


def test_config_in_sync_is_an_empty_plan_and_no_restart():
    prepared = R.Config().prepare(CTX, {"node1": config_facts("node1")})
    plan = R.Config().plan(CTX, host("node1"), config_facts("node1"), env(prepared=prepared))
    assert whats(plan) == []
    assert plan.output == {"restart": False, "version": "3.10.8-1.1+deb12u2", "mode": "mirrored"}


def test_changed_config_on_a_running_node_marks_it_for_a_rolling_restart():
    facts = config_facts("node2", drift="/etc/rabbitmq/rabbitmq.conf")
    prepared = R.Config().prepare(CTX, {"node2": facts})
    plan = R.Config().plan(CTX, host("node2"), facts, env(prepared=prepared))
    assert whats(plan) == ["file /etc/rabbitmq/rabbitmq.conf", "mark rabbit@node2 for a rolling restart"]
    assert argvs(plan.steps[-1]) == [("touch", R.RESTART_PENDING)]
    assert plan.output["restart"] is True


def test_erlang_schedulers_sleep_instead_of_spinning_on_a_shared_host():
    """RabbitMQ shares its hosts with workers and Redis: busy-waiting schedulers took their CPU."""
    (env_file,) = [f for f in R.node_files(CTX, host("node2"), "3.10.8-1.1+deb12u2")
                   if f.path == "/etc/rabbitmq/rabbitmq-env.conf"]
    lines = env_file.content.decode().splitlines()
    assert "NODENAME=rabbit@node2" in lines
    assert 'SERVER_ADDITIONAL_ERL_ARGS="+sbwt none +sbwtdcpu none +sbwtdio none"' in lines


def test_changed_config_on_a_stopped_node_needs_no_marker():
    facts = config_facts("node2", active=False, drift="/etc/rabbitmq/rabbitmq.conf")
    plan = R.Config().plan(CTX, host("node2"), facts, env(prepared={"version": None, "mode": "mirrored"}))
    assert whats(plan) == ["file /etc/rabbitmq/rabbitmq.conf"] and plan.output["restart"] is False


def test_secrets_are_files_never_arguments():
    files = {f.path: f for f in R.node_files(CTX, host("node1"))}
    for path in (R.COOKIE, "/root/.erlang.cookie", M.USERS_FILE):
        assert files[path].secret and files[path].mode in (0o400, 0o600)
    assert files[R.COOKIE].owner == "rabbitmq"
    assert json.loads(files[M.USERS_FILE].content)["admin"]["user"] == "admin"


def test_rabbitmq_4_chooses_quorum_and_says_so():
    facts = config_facts("node1")
    facts["packages"] = {"rabbitmq-server": "4.0.5-6+deb13u2"}
    prepared = R.Config().prepare(CTX, {"node1": facts})
    assert prepared == {"version": "4.0.5-6+deb13u2", "mode": "quorum"}
    plan = R.Config().plan(CTX, host("node1"), facts, env(prepared=prepared))
    assert plan.notes == ["queue mode quorum (RabbitMQ 4.0.5-6+deb13u2; rabbitmq.queue_mode is not set)"]


def test_explicit_mirrored_on_rabbitmq_4_is_refused_with_what_to_write():
    ctx = FakeCtx(inventory(rabbitmq={"queue_mode": "mirrored"}))
    facts = config_facts("node1")
    facts["packages"] = {"rabbitmq-server": "4.0.5-6+deb13u2"}
    with pytest.raises(DeployFailed, match="queue_mode: quorum"):
        R.Config().prepare(ctx, {"node1": facts})


def test_nodes_of_different_major_versions_are_refused():
    a, b = config_facts("node1"), config_facts("node2")
    b["packages"] = {"rabbitmq-server": "4.0.5-6+deb13u2"}
    with pytest.raises(DeployFailed, match="versions differ"):
        R.Config().prepare(CTX, {"node1": a, "node2": b})


# First start -------------------------------------------------------------------------------

def first_facts(virgin=True, active=False):
    return {"units": {"rabbitmq-server.service": RUNNING if active else STOPPED}, "virgin": virgin}


def test_a_new_cluster_starts_every_node_at_once():
    facts = {n: first_facts() for n in ("node1", "node2", "node3")}
    fresh = R.FirstStart().prepare(CTX, facts)
    assert fresh is True
    plan = R.FirstStart().plan(CTX, host("node2"), facts["node2"], env(prepared=fresh))
    assert whats(plan) == ["start rabbitmq-server.service (new cluster: all nodes at once)"]
    assert argvs(plan.steps[0]) == [("systemctl", "enable", "rabbitmq-server.service"),
                                    ("systemctl", "start", "rabbitmq-server.service"),
                                    ("rabbitmqctl", "await_startup", "--timeout", "300")]


@pytest.mark.parametrize("other", [first_facts(virgin=False), first_facts(virgin=True, active=True)])
def test_a_cluster_that_ran_before_is_left_to_the_serial_stage(other):
    facts = {"node1": first_facts(), "node2": other}
    assert R.FirstStart().prepare(CTX, facts) is False
    assert whats(R.FirstStart().plan(CTX, host("node1"), facts["node1"], env(prepared=False))) == []


# Nodes (serial) ----------------------------------------------------------------------------

def node_facts(active=True, pending=False, view=VIEW, enabled=True):
    unit = dict(RUNNING if active else STOPPED)
    unit["UnitFileState"] = "enabled" if enabled else "disabled"
    return {"units": {"rabbitmq-server.service": unit}, "pending": pending, "cluster": view}


def nodes_env(restart=False, mode="mirrored"):
    return env({"rabbitmq config": {n: {"restart": restart, "mode": mode} for n in ("node1", "node2", "node3")}})


def test_a_healthy_member_needs_nothing():
    assert whats(R.Nodes().plan(CTX, host("node2"), node_facts(), nodes_env())) == []


def test_a_stopped_node_is_started_awaited_then_replanned():
    plan = R.Nodes().plan(CTX, host("node2"), node_facts(active=False, enabled=False), nodes_env())
    assert whats(plan) == ["enable rabbitmq-server.service", "start rabbitmq-server.service",
                           "replan: rabbit@node2 started"]
    assert ("rabbitmqctl", "await_startup", "--timeout", "300") in argvs(plan.steps[1])


def test_a_marked_node_gets_the_rolling_restart_sequence_then_a_cluster_check():
    plan = R.Nodes().plan(CTX, host("node2"), node_facts(pending=True), nodes_env())
    assert whats(plan) == ["restart rabbitmq-server.service (config changed)",
                           "await: the cluster shows rabbit@node1, rabbit@node2 running"]
    assert argvs(plan.steps[0]) == [
        ("rabbitmq-upgrade", "await_online_synchronized_mirror", "--timeout", "120"),
        ("sh", "-c", "rabbitmq-upgrade drain || echo 'drain failed; the restart closes the connections' >&2", "sh"),
        ("systemctl", "restart", "rabbitmq-server.service"),
        ("rabbitmqctl", "await_startup", "--timeout", "300"), ("rabbitmq-upgrade", "revive"),
        ("rm", "-f", R.RESTART_PENDING)]


def test_quorum_clusters_wait_for_quorum_plus_one_before_a_restart():
    plan = R.Nodes().plan(CTX, host("node3"), node_facts(), nodes_env(restart=True, mode="quorum"))
    assert argvs(plan.steps[0])[0] == ("rabbitmq-upgrade", "await_online_quorum_plus_one", "--timeout", "120")


def test_a_node_that_is_provably_alone_is_reset_and_joined():
    alone = {"source": "ctl", "running": ["rabbit@node3"], "members": ["rabbit@node3"], "partitions": {}}
    plan = R.Nodes().plan(CTX, host("node3"), node_facts(view=alone), nodes_env())
    assert whats(plan) == ["join cluster via rabbit@node1", "replan: rabbit@node3 joined"]
    assert argvs(plan.steps[0]) == [("rabbitmqctl", "stop_app"), ("rabbitmqctl", "reset"),
                                    ("rabbitmqctl", "join_cluster", "rabbit@node1"), ("rabbitmqctl", "start_app"),
                                    ("rabbitmqctl", "await_startup", "--timeout", "300")]


def test_the_seed_is_never_reset_even_when_alone():
    alone = {"source": "ctl", "running": ["rabbit@node1"], "members": ["rabbit@node1"], "partitions": {}}
    plan = R.Nodes().plan(CTX, host("node1"), node_facts(view=alone), nodes_env())
    assert "reset" not in str([argvs(s) for s in plan.steps if hasattr(s, "commands")])
    assert whats(plan) == []         # node1 only waits for itself, and it runs


def test_a_member_that_sees_others_missing_is_never_reset():
    view = {"source": "api", "running": ["rabbit@node3"], "members": ["rabbit@node1", "rabbit@node2", "rabbit@node3"],
            "partitions": {}}
    plan = R.Nodes().plan(CTX, host("node3"), node_facts(view=view), nodes_env())
    assert whats(plan) == ["await: the cluster shows rabbit@node1, rabbit@node2, rabbit@node3 running"]


def test_a_node_whose_status_cannot_be_read_fails_instead_of_guessing():
    with pytest.raises(DeployFailed, match="cannot read the cluster status of rabbit@node2"):
        R.Nodes().plan(CTX, host("node2"), node_facts(view=None), nodes_env())


def test_a_partition_is_awaited_not_ignored():
    view = dict(VIEW, partitions={"rabbit@node3": ["rabbit@node1"]})
    (wait,) = R.Nodes().plan(CTX, host("node3"), node_facts(view=view), nodes_env()).steps
    assert isinstance(wait, Await)
    assert not wait.until(view) and wait.until(VIEW) and not wait.until(None)


def test_view_and_state_come_from_one_python_start_on_the_first_node():
    recorded_facts = recorded("bookworm/node1-rabbitmq-facts.json")     # 3.10, mirrored
    seed_view = R.view_fact(INV, with_state=True)
    state = R.state_fact(INV)
    assert seed_view.argv == state.argv                  # the engine runs it once
    assert seed_view.parse(recorded_facts, 0)["running"] == ["rabbit@node1", "rabbit@node2", "rabbit@node3"]
    assert state.parse(recorded_facts, 0)["ok"] is True
    assert R.view_fact(INV).argv[-1] == "view"


def test_view_parser_tolerates_a_failed_read():
    fact = R.view_fact(INV)
    assert fact.parse(json.dumps({"view": VIEW, "state": None}), 0)["source"] == "api"
    assert fact.parse('{"view": {"source": null}}', 0) is None and fact.parse("", 1) is None
    assert R.state_fact(INV).parse("", 1) == {"ok": False}


# Objects ---------------------------------------------------------------------------------

STATE = json.loads(recorded("bookworm/node1-rabbitmq-facts.json"))["state"]


def quorum_env():
    return env({"rabbitmq config": {"node1": {"mode": "quorum", "version": "4.0.5-6+deb13u2"}}})


def quorum_state():
    s = json.loads(json.dumps(STATE))
    s["policies"][M.POLICY]["definition"] = M.policy_definition(INV, "quorum", 3)
    s["dlq"], s["default_queue_type"] = "quorum", "quorum"
    return s


def test_converged_objects_give_an_empty_plan_in_quorum_mode():
    assert whats(R.Objects().plan(CTX, host("node1"), {"state": quorum_state()}, quorum_env())) == []


def test_a_missing_dead_letter_queue_is_imported_then_awaited():
    plan = R.Objects().plan(CTX, host("node1"), {"state": dict(quorum_state(), dlq=False)}, quorum_env())
    assert whats(plan) == ["queue celery.dead-letter (quorum, where tasks go after 5 deliveries)",
                           "await: the imported definitions are in place"]
    wait = plan.steps[-1]
    assert wait.until(quorum_state()) and not wait.until(dict(quorum_state(), dlq=False))
    assert not wait.until({"ok": False})


def test_objects_run_on_the_first_node_only():
    assert [h.name for h in R.Objects().hosts(INV)] == ["node1"]


def test_rolling_restart_restarts_every_node_in_turn_with_a_cluster_check():
    facts = {"packages": {"rabbitmq-server": "3.10.8-1.1+deb12u2"}}
    plan = R.RollingRestart().plan(CTX, host("node2"), facts, env())
    assert whats(plan) == ["rolling restart of rabbit@node2",
                           "await: the cluster shows rabbit@node1, rabbit@node2, rabbit@node3 running"]
    assert R.RollingRestart.serial


def test_discovery_retries_are_short_on_3x_and_rabbitmqs_own_on_4x():
    conf3 = R.node_files(CTX, host("node1"), "3.10.8-1.1+deb12u2")[0].content.decode()
    conf4 = R.node_files(CTX, host("node1"), "4.0.5-6+deb13u2")[0].content.decode()
    assert "cluster_formation.discovery_retry_limit = 2" in conf3
    assert "discovery_retry_limit" not in conf4
    assert "cluster_formation.classic_config.nodes.3 = rabbit@node3" in conf4


def test_a_first_deploy_imports_then_plans_the_rest_from_what_the_api_says():
    plan = R.Objects().plan(CTX, host("node1"), {"state": {"ok": False}}, quorum_env())
    assert [w.split(";")[0] for w in whats(plan)] == [
        "vhost /celery (default queue type quorum)", "user admin",
        "await: the imported definitions are in place", "replan: the management API answers now"]
    # Next round, the API answers: guest is gone already, the admin has no rights: nothing.
    assert whats(R.Objects().plan(CTX, host("node1"), {"state": quorum_state()}, quorum_env())) == []
    with_guest = dict(quorum_state(), users={**quorum_state()["users"], "guest": {"tags": [], "password_ok": None}})
    assert whats(R.Objects().plan(CTX, host("node1"), {"state": with_guest}, quorum_env())) == ["remove user guest"]
