"""Bring the lab up and down: bridge, package proxy, overlay roots, systemd-nspawn hosts.

Everything the lab starts is recorded in .state/lab/lab.json (pids, names), and teardown
also looks for leftovers by name, so `down` works after a crash and is safe to run twice.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from . import procs
from .image import ensure_base_image
from .keys import ensure_keypair
from .spec import (DEPLOY_USER, NSPAWN_ENV, TINYPROXY_FILTER, LabHost, LabSpec, bridge_up_argvs,
                   host_files, link_delete_argv, nspawn_argv, overlay_mount_argv, ssh_config,
                   tinyproxy_conf)
from .ready import Readiness, init_pid, system_state, try_login, wait_ready


class LabError(RuntimeError):
    pass


# State ------------------------------------------------------------------------

def load_state(spec: LabSpec) -> dict:
    try:
        return json.loads(spec.state_file.read_text())
    except (OSError, ValueError):
        return {"hosts": {}}


def save_state(spec: LabSpec, state: dict) -> None:
    spec.state_dir.mkdir(parents=True, exist_ok=True)
    tmp = spec.state_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    tmp.replace(spec.state_file)


def host_running(spec: LabSpec, host: LabHost, state: dict) -> bool:
    pid = state.get("hosts", {}).get(host.name, {}).get("pid")
    return procs.is_our_process(pid, "systemd-nspawn", host.marker)


# Up -----------------------------------------------------------------------------

def recorded_release(state_dir: Path) -> str | None:
    """The release the lab in state_dir was last brought up with (None: no lab there)."""
    try:
        return json.loads((state_dir / "lab.json").read_text()).get("release")
    except (OSError, ValueError):
        return None


def running_release(spec: LabSpec, state: dict) -> str | None:
    """The release of the hosts that run now (one lab runs one release at a time)."""
    for h in spec.hosts() + [spec.host(i) for i in range(1, state.get("count", 0) + 1)]:
        if host_running(spec, h, state):
            return state["hosts"][h.name].get("release", "bookworm")
    return None


def up(spec: LabSpec, log=print) -> dict[str, str]:
    """Boot every host that is not running; return {host: 'started'|'unchanged'}."""
    state = load_state(spec)
    running = running_release(spec, state)
    if running is not None and running != spec.release:
        raise LabError(f"lab: the lab runs Debian {running}; `fab lab.down` before "
                       f"`fab lab.up --release {spec.release}`")
    todo = [h for h in spec.hosts() if not host_running(spec, h, state)]
    result = {h.name: "unchanged" for h in spec.hosts() if h not in todo}
    _ensure_network(spec, state, log)
    if todo:
        ensure_base_image(spec, log)
        pubkey = ensure_keypair(spec.key_path, "celery-kit-lab")
        for host in todo:
            _boot(spec, host, state, pubkey)
            save_state(spec, state)
        _write_client_files(spec)
        wait_all(spec, todo, log)
        result.update({h.name: "started" for h in todo})
    state["count"] = max(spec.count, state.get("count", 0))
    state["release"] = spec.release
    save_state(spec, state)
    return result


def wait_all(spec: LabSpec, hosts: list[LabHost], log=print, timeout: float = 90.0) -> None:
    """Every host booted with nothing failed and accepting a real login (see ready.py)."""
    def one(h: LabHost) -> Readiness:
        return wait_ready(spec.root_dir(h), h.address, DEPLOY_USER, spec.key_path, spec.known_hosts,
                          timeout)
    with ThreadPoolExecutor(max_workers=max(1, len(hosts))) as pool:
        results = list(pool.map(one, hosts))
    for h, r in zip(hosts, results):
        log(f"lab: {h.name} {h.address} {r.describe()}")
    bad = [f"{h.name}: {r.describe()}" for h, r in zip(hosts, results) if not r.ok]
    if bad:
        raise LabError("lab: hosts not ready: " + "; ".join(bad) +
                       f" (boot logs in {spec.state_dir / 'hosts'}/<host>/console.log)")


def _ensure_network(spec: LabSpec, state: dict, log) -> None:
    if not procs.link_exists(spec.bridge):
        for argv in bridge_up_argvs(spec):
            procs.run(argv)
    state["bridge"] = spec.bridge
    conf = spec.state_dir / "tinyproxy.conf"
    if procs.is_our_process(state.get("proxy_pid"), "tinyproxy", str(conf)):
        return
    spec.state_dir.mkdir(parents=True, exist_ok=True)
    (spec.state_dir / "tinyproxy.filter").write_text(TINYPROXY_FILTER)
    conf.write_text(tinyproxy_conf(spec))
    logf = open(spec.state_dir / "tinyproxy.log", "ab")
    proc = subprocess.Popen(["tinyproxy", "-d", "-c", str(conf)], stdin=subprocess.DEVNULL,
                            stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
    state["proxy_pid"] = proc.pid
    save_state(spec, state)


def _boot(spec: LabSpec, host: LabHost, state: dict, pubkey: str) -> None:
    d = spec.host_dir(host)
    root = spec.root_dir(host)
    for sub in ("upper", "work", "root"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    _kill_leftovers(spec, host)   # a crashed earlier run may still hold the veth or the root
    if not procs.mounted(root):
        procs.run(overlay_mount_argv(spec, host))
    _write_host_files(spec, host, root, pubkey, state)
    logf = open(d / "console.log", "ab")
    procs.remove_cgroup(spec.cgroup(host))        # an earlier boot's, if it left one
    cgroups = procs.make_cgroup(spec.cgroup(host))
    proc = subprocess.Popen(nspawn_argv(spec, host), stdin=subprocess.DEVNULL, stdout=logf,
                            stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, **NSPAWN_ENV},
                            preexec_fn=lambda: procs.enter_cgroups(cgroups))
    state.setdefault("hosts", {})[host.name] = {"pid": proc.pid, "machine": host.machine,
                                                "address": host.address, "root": str(root),
                                                "release": spec.release}


def _write_host_files(spec: LabSpec, host: LabHost, root: Path, pubkey: str, state: dict) -> None:
    machine_id = state.get("machine_ids", {}).get(host.name) or secrets.token_hex(16)
    state.setdefault("machine_ids", {})[host.name] = machine_id
    for rel, content in host_files(spec, host, pubkey, machine_id).items():
        path = root / rel
        # /etc/hosts is the host's own after its first boot (the kit manages a block in it):
        # a real server keeps it across a power cycle, so a restarted lab host does too.
        if rel == "etc/hosts" and (spec.host_dir(host) / "upper" / rel).exists():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    # The deploy user's uid inside the image, not the control machine's.
    uid, gid = _image_user(root, DEPLOY_USER)
    ak = root / "home" / DEPLOY_USER / ".ssh" / "authorized_keys"
    os.chown(ak, uid, gid)
    os.chmod(ak, 0o600)
    hk_dir = spec.hostkey_dir(host)
    ensure_keypair(hk_dir / "ssh_host_ed25519_key", f"root@{host.name}")
    for name, mode in (("ssh_host_ed25519_key", 0o600), ("ssh_host_ed25519_key.pub", 0o644)):
        target = root / "etc" / "ssh" / name
        shutil.copyfile(hk_dir / name, target)
        os.chmod(target, mode)


def _image_user(root: Path, user: str) -> tuple[int, int]:
    for line in (root / "etc" / "passwd").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == user:
            return int(fields[2]), int(fields[3])
    raise LabError(f"lab: user {user} missing from the base image")


def _write_client_files(spec: LabSpec) -> None:
    (spec.state_dir / "ssh_config").write_text(ssh_config(spec))
    lines = []
    for h in spec.hosts():
        pub = spec.hostkey_dir(h) / "ssh_host_ed25519_key.pub"
        if pub.exists():
            keytype, key = pub.read_text().split()[:2]
            lines.append(f"{h.address},{h.name} {keytype} {key}")
    (spec.state_dir / "known_hosts").write_text("\n".join(lines) + "\n")


# Down ---------------------------------------------------------------------------

def stop_host(spec: LabSpec, host: LabHost, state: dict, remove: bool) -> None:
    pid = state.get("hosts", {}).get(host.name, {}).get("pid")
    nspawn = [pid] if procs.is_our_process(pid, "systemd-nspawn", host.marker) else []
    nspawn += [p for p in procs.pids_matching("systemd-nspawn", host.marker)
               if p not in nspawn]
    procs.terminate(nspawn)
    _kill_leftovers(spec, host)
    root = spec.root_dir(host)
    if procs.mounted(root):
        procs.unmount(root)
    state.get("hosts", {}).pop(host.name, None)
    if remove:
        shutil.rmtree(spec.host_dir(host), ignore_errors=True)


def _kill_leftovers(spec: LabSpec, host: LabHost) -> None:
    """After a SIGKILLed systemd-nspawn the host's init lives on and holds its veth."""
    orphans = procs.pids_with_root(spec.root_dir(host))
    procs.signal_pids(orphans, 9)
    procs.wait_gone(orphans, 5.0)
    if procs.link_exists(host.veth):
        procs.run(link_delete_argv(host.veth), check=False)
    procs.remove_cgroup(spec.cgroup(host))


