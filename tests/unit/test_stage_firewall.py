"""Firewall stage: the fixture inventory (and variants) in, exact rules and steps out.
The rulesets these tests render were also checked with `nft -c -f` (nft 1.0.6, Debian 12)
in a throwaway network namespace; the tests themselves need no nft."""
from __future__ import annotations

import dataclasses
import re
import socket

import pytest

from deploy import facts as F
from deploy.errors import DeployFailed
from deploy.files import managed
from deploy.stages import firewall as FW

from kit import FakeCtx, argvs, env, inventory, recorded, whats

INV = inventory()
LAB = inventory(firewall={"clients": ("10.77.0.1/32",), "admin": ("10.77.0.1/32",)})
SENTINEL = inventory("inventory.sentinel.yaml")
AS_IS = {h.address: [h.address] for h in INV.hosts}


def text(inv, name, resolved=None):
    return FW.ruleset(inv, inv.host(name), resolved or {h.address: [h.address] for h in inv.hosts})[0]


def ports_rules(ruleset: str) -> list[str]:
    """The rules that open ports, as written."""
    return [line.strip() for line in ruleset.splitlines() if "dport" in line and "udp" not in line]


def elements(ruleset: str, name: str) -> list[str] | None:
    """A named set's elements; None when the set is not declared."""
    found = re.search(rf"set {name} {{\n[^}}]*?(?:elements = {{ ([^}}]*) }}\n)?\s*}}", ruleset)
    if not found:
        return None
    return found.group(1).split(", ") if found.group(1) else []


def with_hosts(inv, *hosts):
    """inv with hosts replaced or added: (name, address, roles)."""
    base = inv.hosts[-1]
    by_name = {h.name: h for h in inv.hosts}
    for name, address, roles in hosts:
        by_name[name] = dataclasses.replace(by_name.get(name, base), name=name, address=address,
                                            roles=frozenset(roles))
    return dataclasses.replace(inv, hosts=tuple(by_name.values()))


# The rules per role ------------------------------------------------------------------------

def test_rabbitmq_redis_flower_host_opens_each_service_to_its_sets_only():
    assert ports_rules(text(INV, "node1")) == [
        "tcp dport 22 ip saddr @ssh4 accept",
        "tcp dport 22 ip6 saddr @ssh6 accept",
        "tcp dport 5672 ip saddr @cluster4 accept",
        "tcp dport 5672 ip6 saddr @cluster6 accept",
        "tcp dport 5672 ip saddr @clients4 accept",
        "tcp dport 5672 ip6 saddr @clients6 accept",
        "tcp dport { 4369, 25672, 35672-35682 } ip saddr @rabbitmq4 accept",
        "tcp dport { 4369, 25672, 35672-35682 } ip6 saddr @rabbitmq6 accept",
        "tcp dport { 15672, 15692 } ip saddr @rabbitmq4 accept",
        "tcp dport { 15672, 15692 } ip6 saddr @rabbitmq6 accept",
        "tcp dport { 15672, 15692 } ip saddr @admin4 accept",
        "tcp dport { 15672, 15692 } ip6 saddr @admin6 accept",
        "tcp dport 6379 ip saddr @cluster4 accept",
        "tcp dport 6379 ip6 saddr @cluster6 accept",
        "tcp dport 6379 ip saddr @clients4 accept",
        "tcp dport 6379 ip6 saddr @clients6 accept",
        "tcp dport { 80, 443 } accept"]


def test_rabbitmq_only_host_has_no_redis_sentinel_or_web_ports():
    rules = ports_rules(text(INV, "node2"))
    assert rules == ports_rules(text(INV, "node1"))[:12]


def test_worker_only_host_opens_ssh_and_nothing_else():
    inv = with_hosts(INV, ("node4", "192.0.2.14", ["worker"]))
    ruleset = text(inv, "node4")
    assert ports_rules(ruleset) == ["tcp dport 22 ip saddr @ssh4 accept", "tcp dport 22 ip6 saddr @ssh6 accept"]
    assert re.findall(r"set (\w+) {", ruleset) == ["ssh4", "ssh6"]


