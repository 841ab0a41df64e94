"""Facts: a read-only command plus a pure parser of its machine-readable output.

The transport batches all facts a stage needs into one SSH round trip (see
transport.Session.gather); parsers are tested on recorded output in tests/unit.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class Fact:
    key: str
    argv: tuple[str, ...]
    parse: Callable[[str, int], Any]     # (stdout, exit code) -> value


@dataclass(frozen=True)
class FileState:
    owner: str
    group: str
    mode: int
    sha256: str


# Files --------------------------------------------------------------------------

_FILES_SCRIPT = ('for f; do if [ -f "$f" ]; then '
                 'printf "%s\\t%s\\t%s\\n" "$f" "$(stat -c "%U %G %a" "$f")" '
                 '"$(sha256sum < "$f" | cut -d" " -f1)"; fi; done')


def parse_files(out: str, rc: int = 0) -> dict[str, FileState]:
    states = {}
    for line in out.splitlines():
        parts = line.split("\t")
        if len(parts) == 3 and len(parts[1].split()) == 3:
            path, attrs, sha = parts
            owner, group, mode = attrs.split()
            states[path] = FileState(owner, group, int(mode, 8), sha)
    return states


def files(paths: list[str]) -> Fact:
    return Fact("files", ("sh", "-c", _FILES_SCRIPT, "files", *paths), parse_files)


def file_content(key: str, path: str) -> Fact:
    """Whole content of a small text file (None when missing)."""
    return Fact(key, ("sh", "-c", 'cat "$1" 2>/dev/null || echo "@@missing"', "cat", path),
                lambda out, rc: None if out.strip() == "@@missing" else out)


# systemd --------------------------------------------------------------------------

UNIT_PROPS = ("Id", "LoadState", "ActiveState", "SubState", "UnitFileState", "MainPID")


def parse_systemctl_show(out: str, rc: int = 0) -> dict[str, dict[str, str]]:
    """`systemctl show -p A,B u1 u2` prints one key=value block per unit, blank-line separated."""
    units = {}
    for block in out.strip().split("\n\n"):
        props = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        if "Id" in props:
            units[props["Id"]] = props
    return units


def units(names: list[str]) -> Fact:
    return Fact("units", ("systemctl", "show", "--no-pager", "-p", ",".join(UNIT_PROPS), *names),
                parse_systemctl_show)


# Packages and users ------------------------------------------------------------------

def parse_dpkg_query(out: str, rc: int = 0) -> dict[str, str]:
    """Installed packages -> version, from dpkg-query -W -f '${Package}\\t${Version}\\t${db:Status-Abbrev}\\n'.
    Unknown packages make dpkg-query exit 1; they are simply absent from the result."""
    installed = {}
    for line in out.splitlines():
        parts = line.split("\t")
        if len(parts) == 3 and parts[2].startswith("ii"):
            installed[parts[0]] = parts[1]
    return installed


def packages(names: list[str]) -> Fact:
    return Fact("packages", ("dpkg-query", "-W", "-f", "${Package}\\t${Version}\\t${db:Status-Abbrev}\\n",
                             *names), parse_dpkg_query)


def parse_getent_passwd(out: str, rc: int = 0) -> set[str]:
    return {line.split(":", 1)[0] for line in out.splitlines() if ":" in line}


def users(names: list[str]) -> Fact:
    return Fact("users", ("getent", "passwd", *names), parse_getent_passwd)


def parse_json(out: str, rc: int = 0) -> Any:
    """For tools with a JSON formatter (rabbitmqctl --formatter json); None when it failed."""
    if rc != 0 or not out.strip():
        return None
    try:
        return json.loads(out)
    except ValueError:
        return None


def json_command(key: str, *argv: str) -> Fact:
    return Fact(key, tuple(argv), parse_json)


def parse_lines(out: str, rc: int = 0) -> list[str]:
    return [l for l in out.splitlines() if l.strip()]


def lines(key: str, *argv: str) -> Fact:
    return Fact(key, tuple(argv), parse_lines)


def exit_ok(key: str, *argv: str) -> Fact:
    return Fact(key, tuple(argv), lambda out, rc: rc == 0)
