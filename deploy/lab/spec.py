"""The lab, described as data: names, addresses, files and command lines.

Everything here is pure (no processes, no I/O) so it can be unit-tested; runtime.py
and image.py carry it out. The lab is a stand-in for real servers: Debian 12 (bookworm)
or Debian 13 (trixie) hosts as systemd-nspawn containers on a private bridge, reachable
only over SSH.
"""
from __future__ import annotations

import hashlib
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

RELEASES = ("bookworm", "trixie")      # Debian 12, Debian 13
DEFAULT_RELEASE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
# What every host has before the kit touches it: a minimal Debian server with sshd.
# procps (ps) and less are what an operator expects to find on a server.
BASE_PACKAGES = (
    "systemd", "systemd-sysv", "dbus", "libpam-systemd", "openssh-server", "python3",
    "iproute2", "ca-certificates", "sudo", "procps", "less",
)
DEPLOY_USER = "deploy"

# Run inside the freshly bootstrapped tree (chroot), with $1 = the release. Changing it
# changes the image hash, which is what triggers a rebuild of the cached base image.
BASE_SETUP_SCRIPT = f"""set -eu
suite="$1"
useradd --create-home --shell /bin/bash {DEPLOY_USER}
echo '{DEPLOY_USER} ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/{DEPLOY_USER}
chmod 0440 /etc/sudoers.d/{DEPLOY_USER}
install -d -m 0700 -o {DEPLOY_USER} -g {DEPLOY_USER} /home/{DEPLOY_USER}/.ssh
systemctl enable systemd-networkd.service ssh.service
# Host keys and machine-id are per host; lab.up writes them into each host's layer.
rm -f /etc/ssh/ssh_host_*
: > /etc/machine-id
printf 'PasswordAuthentication no\\nPermitRootLogin no\\nUseDNS no\\nHostKey /etc/ssh/ssh_host_ed25519_key\\n' \\
  > /etc/ssh/sshd_config.d/10-lab.conf
rm -f /etc/apt/sources.list.d/debian.sources
printf 'deb {MIRROR} %s main\\ndeb {MIRROR} %s-updates main\\ndeb http://deb.debian.org/debian-security %s-security main\\n' \\
  "$suite" "$suite" "$suite" > /etc/apt/sources.list
# Nothing on a container console to log in to, no root fs of its own to remount:
# these units only fail or wait in a container.
systemctl mask console-getty.service getty@tty1.service systemd-networkd-wait-online.service \\
  systemd-remount-fs.service
apt-get clean
rm -rf /var/lib/apt/lists/*
"""


def image_recipe_hash(release: str = DEFAULT_RELEASE) -> str:
    """Identity of a base image: any change to how it is built gives a new hash."""
    recipe = "\n".join([release, MIRROR, ",".join(BASE_PACKAGES), BASE_SETUP_SCRIPT])
    return hashlib.sha256(recipe.encode()).hexdigest()[:16]


def debootstrap_argv(target: Path, release: str = DEFAULT_RELEASE) -> list[str]:
    return ["debootstrap", "--variant=minbase", "--include=" + ",".join(BASE_PACKAGES),
            release, str(target), MIRROR]


def chroot_setup_argv(target: Path, release: str = DEFAULT_RELEASE) -> list[str]:
    return ["chroot", str(target), "/bin/sh", "-c", BASE_SETUP_SCRIPT, "setup", release]


@dataclass(frozen=True)
class LabHost:
    index: int            # 1-based
    name: str             # hostname inside the container, e.g. node1
    machine: str          # systemd-nspawn machine name, e.g. ck-node1
    address: str

    @property
    def marker(self) -> str:
        """Identifies this host's systemd-nspawn in a process list (node1 must not match node10)."""
        return f"--machine {self.machine} "

    @property
    def veth(self) -> str:
        # systemd-nspawn names the host side "vb-" + machine name, cut to IFNAMSIZ-1.
        return ("vb-" + self.machine)[:15]


@dataclass(frozen=True)
class LabSpec:
    """Where the lab lives and how it is wired. Defaults match inventory.yaml."""
    state_dir: Path
    cache_dir: Path
    count: int = 3
    release: str = DEFAULT_RELEASE
    bridge: str = "ckbr0"
    subnet: str = "10.77.0.0/24"
    first_host: int = 11
    proxy_port: int = 3128
    prefix: str = "ck-"

    def __post_init__(self) -> None:
        if self.release not in RELEASES:
            raise ValueError(f"lab: unknown release {self.release!r}; use one of {', '.join(RELEASES)}")

    @property
    def network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.subnet)

    @property
    def gateway(self) -> str:
        return str(self.network.network_address + 1)

    @property
    def prefixlen(self) -> int:
        return self.network.prefixlen

    def host(self, index: int) -> LabHost:
        name = f"node{index}"
        return LabHost(index, name, self.prefix + name,
                       str(self.network.network_address + self.first_host + index - 1))

    def hosts(self) -> list[LabHost]:
        return [self.host(i) for i in range(1, self.count + 1)]

    # Paths -----------------------------------------------------------------
    @property
    def key_path(self) -> Path:
        return self.state_dir / "id_ed25519"

    @property
    def state_file(self) -> Path:
        return self.state_dir / "lab.json"

    @property
    def known_hosts(self) -> Path:
        return self.state_dir / "known_hosts"

    def host_dir(self, host: LabHost) -> Path:
        return self.state_dir / "hosts" / host.name

    def root_dir(self, host: LabHost) -> Path:
        return self.host_dir(host) / "root"

    def hostkey_dir(self, host: LabHost) -> Path:
        # Kept across lab.down so a host's SSH identity is stable between boots.
        return self.state_dir / "hostkeys" / host.name

    def base_image(self) -> Path:
        return self.cache_dir / f"base-{self.release}-{image_recipe_hash(self.release)}"

    def cgroup(self, host: LabHost) -> str:
        """Each host's systemd-nspawn runs in a cgroup of its own (see runtime._boot)."""
        return f"celery-kit-lab/{host.machine}"

    @property
    def proxy_url(self) -> str:
        return f"http://{self.gateway}:{self.proxy_port}"


