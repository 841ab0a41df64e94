"""RabbitMQ decisions without a broker: queue mode, config values, policies, logins, the
cluster-level plan."""
import json
import re

import pytest

from deploy import rabbitmq_model as M

from kit import FakeCtx, inventory, recorded

INV = inventory()
CTX = FakeCtx(INV)
SECRET = lambda n: CTX.secret(n).reveal()   # noqa: E731


def test_consumer_timeout_is_above_the_longest_task():
    assert M.consumer_timeout_ms(INV) == (2 * INV.celery.time_limit + 60) * 1000
    assert M.consumer_timeout_ms(inventory(rabbitmq={"consumer_timeout": 7200})) == 7_200_000


@pytest.mark.parametrize("version,mode", [("3.10.8-1.1+deb12u2", "mirrored"), ("4.0.5-6+deb13u2", "quorum"),
                                          (None, "mirrored")])
def test_queue_mode_follows_the_version_when_the_inventory_leaves_it_out(version, mode):
    assert M.queue_mode(INV, version) == mode
    assert M.queue_mode(inventory(rabbitmq={"queue_mode": "quorum"}), "3.10.8") == "quorum"


def test_mirrored_policy_promotes_only_synchronised_mirrors():
    assert M.policy_definition(INV, "mirrored", 3) == {
        "ha-mode": "exactly", "ha-params": 2, "ha-sync-mode": "automatic",
        "ha-promote-on-failure": "when-synced", "ha-promote-on-shutdown": "when-synced"}
    assert M.policy_definition(inventory(rabbitmq={"mirrors": "all"}), "mirrored", 3)["ha-mode"] == "all"


def test_quorum_policy_dead_letters_after_the_delivery_limit():
    d = M.policy_definition(inventory(rabbitmq={"delivery_limit": 3}), "quorum", 3)
    # RabbitMQ dead-letters when the count EXCEEDS the limit: 3 deliveries = limit 2.
    assert d == {"delivery-limit": 2, "dead-letter-exchange": "", "dead-letter-routing-key": "celery.dead-letter",
                 "dead-letter-strategy": "at-least-once", "overflow": "reject-publish"}


def test_rabbitmq_4_refuses_explicit_mirrored_mode_with_what_to_write():
    inv = inventory(rabbitmq={"queue_mode": "mirrored"})
    assert M.version_problem(inv, "3.10.8-1.1+deb12u1") is None
    problem = M.version_problem(inv, "4.0.5-1")
    assert "4.0.5" in problem and "queue_mode: quorum" in problem and str(inv.path) in problem
    assert M.version_problem(INV, "4.0.5-1") is None        # left out: quorum is chosen


@pytest.mark.parametrize("n,warns", [(1, True), (2, True), (3, False), (4, True), (5, False)])
def test_size_warning(n, warns):
    assert (M.size_warning(n) is not None) == warns


def test_policy_pattern_skips_amq_celery_transients_and_delayed_delivery():
    p = re.compile(M.POLICY_PATTERN)
    assert p.match("celery") and p.match("emails") and p.match("celery.dead-letter")
    for q in ("amq.gen-xyz", "celeryev.1234", "w1@node2.celery.pidbox", "celery_delayed_27"):
        assert not p.match(q), q


def test_least_privilege_logins():
    by = {lg.name: lg for lg in M.logins(INV, SECRET, "quorum")}
    assert by["admin"].tags == ("administrator",) and by["admin"].perms is None
    assert by["celery"].tags == () and by["celery"].perms == M.ALL_PERMS
    assert by["celery-kit-monitor"].tags == ("monitoring",) and by["celery-kit-monitor"].perms == M.NO_PERMS
    assert {lg.name: lg.perms for lg in M.logins(INV, SECRET, "mirrored")}["admin"] is None


def test_users_file_holds_every_login_for_the_facts():
    doc = json.loads(M.users_file(INV, SECRET))
    assert set(doc) == {"admin", "app", "monitoring"} and doc["app"]["user"] == "celery"


STATE = json.loads(recorded("bookworm/node1-rabbitmq-facts.json"))["state"]      # RabbitMQ 3.10, mirrored


def quorum_state():
    """The recorded state as it is once the quorum mode's policy and dead-letter queue are in."""
    s = json.loads(json.dumps(STATE))
    s["policies"][M.POLICY]["definition"] = M.policy_definition(INV, "quorum", 3)
    s["dlq"] = "quorum"
    return s


