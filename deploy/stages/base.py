"""Base stage, every host: names of all inventory hosts in /etc/hosts, the apt proxy,
the packages the host's roles need and nftables for the kit's firewall (one apt
transaction), and the service users."""
from __future__ import annotations

import ipaddress
import socket

from .. import commands as C
from .. import facts as F
from ..errors import DeployFailed
from ..files import managed
from ..ops import file_changes, package_changes, user_changes
from ..stage import Stage, StageEnv
from ..steps import Change, Plan

PROXY_CONF = "/etc/apt/apt.conf.d/80celery-kit-proxy"
BEGIN = "# BEGIN celery-kit: inventory hosts (managed, edits here are overwritten)"
END = "# END celery-kit"

PACKAGES = {
    "rabbitmq": ["rabbitmq-server", "python3"],    # python3 reads the management API
    "redis": ["redis-server"],
    "worker": ["python3-venv"],
    "beat": ["python3-venv"],
    "flower": ["python3-venv", "nginx-light", "openssl"],
}
USERS = {"worker": {"celery": "/var/lib/celery"}, "beat": {"celery": "/var/lib/celery"},
         "flower": {"flower": "/var/lib/flower"}}


SENTINEL_PACKAGES = ["redis-sentinel"]     # on Inventory.sentinel_hosts()


def packages_for(inv, host) -> list[str]:
    # nftables: the firewall stage's ruleset, on every host unless the kit leaves it alone.
    extra = {"nftables"} if inv.firewall.enabled else set()
    if host in inv.sentinel_hosts():
        extra |= set(SENTINEL_PACKAGES)
    return sorted({p for role in host.roles for p in PACKAGES[role]} | extra)


def users_for(host) -> dict[str, str]:
    out = {}
    for role in host.roles:
        out.update(USERS.get(role, {}))
    return out


def ip_of(address: str) -> str:
    """An inventory address as an IP for /etc/hosts; a DNS name is resolved here, on the
    control machine (an /etc/hosts line needs an address, not another name)."""
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        pass
    try:
        return socket.getaddrinfo(address, None, type=socket.SOCK_STREAM)[0][4][0]
    except OSError as exc:
        raise DeployFailed(f"cannot resolve inventory address {address!r}: {exc}")


def hosts_file(current: str, inv, resolve=ip_of) -> str:
    """Pure: /etc/hosts with the kit's block (every inventory host) replaced or appended.
    RabbitMQ node names are rabbit@<inventory name>, so every node must resolve every other."""
    block = [BEGIN] + [f"{resolve(h.address)}\t{h.name}" for h in inv.hosts] + [END]
    lines = current.splitlines()
    if BEGIN in lines and END in lines:
        i, j = lines.index(BEGIN), lines.index(END)
        lines[i:j + 1] = block
    else:
        # Names must not also resolve elsewhere first (e.g. Debian's 127.0.1.1 <hostname>).
        names = {h.name for h in inv.hosts}
        lines = [l for l in lines if not (l.startswith("127.0.1.1") and set(l.split()[1:]) & names)]
        lines += block
    return "\n".join(lines) + "\n"


def proxy_conf(url: str) -> str:
    return f'Acquire::http::Proxy "{url}";\n'


class Base(Stage):
    """Every host: names, apt proxy, packages (one apt transaction), service users."""
    name = "base"

    def hosts(self, inv) -> list:
        return list(inv.hosts)

    def facts(self, ctx, host) -> list:
        return [F.files([PROXY_CONF]), F.packages(packages_for(ctx.inv, host)),
                F.users(list(users_for(host)) or ["root"]), F.file_content("hosts", "/etc/hosts")]

    def prepare(self, ctx, facts: dict) -> dict[str, str]:
        # Resolved once, on the control machine: an /etc/hosts line needs an address.
        return {h.address: ip_of(h.address) for h in ctx.inv.hosts}

    def plan(self, ctx, host, facts: dict, env: StageEnv) -> Plan:
        inv = ctx.inv
        steps: list[Change] = []
        wanted_hosts = hosts_file(facts["hosts"] or "", inv, env.prepared.__getitem__)
        if wanted_hosts != facts["hosts"]:
            steps.append(Change("file /etc/hosts", file=managed("/etc/hosts", wanted_hosts)))
        if inv.apt.proxy:
            steps += file_changes([managed(PROXY_CONF, proxy_conf(inv.apt.proxy))], facts["files"])
        elif PROXY_CONF in facts["files"]:
            steps.append(Change(f"remove {PROXY_CONF}", [C.cmd("rm", "-f", PROXY_CONF)]))
        steps += package_changes(packages_for(inv, host), facts["packages"])
        steps += user_changes(users_for(host), facts["users"])
        return Plan(steps)
