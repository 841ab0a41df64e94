"""Secrets are a type: generated once, kept 0600 on the control machine, masked in output.

Stored in <state_dir>/secrets.yaml (gitignored). An environment variable
CELERYKIT_SECRET_<NAME> (upper case) overrides the stored value, for CI or a vault.
Values reach hosts only inside uploaded files or on stdin, never on a command line.

Every value, stored or from the environment, must be SAFE: at least 16 characters from
[A-Za-z0-9._~+/=-]. That set survives every place a secret is written: URLs (after quoting),
single-quoted env files, Redis's quoted requirepass and Flower's user:password list; a quote,
comma or line break in a secret would otherwise end its field and start one of the attacker's.
Generated secrets are letters and digits, so they always are.
"""
from __future__ import annotations

import os
import re
import secrets as rnd
import string
import threading
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .commands import register_secret

ALPHABET = string.ascii_letters + string.digits
MIN_LENGTH = 16
SAFE = re.compile(r"[A-Za-z0-9._~+/=-]{%d,}" % MIN_LENGTH)
RULE = (f"a secret must be at least {MIN_LENGTH} characters, each a letter, a digit or one of "
        ". _ ~ + / = - (the characters that stay intact in URLs, single-quoted env files, "
        "Redis's requirepass and Flower's user:password list); the value is not shown")
ENV_PREFIX = "CELERYKIT_SECRET_"


class SecretError(ValueError):
    """A secret that breaks SAFE; the message names where it came from, never the value."""


@dataclass(frozen=True)
class Secret:
    name: str
    value: str = field(repr=False)

    def __str__(self) -> str:           # printing a Secret never shows it
        return f"<secret {self.name}>"

    def reveal(self) -> str:
        return self.value


def generate(length: int = 40) -> str:
    if length < MIN_LENGTH:
        raise ValueError(f"secrets are at least {MIN_LENGTH} characters, asked for {length}")
    return "".join(rnd.choice(ALPHABET) for _ in range(length))


def _checked(value: object, where: str) -> str:
    if not isinstance(value, str) or not SAFE.fullmatch(value):
        raise SecretError(f"{where}: {RULE}")
    return value


PREVIOUS = ".previous"


class SecretStore:
    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()
        self._values: dict[str, str] | None = None

    def _load(self) -> dict[str, str]:
        if self._values is None:
            if self.path.exists():
                mode = self.path.stat().st_mode & 0o777
                if mode & 0o077:
                    raise PermissionError(f"{self.path} is mode {mode:04o}; secrets must be 0600 "
                                          f"(chmod 600 {self.path})")
                self._values = yaml.safe_load(self.path.read_text()) or {}
                if not isinstance(self._values, dict):
                    raise SecretError(f"{self.path}: expected a mapping of secret name to value")
            else:
                self._values = {}
        return self._values

    def get(self, name: str, length: int = 40) -> Secret:
        """The secret `name`, generated and saved on first use."""
        with self._lock:
            variable = ENV_PREFIX + name.upper()
            env = os.environ.get(variable)
            if env:
                value = _checked(env, variable)
            else:
                values = self._load()
                if name not in values:
                    values[name] = generate(length)
                    self._save(values)
                value = _checked(values[name], f"{self.path}: {name}")
        register_secret(value)
        return Secret(name, value)

    # Rotation ----------------------------------------------------------------------------
    # A rotated secret keeps its old value as "<name>.previous" until the rotation is
    # finished: logins that can hold two passwords (Redis ACL users) accept both meanwhile,
    # so clients still on the old value keep working until they have switched.

    def previous(self, name: str) -> str | None:
        with self._lock:
            value = self._load().get(name + PREVIOUS)
        if value:
            register_secret(value)
        return value

    def rotate(self, name: str, length: int = 40) -> None:
        """A new value for `name`; the old one is kept as its previous value."""
        with self._lock:
            variable = ENV_PREFIX + name.upper()
            if os.environ.get(variable):
                raise SecretError(f"{name} comes from {variable}: rotate it where that value comes from")
            values = self._load()
            if name + PREVIOUS in values:
                raise SecretError(f"{name}: a rotation is not finished yet; run `fab rotate-secrets --finish` first")
            if name not in values:
                raise SecretError(f"{name}: no such secret in {self.path}")
            values[name + PREVIOUS] = values[name]
            values[name] = generate(length)
            register_secret(values[name + PREVIOUS])
            self._save(values)

    def finish_rotation(self) -> list[str]:
        """Forget every previous value; returns the names whose rotation this finished."""
        with self._lock:
            values = self._load()
            done = sorted(k[:-len(PREVIOUS)] for k in values if k.endswith(PREVIOUS))
            for name in done:
                del values[name + PREVIOUS]
            if done:
                self._save(values)
        return done

    def names(self) -> list[str]:
        with self._lock:
            return sorted(k for k in self._load() if not k.endswith(PREVIOUS))

    def register_known(self) -> int:
        """Register every secret there is for masking, without generating or writing any: the
        values in the secrets file and in CELERYKIT_SECRET_* variables (both, since hosts may
        still hold a value the environment now overrides). For read-only tasks that print what
        hosts say (`fab logs`). Returns how many values were registered."""
        with self._lock:
            values = list(self._load().values())
        values += [v for k, v in os.environ.items() if k.startswith(ENV_PREFIX)]
        known = [v for v in values if isinstance(v, str) and v]
        for value in known:
            register_secret(value)
        return len(known)

    def _save(self, values: dict[str, str]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)          # also when a leftover file existed with another mode
        with os.fdopen(fd, "w") as f:
            f.write("# Generated by celery-kit. Keep private; losing it means rotating every "
                    "password.\n")
            yaml.safe_dump(values, f, default_flow_style=False)
        os.replace(tmp, self.path)
