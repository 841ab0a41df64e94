"""Secret rotation: old values kept until the rotation is finished, Redis accepting both
meanwhile, and what is refused (the cookie, values from the environment, a second rotation)."""
from __future__ import annotations

import pytest

from deploy import redis_model as RM
from deploy import rotate
from deploy.errors import DeployFailed
from deploy.secrets import SecretError, SecretStore

from kit import inventory


@pytest.fixture
def store(tmp_path):
    s = SecretStore(tmp_path / "secrets.yaml")
    for name in ("redis_password", "rabbitmq_app_password", "erlang_cookie"):
        s.get(name)
    return s


def test_rotation_keeps_the_old_value_until_finished(store):
    old = store.get("redis_password").reveal()
    store.rotate("redis_password")
    new = store.get("redis_password").reveal()
    assert new != old and store.previous("redis_password") == old
    with pytest.raises(SecretError, match="a rotation is not finished yet"):
        store.rotate("redis_password")
    assert store.finish_rotation() == ["redis_password"]
    assert store.previous("redis_password") is None and store.finish_rotation() == []
    assert "redis_password.previous" not in store.names()


def test_a_value_from_the_environment_is_rotated_where_it_comes_from(store, monkeypatch):
    monkeypatch.setenv("CELERYKIT_SECRET_REDIS_PASSWORD", "a" * 20)
    with pytest.raises(SecretError, match="comes from CELERYKIT_SECRET_REDIS_PASSWORD"):
        store.rotate("redis_password")


def test_redis_accepts_both_passwords_during_a_rotation():
    line = [l for l in RM.redis_acl(lambda n: f"{n}-new-0123456789", None,
                                    previous=lambda n: "old-0123456789abcdef" if n == "redis_password" else None
                                    ).splitlines() if l.startswith("user celery ")][0]
    assert line.count("#") == 2
    assert RM.password_hash("old-0123456789abcdef") in line and RM.password_hash("redis_password-new-0123456789") in line


def test_the_cookie_and_unknown_names_are_refused(store, tmp_path):
    import dataclasses
    inv = dataclasses.replace(inventory(), state_dir=tmp_path)
    with pytest.raises(DeployFailed, match="the Erlang cookie: every RabbitMQ node must restart at once"):
        rotate.rotate(inv, ["erlang_cookie"])
    with pytest.raises(DeployFailed, match="no secret named nope"):
        rotate.rotate(inv, ["nope"])
    assert "erlang_cookie" not in rotate.rotatable(store)


def test_rotate_changes_values_then_deploys_and_writes_the_client_env(store, tmp_path, monkeypatch):
    import dataclasses
    from types import SimpleNamespace as NS
    inv = dataclasses.replace(inventory(), state_dir=tmp_path)
    calls = []
    monkeypatch.setattr(rotate.operate, "deploy", lambda inv, opts: calls.append("deploy") or NS(failed=False))
    monkeypatch.setattr(rotate.operate, "client_env", lambda inv, opts: calls.append("client-env") or tmp_path)
    before = store.get("rabbitmq_app_password").reveal()
    rotate.rotate(inv, ["rabbitmq_app_password"])
    assert calls == ["deploy", "client-env"]
    fresh = SecretStore(tmp_path / "secrets.yaml")
    assert fresh.get("rabbitmq_app_password").reveal() != before
    assert fresh.previous("rabbitmq_app_password") == before
    calls.clear()
    rotate.finish(inv)
    assert calls == ["deploy"] and SecretStore(tmp_path / "secrets.yaml").previous("rabbitmq_app_password") is None