def down(spec: LabSpec, log=print) -> list[str]:
    """Remove everything the lab made; returns what was removed. Safe to run twice."""
    state = load_state(spec)
    removed = []
    names = set(state.get("hosts", {})) | _host_dirs(spec)
    count = max([spec.count, state.get("count", 0)] + [int(n[4:]) for n in names if n[4:].isdigit()])
    hosts = [spec.host(i) for i in range(1, count + 1)]
    for host in hosts:
        if host.name in names or procs.link_exists(host.veth) or procs.mounted(spec.root_dir(host)):
            stop_host(spec, host, state, remove=True)
            removed.append(host.name)
    for link in procs.links_with_prefix("vb-" + spec.prefix):
        procs.run(link_delete_argv(link), check=False)
    for mp in procs.mount_points():
        if mp.startswith(str(spec.state_dir / "hosts") + "/"):
            procs.unmount(Path(mp))
    proxies = procs.pids_matching("tinyproxy", str(spec.state_dir / "tinyproxy.conf"))
    if proxies:
        procs.terminate(proxies, timeout=5)
        removed.append("proxy")
    if procs.link_exists(spec.bridge):
        procs.run(link_delete_argv(spec.bridge), check=False)
        removed.append("bridge " + spec.bridge)
    shutil.rmtree(spec.state_dir / "hosts", ignore_errors=True)
    procs.remove_cgroup(spec.cgroup(spec.host(1)).split("/")[0])
    state = {"hosts": {}, "machine_ids": state.get("machine_ids", {})}
    save_state(spec, state)
    return removed


