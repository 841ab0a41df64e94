"""Firewall stage, every host: the kit's nftables ruleset, checked, then applied atomically.

Why the kit owns /etc/nftables.conf entirely: it is the file Debian's nftables.service loads
at boot, so owning it is what makes the rules persistent, with nothing else to edit (an
include would mean patching a file the kit does not own). Whatever the file held before is
replaced; a dry run shows the diff. The rules themselves live in one table, inet celery_kit,
which the file deletes and recreates in one `nft -f` transaction instead of `flush ruleset`:
applying is atomic and idempotent, and tables other software adds at runtime (Docker,
fail2ban) are kept.

With firewall.enabled: false the stage does nothing, and removes nothing: the inventory
promises to leave the hosts' firewall alone.
"""
from __future__ import annotations

import hashlib
import ipaddress
import re
import socket

from .. import commands as C
from .. import facts as F
from ..errors import DeployFailed
from ..files import managed, render
from ..ops import file_changes
from ..stage import Stage, StageEnv
from ..steps import Change, Plan

PATH = "/etc/nftables.conf"
UNIT = "nftables.service"
TABLE = "celery_kit"                     # family inet: IPv4 and IPv6 in one table
TEMPLATE = "nftables-celery-kit.nft.j2"
# RabbitMQ's fixed ports. Distribution is RABBITMQ_NODE_PORT + 20000; the kit sets the AMQP
# port in rabbitmq.conf, not in that variable, so it stays 25672 whatever amqp_port says.
EPMD, DISTRIBUTION, CLI_TOOLS, PROMETHEUS = 4369, 25672, "35672-35682", 15692
_DIGEST = "@@DIGEST@@"


def addresses_of(address: str) -> list[str]:
    """Every IP an inventory address stands for: itself, or all A and AAAA records of a DNS
    name, resolved here on the control machine (a rule needs addresses, not names)."""
    try:
        return [str(ipaddress.ip_address(address))]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(address, None, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise DeployFailed(f"cannot resolve inventory address {address!r}: {exc}")
    return list(dict.fromkeys(str(i[4][0]).split("%")[0] for i in infos))


def nft_sets(name: str, networks) -> dict[str, list[str]]:
    """{name4: [...], name6: [...]}: the networks by family, in order, without those another
    one already covers (an interval set refuses overlapping elements); a single address is
    written without its /32 or /128."""
    nets = list(dict.fromkeys(ipaddress.ip_network(n, strict=False) for n in networks))
    kept = [n for n in nets if not any(o != n and o.version == n.version and n.subnet_of(o)
                                       for o in nets)]
    return {f"{name}{v}": [str(n.network_address) if n.prefixlen == n.max_prefixlen else str(n)
                           for n in kept if n.version == v] for v in (4, 6)}


def ports(*values) -> str:
    """One port as itself, several as an anonymous set: 5672, { 80, 443 }."""
    unique = [str(v) for v in dict.fromkeys(values)]
    return unique[0] if len(unique) == 1 else "{ " + ", ".join(unique) + " }"


def context(inv, host, resolved: dict[str, list[str]]) -> dict:
    """Pure: which services this host offers, on which ports, to which address sets."""
    fw, r = inv.firewall, inv.rabbitmq
    served = lambda hosts: [a for h in hosts for a in resolved[h.address]]  # noqa: E731
    sentinel = host in inv.sentinel_hosts()
    rabbitmq, redis, flower = host.has("rabbitmq"), host.has("redis"), host.has("flower")
    sets = nft_sets("ssh", fw.ssh)
    if rabbitmq or redis or sentinel:
        sets |= nft_sets("cluster", served(inv.hosts)) | nft_sets("clients", fw.clients)
    if rabbitmq:
        # Flower on a host without RabbitMQ reads the first node's management API.
        flower_apart = [h for h in inv.with_role("flower") if not h.has("rabbitmq")]
        sets |= nft_sets("rabbitmq", served(inv.with_role("rabbitmq"))) | nft_sets("admin", fw.admin)
        if flower_apart:
            sets |= nft_sets("flower", served(flower_apart))
    return {"host": host, "sets": sets, "rabbitmq": rabbitmq, "redis": redis,
            "sentinel": sentinel, "flower": flower,
            "ssh": ports(host.ssh.port), "amqp": ports(r.amqp_port),
            "clustering": ports(EPMD, DISTRIBUTION, CLI_TOOLS),
            "management": ports(r.management_port), "monitoring": ports(r.management_port, PROMETHEUS),
            "redis_port": ports(inv.redis.port), "sentinel_port": ports(inv.redis.sentinel_port),
            "web": ports(inv.flower.http_port, inv.flower.https_port)}


def ruleset(inv, host, resolved: dict[str, list[str]]) -> tuple[str, str]:
    """The file's text and its digest. The digest names the ruleset inside it (the table's
    comment), so a fact can tell whether the rules running are this file's."""
    text = render(TEMPLATE, **context(inv, host, resolved), digest=_DIGEST)
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    return text.replace(_DIGEST, digest), digest


def parse_loaded(out: str, rc: int = 0) -> str | None:
    """The digest of the running celery_kit table (`nft -t list table`), None when absent."""
    found = re.search(r'comment "celery-kit ruleset ([0-9a-f]+)"', out) if rc == 0 else None
    return found.group(1) if found else None


def loaded() -> F.Fact:
    return F.Fact("loaded", ("nft", "-t", "list", "table", "inet", TABLE), parse_loaded)


class Firewall(Stage):
    name = "firewall"

    def hosts(self, inv) -> list:
        return list(inv.hosts) if inv.firewall.enabled else []

    def facts(self, ctx, host) -> list:
        if not ctx.inv.firewall.enabled:
            return []
        return [F.files([PATH]), F.units([UNIT]), loaded()]

    def prepare(self, ctx, facts: dict) -> dict[str, list[str]]:
        if not ctx.inv.firewall.enabled:
            return {}
        return {h.address: addresses_of(h.address) for h in ctx.inv.hosts}

    def plan(self, ctx, host, facts: dict, env: StageEnv) -> Plan:
        if not ctx.inv.firewall.enabled:
            return Plan([])
        text, digest = ruleset(ctx.inv, host, env.prepared)
        steps = file_changes([managed(PATH, text)], facts["files"])    # root, 0644
        rewritten = any(s.file is not None for s in steps)
        notes = []
        if not rewritten and facts["loaded"] != digest:
            notes.append(f"the running firewall rules are not {PATH}'s: loading it again")
        if rewritten or notes:
            # Checked before it is applied: a file nft refuses stops the deploy with nft's
            # message and the running rules stay as they were (its digest is then not the
            # running one, so the next deploy checks and applies it again). Never `systemctl
            # restart nftables`: its stop flushes the whole ruleset, other software's too.
            steps += [Change(f"check {PATH} (nft -c)", [C.cmd("nft", "-c", "-f", PATH)]),
                      Change(f"apply {PATH} atomically (nft -f)", [C.cmd("nft", "-f", PATH)])]
        if (facts["units"].get(UNIT) or {}).get("UnitFileState") != "enabled":
            # Loads the file at boot: what makes the rules persistent.
            steps.append(Change(f"enable {UNIT}", [C.systemctl("enable", UNIT)]))
        return Plan(steps, notes=notes)
