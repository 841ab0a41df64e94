"""Secrets: generated once, stored 0600, overridable from the environment, never printed."""
import stat

import pytest

from deploy.commands import mask
from deploy.secrets import SecretStore


def test_generated_once_stored_private_and_stable(tmp_path):
    store = SecretStore(tmp_path / "secrets.yaml")
    s = store.get("redis_password")
    assert len(s.reveal()) == 40 and s.reveal().isalnum()
    assert stat.S_IMODE((tmp_path / "secrets.yaml").stat().st_mode) == 0o600
    assert SecretStore(tmp_path / "secrets.yaml").get("redis_password").reveal() == s.reveal()
    assert store.get("erlang_cookie", 48).reveal() != s.reveal()


def test_printing_a_secret_never_shows_it(tmp_path):
    s = SecretStore(tmp_path / "s.yaml").get("x_password")
    assert s.reveal() not in str(s) and s.reveal() not in repr(s) and s.reveal() not in f"{s}"
    assert mask(f"password={s.reveal()}") == "password=********"


def test_environment_overrides(tmp_path, monkeypatch):
    monkeypatch.setenv("CELERYKIT_SECRET_REDIS_PASSWORD", "from-the-vault-123")
    assert SecretStore(tmp_path / "s.yaml").get("redis_password").reveal() == "from-the-vault-123"


def test_a_readable_secrets_file_is_refused(tmp_path):
    path = tmp_path / "s.yaml"
    SecretStore(path).get("a_password")
    path.chmod(0o644)
    with pytest.raises(PermissionError, match="chmod 600"):
        SecretStore(path).get("a_password")
