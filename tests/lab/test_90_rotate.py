"""`fab rotate-secrets` with a producer running: no task lost or failed while every password
changes host by host; the producer then switches to the new settings, `--finish` retires the
old values, and the old Redis password stops working."""
import redis as redis_py
import pytest

from brokerutil import wait_for
from conftest import PROJECT, client_env, fab, fresh_connections

import sys
sys.path.insert(0, str(PROJECT / "tests" / "chaos"))
from harness import Load, account  # noqa: E402


def test_rotation_under_load_loses_and_fails_nothing(inv, celery_app, celery_settings, secrets, hosts,
                                                     first_deploy):
    from app.tasks import add, record_id
    old_redis = secrets["redis_password"]
    load = Load(record_id, rate=20)
    started = __import__("time").time()
    load.start()
    try:
        wait_for(lambda: len(load.sent) >= 100, 30, "the producer publishing")
        out = fab("rotate-secrets").stdout
        assert "new values for:" in out and "rabbitmq_app_password" in out and "redis_password" in out
    finally:
        load.finish()
    workers = [hosts[h.name] for h in inv.with_role("worker")]
    o = account("rotate-secrets", "lab", celery_app, load, workers, started, None,
                __import__("time").time())
    print(o.row(), o.notes)
    assert o.lost == 0 and o.publish_errors == 0, o.notes

    # The producer switches to the new settings (what `fab client-env` wrote).
    fresh = client_env()
    assert fresh["CELERY_RESULT_BACKEND"] != celery_settings["CELERY_RESULT_BACKEND"]
    celery_settings.update(fresh)
    import os
    os.environ.update(fresh)                 # Celery reads CELERY_BROKER_URL / _RESULT_BACKEND from here
    celery_app.conf.update(broker_url=fresh["CELERY_BROKER_URL"], result_backend=fresh["CELERY_RESULT_BACKEND"])
    fresh_connections(celery_app)
    assert add.delay(1, 2).get(timeout=30) == 3

    # Results of the old settings that only the cyclic garbage collector frees (the load's,
    # published from its own thread's backend) unsubscribe through that backend when freed:
    # free them now, while its password still works. Freed after --finish, each one retried
    # the retired password 20 times, a second apart, in whatever the main thread was doing.
    import gc
    gc.collect()
    fab("rotate-secrets", "--finish")
    from deploy.secrets import SecretStore
    store = SecretStore(inv.state_dir / "secrets.yaml")
    for name in list(secrets):
        secrets[name] = store.get(name).reveal()          # later tests log in with the new values
    redis_host = inv.with_role("redis")[0].address
    with pytest.raises(redis_py.exceptions.AuthenticationError):
        redis_py.Redis(host=redis_host, username="celery", password=old_redis, socket_timeout=5).ping()
    assert redis_py.Redis(host=redis_host, username="celery", password=secrets["redis_password"],
                          socket_timeout=5).ping()
    assert add.delay(2, 3).get(timeout=30) == 5
