"""Build a release on the control machine: the task package's wheel, built by a standard
PEP 517 builder (`uv build`), plus a wheelhouse of its dependencies resolved from its fully
pinned lock file for the hosts' exact Python (hosts need no PyPI).

The release id is a content hash of what is shipped (the wheel's bytes, the requirements
selected for the target, the target), so an unchanged project gives the same id: no new
release, nothing reported as changed. Builds are reproducible (SOURCE_DATE_EPOCH) and
cached by a fingerprint of the project's files.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from .errors import DeployFailed

KIT = Path(__file__).resolve().parents[1]
# The kit's Celery settings module, installed into every release venv (see celery_env.py).
SETTINGS = KIT / "deploy" / "client" / "celery_kit_config.py"
BUILD_CONSTRAINTS = KIT / "deploy" / "build-constraints.txt"   # pinned build backends
# Part of every cache key: a change to how releases are built must not reuse old builds.
BUILD_RECIPE = "2: uv build of a clean copy"
SOURCE_DATE_EPOCH = "315532800"          # 1980-01-01: zip's earliest; same sources, same bytes
# Local leftovers that are not the project (never hashed, never shipped).
SKIP = {".git", ".hg", "__pycache__", "build", "dist", ".venv", "venv", ".tox", ".nox",
        ".pytest_cache", ".mypy_cache", ".ruff_cache", "node_modules"}


@dataclass(frozen=True)
class Target:
    """A host's interpreter and platform, read from the host (python3 -c, see facts)."""
    python: str          # "3.11.2"
    machine: str         # "x86_64"
    glibc: str           # "2.36"

    @property
    def abi(self) -> str:
        major, minor = self.python.split(".")[:2]
        return f"cp{major}{minor}"

    def platforms(self) -> list[str]:
        # Every manylinux tag the host's glibc accepts, newest first, plus legacy aliases.
        minor = int(self.glibc.split(".")[1])
        tags = [f"manylinux_2_{m}_{self.machine}" for m in range(minor, 4, -1)]
        return tags + [f"manylinux2014_{self.machine}", f"manylinux2010_{self.machine}",
                       f"manylinux1_{self.machine}", "linux_" + self.machine]


def parse_target(out: str, rc: int = 0) -> Target | None:
    parts = out.split()
    if rc != 0 or len(parts) != 3:
        return None
    return Target(parts[0], parts[1], parts[2].replace("glibc", "").strip("_") or "2.17")


# Python's version, the machine and glibc, without importing anything into Python.
TARGET_FACT_ARGV = ("sh", "-c", 'echo "$(python3 -I -S -V | cut -d" " -f2) $(uname -m) '
                    '$(getconf GNU_LIBC_VERSION | tr " " _)"')


@dataclass(frozen=True)
class Project:
    path: Path           # a PEP 517 project directory
    lock: Path           # its fully pinned requirements


@dataclass(frozen=True)
class Release:
    id: str
    tarball: Path
    wheel: str           # file name of the project's wheel inside the tarball


def project_files(root: Path) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP and not d.endswith(".egg-info"))
        out += [Path(dirpath) / f for f in sorted(filenames) if not f.endswith((".pyc", ".pyo"))]
    return out