def test_the_base_rules_drop_by_default_and_keep_loopback_replies_and_icmp():
    ruleset = text(INV, "node2")
    for line in ["type filter hook input priority filter; policy drop;", 'iif "lo" accept',
                 "ct state established,related accept", "ct state invalid counter drop",
                 "icmp type echo-request limit rate 10/second accept",
                 "icmpv6 type echo-request limit rate 10/second accept",
                 'limit rate 10/minute log prefix "celery-kit drop: " level info', "counter drop",
                 "type filter hook forward priority filter; policy accept;",
                 "type filter hook output priority filter; policy accept;"]:
        assert f"        {line}\n" in ruleset, line
    nd = [l for l in ruleset.splitlines() if l.strip().startswith("icmpv6 type {")][0]
    for kind in ("nd-neighbor-solicit", "nd-neighbor-advert", "nd-router-advert", "packet-too-big"):
        assert kind in nd
    # Refused packets are counted by the last rule of input, after every accept.
    body = ruleset[ruleset.index("chain input"):ruleset.index("chain forward")].splitlines()
    assert [l.strip() for l in body if l.strip() and not l.strip().startswith("#")][-2:] == ["counter drop", "}"]


def test_cluster_sets_hold_every_inventory_host_and_rabbitmq_sets_the_nodes():
    ruleset = text(INV, "node1")
    assert elements(ruleset, "cluster4") == ["192.0.2.11", "192.0.2.12", "192.0.2.13"]
    assert elements(ruleset, "rabbitmq4") == ["192.0.2.11", "192.0.2.12", "192.0.2.13"]
    assert elements(ruleset, "ssh4") == ["0.0.0.0/0"] and elements(ruleset, "ssh6") == ["::/0"]
    assert elements(ruleset, "cluster6") == [] and elements(ruleset, "clients4") == []


def test_each_host_gets_its_own_ssh_port():
    node2 = INV.host("node2")
    inv = dataclasses.replace(INV, hosts=tuple(
        dataclasses.replace(h, ssh=dataclasses.replace(h.ssh, port=2222)) if h is node2 else h for h in INV.hosts))
    assert "tcp dport 2222 ip saddr @ssh4 accept" in ports_rules(text(inv, "node2"))
    assert "tcp dport 22 ip saddr @ssh4 accept" in ports_rules(text(inv, "node3"))


def test_ports_follow_the_inventory():
    inv = inventory(rabbitmq={"amqp_port": 5673, "management_port": 15673}, redis={"port": 6380},
                    flower={"http_port": 8080, "https_port": 8443})
    rules = ports_rules(text(inv, "node1"))
    for rule in ["tcp dport 5673 ip saddr @clients4 accept", "tcp dport { 15673, 15692 } ip saddr @admin4 accept",
                 "tcp dport 6380 ip saddr @cluster4 accept", "tcp dport { 8080, 8443 } accept"]:
        assert rule in rules


# Declared networks ---------------------------------------------------------------------------

DECLARED = inventory(firewall={"clients": ("10.77.0.0/24", "2001:db8:c::/48"),
                               "admin": ("198.51.100.0/24", "2001:db8:a::/64"),
                               "ssh": ("192.0.2.0/24",)})


def test_client_and_admin_networks_are_in_their_sets_by_family():
    ruleset = text(DECLARED, "node1")
    assert (elements(ruleset, "clients4"), elements(ruleset, "clients6")) == (["10.77.0.0/24"], ["2001:db8:c::/48"])
    assert (elements(ruleset, "admin4"), elements(ruleset, "admin6")) == (["198.51.100.0/24"], ["2001:db8:a::/64"])
    assert (elements(ruleset, "ssh4"), elements(ruleset, "ssh6")) == (["192.0.2.0/24"], [])


def test_client_and_admin_networks_appear_in_their_set_and_nowhere_else():
    for name in ("node1", "node2", "node3"):
        ruleset = text(DECLARED, name)
        for network in ("10.77.0.0/24", "2001:db8:c::/48", "198.51.100.0/24", "2001:db8:a::/64"):
            assert ruleset.count(network) == 1, (name, network)
        clients = {r for r in ports_rules(ruleset) if "@clients" in r}
        admin = {r for r in ports_rules(ruleset) if "@admin" in r}
        assert {r.split(" ip")[0] for r in clients} == {"tcp dport 5672", "tcp dport 6379"} - (
            set() if name == "node1" else {"tcp dport 6379"})
        assert {r.split(" ip")[0] for r in admin} == {"tcp dport { 15672, 15692 }"}
        assert all("ip6 saddr @clients6" in r or "ip saddr @clients4" in r for r in clients)


def test_lab_inventory_lets_the_control_machine_reach_amqp_redis_and_management_only():
    ruleset = text(LAB, "node1")
    assert elements(ruleset, "clients4") == ["10.77.0.1"] and elements(ruleset, "admin4") == ["10.77.0.1"]
    reaching = {r.split(" ip")[0] for r in ports_rules(ruleset) if "@clients4" in r or "@admin4" in r}
    assert reaching == {"tcp dport 5672", "tcp dport 6379", "tcp dport { 15672, 15692 }"}


