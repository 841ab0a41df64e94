"""Redis as the result backend: ACL logins only (Celery's `celery` user may touch Celery's keys
with Celery's commands, nothing else), reachable from workers and the control machine,
results survive a restart."""
import redis as redis_py
import pytest

# A RESP client run on a worker host; the login arrives on stdin (never in argv).
RESP = ("import socket,sys; pw=sys.stdin.read().strip(); s=socket.create_connection((sys.argv[1],6379),3); "
        "s.sendall((f'AUTH celery {pw}\\r\\n' if pw else '').encode()+b'PING\\r\\n'); import time; time.sleep(0.3); "
        "print(s.recv(200).decode())")


def redis_host(inv):
    return inv.with_role("redis")[0]


def celery_login(inv, secrets):
    return redis_py.Redis(host=redis_host(inv).address, port=inv.redis.port, username="celery",
                          password=secrets["redis_password"], socket_timeout=5)


def test_unauthenticated_client_gets_noauth(inv, first_deploy):
    r = redis_py.Redis(host=redis_host(inv).address, port=inv.redis.port, socket_timeout=5)
    with pytest.raises(redis_py.exceptions.AuthenticationError):
        r.ping()


def test_the_default_user_is_disabled(inv, secrets, first_deploy):
    r = redis_py.Redis(host=redis_host(inv).address, port=inv.redis.port, password=secrets["redis_password"],
                       socket_timeout=5)
    with pytest.raises(redis_py.exceptions.AuthenticationError):
        r.ping()


def test_celery_login_works_from_control_machine_on_celery_keys_only(inv, secrets, first_deploy):
    r = celery_login(inv, secrets)
    assert r.ping() is True
    r.set("celery-task-meta-kit-test", "v", ex=60)
    assert r.get("celery-task-meta-kit-test") == b"v"
    with pytest.raises(redis_py.exceptions.NoPermissionError):
        r.set("kit-test-key", "v", ex=60)


def test_from_a_worker_host_noauth_without_and_pong_with_password(inv, secrets, first_deploy):
    import shlex
    from deploy import runner
    s = runner.connect_all(inv, only=["node2"])["node2"]
    command = shlex.join(["python3", "-c", RESP, redis_host(inv).address])
    try:
        assert "NOAUTH" in s.exec(command, stdin=b"\n").stdout
        with_pw = s.exec(command, stdin=secrets["redis_password"].encode()).stdout
    finally:
        s.close()
    assert "+OK" in with_pw and "+PONG" in with_pw


def test_dangerous_commands_are_refused_to_celery(inv, secrets, first_deploy):
    r = celery_login(inv, secrets)
    for command in ("FLUSHALL", "FLUSHDB", "CONFIG GET maxmemory", "KEYS *", "EVAL 'return 1' 0", "ACL LIST",
                    "REPLICAOF NO ONE", "MIGRATE 127.0.0.1 1 celery-task-meta-x 0 1", "FUNCTION LIST"):
        with pytest.raises(redis_py.exceptions.NoPermissionError):
            r.execute_command(*command.replace("'return 1'", "return_1").split())


def test_listens_on_inventory_address_and_localhost_only(inv, hosts, first_deploy):
    lines = hosts[redis_host(inv).name].run("ss -ltnH 'sport = :6379'").stdout
    local = sorted(l.split()[3] for l in lines.splitlines())
    assert local == sorted([f"{redis_host(inv).address}:6379", "127.0.0.1:6379", "[::1]:6379"])


def test_result_survives_a_redis_restart(inv, hosts, celery_app, first_deploy):
    from app.tasks import add
    result = add.delay(20, 22)
    assert result.get(timeout=30) == 42
    hosts[redis_host(inv).name].run("sudo systemctl restart redis-server")
    again = celery_app.AsyncResult(result.id)
    assert again.get(timeout=30) == 42 and again.state == "SUCCESS"


def test_aof_persistence_files_and_passwords_not_in_ps(inv, hosts, secrets, first_deploy):
    host = hosts[redis_host(inv).name]
    assert "appendonly yes" in host.run("sudo cat /etc/celery-kit/redis/redis.conf").stdout
    assert host.run("sudo test -d /var/lib/redis/appendonlydir").rc == 0
    acl = host.run("sudo cat /etc/celery-kit/redis/redis-users.acl").stdout
    assert "user default off" in acl and secrets["redis_password"] not in acl      # hashes only
    assert host.run("sudo stat -c '%U %G %a' /etc/celery-kit/redis/redis-users.acl").stdout.split() == [
        "root", "redis", "640"]
    ps = host.run("ps -eo args").stdout
    assert secrets["redis_password"] not in ps and secrets["redis_admin_password"] not in ps


def test_the_kit_reads_info_with_its_admin_login(inv, hosts, first_deploy):
    out = hosts[redis_host(inv).name].run(
        "sudo sh -c 'REDISCLI_AUTH=$(head -n1 /etc/celery-kit/redis/admin.pass) "
        "redis-cli --no-auth-warning --user celery-kit ROLE; REDISCLI_AUTH=$(head -n1 "
        "/etc/celery-kit/redis/admin.pass) redis-cli --no-auth-warning --user celery-kit FLUSHALL'").stdout
    assert out.startswith("master") and "NOPERM" in out


def test_result_backend_url_is_rendered_with_expiry(celery_settings, inv):
    assert celery_settings["CELERY_RESULT_BACKEND"].startswith("redis://celery:")
    assert celery_settings["CELERY_RESULT_BACKEND"].endswith(f"@{redis_host(inv).address}:6379/0")
    assert celery_settings["CELERY_RESULT_EXPIRES"] == "86400"
