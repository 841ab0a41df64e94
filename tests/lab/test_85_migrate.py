"""Moving the cluster to a new vhost with quorum queues (README: from mirrored to quorum
queues), with tasks in flight: a producer keeps publishing to the old vhost while the workers
move, then switches; `fab rabbitmq.migrate` shovels what was left behind. Every confirmed task
must have its result. Leaves the lab on its own inventory (the old vhost) again."""
import json
import subprocess
import sys
import time

from brokerutil import wait_for
from conftest import PROJECT, client_env, fab, fresh_connections, inventory_variant

sys.path.insert(0, str(PROJECT / "tests" / "chaos"))
from harness import Load, wait_settled  # noqa: E402

NEW = "/celery-moved"

# A producer with the new settings, in its own interpreter: publishes N record_id tasks by
# name and prints their ids.
PRODUCER = """
import json, sys
from celery import Celery
app = Celery("producer")
app.config_from_object("celery_kit_config")
n, run = int(sys.argv[1]), sys.argv[2]
print(json.dumps([app.send_task("app.tasks.record_id", (f"{run}-{i}",)).id for i in range(n)]))
"""


def test_moving_to_a_new_quorum_vhost_loses_no_task(celery_app, tmp_path, first_deploy):
    from app.tasks import record_id
    moved = inventory_variant(tmp_path, (
        "  mirrors: majority                  # with mirrored queues: majority | all | a number of nodes\n",
        f"  queue_mode: quorum\n  vhost: {NEW}\n"))
    old_load = Load(record_id, rate=20)
    old_load.start()
    try:
        wait_for(lambda: len(old_load.sent) >= 100, 30, "the producer publishing to the old vhost")
        out = fab("deploy", "--inventory", str(moved)).stdout         # workers move to the new vhost
        assert f"vhost {NEW} (default queue type quorum)" in out
        time.sleep(3)            # the old producer keeps publishing after the workers left (the timeline)
    finally:
        old_load.finish()
    fresh_connections(celery_app)                      # the old producer goes away
    env = client_env(moved, tmp_path / "client")
    new = subprocess.run([sys.executable, "-c", PRODUCER, "200", "moved"], env={**env, "PATH": "/usr/bin:/bin"},
                         capture_output=True, text=True, timeout=120, cwd="/")
    assert new.returncode == 0, new.stderr
    new_ids = json.loads(new.stdout)

    out = fab("rabbitmq.migrate", "--from-vhost", "/celery", "--inventory", str(moved)).stdout
    assert "shovel /celery celery -> /celery-moved celery" in out
    assert "remove shovel celery-kit-migrate-celery" in out

    ids = list(old_load.sent.values()) + new_ids
    metas = wait_settled(celery_app, ids, 180)
    lost = [i for i in ids if metas.get(i, {}).get("status") != "SUCCESS"]
    print(f"migrated: {len(old_load.sent)} tasks sent to the old vhost, {len(new_ids)} to the new; lost {len(lost)}")
    assert not lost, f"{len(lost)} of {len(ids)} confirmed tasks have no result"
    # Back to the lab's own inventory (its vhost); the moved one stays, unused.
    fab("deploy")
