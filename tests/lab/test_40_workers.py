"""Celery workers under systemd: the quick start, send_task by name, both hosts working,
scaling, and a code rollout under load that loses nothing, then a rollback."""
import subprocess
import sys
import uuid

from brokerutil import wait_for
from conftest import PROJECT, fab


def test_quick_start(celery_app, first_deploy):
    from app.tasks import add, fail
    result = add.delay(4, 4)
    wait_for(result.ready, 30, "add(4, 4) to be ready")
    assert result.get(timeout=10) == 8
    failed = fail.delay("boom")
    exc = failed.get(propagate=False, timeout=30)
    assert isinstance(exc, RuntimeError) and "boom" in str(exc)
    assert failed.state == "FAILURE"


def test_send_task_by_name_from_a_stock_client_without_the_package(celery_settings, first_deploy):
    """Celery's defaults (json, no kit settings module) and only the two URLs: the result,
    stored in JSON by the workers, is readable."""
    code = ("import os, sys; from celery import Celery; "
            "c = Celery(broker=os.environ['CELERY_BROKER_URL'], backend=os.environ['CELERY_RESULT_BACKEND']); "
            "assert 'app' not in sys.modules and c.conf.task_serializer == 'json'; "
            "print(c.send_task('app.tasks.add', (2, 2)).get(timeout=30))")
    env = {k: v for k, v in celery_settings.items() if k in ("CELERY_BROKER_URL", "CELERY_RESULT_BACKEND")}
    out = subprocess.run([sys.executable, "-c", code], env=env | {"PATH": "/usr/bin:/bin"},
                         cwd="/", capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "4", out.stderr


def test_package_data_reaches_the_hosts(celery_app, first_deploy):
    from app.tasks import greeting
    assert greeting.delay().get(timeout=30) == "Hello from the task package's own data file."


def test_msgpack_on_the_wire(celery_app):
    assert celery_app.conf.task_serializer == "msgpack"
    assert celery_app.conf.task_acks_late and celery_app.conf.task_reject_on_worker_lost


def test_tasks_run_on_both_worker_hosts(celery_app, inv, first_deploy):
    from app.tasks import record_id
    results = [record_id.delay(i) for i in range(60)]
    hosts = {r.get(timeout=60)["host"] for r in results}
    assert hosts == {h.name for h in inv.with_role("worker")}


def active_instances(host) -> int:
    out = host.run("systemctl list-units --plain --no-legend --state=active 'celery-worker@*'").stdout
    return len([l for l in out.splitlines() if l.strip()])


def pinged(celery_app, host_name) -> int:
    replies = celery_app.control.ping(timeout=3) or []
    return len([r for r in replies for name in r if name.endswith("@" + host_name)])


def test_scale_workers_up_and_down(celery_app, inv, hosts, first_deploy):
    from app.tasks import sleep
    try:
        for n in (1, 4):
            fab("scale-workers", "--instances", str(n))
            for h in inv.with_role("worker"):
                assert active_instances(hosts[h.name]) == n
                wait_for(lambda: pinged(celery_app, h.name) == n, 30, f"{n} pings from {h.name}")
        # A 10-second task on every instance that is about to go away.
        long = [sleep.apply_async((10,)) for _ in range(8)]
        wait_for(lambda: sum(len(v) for v in (celery_app.control.inspect(timeout=2).active() or {}).values()) >= 8,
                 30, "the long tasks to start")
        out = fab("scale-workers", "--instances", "2").stdout
        assert "stop and disable celery-worker@4.service, celery-worker@3.service" in out
        for h in inv.with_role("worker"):
            assert active_instances(hosts[h.name]) == 2
            wait_for(lambda: pinged(celery_app, h.name) == 2, 30, f"2 pings from {h.name}")
        assert [r.get(timeout=60)["slept"] for r in long] == [10] * 8
        # The next deploy keeps the new scale.
        assert "unchanged" in fab("deploy").stdout
        assert all(active_instances(hosts[h.name]) == 2 for h in inv.with_role("worker"))
    finally:
        (inv.state_dir / "scale.yaml").unlink(missing_ok=True)


def test_code_rollout_under_load_loses_nothing_and_rollback_restores(celery_app, first_deploy):
    from app.tasks import release, sleep
    old = release.delay().get(timeout=30)
    marker = PROJECT / "app" / "rollout_marker.py"
    marker.write_text(f"# a code change for the rollout test\nMARK = {uuid.uuid4().hex!r}\n")
    try:
        load = [sleep.apply_async((0.3,)) for _ in range(200)]
        out = fab("deploy").stdout
        assert "switch current to release" in out
    finally:
        marker.unlink()
    outcomes = [r.get(timeout=300, propagate=False) for r in load]
    assert [type(o).__name__ for o in outcomes if not isinstance(o, dict)] == []
    assert all(r.state == "SUCCESS" for r in load)
    new = wait_for(lambda: (v := release.delay().get(timeout=30)) != old and v, 30, "the new release")
    assert new != old

    out = fab("rollback").stdout
    assert f"-> {old}" in out
    assert {release.delay().get(timeout=30) for _ in range(20)} == {old}