@pytest.mark.parametrize("inv", [INV, LAB, SENTINEL, DECLARED], ids=["fixture", "lab", "sentinel", "declared"])
def test_no_rule_opens_broker_redis_or_clustering_to_everyone(inv):
    private = ("5672", "6379", "26379", "26380", "4369", "25672", "15672", "15692")
    for h in inv.hosts:
        ruleset = text(inv, h.name)
        for rule in ports_rules(ruleset):
            if any(re.search(rf"\b{p}\b", rule.split(" ip")[0]) for p in private):
                assert re.search(r" ip6? saddr @(cluster|clients|rabbitmq|admin|flower)[46] accept$", rule), rule
        for name in re.findall(r"set (\w+) {", ruleset):
            if not name.startswith("ssh"):
                assert not {"0.0.0.0/0", "::/0"} & set(elements(ruleset, name)), (h.name, name)


# Sentinel, Flower apart, IPv6 and DNS names ----------------------------------------------

def test_sentinel_port_on_every_sentinel_host_from_cluster_and_clients():
    for name in ("node1", "node2", "node3"):          # node3: rabbitmq only, runs a sentinel
        rules = ports_rules(text(SENTINEL, name))
        assert [r for r in rules if "26380" in r] == [
            "tcp dport 26380 ip saddr @cluster4 accept", "tcp dport 26380 ip6 saddr @cluster6 accept",
            "tcp dport 26380 ip saddr @clients4 accept", "tcp dport 26380 ip6 saddr @clients6 accept"]
    assert "6379" not in " ".join(ports_rules(text(SENTINEL, "node3")))
    assert "tcp dport 6379 ip saddr @cluster4 accept" in ports_rules(text(SENTINEL, "node2"))   # replication
    assert "26379" not in text(INV, "node1")


def test_a_flower_host_without_rabbitmq_reaches_the_management_api_only():
    inv = with_hosts(INV, ("node1", "192.0.2.11", ["rabbitmq", "redis"]),
                     ("node4", "2001:db8::14", ["flower", "worker"]))
    ruleset = text(inv, "node1")
    assert elements(ruleset, "flower6") == ["2001:db8::14"] and elements(ruleset, "flower4") == []
    assert [r for r in ports_rules(ruleset) if "@flower" in r] == [
        "tcp dport 15672 ip saddr @flower4 accept", "tcp dport 15672 ip6 saddr @flower6 accept"]
    assert elements(text(INV, "node1"), "flower4") is None        # Flower on a node: loopback
    assert ports_rules(text(inv, "node4"))[-1] == "tcp dport { 80, 443 } accept"


def test_dns_names_are_resolved_once_into_both_families(monkeypatch):
    inv = with_hosts(INV, ("node3", "node3.example.internal", ["rabbitmq", "worker"]))
    answers = [(socket.AF_INET, 1, 6, "", ("192.0.2.13", 0)),
               (socket.AF_INET6, 1, 6, "", ("2001:db8::13", 0, 0, 0)),
               (socket.AF_INET6, 1, 6, "", ("fe80::13%eth0", 0, 0, 2))]
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: answers + answers[:1])
    resolved = FW.Firewall().prepare(FakeCtx(inv), {})
    assert resolved["node3.example.internal"] == ["192.0.2.13", "2001:db8::13", "fe80::13"]
    assert resolved["192.0.2.11"] == ["192.0.2.11"]
    ruleset = text(inv, "node1", resolved)
    assert elements(ruleset, "rabbitmq6") == ["2001:db8::13", "fe80::13"]
    assert "192.0.2.13" in elements(ruleset, "cluster4")
    assert FW.Firewall().prepare(FakeCtx(inventory(firewall={"enabled": False})), {}) == {}


def test_an_unresolvable_name_is_named():
    with pytest.raises(DeployFailed, match="cannot resolve inventory address 'no-such-host.invalid'"):
        FW.addresses_of("no-such-host.invalid")
    assert FW.addresses_of("2001:DB8::1") == ["2001:db8::1"]


def test_sets_drop_duplicates_and_networks_another_one_covers():
    assert FW.nft_sets("c", ["10.0.0.0/8", "10.77.0.1/32", "10.0.0.0/8", "192.0.2.11", "2001:db8::/32",
                             "2001:db8::1", "::1"]) == {
        "c4": ["10.0.0.0/8", "192.0.2.11"], "c6": ["2001:db8::/32", "::1"]}


# The plan ------------------------------------------------------------------------------------

def wanted(name="node1") -> tuple:
    return FW.ruleset(INV, INV.host(name), AS_IS)


