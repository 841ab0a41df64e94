"""Small process, mount and link helpers for the lab (Linux /proc and iproute2)."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path


def run(argv: list[str], check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if check and proc.returncode != 0:
        raise RuntimeError(f"lab: `{' '.join(argv)}` failed: {proc.stderr.strip()}")
    return proc


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [p.decode(errors="replace") for p in raw.split(b"\0") if p]


def is_our_process(pid: int | None, *markers: str) -> bool:
    """True if pid is alive AND its command line holds every marker: a recorded pid may
    have been reused by an unrelated process after a crash or reboot."""
    if not pid:
        return False
    args = " ".join(cmdline(pid))
    return bool(args) and all(m in args for m in markers) and not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def pids_matching(*markers: str) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and is_our_process(int(entry.name), *markers):
            out.append(int(entry.name))
    return out


def pids_with_root(root: Path) -> list[int]:
    """Processes whose root directory is the mount at `root`: a host's init and everything
    under it, which is what is left when systemd-nspawn itself was killed. readlink() of
    /proc/PID/root shows "/" from inside the container's namespace, so compare inodes."""
    try:
        want = os.stat(root)
    except OSError:
        return []
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            st = os.stat(entry / "root")
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == (want.st_dev, want.st_ino):
            found.append(int(entry.name))
    return found


def signal_pids(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def wait_gone(pids: list[int], timeout: float) -> bool:
    """Poll until none of pids is alive (reaping our own children on the way)."""
    deadline = time.monotonic() + timeout
    while True:
        for pid in pids:
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
        alive = [p for p in pids if Path(f"/proc/{p}").exists() and not _is_zombie(p)]
        if not alive:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)


def terminate(pids: list[int], timeout: float = 20.0) -> None:
    """TERM first (systemd-nspawn powers the host off cleanly on TERM), KILL if it hangs."""
    if not pids:
        return
    signal_pids(pids, signal.SIGTERM)
    if not wait_gone(pids, timeout):
        signal_pids(pids, signal.SIGKILL)
        wait_gone(pids, 5.0)


def mounted(path: Path) -> bool:
    return str(path) in mount_points()


def mount_points() -> list[str]:
    return [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]


def unmount(path: Path) -> None:
    if run(["umount", str(path)], check=False).returncode != 0:
        # Busy after a crash (an orphaned process still inside): detach it lazily.
        run(["umount", "-l", str(path)], check=False)


def link_exists(name: str) -> bool:
    return Path(f"/sys/class/net/{name}").exists()


def links_with_prefix(prefix: str) -> list[str]:
    return sorted(p.name for p in Path("/sys/class/net").iterdir() if p.name.startswith(prefix))


# cgroups ------------------------------------------------------------------------
# systemd-nspawn --keep-unit puts its container into "payload" below the cgroup it was
# started in. Started from the same cgroup, every host's systemd would manage the SAME
# payload tree and fight the others over it (units failing at boot with "Failed to attach
# ... to compat systemd cgroup", slow logins). Each host's nspawn therefore starts in a
# cgroup of its own, in every hierarchy systemd uses.

def cgroup_hierarchies() -> list[Path]:
    """Mount points of the cgroup2 hierarchy and of the named v1 'systemd' one."""
    out = []
    for line in Path("/proc/mounts").read_text().splitlines():
        _, mp, fstype, opts = line.split()[:4]
        if fstype == "cgroup2" or (fstype == "cgroup" and "name=systemd" in opts.split(",")):
            out.append(Path(mp))
    return out


def make_cgroup(rel: str) -> list[Path]:
    dirs = [h / rel for h in cgroup_hierarchies()]
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)
    return dirs


def enter_cgroups(dirs: list[Path]) -> None:
    """In a child before exec (preexec_fn): move this process into each cgroup."""
    for d in dirs:
        with open(d / "cgroup.procs", "w") as f:
            f.write(str(os.getpid()))


def remove_cgroup(rel: str) -> None:
    """Remove a host's cgroup trees once nothing runs in them (deepest first)."""
    for h in cgroup_hierarchies():
        top = h / rel
        if not top.is_dir():
            continue
        for dirpath, _, _ in sorted(os.walk(top), key=lambda w: -w[0].count("/")):
            try:
                os.rmdir(dirpath)
            except OSError:
                pass
