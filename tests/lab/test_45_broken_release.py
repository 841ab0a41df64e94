"""A release whose workers cannot start is rolled back on the first host, and the rollout
stops there: the other hosts never see it, and the cluster keeps working."""
from conftest import PROJECT, fab, summary_rows


def current(host):
    return host.run("readlink /opt/celery-kit/current").stdout.strip().rsplit("/", 1)[-1]


def test_broken_release_is_switched_back_and_stops_the_rollout(inv, hosts, celery_app, first_deploy):
    from app.tasks import add
    before = {h.name: current(hosts[h.name]) for h in inv.hosts if h.has("worker") or h.has("flower")}
    tasks_py = PROJECT / "app" / "tasks.py"
    original = tasks_py.read_text()
    tasks_py.write_text(original + '\nraise RuntimeError("a release that cannot start")\n')
    try:
        proc = fab("deploy", check=False)
    finally:
        tasks_py.write_text(original)
    out = proc.stdout
    assert proc.returncode == 1
    first, *rest = [h.name for h in inv.with_role("worker")]
    assert summary_rows(out)[first][0] == "failed"
    assert f"switched back to {before[first]}" in out and "systemd is restarting them" in out
    assert f"roll back to release {before[first]}" in out
    assert {name: current(hosts[name]) for name in before} == before      # nobody runs it
    assert add.delay(2, 3).get(timeout=60) == 5                           # the cluster still works
    # And the next deploy, with the good code, has nothing to do for the releases.
    again = fab("deploy").stdout
    assert "switch current" not in again