def facts(name="node1", drift=False, loaded=True, enabled=True, mode=0o644) -> dict:
    text, digest = wanted(name)
    f = managed(FW.PATH, text + ("# edited\n" if drift else ""))
    return {"files": {FW.PATH: F.FileState("root", "root", mode, f.sha256)},
            "units": {FW.UNIT: {"Id": FW.UNIT, "UnitFileState": "enabled" if enabled else "disabled",
                                "ActiveState": "inactive"}},
            "loaded": digest if loaded else None}


def plan_for(name="node1", inv=INV, **kw):
    return FW.Firewall().plan(FakeCtx(inv), inv.host(name), facts(name, **kw), env(prepared=AS_IS))


def test_unchanged_loaded_and_enabled_is_an_empty_plan():
    assert whats(plan_for()) == []


def test_a_changed_ruleset_is_uploaded_checked_then_applied():
    plan = plan_for(drift=True)
    assert whats(plan) == ["file /etc/nftables.conf", "check /etc/nftables.conf (nft -c)",
                           "apply /etc/nftables.conf atomically (nft -f)"]
    upload, check, apply = plan.steps
    f = upload.file
    assert (f.path, f.owner, f.group, f.mode, f.secret) == ("/etc/nftables.conf", "root", "root", 0o644, False)
    assert f.content.decode() == wanted()[0] and upload.commands == ()
    assert argvs(check) == [("nft", "-c", "-f", "/etc/nftables.conf")]
    assert argvs(apply) == [("nft", "-f", "/etc/nftables.conf")]
    assert "systemctl" not in " ".join(a for s in plan.steps for c in s.commands for a in c.argv)


def test_a_missing_file_and_a_disabled_unit_also_enable_nftables_service():
    f = facts(enabled=False, loaded=False)
    f["files"] = {}
    plan = FW.Firewall().plan(FakeCtx(INV), INV.host("node1"), f, env(prepared=AS_IS))
    assert whats(plan)[0] == "file /etc/nftables.conf" and whats(plan)[-1] == "enable nftables.service"
    assert argvs(plan.steps[-1]) == [("systemctl", "enable", "nftables.service")]
    assert plan.notes == []
    assert whats(plan_for(enabled=False)) == ["enable nftables.service"]


def test_rules_that_are_not_running_are_checked_and_applied_again():
    plan = plan_for(loaded=False)
    assert whats(plan) == ["check /etc/nftables.conf (nft -c)", "apply /etc/nftables.conf atomically (nft -f)"]
    assert plan.notes == ["the running firewall rules are not /etc/nftables.conf's: loading it again"]


def test_only_the_mode_differs_is_a_chmod_and_no_reload():
    assert whats(plan_for(mode=0o600)) == ["attributes of /etc/nftables.conf"]


def test_disabled_firewall_reads_nothing_and_plans_nothing():
    inv = inventory(firewall={"enabled": False})
    stage = FW.Firewall()
    assert stage.hosts(inv) == [] and stage.facts(FakeCtx(inv), inv.host("node1")) == []
    assert whats(stage.plan(FakeCtx(inv), inv.host("node1"), {}, env())) == []
    assert stage.hosts(INV) == list(INV.hosts)


def test_the_file_replaces_only_the_kit_table_in_one_transaction_and_names_its_digest():
    text, digest = wanted()
    assert text.startswith("#!/usr/sbin/nft -f\n# Managed by celery-kit")
    assert "flush ruleset" not in "\n".join(l for l in text.splitlines() if not l.lstrip().startswith("#"))
    head = [l for l in text.splitlines() if l.startswith("table") or l.startswith("delete")]
    assert head == ["table inet celery_kit", "delete table inet celery_kit", "table inet celery_kit {"]
    assert f'comment "celery-kit ruleset {digest}"' in text and re.fullmatch(r"[0-9a-f]{16}", digest)
    assert wanted() == (text, digest)                                      # same inputs, same file
    assert FW.ruleset(LAB, LAB.host("node1"), AS_IS)[1] != digest


def test_the_running_table_digest_is_read_from_nft_list_table():
    out = recorded("nft-list-table.txt")        # nft 1.0.6 -t list table inet celery_kit
    assert FW.parse_loaded(out, 0) == "f7731287567ddb8d"
    assert FW.parse_loaded("Error: No such file or directory\n", 1) is None
    assert FW.loaded().argv == ("nft", "-t", "list", "table", "inet", "celery_kit")
    keys = [f.key for f in FW.Firewall().facts(FakeCtx(INV), INV.host("node1"))]
    assert keys == ["files", "units", "loaded"]
