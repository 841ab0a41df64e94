"""A Celery 5.7 app with the kit's settings module (celery_kit_config) and a worker thread on
an in-memory broker: every result goes through the Redis result backend the kit renders
(CELERY_RESULT_BACKEND, CELERY_REDIS_MASTER in the environment). Prints one JSON line.

    python celery_client.py roundtrip     # store, read, pub/sub get, chord, group, failure
    python celery_client.py load SECONDS  # results one after another, timed (for failovers)
"""
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "deploy" / "client"))

import celery_kit_config  # noqa: E402
from celery import Celery, chord, group  # noqa: E402
from celery.contrib.testing.worker import start_worker  # noqa: E402

app = Celery("loopback", broker="memory://")
app.config_from_object(celery_kit_config)
app.conf.update(broker_url="memory://", task_serializer="json", accept_content=["json"],
                worker_hijack_root_logger=False)


@app.task
def add(x, y):
    return x + y


@app.task
def tsum(xs):
    return sum(xs)


@app.task
def boom():
    raise ValueError("expected failure")


def roundtrip() -> dict:
    out = {}
    r = add.delay(2, 3)
    out["pubsub_get"] = r.get(timeout=20)
    again = app.AsyncResult(r.id)
    out["reread"] = [again.state, again.result]
    out["chord"] = chord([add.s(i, i) for i in range(5)], tsum.s())().get(timeout=30)
    out["group"] = group(add.s(i, 2) for i in range(4))().get(timeout=20)
    f = boom.delay()
    try:
        f.get(timeout=20)
    except ValueError as exc:
        out["failure"] = [f.state, str(exc)]
    saved = group(add.s(1, 1), add.s(2, 2))()
    saved.save()
    out["group_restore"] = app.GroupResult.restore(saved.id).get(timeout=20)
    r.forget()
    out["forgotten"] = app.AsyncResult(r.id).state
    return out


def load(seconds: float) -> dict:
    t0 = time.monotonic()
    ok = failed = 0
    slowest = 0.0
    errors = []
    while time.monotonic() - t0 < seconds:
        s = time.monotonic()
        try:
            assert add.delay(1, 2).get(timeout=40) == 3
            ok += 1
        except Exception as exc:       # counted: the test decides what is acceptable
            failed += 1
            errors.append(f"{type(exc).__name__}: {exc}")
        slowest = max(slowest, time.monotonic() - s)
        time.sleep(0.1)
    return {"ok": ok, "failed": failed, "slowest": round(slowest, 1), "errors": errors[:5]}


if __name__ == "__main__":
    with start_worker(app, pool="threads", concurrency=4, perform_ping_check=False, shutdown_timeout=30,
                      loglevel="CRITICAL"):
        result = roundtrip() if sys.argv[1] == "roundtrip" else load(float(sys.argv[2]))
    print(json.dumps(result), flush=True)