def fingerprint(project: Project) -> str:
    """Of everything the build reads: the project's files, its lock and the build pins."""
    h = hashlib.sha256(BUILD_RECIPE.encode())
    for p in project_files(project.path) + [project.lock, BUILD_CONSTRAINTS]:
        h.update(str(p.relative_to(project.path) if p.is_relative_to(project.path) else p.name).encode())
        h.update(b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def _tool(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def _run(argv: list[str], what: str, env: dict | None = None) -> str:
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env={**os.environ, **(env or {})})
    if proc.returncode != 0:
        raise DeployFailed(f"{what} failed: {' '.join(argv[:3])} …\n{proc.stdout[-2000:]}")
    return proc.stdout


def build_wheel(project: Project, cache: Path) -> Path:
    """The project's wheel, built once per fingerprint by `uv build` (PEP 517)."""
    out = cache / "wheels" / fingerprint(project)
    found = sorted(out.glob("*.whl")) if out.exists() else []
    if found:
        return found[0]
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        for p in tmp.iterdir():
            p.unlink()
    # Built from a clean copy of the project's files: a build backend reuses leftovers of
    # earlier builds (setuptools' build/lib), which would ship files that no longer exist,
    # and building in place would litter the user's project with build/ and *.egg-info.
    with tempfile.TemporaryDirectory(prefix="celery-kit-build-") as src:
        for f in project_files(project.path):
            dest = Path(src) / f.relative_to(project.path)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, dest)
        _run([_tool("uv"), "build", "--wheel", "--no-progress", "--quiet", "--out-dir", str(tmp),
              "--python", sys.executable, "--build-constraint", str(BUILD_CONSTRAINTS), src],
             f"building the wheel of {project.path}", env={"SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH})
    wheels = sorted(tmp.glob("*.whl"))
    if len(wheels) != 1:
        raise DeployFailed(f"building {project.path} gave {len(wheels)} wheels, expected one")
    tmp.rename(out)
    return out / wheels[0].name


def pinned(lock: Path, names: list[str]) -> list[str]:
    """Which of names the lock file pins (case and -/_ insensitive)."""
    norm = lambda s: re.sub(r"[-_.]+", "-", s).lower()   # noqa: E731 (PEP 503 names)
    have = {norm(re.split(r"[=<>!~\[; ]", line.strip(), 1)[0]) for line in lock.read_text().splitlines()
            if line.strip() and not line.lstrip().startswith(("#", "-"))}
    return [n for n in names if norm(n) in have]


_LOCK = threading.Lock()   # hosts with the same target ask at the same time


def build_release(project: Project, cache: Path, target: Target) -> Release:
    """The release for one target, built unless cached."""
    with _LOCK:
        wheel = build_wheel(project, cache)
        pins = cache / "pins" / f"{fingerprint(project)}-{target.python}-{target.machine}-{target.glibc}.txt"
        if not pins.exists():
            pins.parent.mkdir(parents=True, exist_ok=True)
            # uv evaluates markers such as python_full_version for the exact interpreter
            # (redis-py needs async-timeout below 3.11.3); pip's --python-version does not.
            _run([_tool("uv"), "pip", "compile", str(project.lock), "--python-version", target.python,
                  # Markers depend on OS and machine only; wheels are chosen later by pip with
                  # every manylinux tag the host's glibc accepts.
                  "--python-platform", f"{target.machine}-unknown-linux-gnu",
                  "--no-header", "--no-annotate", "-q", "-o", str(pins) + ".tmp"],
                 f"resolving {project.lock} for Python {target.python}")
            os.replace(str(pins) + ".tmp", pins)
        h = hashlib.sha256(wheel.read_bytes())
        h.update(pins.read_bytes())
        h.update(SETTINGS.read_bytes())
        h.update(f"{target.python} {target.machine} {target.glibc}".encode())
        rid = h.hexdigest()[:12]
        out = cache / rid
        tarball = out / "release.tar.gz"
        if not tarball.exists():
            _assemble(out, tarball, wheel, pins, rid, target)
        return Release(rid, tarball, wheel.name)


def _assemble(out: Path, tarball: Path, wheel: Path, pins: Path, rid: str, target: Target) -> None:
    wheels = out / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
           "--python-version", target.python.rsplit(".", 1)[0], "--implementation", "cp",
           "--abi", target.abi, "--abi", "abi3", "--abi", "none", "-d", str(wheels), "-r", str(pins)]
    for plat in target.platforms():
        cmd += ["--platform", plat]
    _run(cmd, f"downloading the wheels for Python {target.python}")
    (wheels / wheel.name).write_bytes(wheel.read_bytes())
    (out / "RELEASE").write_text(rid + "\n")
    tmp = tarball.with_suffix(".tmp")
    with tarfile.open(tmp, "w:gz") as tar:
        tar.add(wheels, arcname="wheels")
        tar.add(pins, arcname="requirements.txt")
        tar.add(SETTINGS, arcname=SETTINGS.name)
        tar.add(out / "RELEASE", arcname="RELEASE")
    tmp.rename(tarball)
