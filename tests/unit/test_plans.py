"""Plans: wanted vs actual -> the changes needed; empty means unchanged."""
from types import SimpleNamespace as NS

from deploy import ops
from deploy.engine import Change
from deploy.facts import FileState
from deploy.files import managed
from deploy.stages.base import BEGIN, END, hosts_file, packages_for, users_for

CONF = managed("/etc/redis/redis.conf", "bind 1.2.3.4\n", owner="redis", group="redis", mode=0o640)


def state(f, **kw):
    base = dict(owner=f.owner, group=f.group, mode=f.mode, sha256=f.sha256)
    base.update(kw)
    return {f.path: FileState(**base)}


def test_same_file_same_attrs_is_no_change():
    assert ops.file_changes([CONF], state(CONF)) == []


def test_missing_or_different_file_is_uploaded():
    for actual in ({}, state(CONF, sha256="0" * 64)):
        (ch,) = ops.file_changes([CONF], actual)
        assert ch.file is CONF and ch.what == "file /etc/redis/redis.conf"


def test_only_mode_differs_is_a_chmod_not_an_upload():
    (ch,) = ops.file_changes([CONF], state(CONF, mode=0o644))
    assert ch.file is None
    assert [c.argv for c in ch.commands] == [("chown", "redis:redis", "/etc/redis/redis.conf"),
                                             ("chmod", "0640", "/etc/redis/redis.conf")]


def test_packages_only_missing_ones_in_one_transaction():
    assert ops.package_changes(["a", "b"], {"a": "1", "b": "2"}) == []
    (ch,) = ops.package_changes(["c", "a", "b"], {"a": "1"})
    assert ch.what == "packages b c" and ch.commands[0].argv[-2:] == ("b", "c")


def test_users():
    assert ops.user_changes({"celery": "/var/lib/celery"}, {"celery"}) == []
    (ch,) = ops.user_changes({"celery": "/var/lib/celery"}, {"root"})
    assert ch.commands[0].argv[0] == "adduser" and ch.commands[1].argv[-1] == "/var/lib/celery"


def test_service_restarts_only_when_its_files_changed():
    running = {"ActiveState": "active", "UnitFileState": "enabled"}
    assert ops.service_changes("redis-server.service", running, restart=False) == []
    (ch,) = ops.service_changes("redis-server.service", running, restart=True)
    assert ch.commands[0].argv == ("systemctl", "restart", "redis-server.service")
    stopped = {"ActiveState": "inactive", "UnitFileState": "disabled"}
    assert [c.what for c in ops.service_changes("x.service", stopped, restart=True)] == [
        "enable x.service", "start x.service"]


def test_daemon_reload_only_when_a_unit_file_changed():
    unit = managed("/etc/systemd/system/w@.service", "[Unit]\n")
    env = managed("/etc/celery/env", "A=1\n")
    assert ops.reload_if_units_changed([Change("file", file=env)]) == []
    (reload,) = ops.reload_if_units_changed([Change("file", file=env), Change("file", file=unit)])
    assert reload.commands[0].argv == ("systemctl", "daemon-reload")


INV = NS(hosts=[NS(name="node1", address="10.0.0.1"), NS(name="node2", address="10.0.0.2")])


def test_hosts_file_appends_block_and_drops_conflicting_loopback_name():
    current = "127.0.0.1\tlocalhost\n127.0.1.1\tnode1\n"
    out = hosts_file(current, INV)
    assert "127.0.1.1\tnode1" not in out
    assert out.endswith(f"{BEGIN}\n10.0.0.1\tnode1\n10.0.0.2\tnode2\n{END}\n")
    assert hosts_file(out, INV) == out          # idempotent


def test_hosts_file_replaces_an_outdated_block_and_keeps_the_rest():
    old = f"127.0.0.1\tlocalhost\n{BEGIN}\n10.9.9.9\told\n{END}\n192.168.1.5\tprinter\n"
    out = hosts_file(old, INV)
    assert "old" not in out and "192.168.1.5\tprinter" in out and "10.0.0.2\tnode2" in out


def test_packages_and_users_follow_roles():
    h = NS(roles=frozenset({"rabbitmq", "worker"}))
    assert packages_for(NS(firewall=NS(enabled=False), sentinel_hosts=lambda: ()), h) == [
        "python3", "python3-venv", "rabbitmq-server"]
    assert packages_for(NS(firewall=NS(enabled=True), sentinel_hosts=lambda: ()), h) == [
        "nftables", "python3", "python3-venv", "rabbitmq-server"]
    assert "redis-sentinel" in packages_for(NS(firewall=NS(enabled=True), sentinel_hosts=lambda: (h,)), h)
    assert users_for(h) == {"celery": "/var/lib/celery"}


def test_hosts_file_resolves_dns_names_to_addresses():
    inv = NS(hosts=[NS(name="node1", address="10.0.0.1"), NS(name="node3", address="node3.example.internal")])
    out = hosts_file("", inv, {"10.0.0.1": "10.0.0.1", "node3.example.internal": "10.0.0.3"}.__getitem__)
    assert "10.0.0.3\tnode3" in out and "node3.example.internal" not in out