def _host_dirs(spec: LabSpec) -> set[str]:
    d = spec.state_dir / "hosts"
    return {p.name for p in d.iterdir()} if d.exists() else set()


# Single host --------------------------------------------------------------------

def find_host(spec: LabSpec, name: str) -> LabHost:
    state = load_state(spec)
    count = max(spec.count, state.get("count", 0))
    for h in (spec.host(i) for i in range(1, count + 1)):
        if h.name == name:
            return h
    raise LabError(f"lab: no host named {name!r} (hosts: node1..node{count})")


def stop_one(spec: LabSpec, name: str) -> None:
    state = load_state(spec)
    stop_host(spec, find_host(spec, name), state, remove=False)   # keeps its disk
    save_state(spec, state)


def start_one(spec: LabSpec, name: str, log=print) -> str:
    host = find_host(spec, name)
    state = load_state(spec)
    if host_running(spec, host, state):
        return "unchanged"
    _ensure_network(spec, state, log)
    ensure_base_image(spec, log)
    _boot(spec, host, state, ensure_keypair(spec.key_path, "celery-kit-lab"))
    save_state(spec, state)
    wait_all(spec, [host], log)
    return "started"


def status(spec: LabSpec, check: bool = True) -> list[tuple[str, str, str]]:
    """(name, address, state) per host. With check, a running host is proven: systemd's
    state read through the container, and a real SSH login timed."""
    state = load_state(spec)
    count = max(spec.count, state.get("count", 0))
    hosts = [spec.host(i) for i in range(1, count + 1)]

    def one(h: LabHost) -> tuple[str, str, str]:
        if not host_running(spec, h, state):
            return h.name, h.address, "stopped"
        if not check:
            return h.name, h.address, "running"
        pid = init_pid(spec.root_dir(h))
        system = system_state(pid, 5) if pid else "no init process"
        login = try_login(h.address, DEPLOY_USER, spec.key_path, spec.known_hosts)
        shown = f"login {login:.1f}s" if login is not None else "login FAILED"
        return h.name, h.address, f"{system}, {shown}"

    with ThreadPoolExecutor(max_workers=max(1, len(hosts))) as pool:
        return list(pool.map(one, hosts))
