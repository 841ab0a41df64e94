"""Redis as the result backend: password required, reachable from workers and the
control machine, results survive a restart, dangerous commands off."""
import redis as redis_py
import pytest

# A RESP client run on a worker host; the password arrives on stdin (never in argv).
RESP = ("import socket,sys; pw=sys.stdin.read().strip(); s=socket.create_connection((sys.argv[1],6379),3); "
        "s.sendall((f'AUTH {pw}\\r\\n' if pw else '').encode()+b'PING\\r\\n'); import time; time.sleep(0.3); "
        "print(s.recv(200).decode())")


def redis_host(inv):
    return inv.with_role("redis")[0]


def test_unauthenticated_client_gets_noauth(inv, first_deploy):
    r = redis_py.Redis(host=redis_host(inv).address, port=inv.redis.port, socket_timeout=5)
    with pytest.raises(redis_py.exceptions.AuthenticationError):
        r.ping()


def test_authenticated_client_works_from_control_machine(inv, secrets, first_deploy):
    r = redis_py.Redis(host=redis_host(inv).address, port=inv.redis.port,
                       password=secrets["redis_password"], socket_timeout=5)
    assert r.ping() is True
    r.set("kit-test-key", "v", ex=60)
    assert r.get("kit-test-key") == b"v"


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


def test_dangerous_commands_are_disabled(inv, secrets, first_deploy):
    r = redis_py.Redis(host=redis_host(inv).address, port=inv.redis.port,
                       password=secrets["redis_password"], socket_timeout=5)
    for command in ("FLUSHALL", "FLUSHDB", "CONFIG GET maxmemory", "DEBUG SLEEP 0"):
        with pytest.raises(redis_py.exceptions.ResponseError, match="unknown command"):
            r.execute_command(command)


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


def test_aof_persistence_and_password_not_in_ps(inv, hosts, secrets, first_deploy):
    host = hosts[redis_host(inv).name]
    assert "appendonly yes" in host.run("sudo cat /etc/redis/redis.conf").stdout
    assert host.run("sudo test -d /var/lib/redis/appendonlydir").rc == 0
    assert secrets["redis_password"] not in host.run("ps -eo args").stdout


def test_result_backend_url_is_rendered_with_expiry(celery_settings, inv):
    assert celery_settings["CELERY_RESULT_BACKEND"].startswith("redis://:")
    assert celery_settings["CELERY_RESULT_BACKEND"].endswith(f"@{redis_host(inv).address}:6379/0")
    assert celery_settings["CELERY_RESULT_EXPIRES"] == "86400"
