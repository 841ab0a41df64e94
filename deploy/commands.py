"""Host commands as data.

Every command the kit runs on a host is a `Cmd`: an argv tuple, whether it needs root, and
optional stdin. Builders here are pure functions, so tests compare exact command lines.
Quoting (shlex) and secret masking happen only in this module: secrets travel on stdin or in
uploaded files, never in argv, and anything printed passes through `mask()`.
"""
from __future__ import annotations

import shlex
import threading
from urllib.parse import quote
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Cmd:
    argv: tuple[str, ...]
    sudo: bool = True
    stdin: bytes | None = field(default=None, repr=False)
    env: tuple[tuple[str, str], ...] = ()

    def shell(self) -> str:
        """The exact string sent over SSH."""
        words = list(self.argv)
        if self.env:
            words = ["env"] + [f"{k}={v}" for k, v in self.env] + words
        if self.sudo:
            # -n: never prompt (a prompt would hang a parallel deploy); -H: root's HOME.
            words = ["sudo", "-n", "-H"] + words
        return shlex.join(words)

    def show(self) -> str:
        """For people: the command, masked."""
        return mask(shlex.join(self.argv)) + (" < (stdin)" if self.stdin is not None else "")


def cmd(*argv: str, sudo: bool = True, stdin: bytes | str | None = None,
        env: dict[str, str] | None = None) -> Cmd:
    if isinstance(stdin, str):
        stdin = stdin.encode()
    return Cmd(tuple(str(a) for a in argv), sudo, stdin, tuple(sorted((env or {}).items())))


def sh(script: str, *args: str, sudo: bool = True, stdin: bytes | str | None = None) -> Cmd:
    """A fixed shell snippet. Only for kit-authored scripts; data goes in as args ($1...)."""
    return cmd("sh", "-c", script, "sh", *args, sudo=sudo, stdin=stdin)


# Secret masking -----------------------------------------------------------------

_SECRETS: set[str] = set()
_LOCK = threading.Lock()


def register_secret(value: str) -> None:
    if value and len(value) >= 6:
        with _LOCK:
            _SECRETS.add(value)
            _SECRETS.add(quote(value, safe=""))     # as it appears inside URLs


def mask(text: str) -> str:
    with _LOCK:
        secrets = sorted(_SECRETS, key=len, reverse=True)
    for s in secrets:
        text = text.replace(s, "********")
    return text


# Builders -------------------------------------------------------------------------

APT_ENV = {"DEBIAN_FRONTEND": "noninteractive"}


# While packages install, policy-rc.d keeps their services from starting with Debian's
# defaults (a RabbitMQ node with the wrong cookie, a Redis without a password); each
# component's stage starts its service once its configuration is in place.
# An existing policy-rc.d is kept aside and put back whatever happens (trap); one already
# kept aside by a run that was killed is the original and stays. A deploy interrupted while
# dpkg ran leaves it half-configured ("dpkg was interrupted"): `dpkg --configure -a` (a no-op
# otherwise) finishes that first, so the next deploy converges.
_APT_SCRIPT = (
    'P=/usr/sbin/policy-rc.d; [ -e $P.ck-saved ] || { [ -e $P ] && mv $P $P.ck-saved; }; '
    'trap \'rm -f $P; [ -e $P.ck-saved ] && mv $P.ck-saved $P\' EXIT HUP TERM; '
    'printf "#!/bin/sh\\nexit 101\\n" > $P && chmod 755 $P; '
    'dpkg --configure -a && apt-get update -q && apt-get install -y -q --no-install-recommends "$@"')


def apt_install(packages: list[str]) -> list[Cmd]:
    return [cmd("sh", "-c", _APT_SCRIPT, "apt-install", *sorted(packages), env=APT_ENV)]


def install_file(staged: str, path: str, owner: str, group: str, mode: int) -> Cmd:
    """Install a staged upload atomically: copy next to the target with owner and mode,
    then rename over it (a reader never sees a half-written file)."""
    tmp = path + ".ck-new"
    # The staged copy is removed whatever happens: it may hold a secret.
    return cmd("sh", "-c", 'trap \'rm -f "$4"\' EXIT; mkdir -p "${6%/*}" && '
               'install -o "$1" -g "$2" -m "$3" "$4" "$5" && mv -f "$5" "$6"',
               "install-file", owner, group, f"{mode:04o}", staged, tmp, path)


def set_attrs(path: str, owner: str, group: str, mode: int) -> list[Cmd]:
    return [cmd("chown", f"{owner}:{group}", path), cmd("chmod", f"{mode:04o}", path)]


def mkdir(path: str, owner: str = "root", group: str = "root", mode: int = 0o755) -> Cmd:
    return cmd("install", "-d", "-o", owner, "-g", group, "-m", f"{mode:04o}", path)


def systemctl(*args: str) -> Cmd:
    return cmd("systemctl", *args)


def system_user(name: str, home: str) -> Cmd:
    return cmd("adduser", "--system", "--group", "--home", home, "--no-create-home",
               "--disabled-login", "--shell", "/usr/sbin/nologin", name)