def test_converged_cluster_gives_an_empty_plan():
    # password_ok is decided on the host (against the users file): only the flags matter here.
    assert STATE["ok"] and M.cluster_plan(INV, STATE, M.logins(INV, SECRET, "mirrored"), "mirrored", 3) == []
    assert M.cluster_plan(INV, quorum_state(), M.logins(INV, SECRET, "quorum"), "quorum", 3) == []


def test_unknown_state_imports_everything_in_one_call_with_secrets_on_stdin():
    users = M.logins(INV, SECRET, "quorum")
    plan = M.cluster_plan(INV, {"ok": False}, users, "quorum", 3, 4)
    whats = [c.what for c in plan]
    assert whats[0] == "vhost /celery (default queue type quorum)"
    (imp,) = [c for c in plan if c.commands[0].argv[:2] == ("rabbitmqctl", "import_definitions")]
    assert [c.argv for c in imp.commands] == [("rabbitmqctl", "import_definitions", M.DEFINITIONS),
                                              ("rm", "-f", M.DEFINITIONS)]
    assert (imp.file.path, imp.file.owner, imp.file.mode, imp.file.secret) == (M.DEFINITIONS, "rabbitmq", 0o600, True)
    defs = json.loads(imp.file.content)
    assert {u["name"] for u in defs["users"]} == {"admin", "celery", "celery-kit-monitor"}
    assert {u["hashing_algorithm"] for u in defs["users"]} == {"rabbit_password_hashing_sha256"}
    assert defs["queues"] == [{"name": "celery.dead-letter", "vhost": "/celery", "durable": True,
                               "auto_delete": False, "arguments": {"x-queue-type": "quorum"}}]
    assert [p["name"] for p in defs["policies"]] == [M.POLICY]
    assert "no permissions for admin on /celery" in whats and "remove user guest" in whats
    for change in plan:
        for c in change.commands:
            for u in users:
                assert u.password not in " ".join(c.argv) and u.password.encode() not in (c.stdin or b"")
            if change.file is not None:
                assert u.password.encode() not in change.file.content          # hashes only


def test_password_hash_is_rabbitmqs_sha256_scheme():
    import base64
    import hashlib
    h = M.password_hash("s3cret", b"\x01\x02\x03\x04")
    raw = base64.b64decode(h)
    assert raw[:4] == b"\x01\x02\x03\x04" and raw[4:] == hashlib.sha256(b"\x01\x02\x03\x04s3cret").digest()


def test_drift_guest_back_password_changed_policy_changed():
    state = quorum_state()
    state["users"]["guest"] = {"tags": ["administrator"], "password_ok": None}
    state["users"]["celery"]["password_ok"] = False
    state["policies"][M.POLICY]["definition"]["delivery-limit"] = 19
    whats = [c.what for c in M.cluster_plan(INV, state, M.logins(INV, SECRET, "quorum"), "quorum", 3)]
    assert whats == ['password of celery; policy celery-kit-ha {"dead-letter-exchange": "", "dead-letter-routing-key": '
                     '"celery.dead-letter", "dead-letter-strategy": "at-least-once", "delivery-limit": 4, '
                     '"overflow": "reject-publish"}', "remove user guest"]


def test_an_administrator_with_app_rights_loses_them():
    state = json.loads(json.dumps(STATE))
    state["permissions"]["admin"] = [".*", ".*", ".*"]
    whats = [c.what for c in M.cluster_plan(INV, state, M.logins(INV, SECRET, "mirrored"), "mirrored", 3)]
    assert "no permissions for admin on /celery" in whats


def test_a_quorum_vhost_defaults_to_quorum_queues_so_stock_clients_declare_the_same_queue():
    (new,) = M.vhost_plan(INV, {"ok": False}, "quorum", 3)
    assert new.what == "vhost /celery (default queue type quorum)"
    assert new.commands[0].argv[-3:] == ("/celery", "--default-queue-type", "quorum")
    existing = dict(STATE, default_queue_type="classic")
    (update,) = M.vhost_plan(INV, existing, "quorum", 4)
    assert update.commands[0].argv == ("rabbitmqctl", "update_vhost_metadata", "/celery", "--default-queue-type",
                                       "quorum")
    assert M.vhost_plan(INV, existing, "quorum", 3) == []         # 3.10 cannot change it later
    assert M.vhost_plan(INV, dict(STATE, default_queue_type="quorum"), "quorum", 4) == []
    assert M.vhost_plan(INV, STATE, "mirrored", 3) == []