def default_spec(project_dir: Path, count: int = 3, release: str | None = None) -> LabSpec:
    """The lab of this checkout. The release: given, else $CELERYKIT_LAB_RELEASE, else bookworm."""
    cache = Path(os.environ.get("CELERYKIT_LAB_CACHE", "/var/cache/celery-kit/lab"))
    release = release or os.environ.get("CELERYKIT_LAB_RELEASE") or DEFAULT_RELEASE
    return LabSpec(state_dir=project_dir / ".state" / "lab", cache_dir=cache, count=count,
                   release=release)


# Files written into each host's own layer before it boots ---------------------

def network_file(spec: LabSpec, host: LabHost) -> str:
    # The name must sort before nspawn's 80-container-host0.network or DHCP wins.
    return (f"[Match]\nName=host0\n\n[Network]\nAddress={host.address}/{spec.prefixlen}\n"
            "LinkLocalAddressing=no\nIPv6AcceptRA=no\n")


def hosts_file(spec: LabSpec, host: LabHost) -> str:
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    lines += [f"{h.address}\t{h.name}" for h in spec.hosts()]
    return "\n".join(lines) + "\n"


def host_files(spec: LabSpec, host: LabHost, authorized_key: str, machine_id: str) -> dict[str, str]:
    """Relative path inside the host -> content."""
    files = {
        "etc/hostname": host.name + "\n",
        "etc/hosts": hosts_file(spec, host),
        "etc/machine-id": machine_id + "\n",
        "etc/systemd/network/10-lab.network": network_file(spec, host),
        f"home/{DEPLOY_USER}/.ssh/authorized_keys": authorized_key.strip() + "\n",
    }
    if spec.release != "bookworm":
        # OpenSSH >= 9.8 shuts out a source address for a while after failed logins
        # (PerSourcePenalties). Every lab connection comes from the control machine, and
        # tests fail logins on purpose: exempt it, as one would exempt a bastion host.
        files["etc/ssh/sshd_config.d/20-lab-control.conf"] = f"PerSourcePenaltyExemptList {spec.gateway}\n"
    return files


def tinyproxy_conf(spec: LabSpec) -> str:
    # Only Debian's archive is reachable, only from the lab subnet, and no CONNECT tunnels.
    return "\n".join([
        "User nobody", "Group nogroup",
        f"Port {spec.proxy_port}", f"Listen {spec.gateway}",
        "Timeout 600", "MaxClients 100", "LogLevel Warning",
        f"Allow {spec.subnet}",
        f'Filter "{spec.state_dir / "tinyproxy.filter"}"',
        "FilterURLs No", "FilterType ere", "FilterDefaultDeny Yes",
        "ConnectPort 0", "DisableViaHeader Yes", "",
    ])


TINYPROXY_FILTER = "^deb\\.debian\\.org$\n^security\\.debian\\.org$\n"


# Command lines ------------------------------------------------------------------

def overlay_mount_argv(spec: LabSpec, host: LabHost) -> list[str]:
    d = spec.host_dir(host)
    opts = f"lowerdir={spec.base_image()},upperdir={d / 'upper'},workdir={d / 'work'}"
    return ["mount", "-t", "overlay", "overlay", "-o", opts, str(spec.root_dir(host))]


def nspawn_argv(spec: LabSpec, host: LabHost) -> list[str]:
    # --keep-unit/--register=no: the control machine has no systemd to register with.
    return ["systemd-nspawn", "--quiet", "--keep-unit", "--register=no", "--boot",
            "-D", str(spec.root_dir(host)), "--machine", host.machine, "--hostname", host.name,
            "--network-bridge", spec.bridge, "--resolv-conf=off", "--link-journal=no",
            "--console=read-only"]


# The hosts' systemd gets a pure cgroup v2 hierarchy (the control machine is hybrid v1/v2):
# Debian 13's systemd refuses to boot on cgroup v1, and v2 gives per-unit CPU accounting.
NSPAWN_ENV = {"SYSTEMD_NSPAWN_UNIFIED_HIERARCHY": "1"}


def bridge_up_argvs(spec: LabSpec) -> list[list[str]]:
    return [["ip", "link", "add", spec.bridge, "type", "bridge"],
            ["ip", "addr", "add", f"{spec.gateway}/{spec.prefixlen}", "dev", spec.bridge],
            ["ip", "link", "set", spec.bridge, "up"]]


def link_delete_argv(name: str) -> list[str]:
    return ["ip", "link", "delete", name]


def ssh_config(spec: LabSpec) -> str:
    """For people: `ssh -F .state/lab/ssh_config node1`."""
    out = []
    for h in spec.hosts():
        out.append(f"Host {h.name}\n  HostName {h.address}\n  User {DEPLOY_USER}\n"
                   f"  IdentityFile {spec.key_path}\n  IdentitiesOnly yes\n"
                   f"  UserKnownHostsFile {spec.known_hosts}\n  StrictHostKeyChecking yes\n")
    return "\n".join(out)
