"""Reusable operations: pure functions from (wanted, actual facts) to a plan."""
from __future__ import annotations

from . import commands as C
from .steps import Change
from .files import ManagedFile, file_drift
from .facts import FileState


def file_changes(wanted: list[ManagedFile], actual: dict[str, FileState]) -> list[Change]:
    out = []
    for d in file_drift(wanted, actual):
        f = d.file
        if d.content_differs:
            out.append(Change(f"file {f.path}", file=f))
        else:
            out.append(Change(f"attributes of {f.path}", C.set_attrs(f.path, f.owner, f.group, f.mode)))
    return out


def package_changes(wanted: list[str], installed: dict[str, str]) -> list[Change]:
    missing = sorted(p for p in wanted if p not in installed)
    if not missing:
        return []
    return [Change("packages " + " ".join(missing), C.apt_install(missing), slow=True)]


def user_changes(wanted: dict[str, str], existing: set[str]) -> list[Change]:
    """wanted: system user -> home directory."""
    return [Change(f"system user {name}", [C.system_user(name, home), C.mkdir(home, name, name, 0o750)])
            for name, home in sorted(wanted.items()) if name not in existing]


def service_changes(unit: str, state: dict | None, restart: bool, enable: bool = True) -> list[Change]:
    """Enabled and running; restarted only when `restart` (its own files changed)."""
    state = state or {}
    out = []
    if enable and state.get("UnitFileState") not in ("enabled", "static", "generated", "alias"):
        out.append(Change(f"enable {unit}", [C.systemctl("enable", unit)]))
    active = state.get("ActiveState") == "active"
    if not active:
        out.append(Change(f"start {unit}", [C.systemctl("start", unit)]))
    elif restart:
        out.append(Change(f"restart {unit}", [C.systemctl("restart", unit)]))
    return out


def reload_if_units_changed(plan: list[Change]) -> list[Change]:
    """systemd reads unit files only on daemon-reload: one, when a unit file changed."""
    if any(ch.file is not None and ch.file.is_unit for ch in plan):
        return [Change("systemd daemon-reload", [C.systemctl("daemon-reload")])]
    return []
