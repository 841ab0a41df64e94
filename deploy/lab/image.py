"""The cached base image every lab host is an overlay of.

Built once with debootstrap (about a minute) and reused until its recipe changes:
the directory name carries the recipe hash, so a changed recipe simply builds a new one.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from .spec import LabSpec, chroot_setup_argv, debootstrap_argv


def ensure_base_image(spec: LabSpec, log=print) -> tuple[Path, bool]:
    """Return (path, built_now). Builds into a temporary directory and renames it into
    place, so an interrupted build never leaves a half image that looks complete."""
    final = spec.base_image()
    if (final / "etc" / "os-release").exists():
        return final, False
    spec.cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(final.name + ".building")
    if tmp.exists():
        shutil.rmtree(tmp)
    log(f"lab: building base image {final.name} (debootstrap of Debian {spec.release}, about a minute)")
    _run(debootstrap_argv(tmp, spec.release), "debootstrap")
    _run(chroot_setup_argv(tmp, spec.release), "base image setup")
    tmp.rename(final)
    _remove_stale_images(spec, keep=final)
    return final, True


def _remove_stale_images(spec: LabSpec, keep: Path) -> None:
    # Old recipes of this release are only disk usage; one still under a running host's
    # overlay stays. The other release's image is left alone.
    mounts = Path("/proc/mounts").read_text()
    for old in spec.cache_dir.glob(f"base-{spec.release}-*"):
        if old != keep and not old.name.endswith(".building") and str(old) not in mounts:
            shutil.rmtree(old, ignore_errors=True)


def _run(argv: list[str], what: str) -> None:
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:])
        raise RuntimeError(f"lab: {what} failed (exit {proc.returncode}): {' '.join(argv[:3])} …")
