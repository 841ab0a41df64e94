"""What a correct deployment looks like on the hosts."""
import json


def test_every_host_resolves_every_inventory_host(inv, connect):
    for h in inv.hosts:
        host = connect(h)
        for other in inv.hosts:
            assert host.run(f"getent hosts {other.name}").stdout.split()[0] == other.address


def test_rabbitmq_nodes(inv, connect):
    nodes = {f"rabbit@{h.name}" for h in inv.with_role("rabbitmq")}
    for h in inv.with_role("rabbitmq"):
        host = connect(h)
        svc = host.service("rabbitmq-server")
        assert svc.is_running and svc.is_enabled
        cookie = host.file("/var/lib/rabbitmq/.erlang.cookie")
        assert (cookie.user, cookie.group, cookie.mode) == ("rabbitmq", "rabbitmq", 0o400)
        for port in (inv.rabbitmq.amqp_port, inv.rabbitmq.management_port, 15692):
            assert host.socket(f"tcp://0.0.0.0:{port}").is_listening or \
                host.socket(f"tcp://:::{port}").is_listening, port
        status = json.loads(host.check_output("rabbitmqctl cluster_status --formatter json"))
        assert set(status["running_nodes"]) == nodes
        assert status.get("partitions") in ([], {}, None)


def test_rabbitmq_users_and_policy(inv, connect):
    host = connect(inv.with_role("rabbitmq")[0])
    users = {u["user"] for u in json.loads(host.check_output("rabbitmqctl list_users --formatter json"))}
    assert "guest" not in users and {inv.rabbitmq.admin_user, inv.rabbitmq.app_user} <= users
    policies = json.loads(host.check_output(
        f"rabbitmqctl list_policies -p {inv.rabbitmq.vhost} --formatter json"))
    by_name = {p["name"]: p for p in policies}
    definition = json.loads(by_name["celery-kit-ha"]["definition"]) if isinstance(
        by_name["celery-kit-ha"]["definition"], str) else by_name["celery-kit-ha"]["definition"]
    # Mirrored queues (RabbitMQ 3.x): copies on other nodes; quorum: a delivery limit and a DLQ.
    assert "ha-mode" in definition or "delivery-limit" in definition


def test_redis(inv, connect):
    """ACL logins only; the kit's files root-owned and readable by the redis group only;
    with Sentinel, a Sentinel on every sentinel host."""
    for h in inv.redis_hosts():
        host = connect(h)
        svc = host.service("redis-server")
        assert svc.is_running and svc.is_enabled
        assert host.socket(f"tcp://{h.address}:{inv.redis.port}").is_listening
        assert host.socket(f"tcp://127.0.0.1:{inv.redis.port}").is_listening
        assert not host.socket(f"tcp://0.0.0.0:{inv.redis.port}").is_listening
        kit_dir = host.file("/etc/celery-kit/redis")
        assert (kit_dir.user, kit_dir.group, kit_dir.mode) == ("root", "redis", 0o750)
        for name in ("redis.conf", "redis-users.acl"):
            f = host.file(f"/etc/celery-kit/redis/{name}")
            assert (f.user, f.group, f.mode) == ("root", "redis", 0o640), name
        admin = host.file("/etc/celery-kit/redis/admin.pass")
        assert (admin.user, admin.group, admin.mode) == ("root", "root", 0o600)
        assert not host.file("/etc/redis/celery-kit-auth.conf").exists
        assert "--include /etc/celery-kit/redis/redis.conf" in host.check_output(
            "systemctl show -p ExecStart --value redis-server")
    for h in inv.sentinel_hosts():
        host = connect(h)
        svc = host.service("redis-sentinel")
        assert svc.is_running and svc.is_enabled
        assert host.socket(f"tcp://{h.address}:{inv.redis.sentinel_port}").is_listening


def test_workers(inv, connect, scale):
    for h in inv.with_role("worker"):
        host = connect(h)
        n = scale(h).instances
        assert host.service("celery-workers.target").is_enabled
        for i in range(1, n + 1):
            svc = host.service(f"celery-worker@{i}")
            assert svc.is_running and svc.is_enabled, f"{h.name} celery-worker@{i}"
        assert not host.service(f"celery-worker@{n + 1}").is_running
        assert host.file("/opt/celery-kit/current").is_symlink
        env = host.file("/etc/celery-kit/celery.env")
        assert (env.user, env.group, env.mode) == ("root", "celery", 0o640)
        # Workers run as the celery user, never root.
        owners = host.check_output("ps -o user= -C celery || true").split()
        assert owners and set(owners) == {"celery"}
        unit = host.run("systemctl show -p KillMode,NoNewPrivileges,ProtectSystem,TimeoutStopUSec "
                        "celery-worker@1").stdout
        assert "KillMode=mixed" in unit and "NoNewPrivileges=yes" in unit and "ProtectSystem=strict" in unit


def test_beat_on_exactly_one_host(inv, connect):
    running = [h.name for h in inv.hosts if connect(h).service("celery-beat").is_running]
    assert running == [h.name for h in inv.with_role("beat")]


def test_firewall(inv, connect):
    """The kit's nftables table is loaded and refuses by default; nftables loads it at boot."""
    if not inv.firewall.enabled:
        return
    for h in inv.hosts:
        host = connect(h)
        table = host.check_output("nft list table inet celery_kit")
        assert "policy drop" in table, h.name
        assert host.service("nftables").is_enabled, h.name


def test_rabbitmq_least_privilege(inv, connect):
    host = connect(inv.with_role("rabbitmq")[0])
    perms = {p["user"] for p in json.loads(host.check_output(
        f"rabbitmqctl list_permissions -p {inv.rabbitmq.vhost} --formatter json"))
        if (p["configure"], p["write"], p["read"]) != ("^$", "^$", "^$")}
    assert perms == {inv.rabbitmq.app_user}        # the administrator has no rights in the app vhost
