"""Secrets: generated once, stored 0600, overridable from the environment, never printed."""
import os
import stat

import pytest

from deploy.commands import mask
from deploy.secrets import SAFE, SecretError, SecretStore


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


# -- what a secret may be made of: its value goes into URLs, env files, redis.conf, Flower ------

RULE = ("a secret must be at least 16 characters, each a letter, a digit or one of "
        ". _ ~ + / = - (the characters that stay intact in URLs, single-quoted env files, "
        "Redis's requirepass and Flower's user:password list); the value is not shown")


@pytest.mark.parametrize("value", [
    "pass'word-1234567\nrequirepass x",      # a quote and a line break: Redis directives
    "short-but-safe",                        # 14 characters
    "sixteen chars ok",                      # a space
    "comma,separated,list,of,users",         # Flower's user:password list separator
    "dollar$and$more$than$sixteen",
])
def test_environment_secret_must_be_safe_and_is_never_shown(tmp_path, monkeypatch, value):
    monkeypatch.setenv("CELERYKIT_SECRET_REDIS_PASSWORD", value)
    with pytest.raises(SecretError) as caught:
        SecretStore(tmp_path / "s.yaml").get("redis_password")
    assert str(caught.value) == f"CELERYKIT_SECRET_REDIS_PASSWORD: {RULE}"
    assert not (tmp_path / "s.yaml").exists()


def test_environment_secret_may_use_the_whole_safe_set(tmp_path, monkeypatch):
    value = "Az09._~+/=-" * 2
    monkeypatch.setenv("CELERYKIT_SECRET_X_PASSWORD", value)
    assert SecretStore(tmp_path / "s.yaml").get("x_password").reveal() == value


@pytest.mark.parametrize("stored", ["'has a quote and is long enough'", "12345", "[a, list]"])
def test_unsafe_value_in_the_secrets_file_names_file_and_key(tmp_path, stored):
    path = tmp_path / "s.yaml"
    path.write_text(f"redis_password: {stored}\n")
    path.chmod(0o600)
    with pytest.raises(SecretError) as caught:
        SecretStore(path).get("redis_password")
    assert str(caught.value) == f"{path}: redis_password: {RULE}"


def test_secrets_file_must_be_a_mapping(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("- a\n- b\n")
    path.chmod(0o600)
    with pytest.raises(SecretError, match="expected a mapping of secret name to value"):
        SecretStore(path).get("a_password")


def test_generated_secrets_meet_the_rule(tmp_path):
    store = SecretStore(tmp_path / "s.yaml")
    for name, length in (("a_password", 40), ("erlang_cookie", 48), ("b_password", 16)):
        assert SAFE.fullmatch(store.get(name, length).reveal())
    with pytest.raises(ValueError, match="at least 16"):
        store.get("c_password", 15)


def test_register_known_masks_stored_and_environment_values_without_generating(tmp_path, monkeypatch):
    path = tmp_path / "s.yaml"
    stored = SecretStore(path).get("stored_password").reveal()
    before = path.read_text()
    for name in [k for k in os.environ if k.startswith("CELERYKIT_SECRET_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("CELERYKIT_SECRET_OTHER_PASSWORD", "env-only-value-0123456789")
    assert SecretStore(path).register_known() == 2
    assert path.read_text() == before                      # nothing generated or written
    assert mask(f"a {stored} b env-only-value-0123456789") == "a ******** b ********"
    assert SecretStore(tmp_path / "none.yaml").register_known() == 1
    assert not (tmp_path / "none.yaml").exists()
