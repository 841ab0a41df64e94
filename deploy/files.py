"""Managed files: rendered from Jinja2 templates kept in one place, compared by sha256,
installed atomically with owner and mode. Each stage restarts a service only when one of
that service's own files is in its plan."""
from __future__ import annotations

import difflib
import hashlib
from dataclasses import dataclass
from pathlib import Path

import jinja2

from .facts import FileState

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE_DIRS = [ROOT / "deploy" / "templates", ROOT / "systemd"]

_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader([str(d) for d in TEMPLATE_DIRS]),
    undefined=jinja2.StrictUndefined,      # a missing variable is an error, not an empty string
    keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True, autoescape=False)


def render(template: str, **context) -> str:
    return _env.get_template(template).render(**context)


@dataclass(frozen=True)
class ManagedFile:
    path: str
    content: bytes
    owner: str = "root"
    group: str = "root"
    mode: int = 0o644
    secret: bool = False                  # never diffed or printed

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()

    @property
    def is_unit(self) -> bool:
        return self.path.startswith("/etc/systemd/")


def managed(path: str, text: str | bytes, **kw) -> ManagedFile:
    return ManagedFile(path, text.encode() if isinstance(text, str) else text, **kw)


def from_template(path: str, template: str, context: dict, **kw) -> ManagedFile:
    return managed(path, render(template, **context), **kw)


@dataclass(frozen=True)
class FileDrift:
    file: ManagedFile
    content_differs: bool      # missing or other sha256: upload and install
    attrs_differ: bool         # same content, wrong owner/group/mode: chown/chmod only


def file_drift(wanted: list[ManagedFile], actual: dict[str, FileState]) -> list[FileDrift]:
    """Pure: which wanted files differ from what is on the host, and how."""
    out = []
    for f in wanted:
        st = actual.get(f.path)
        if st is None or st.sha256 != f.sha256:
            out.append(FileDrift(f, True, True))
        elif (st.owner, st.group, st.mode) != (f.owner, f.group, f.mode):
            out.append(FileDrift(f, False, True))
    return out


def unified_diff(path: str, old: str | None, new: str) -> str:
    return "".join(difflib.unified_diff((old or "").splitlines(True), new.splitlines(True),
                                        fromfile=f"{path} (on host)" if old is not None else "/dev/null",
                                        tofile=f"{path} (wanted)"))
