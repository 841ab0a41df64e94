"""Build a release on the control machine: a wheel of app/ plus a wheelhouse of its
dependencies resolved for the hosts' exact Python (hosts need no PyPI).

The release id is a hash of everything that goes into it (app sources, pinned
requirements, target interpreter and platform), so an unchanged app and unchanged
dependencies give the same id: no new release, nothing reported as changed.
"""
from __future__ import annotations

import base64
import hashlib
import io
import subprocess
import sys
import tarfile
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "app"
LOCK = APP / "requirements.lock"     # fully pinned: the same id means the same wheels
WHEEL_NAME = "celery_kit_app"
VERSION = "1.0.0"
EPOCH = (1980, 1, 1, 0, 0, 0)      # fixed zip timestamps: same sources, same wheel bytes


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


TARGET_FACT_ARGV = ("python3", "-c", "import platform; print(platform.python_version(), "
                    "platform.machine(), ''.join(platform.libc_ver()))")


SKIP_DIRS = {"__pycache__", "build", "dist"}     # local build leftovers are not the app


def app_files() -> list[Path]:
    return sorted(p for p in APP.rglob("*.py")
                  if not SKIP_DIRS & set(p.relative_to(APP).parts[:-1])
                  and not any(part.endswith(".egg-info") for part in p.parts))


def release_id(target: Target) -> str:
    h = hashlib.sha256()
    for p in app_files() + [LOCK]:
        h.update(str(p.relative_to(APP)).encode() + b"\0" + p.read_bytes() + b"\0")
    h.update(f"{target.python} {target.machine} {target.glibc}".encode())
    return h.hexdigest()[:12]


def build_wheel() -> tuple[str, bytes]:
    """A pure-Python wheel of app/, built directly (no build backend, no network)."""
    dist = f"{WHEEL_NAME}-{VERSION}.dist-info"
    files = {f"app/{p.relative_to(APP)}": p.read_bytes() for p in app_files()}
    files[f"{dist}/METADATA"] = (f"Metadata-Version: 2.1\nName: celery-kit-app\nVersion: {VERSION}\n"
                                 "Requires-Dist: celery[msgpack,redis]\n").encode()
    files[f"{dist}/WHEEL"] = b"Wheel-Version: 1.0\nGenerator: celery-kit\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    record = []
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    files[f"{dist}/RECORD"] = ("\n".join(record + [f"{dist}/RECORD,,"]) + "\n").encode()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name in sorted(files):
            z.writestr(zipfile.ZipInfo(name, EPOCH), files[name])
    return f"{WHEEL_NAME}-{VERSION}-py3-none-any.whl", buf.getvalue()


def _tool(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


_BUILD_LOCK = threading.Lock()   # hosts with the same target ask at the same time


def build_release(state_dir: Path, target: Target) -> tuple[str, Path]:
    """Return (release id, path of the tarball to ship), building it unless cached."""
    with _BUILD_LOCK:
        return _build_release(state_dir, target)


def _build_release(state_dir: Path, target: Target) -> tuple[str, Path]:
    rid = release_id(target)
    out = state_dir / "build" / rid
    tarball = out / "release.tar.gz"
    if tarball.exists():
        return rid, tarball
    wheels = out / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    pins = out / "requirements.txt"
    # Select from the universal lock for the exact interpreter: uv evaluates markers such as
    # python_full_version (redis-py needs async-timeout below 3.11.3), pip's
    # --python-version does not. Every input is pinned, so the result is deterministic.
    _run([_tool("uv"), "pip", "compile", str(LOCK), "--python-version", target.python,
          "--python-platform", f"{target.machine}-manylinux_2_{target.glibc.split('.')[1]}",
          "--no-header", "--no-annotate", "-q", "-o", str(pins)])
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
           "--python-version", target.python.rsplit(".", 1)[0], "--implementation", "cp",
           "--abi", target.abi, "--abi", "abi3", "--abi", "none", "-d", str(wheels), "-r", str(pins)]
    for plat in target.platforms():
        cmd += ["--platform", plat]
    _run(cmd)
    name, data = build_wheel()
    (wheels / name).write_bytes(data)
    (out / "RELEASE").write_text(rid + "\n")
    tmp = tarball.with_suffix(".tmp")
    with tarfile.open(tmp, "w:gz") as tar:
        tar.add(wheels, arcname="wheels")
        tar.add(pins, arcname="requirements.txt")
        tar.add(out / "RELEASE", arcname="RELEASE")
    tmp.rename(tarball)
    return rid, tarball


def _run(argv: list[str]) -> None:
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"build failed: {' '.join(argv[:4])} …\n{proc.stdout[-2000:]}")
