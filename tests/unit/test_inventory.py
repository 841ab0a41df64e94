"""The inventory loader: every rule reports file, line, key path and what is wrong; good files
give the model with defaults filled in. Pure: YAML files in tmp_path, no SSH."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import yaml

from deploy.inventory import (ROLES, SSH, Celery, Firewall, Flower, Host, Inventory,
                              InventoryError, Project, RabbitMQ, Redis, TopSSH, WorkerScale,
                              load_inventory)
from deploy.inventory.model import KIT_APP, settings_of
from deploy.inventory.validate import SECTIONS, TOP
from deploy.inventory.yamlload import load_yaml

PROJECT = Path(__file__).resolve().parents[2]
EXAMPLE = PROJECT / "examples" / "inventory.example.yaml"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
# The message of the generic rule every string meets (a line break or control character).
CONTROL = "must not contain a line break or control character, found {!r} at character {}"
NETWORK = ("must be an IPv4 or IPv6 network such as 10.0.0.0/8, 192.0.2.7 or 2001:db8::/32, "
           "got {!r}")
ADDRESS = "must be an IPv4/IPv6 address or a DNS host name, got {!r}"
PROXY_CHARS = ("must be a URL made only of letters, digits and -._~:/?#[]@!&()*+,=% (it is "
               "written into apt's configuration), found {!r} at character {}")
SENTINEL = ("redis on 2 hosts (node1, node2) runs Redis Sentinel on every host with role redis "
            "or rabbitmq, and a Sentinel majority needs at least 3 of them (with 2, losing one "
            "stops failover); found 2: node1, node2")

HOSTS = """\
hosts:
  node1:
    address: 10.0.0.1
    roles: [rabbitmq, redis, flower]
  node2:
    address: 10.0.0.2
    roles: [rabbitmq, worker, beat]
"""


def write(tmp_path: Path, text: str, name: str = "inventory.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def error_of(tmp_path: Path, text: str) -> InventoryError:
    with pytest.raises(InventoryError) as caught:
        load_inventory(str(write(tmp_path, text)))
    return caught.value


def line_of(text: str, fragment: str) -> int:
    """1-based line of the first line of text containing fragment."""
    return next(n for n, line in enumerate(text.splitlines(), 1) if fragment in line)


def assert_problem(err: InventoryError, key_path: str, line: int, word: str) -> str:
    prefix = f"{err.file}:{line}: {key_path}: "
    found = [p for p in err.problems if p.startswith(prefix)]
    assert found, f"no problem starting {prefix!r} in:\n{err}"
    assert any(word in p for p in found), f"{word!r} not in {found}"
    return found[0]


# (id, inventory text, key path, fragment of the line reported, word of what is wrong)
BAD = [
    ("unknown-top-key", HOSTS + "celry:\n  app: app\n", "celry", "celry:",
     "did you mean 'celery'?"),
    ("unknown-section-key", HOSTS + "rabbitmq:\n  mirror: 2\n", "rabbitmq.mirror", "mirror:",
     "did you mean 'mirrors'?"),
    ("unknown-host-key", HOSTS.replace("    address: 10.0.0.2", "    adress: 10.0.0.2"),
     "hosts.node2.adress", "adress", "did you mean 'address'?"),
    ("unknown-key-no-suggestion", HOSTS + "redis:\n  zzz: 1\n", "redis.zzz", "zzz",
     "known keys: port, maxmemory"),
    ("int-given-str", HOSTS + "celery:\n  instances: two\n", "celery.instances", "two",
     "expected an integer, got 'two' (str)"),
    ("bool-as-int", HOSTS + "redis:\n  port: true\n", "redis.port", "port: true",
     "expected an integer, got true (bool)"),
    ("str-as-bool", HOSTS + "redis:\n  appendonly: 'yes'\n", "redis.appendonly", "appendonly",
     "expected true or false, got 'yes' (str)"),
    ("section-not-mapping", HOSTS + "celery: [app]\n", "celery", "celery:", "expected a mapping"),
    ("roles-not-list", HOSTS.replace("[rabbitmq, worker, beat]", "worker"), "hosts.node2.roles",
     "roles: worker", "expected a list of strings"),
    ("missing-hosts", "celery:\n  app: app\n", "hosts", "celery:", "missing"),
    ("empty-hosts", "hosts: {}\n", "hosts", "hosts:", "non-empty mapping"),
    ("host-name", HOSTS.replace("node2:", "Node_2:"), "hosts.Node_2", "Node_2", "RFC 1123"),
    ("host-not-mapping", HOSTS + "  node3: 10.0.0.3\n", "hosts.node3", "node3",
     "expected a mapping with address and roles"),
    ("missing-address", HOSTS.replace("    address: 10.0.0.2\n", ""), "hosts.node2.address",
     "node2:", "missing"),
    ("bad-address", HOSTS.replace("10.0.0.2", "10.0.0.300"), "hosts.node2.address", "10.0.0.300",
     "IPv4/IPv6 address or a DNS host name"),
    ("duplicate-address", HOSTS.replace("10.0.0.2", "10.0.0.1   # as node1"),
     "hosts.node2.address", "# as node1", "also the address of host 'node1'"),
    ("missing-roles", HOSTS.replace("    roles: [rabbitmq, worker, beat]\n", ""),
     "hosts.node2.roles", "node2:", "missing"),
    ("empty-roles", HOSTS + "  node3:\n    address: n3.example\n    roles: []\n",
     "hosts.node3.roles", "roles: []", "must not be empty"),
    ("unknown-role", HOSTS.replace("[rabbitmq, worker, beat]", "[rabbitmq, workr, beat]"),
     "hosts.node2.roles[1]", "workr", "did you mean 'worker'?"),
    ("role-twice", HOSTS.replace("[rabbitmq, worker, beat]", "[rabbitmq, worker, worker]"),
     "hosts.node2.roles[2]", "[rabbitmq, worker, worker]", "listed twice"),
    ("redis-twice-without-sentinel-majority",
     HOSTS.replace("[rabbitmq, worker, beat]", "[rabbitmq, worker, redis]"),
     "hosts.node2.roles", "[rabbitmq, worker, redis]", SENTINEL),
    ("no-redis", "hosts:\n  node1:\n    address: 10.0.0.1\n    roles: [rabbitmq]\n", "hosts",
     "hosts:", "redis must be on at least one host, found 0"),
    ("beat-twice", HOSTS + "  node3:\n    address: n3.example\n    roles: [worker, beat]\n",
     "hosts.node3.roles", "[worker, beat]", "beat must be on at most one host"),
    ("flower-twice", HOSTS + "  node3:\n    address: n3.example\n    roles: [flower]\n",
     "hosts.node3.roles", "[flower]", "found 2: node1, node3"),
    ("needs-redis", HOSTS.replace("[rabbitmq, redis, flower]", "[rabbitmq, flower]"),
     "hosts.node2.roles", "[rabbitmq, worker, beat]",
     "role 'worker' on node2 needs a host with role 'redis'; none has it"),
    ("needs-worker", HOSTS.replace("[rabbitmq, worker, beat]", "[rabbitmq]"),
     "hosts.node1.roles", "[rabbitmq, redis, flower]",
     "role 'flower' on node1 needs a host with role 'worker'; none has it"),
    ("no-rabbitmq", "hosts:\n  node1:\n    address: 10.0.0.1\n    roles: [redis]\n", "hosts",
     "hosts:", "no host has role 'rabbitmq'"),
    ("worker-section-without-role", HOSTS.replace(
        "[rabbitmq, redis, flower]\n", "[rabbitmq, redis, flower]\n    worker: {instances: 1}\n"),
     "hosts.node1.worker", "worker: {", "only hosts with role 'worker'"),
    ("worker-concurrency", HOSTS + "    worker: {concurrency: 0}\n",
     "hosts.node2.worker.concurrency", "concurrency: 0", "between 1 and 256"),
    ("worker-instances", HOSTS + "    worker:\n      instances: 65\n",
     "hosts.node2.worker.instances", "instances: 65", "between 0 and 64"),
    ("ssh-port", "ssh:\n  port: 70000\n" + HOSTS, "ssh.port", "70000", "between 1 and 65535"),
    ("ssh-user", "ssh:\n  user: Deploy User\n" + HOSTS, "ssh.user", "Deploy", "Unix user name"),
    ("host-key-policy", "ssh:\n  host_key_policy: accept\n" + HOSTS, "ssh.host_key_policy",
     "accept", "must be one of strict, accept-new, got 'accept' (did you mean 'accept-new'?)"),
    ("known-hosts-empty", "ssh:\n  known_hosts: ' '\n" + HOSTS, "ssh.known_hosts",
     "known_hosts", "must not be empty"),
    ("known-hosts-per-host", HOSTS + "    ssh:\n      known_hosts: kh\n",
     "hosts.node2.ssh.known_hosts", "known_hosts: kh",
     "only in the top-level ssh: section: one known_hosts file per inventory"),
    ("host-key-policy-per-host", HOSTS + "    ssh: {port: 22, host_key_policy: accept-new}\n",
     "hosts.node2.ssh.host_key_policy", "host_key_policy",
     "only in the top-level ssh: section: one host key policy per inventory, for its one "
     "known_hosts file"),
    ("host-ssh-key", HOSTS + "    ssh:\n      prot: 2222\n", "hosts.node2.ssh.prot", "prot",
     "did you mean 'port'?"),
    ("apt-proxy", HOSTS + "apt:\n  proxy: ftp://10.0.0.9\n", "apt.proxy", "ftp://",
     "http:// or https:// URL"),
    ("queue-mode", HOSTS + "rabbitmq:\n  queue_mode: classic\n", "rabbitmq.queue_mode",
     "classic", "mirrored, quorum"),
    ("mirrored-with-delivery-limit", HOSTS + "rabbitmq:\n  queue_mode: mirrored\n"
     "  delivery_limit: 3\n", "rabbitmq.delivery_limit", "delivery_limit: 3",
     "delivery_limit only applies to quorum queues; classic mirrored queues redeliver a "
     "message without limit"),
    ("delivery-limit-low", HOSTS + "rabbitmq:\n  delivery_limit: 0\n", "rabbitmq.delivery_limit",
     "delivery_limit: 0", "must be between 1 and 1000, got 0"),
    ("delivery-limit-high", HOSTS + "rabbitmq:\n  delivery_limit: 1001\n",
     "rabbitmq.delivery_limit", "1001", "must be between 1 and 1000, got 1001"),
    ("dead-letter-name", HOSTS + "rabbitmq:\n  dead_letter_queue: dead letters\n",
     "rabbitmq.dead_letter_queue", "dead letters",
     "must be a queue name (letters, digits, '_', '.', ':', '-'), got 'dead letters'"),
    ("dead-letter-consumed", HOSTS + "celery:\n  queues: [celery, dlq]\n"
     "rabbitmq:\n  dead_letter_queue: dlq\n", "rabbitmq.dead_letter_queue", "dead_letter_queue",
     "'dlq' is also in celery.queues; the workers would consume the messages dead-lettered "
     "for failing them"),
    ("quorum-with-mirrors", HOSTS + "rabbitmq:\n  queue_mode: quorum\n  mirrors: 2\n",
     "rabbitmq.mirrors", "mirrors: 2", "only applies to queue_mode mirrored"),
    ("quorum-with-ha-sync", HOSTS + "rabbitmq:\n  ha_sync_mode: manual\n  queue_mode: quorum\n",
     "rabbitmq.ha_sync_mode", "ha_sync_mode", "quorum queues replicate"),
    ("mirrors-over-hosts", HOSTS + "rabbitmq:\n  mirrors: 3\n", "rabbitmq.mirrors", "mirrors: 3",
     "more than the 2 host(s) with role 'rabbitmq' (node1, node2)"),
    ("mirrors-word", HOSTS + "rabbitmq:\n  mirrors: most\n", "rabbitmq.mirrors", "most",
     "'majority', 'all' or a number"),
    ("mirrors-zero", HOSTS + "rabbitmq:\n  mirrors: 0\n", "rabbitmq.mirrors", "mirrors: 0",
     "at least 1"),
    ("ha-sync-mode", HOSTS + "rabbitmq:\n  ha_sync_mode: auto\n", "rabbitmq.ha_sync_mode",
     "auto", "automatic, manual"),
    ("partition-handling", HOSTS + "rabbitmq:\n  partition_handling: pause\n",
     "rabbitmq.partition_handling", "pause", "pause_minority, autoheal, ignore"),
    ("vhost-empty", HOSTS + "rabbitmq:\n  vhost: ''\n", "rabbitmq.vhost", "vhost", "empty"),
    ("vhost-chars", HOSTS + "rabbitmq:\n  vhost: '/celery;rm'\n", "rabbitmq.vhost", "vhost",
     "must be an optional '/' followed by letters, digits, '_', '.' or '-' (such as /celery), "
     "got '/celery;rm'"),
    ("vhost-inner-slash", HOSTS + "rabbitmq:\n  vhost: /a/b\n", "rabbitmq.vhost", "/a/b",
     "must be an optional '/' followed by letters, digits, '_', '.' or '-' (such as /celery), "
     "got '/a/b'"),
    ("guest-user", HOSTS + "rabbitmq:\n  admin_user: guest\n", "rabbitmq.admin_user", "guest",
     "must not be 'guest'"),
    ("user-chars", HOSTS + "rabbitmq:\n  app_user: 'celery app'\n", "rabbitmq.app_user",
     "celery app", "letters, digits"),
    ("same-users", HOSTS + "rabbitmq:\n  app_user: admin\n", "rabbitmq.app_user",
     "app_user: admin", "are both 'admin'"),
    ("same-ports", HOSTS + "rabbitmq:\n  amqp_port: 5672\n  management_port: 5672\n",
     "rabbitmq.management_port", "management_port", "are both 5672"),
    ("consumer-timeout-min", HOSTS + "rabbitmq:\n  consumer_timeout: 30\n",
     "rabbitmq.consumer_timeout", "consumer_timeout", "at least 60"),
    ("consumer-timeout-limit", HOSTS + "rabbitmq:\n  consumer_timeout: 600\n"
     "celery:\n  time_limit: 600\n", "rabbitmq.consumer_timeout", "consumer_timeout",
     "greater than celery.time_limit (600)"),
    ("redis-port", HOSTS + "redis:\n  port: 0\n", "redis.port", "port: 0", "between 1 and 65535"),
    ("maxmemory", HOSTS + "redis:\n  maxmemory: lots\n", "redis.maxmemory", "lots", "a size"),
    ("maxmemory-policy", HOSTS + "redis:\n  maxmemory_policy: allkeys-lur\n",
     "redis.maxmemory_policy", "lur", "did you mean 'allkeys-lru'?"),
    ("appendfsync", HOSTS + "redis:\n  appendfsync: sometimes\n", "redis.appendfsync",
     "sometimes", "always, everysec, no"),
    ("redis-db", HOSTS + "redis:\n  db: 16\n", "redis.db", "db: 16", "between 0 and 15"),
    ("sentinel-port", HOSTS + "redis:\n  sentinel_port: 65536\n", "redis.sentinel_port",
     "65536", "must be between 1 and 65535, got 65536 (a TCP port)"),
    ("sentinel-port-clash", HOSTS + "redis:\n  sentinel_port: 6379\n", "redis.sentinel_port",
     "sentinel_port", "sentinel_port and port are both 6379; each listener needs its own port"),
    ("master-name", HOSTS + "redis:\n  master_name: 'my master'\n", "redis.master_name",
     "my master", "must be letters, digits, '_', '.' or '-', got 'my master'"),
    ("celery-app", HOSTS + "celery:\n  app: my-app\n", "celery.app", "my-app", "dotted Python"),
    ("queues-empty", HOSTS + "celery:\n  queues: []\n", "celery.queues", "queues", "empty"),
    ("queues-twice", HOSTS + "celery:\n  queues:\n    - a\n    - b\n    - a  # again\n",
     "celery.queues[2]", "# again", "listed twice"),
    ("queue-name", HOSTS + "celery:\n  queues: ['a b']\n", "celery.queues[0]", "a b",
     "queue name"),
    ("pool", HOSTS + "celery:\n  pool: gevent\n", "celery.pool", "gevent",
     "prefork, threads, solo"),
    ("concurrency", HOSTS + "celery:\n  concurrency: 257\n", "celery.concurrency", "257",
     "between 1 and 256"),
    ("prefetch", HOSTS + "celery:\n  prefetch_multiplier: -1\n", "celery.prefetch_multiplier",
     "-1", "at least 0"),
    ("time-limit", HOSTS + "celery:\n  time_limit: 0\n", "celery.time_limit", "time_limit",
     "at least 1"),
    ("soft-limit", HOSTS + "celery:\n  time_limit: 100\n  soft_time_limit: 100\n",
     "celery.soft_time_limit", "soft_time_limit", "less than time_limit (100)"),
    ("stop-timeout", HOSTS + "celery:\n  time_limit: 100\n  stop_timeout: 100\n",
     "celery.stop_timeout", "stop_timeout", "SIGKILL"),
    ("stop-timeout-default-limit", HOSTS + "celery:\n  stop_timeout: 1000\n",
     "celery.stop_timeout", "stop_timeout", "greater than time_limit (1800)"),
    ("result-expires", HOSTS + "celery:\n  result_expires: -5\n", "celery.result_expires",
     "-5", "at least 0"),
    ("serializer", HOSTS + "celery:\n  serializer: pickle\n", "celery.serializer", "pickle",
     "msgpack, json"),
    ("loglevel", HOSTS + "celery:\n  loglevel: verbose\n", "celery.loglevel", "verbose",
     "DEBUG, INFO"),
    ("flower-ports", HOSTS + "flower:\n  port: 8080\n  https_port: 8080\n", "flower.https_port",
     "https_port", "are both 8080"),
    ("flower-port-default-clash", HOSTS + "flower:\n  http_port: 5555\n", "flower.http_port",
     "http_port", "are both 5555"),
    ("url-prefix", HOSTS + "flower:\n  url_prefix: /a b/\n", "flower.url_prefix", "a b",
     "URL path"),
    ("flower-users-empty", HOSTS + "flower:\n  users: []\n", "flower.users", "users", "empty"),
    ("flower-users-twice", HOSTS + "flower:\n  users: [ops, ops]\n", "flower.users[1]", "ops",
     "listed twice"),
    ("flower-user-chars", HOSTS + "flower:\n  users: ['o/ps']\n", "flower.users[0]", "o/ps",
     "letters, digits"),
    ("tls-half", HOSTS + "flower:\n  tls_key: key.pem\n", "flower.tls_key", "tls_key",
     "given without tls_cert"),
    ("flower-server-name", HOSTS + "flower:\n  server_name: flower_ops.example\n",
     "flower.server_name", "flower_ops", ADDRESS.format("flower_ops.example")),
    ("releases-keep", HOSTS + "releases:\n  keep: 1\n", "releases.keep", "keep: 1",
     "rollback needs the previous release"),
    ("releases-keep-max", HOSTS + "releases:\n  keep: 51\n", "releases.keep", "keep: 51",
     "between 2 and 50"),
    ("state-dir", HOSTS + "state_dir: 3\n", "state_dir", "state_dir", "expected a string"),
    # firewall:
    ("firewall-enabled", HOSTS + "firewall:\n  enabled: 1\n", "firewall.enabled", "enabled",
     "expected true or false, got 1 (int)"),
    ("firewall-not-list", HOSTS + "firewall:\n  clients: 10.0.0.0/8\n", "firewall.clients",
     "clients", "expected a list of strings, got '10.0.0.0/8' (str)"),
    ("firewall-host-bits", HOSTS + "firewall:\n  clients: [10.0.0.5/24]\n",
     "firewall.clients[0]", "10.0.0.5/24", "10.0.0.5/24 has host bits set; a network starts at "
     "its first address (did you mean 10.0.0.0/24?)"),
    ("firewall-ipv6-host-bits", HOSTS + "firewall:\n  admin: ['2001:db8::1/64']\n",
     "firewall.admin[0]", "2001:db8::1/64", "2001:db8::1/64 has host bits set; a network starts "
     "at its first address (did you mean 2001:db8::/64?)"),
    ("firewall-not-network", HOSTS + "firewall:\n  admin:\n    - 10.0.0.0/8\n    - office\n",
     "firewall.admin[1]", "office", NETWORK.format("office")),
    ("firewall-prefix", HOSTS + "firewall:\n  ssh: [10.0.0.0/33]\n", "firewall.ssh[0]",
     "10.0.0.0/33", NETWORK.format("10.0.0.0/33")),
    ("firewall-zone-index", HOSTS + "firewall:\n  ssh: ['fe80::%eth0/64']\n", "firewall.ssh[0]",
     "fe80", NETWORK.format("fe80::%eth0/64")),
    ("firewall-ssh-empty", HOSTS + "firewall:\n  ssh: []\n", "firewall.ssh", "ssh: []",
     "must not be empty"),
    ("firewall-twice", HOSTS + "firewall:\n  clients: [10.0.0.0/8, 10.0.0.0/8]\n",
     "firewall.clients[1]", "clients", "'10.0.0.0/8' is listed twice (also as [0])"),
    ("firewall-unknown-key", HOSTS + "firewall:\n  client: []\n", "firewall.client", "client",
     "unknown key 'client' (did you mean 'clients'?)"),
    # project:
    ("project-path-empty", HOSTS + "project:\n  path: ''\n", "project.path", "path",
     "must not be empty"),
    ("project-lock-type", HOSTS + "project:\n  lock: [a]\n", "project.lock", "lock",
     "expected a string, got a list"),
    # Input hardening: values end up in config files and commands on the hosts.
    ("apt-proxy-injection", HOSTS + "apt:\n  proxy: 'http://10.77.0.1:3128/\";APT::Update::"
     "Pre-Invoke {\"id\";};\"'\n", "apt.proxy", "Pre-Invoke", PROXY_CHARS.format('"', 23)),
    ("address-zone-index", HOSTS.replace("10.0.0.2", "'fe80::2%eth0;x'"), "hosts.node2.address",
     "fe80", ADDRESS.format("fe80::2%eth0;x")),
    ("newline-in-string", HOSTS + 'celery:\n  app: "app\\nimport os"\n', "celery.app",
     "app:", CONTROL.format("\n", 4)),
    ("newline-in-list-item", HOSTS + 'celery:\n  queues: [celery, "a\\r"]\n',
     "celery.queues[1]", "queues", CONTROL.format("\r", 2)),
    ("control-char-in-choice", HOSTS + 'redis:\n  appendfsync: "no\\e"\n', "redis.appendfsync",
     "appendfsync", CONTROL.format("\x1b", 3)),
    ("line-separator", HOSTS + 'flower:\n  users: ["ops\\L"]\n', "flower.users[0]", "users",
     CONTROL.format("\u2028", 4)),
    ("path-ssh-key", 'ssh:\n  key: "keys/id\\n"\n' + HOSTS, "ssh.key", "key:",
     CONTROL.format("\n", 8)),
    ("path-known-hosts", 'ssh:\n  known_hosts: "k\\th"\n' + HOSTS, "ssh.known_hosts",
     "known_hosts", CONTROL.format("\t", 2)),
    ("path-host-ssh-key", HOSTS + '    ssh: {key: "\\0id"}\n', "hosts.node2.ssh.key", "ssh:",
     CONTROL.format("\x00", 1)),
    ("path-tls-cert", HOSTS + 'flower:\n  tls_cert: "c\\npem"\n  tls_key: k\n',
     "flower.tls_cert", "tls_cert", CONTROL.format("\n", 2)),
    ("path-project", HOSTS + 'project:\n  path: "app\\n"\n', "project.path", "path:",
     CONTROL.format("\n", 4)),
    ("path-lock", HOSTS + 'project:\n  lock: "requirements.lock\\r"\n', "project.lock",
     "lock:", CONTROL.format("\r", 18)),
    ("path-state-dir", HOSTS + 'state_dir: "state\\x7f"\n', "state_dir", "state_dir",
     CONTROL.format("\x7f", 6)),
]


@pytest.mark.parametrize("text,key_path,fragment,word", [c[1:] for c in BAD],
                         ids=[c[0] for c in BAD])
def test_bad_inventory_names_file_line_key_and_problem(tmp_path, text, key_path, fragment, word):
    err = error_of(tmp_path, text)
    assert err.file == str(tmp_path / "inventory.yaml")
    assert_problem(err, key_path, line_of(text, fragment), word)


def test_duplicate_host_names_report_both_lines(tmp_path):
    text = HOSTS + "  node1:\n    address: 10.0.0.3\n    roles: [worker]\n"
    err = error_of(tmp_path, text)
    problem = assert_problem(err, "hosts.node1", 8, "duplicate key 'node1'")
    assert "lines 2 and 8" in problem


def test_duplicate_keys_are_caught_in_any_mapping(tmp_path):
    text = HOSTS + "celery:\n  app: app\n  instances: 1\n  app: other\n"
    err = error_of(tmp_path, text)
    assert "lines 9 and 11" in assert_problem(err, "celery.app", 11, "duplicate key 'app'")


def test_tls_files_must_exist_relative_to_the_inventory(tmp_path):
    text = HOSTS + "flower:\n  tls_cert: certs/f.pem\n  tls_key: certs/f.key\n"
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "f.pem").write_text("cert")
    err = error_of(tmp_path, text)
    assert err.problems == [f"{tmp_path / 'inventory.yaml'}:10: flower.tls_key: file not found: "
                            f"{tmp_path / 'certs' / 'f.key'}"]


def test_all_problems_are_reported_together_in_file_order(tmp_path):
    text = HOSTS + "redis:\n  db: 99\ncelery:\n  instances: two\nreleases:\n  keep: 0\n"
    err = error_of(tmp_path, "ssh:\n  port: 0\n" + text)
    assert len(err.problems) == 4
    assert [p.split(": ")[1] for p in err.problems] == [
        "ssh.port", "redis.db", "celery.instances", "releases.keep"]
    lines = str(err).splitlines()
    assert lines[0] == f"invalid inventory {tmp_path / 'inventory.yaml'}: 4 problem(s)"
    assert lines[1:] == err.problems


def test_yaml_syntax_error_stops_with_its_line(tmp_path):
    err = error_of(tmp_path, HOSTS + "celery:\n  app: [unclosed\n  pool: solo\n")
    assert len(err.problems) == 1       # nothing after a syntax error can be trusted
    # PyYAML notices the missing "]" at line 10 and says where the list started.
    assert err.problems[0].startswith(f"{tmp_path / 'inventory.yaml'}:10: YAML syntax error")
    assert "started on line 9" in err.problems[0]


def test_missing_file(tmp_path):
    with pytest.raises(InventoryError) as caught:
        load_inventory(tmp_path / "nope.yaml")
    assert caught.value.problems == [f"{tmp_path / 'nope.yaml'}: file not found"]


@pytest.mark.parametrize("text,what", [("- node1\n- node2\n", "got a list"),
                                       ("", "the file is empty"), ("just text\n", "(str)")])
def test_top_level_must_be_a_mapping(tmp_path, text, what):
    err = error_of(tmp_path, text)
    assert len(err.problems) == 1
    assert err.problems[0].startswith(f"{err.file}:1: top level: expected a mapping")
    assert what in err.problems[0]


@pytest.mark.parametrize("char", ['"', "'", "\\", " ", ";", "{", "}", "`", "$", "<", "|"])
def test_apt_proxy_refuses_characters_that_could_leave_its_quotes(tmp_path, char):
    proxy = f"http://proxy:3128/a{char}b"
    text = HOSTS + f"apt:\n  proxy: {json.dumps(proxy)}\n"    # JSON is YAML's double quotes
    err = error_of(tmp_path, text)
    assert err.problems == [f"{err.file}:9: apt.proxy: {PROXY_CHARS.format(char, 20)}"]


def test_apt_proxy_takes_url_safe_characters(tmp_path):
    proxy = "https://user:p%40ss@[2001:db8::1]:3128/path?x=1&y=(2)*+,!~"
    inv = load_inventory(write(tmp_path, HOSTS + f"apt:\n  proxy: '{proxy}'\n"))
    assert inv.apt.proxy == proxy


@pytest.mark.parametrize("vhost", ["/celery", "celery", "/a.b_c-1"])
def test_vhost_forms(tmp_path, vhost):
    text = HOSTS + f"rabbitmq:\n  vhost: '{vhost}'\n"
    assert load_inventory(write(tmp_path, text)).rabbitmq.vhost == vhost


def test_project_must_be_a_pep517_directory_with_its_lock(tmp_path):
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "setup.py").write_text("")
    err = error_of(tmp_path, HOSTS + "project:\n  path: proj\n")
    assert err.problems == [f"{err.file}:9: project.path: not a PEP 517 project: "
                            f"{tmp_path / 'proj' / 'pyproject.toml'} not found"]
    err = error_of(tmp_path, HOSTS + "project:\n  path: nowhere\n")
    assert err.problems == [f"{err.file}:9: project.path: directory not found: "
                            f"{tmp_path / 'nowhere'}"]
    (tmp_path / "proj" / "pyproject.toml").write_text("[project]\nname = 'p'\n")
    err = error_of(tmp_path, HOSTS + "project:\n  path: proj\n  lock: locks/all.txt\n")
    assert err.problems == [f"{err.file}:10: project.lock: file not found: "
                            f"{tmp_path / 'proj' / 'locks' / 'all.txt'} (the project's fully "
                            "pinned requirements)"]


def test_project_default_lock_missing_is_reported_at_the_section(tmp_path):
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "pyproject.toml").write_text("")
    err = error_of(tmp_path, HOSTS + "project:\n  path: proj\n")
    # The default lock has no line of its own: the problem points at the project: section.
    assert err.problems == [f"{err.file}:8: project.lock: file not found: "
                            f"{tmp_path / 'proj' / 'requirements.lock'} (the project's fully "
                            "pinned requirements)"]


def test_sentinel_needs_three_redis_or_rabbitmq_hosts(variant):
    # node3 loses rabbitmq: Sentinel would run on node1 and node2 only.
    path = variant(("roles: [rabbitmq, worker]\n", "roles: [worker]\n"),
                   source="inventory.sentinel.yaml")
    with pytest.raises(InventoryError) as caught:
        load_inventory(path)
    text = path.read_text()
    line = line_of(text, "[rabbitmq, redis, worker, beat]")
    assert caught.value.problems == [f"{path}:{line}: hosts.node2.roles: {SENTINEL}"]


def test_settings_of_the_other_queue_mode_are_fine_when_the_mode_is_automatic(tmp_path):
    text = HOSTS + "rabbitmq:\n  mirrors: 2\n  ha_sync_mode: manual\n  delivery_limit: 9\n"
    rabbitmq = load_inventory(write(tmp_path, text)).rabbitmq
    assert (rabbitmq.queue_mode, rabbitmq.mirrors, rabbitmq.delivery_limit) == (None, 2, 9)


# -- good inventories ---------------------------------------------------------------------

def test_repo_inventory_loads_and_has_hosts_with_roles():
    """The shipped inventory.yaml must stay valid; what hosts it names is the lab's business."""
    inv = load_inventory(PROJECT / "inventory.yaml")
    assert inv.path == PROJECT / "inventory.yaml"
    assert inv.hosts and all(h.roles <= set(ROLES) and h.roles for h in inv.hosts)


def test_fixture_inventory(fixture_inventory):
    inv = fixture_inventory
    assert inv.path == FIXTURES / "inventory.yaml"
    assert inv.names() == ("node1", "node2", "node3")
    assert [h.address for h in inv.hosts] == ["192.0.2.11", "192.0.2.12", "192.0.2.13"]
    assert inv.host("node1").roles == {"rabbitmq", "redis", "flower"}
    assert inv.host("node2").roles == {"rabbitmq", "worker", "beat"}
    assert inv.host("node3").roles == {"rabbitmq", "worker"}
    assert [h.name for h in inv.with_role("worker")] == ["node2", "node3"]
    assert inv.host("node1").worker is None
    assert inv.host("node3").worker == WorkerScale(instances=2, concurrency=2)
    key = FIXTURES / "keys" / "id_ed25519"          # need not exist to load
    assert inv.ssh == TopSSH(user="deploy", port=22, key=key)
    assert all(h.ssh == SSH(user="deploy", port=22, key=key) for h in inv.hosts)
    assert inv.known_hosts_path == FIXTURES / ".state" / "known_hosts"
    assert inv.project == Project(path=FIXTURES / "project",
                                  lock=FIXTURES / "project" / "requirements.lock")
    assert inv.celery == Celery(app="tasks")
    assert [h.name for h in inv.redis_hosts()] == ["node1"] and inv.sentinel_hosts() == ()
    assert inv.rabbitmq.mirror_count(len(inv.with_role("rabbitmq"))) == 2
    assert (inv.redis, inv.flower, inv.firewall) == (Redis(), Flower(), Firewall())
    assert inv.state_dir == FIXTURES / ".state"


def test_sentinel_variant_runs_sentinel_on_every_redis_and_rabbitmq_host():
    inv = load_inventory(FIXTURES / "inventory.sentinel.yaml")
    assert [h.name for h in inv.redis_hosts()] == ["node1", "node2"]     # node1: first master
    assert [h.name for h in inv.sentinel_hosts()] == ["node1", "node2", "node3"]
    assert (inv.redis.sentinel_port, inv.redis.master_name) == (26380, "results")


def test_sentinel_hosts_keep_file_order_and_skip_other_hosts(variant):
    # Redis on node3 and node4: Sentinel on the rabbitmq hosts too, not on worker-only node5.
    inv = load_inventory(variant(
        ("[rabbitmq, redis, flower]", "[rabbitmq, flower]"),
        ("    roles: [rabbitmq, worker]\n", "    roles: [rabbitmq, worker, redis]\n"
         "  node4: {address: 192.0.2.14, roles: [redis]}\n"
         "  node5: {address: 192.0.2.15, roles: [worker]}\n")))
    assert [h.name for h in inv.redis_hosts()] == ["node3", "node4"]
    assert [h.name for h in inv.sentinel_hosts()] == ["node1", "node2", "node3", "node4"]
    assert (inv.redis.sentinel_port, inv.redis.master_name) == (26379, "celery-kit")


def _full_example(tmp_path: Path) -> Path:
    """The example with its commented-out TLS and project lines switched on (they must name
    real files)."""
    text = EXAMPLE.read_text()
    for key in ("tls_cert", "tls_key", "path", "lock"):
        assert text.count(f"  # {key}:") == 1, key
        text = text.replace(f"  # {key}:", f"  {key}:")
    (tmp_path / "certs").mkdir()
    for name in ("flower.pem", "flower.key"):
        (tmp_path / "certs" / name).write_text("x")
    (tmp_path / "myproject").mkdir()
    for name in ("pyproject.toml", "requirements.lock"):
        (tmp_path / "myproject" / name).write_text("")
    return write(tmp_path, text, EXAMPLE.name)


def test_example_loads_in_place_and_in_full(tmp_path):
    assert load_inventory(EXAMPLE).names() == ("node1", "node2", "node3")
    inv = load_inventory(_full_example(tmp_path))
    assert (inv.flower.tls_cert, inv.flower.tls_key) == (tmp_path / "certs/flower.pem",
                                                         tmp_path / "certs/flower.key")
    assert inv.project == Project(path=tmp_path / "myproject",
                                  lock=tmp_path / "myproject" / "requirements.lock")


def test_example_documents_every_key(tmp_path):
    """Every key the loader accepts appears in the example (a new setting must be documented)."""
    lines = load_yaml(_full_example(tmp_path), "example").lines
    in_hosts = {p[2:] for p in lines if p[:1] == ("hosts",) and len(p) > 2}
    top_level = {(k,) for k in TOP} | {(s, k) for s, cls in SECTIONS.items()
                                       for k in settings_of(cls)}
    per_host = ({(k,) for k in settings_of(Host)} | {("ssh", k) for k in settings_of(SSH)}
                | {("worker", k) for k in settings_of(WorkerScale)})
    assert sorted(top_level - lines.keys()) == []
    assert sorted(per_host - in_hosts) == []


def test_every_example_value_arrives_in_the_model(tmp_path):
    path = _full_example(tmp_path)
    raw = yaml.safe_load(path.read_text())
    inv = load_inventory(path)
    for section in SECTIONS:
        for key, value in raw[section].items():
            got = getattr(getattr(inv, section), key)
            if key in ("key", "known_hosts", "tls_cert", "tls_key", "path"):
                value = tmp_path / value
            elif key == "lock":
                value = tmp_path / raw["project"]["path"] / value
            elif isinstance(value, list):
                value = tuple(value)
            assert got == value, f"{section}.{key}"
    for host in inv.hosts:
        spec = raw["hosts"][host.name]
        assert (host.address, host.roles) == (spec["address"], frozenset(spec["roles"]))
    node1, node2, node3 = inv.hosts
    assert node1.ssh == SSH(user="admin", port=2222, key=Path("~/.ssh/node1_ed25519").expanduser())
    assert (node2.worker.instances, node2.worker.concurrency) == (4, 8)
    assert node3.worker == WorkerScale(instances=2, concurrency=2)
    assert inv.state_dir == tmp_path / ".state"
    assert inv.known_hosts_path == tmp_path / "keys" / "known_hosts"


def test_defaults_fill_everything_not_given(tmp_path):
    inv = load_inventory(write(tmp_path, HOSTS))
    assert inv.ssh == TopSSH(user="deploy", port=22, key=None, known_hosts=None,
                             host_key_policy="strict")
    assert inv.known_hosts_path == tmp_path / ".state" / "known_hosts"
    assert (inv.rabbitmq, inv.redis, inv.flower) == (RabbitMQ(), Redis(), Flower())
    assert inv.rabbitmq.consumer_timeout is None and inv.rabbitmq.mirrors == "majority"
    assert inv.rabbitmq.queue_mode is None and inv.rabbitmq.delivery_limit == 5
    assert inv.rabbitmq.dead_letter_queue == "celery.dead-letter"
    assert (inv.redis.sentinel_port, inv.redis.master_name) == (26379, "celery-kit")
    assert inv.flower.server_name is None
    assert inv.celery.queues == ("celery",) and inv.celery.stop_timeout == 1800 + 60
    assert inv.releases.keep == 5 and inv.apt.proxy is None
    assert inv.firewall == Firewall(enabled=True, clients=(), admin=(), ssh=("0.0.0.0/0", "::/0"))
    # The kit's own example package, wherever the kit is checked out.
    assert inv.project == Project(path=KIT_APP, lock=KIT_APP / "requirements.lock")
    assert KIT_APP == PROJECT / "app" and (KIT_APP / "pyproject.toml").is_file()
    assert inv.state_dir == tmp_path / ".state"
    assert inv.host("node2").worker == WorkerScale(instances=2, concurrency=2)
    assert [h.name for h in inv.redis_hosts()] == ["node1"] and inv.sentinel_hosts() == ()


def test_host_keys_are_set_once_for_the_inventory(tmp_path):
    text = "ssh:\n  known_hosts: ~/kh\n  host_key_policy: accept-new\n" + HOSTS
    inv = load_inventory(write(tmp_path, text))
    assert inv.ssh.known_hosts == Path("~/kh").expanduser() == inv.known_hosts_path
    assert inv.ssh.host_key_policy == "accept-new"
    # A host's own SSH has no host-key settings to disagree with the inventory's.
    assert type(inv.host("node1").ssh) is SSH and inv.host("node1").ssh == SSH()


def test_firewall_networks_are_stored_with_their_prefix(tmp_path):
    text = HOSTS + ("firewall:\n  enabled: false\n"
                    "  clients: [10.77.0.1, 10.0.0.0/8, 10.77.0.1/32]   # one network twice\n"
                    "  admin: ['2001:DB8::/32', '::1']\n  ssh: [192.0.2.0/255.255.255.0]\n")
    firewall = load_inventory(write(tmp_path, text)).firewall
    assert firewall == Firewall(enabled=False, clients=("10.77.0.1/32", "10.0.0.0/8"),
                                admin=("2001:db8::/32", "::1/128"), ssh=("192.0.2.0/24",))
    assert load_inventory(write(tmp_path, HOSTS + "firewall:\n  admin: []\n")).firewall.admin == ()


def test_flower_server_name(tmp_path):
    for name in ("flower.example.org", "192.0.2.80", "2001:db8::80"):
        text = HOSTS + f"flower:\n  server_name: '{name}'\n"
        assert load_inventory(write(tmp_path, text)).flower.server_name == name


@pytest.mark.parametrize("mode,version,effective", [
    (None, "3.10.8-1.1+deb12u2", "mirrored"),
    (None, "4.0.5-6+deb13u2", "quorum"),
    (None, "1:4.1.0-1", "quorum"),           # an epoch is not the major version
    (None, "10.0.0-1", "quorum"),
    (None, None, "mirrored"),
    (None, "", "mirrored"),
    (None, "unknown", "mirrored"),
    ("mirrored", "4.0.5-6+deb13u2", "mirrored"),   # the file's choice stands (and fails)
    ("quorum", "3.10.8-1.1+deb12u2", "quorum"),
])
def test_effective_queue_mode(mode, version, effective):
    assert RabbitMQ(queue_mode=mode).effective_queue_mode(version) == effective


def test_explicit_mirrored_on_rabbitmq_4_is_explained():
    rabbitmq = RabbitMQ(queue_mode="mirrored")
    assert rabbitmq.queue_mode_problem("4.0.5-6+deb13u2", "/srv/inventory.yaml") == (
        "RabbitMQ 4.0.5 has no classic mirrored queues (removed in 4.0); write "
        "`queue_mode: quorum` in the rabbitmq: section of /srv/inventory.yaml (or leave "
        "queue_mode out: it is chosen from the RabbitMQ version)")
    assert rabbitmq.queue_mode_problem("3.10.8-1.1+deb12u2", "i.yaml") is None
    assert rabbitmq.queue_mode_problem(None, "i.yaml") is None
    for mode in (None, "quorum"):
        assert RabbitMQ(queue_mode=mode).queue_mode_problem("4.0.5-6+deb13u2", "i.yaml") is None


def test_paths_resolve_relative_to_the_inventory_file(tmp_path, monkeypatch):
    (tmp_path / "site").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    text = "state_dir: ../state\nssh:\n  key: keys/id\n" + HOSTS + "    ssh: {key: ~/id2}\n"
    inv = load_inventory(write(tmp_path / "site", text))
    assert inv.path == tmp_path / "site" / "inventory.yaml"
    assert inv.ssh.key == tmp_path / "site" / "keys" / "id"
    assert inv.host("node2").ssh.key == tmp_path / "home" / "id2"
    assert inv.state_dir == tmp_path / "state"


def test_host_ssh_is_merged_over_the_top_level(tmp_path):
    text = "ssh: {user: ops, port: 2200, key: k}\n" + HOSTS + "    ssh: {port: 22}\n"
    inv = load_inventory(write(tmp_path, text))
    assert inv.host("node1").ssh == SSH(user="ops", port=2200, key=tmp_path / "k")
    assert inv.host("node2").ssh == SSH(user="ops", port=22, key=tmp_path / "k")


def test_host_worker_overrides_one_value_and_inherits_the_other(tmp_path):
    text = HOSTS + "    worker: {instances: 0}\ncelery: {concurrency: 6}\n"
    assert load_inventory(write(tmp_path, text)).host("node2").worker == WorkerScale(0, 6)


def test_values_are_normalised(tmp_path):
    text = HOSTS + ("redis: {maxmemory: 0}\ncelery: {loglevel: warning}\n"
                    "flower: {url_prefix: /ops/flower/}\nrabbitmq: {queue_mode: quorum}\n")
    inv = load_inventory(write(tmp_path, text))
    assert inv.redis.maxmemory == "0"
    assert inv.celery.loglevel == "WARNING"
    assert inv.flower.url_prefix == "ops/flower"
    assert inv.rabbitmq.queue_mode == "quorum"


def test_yaml_merge_keys_override_without_being_duplicates(tmp_path):
    # The mapping's own address wins over the merged one, wherever "<<" stands.
    text = HOSTS + "  node3:\n    address: 10.0.0.3\n    <<: {address: 10.0.0.9, roles: [worker]}\n"
    inv = load_inventory(write(tmp_path, text))
    assert inv.host("node3").address == "10.0.0.3" and inv.host("node3").roles == {"worker"}


def test_mirror_count():
    assert [RabbitMQ(mirrors="majority").mirror_count(n) for n in (1, 2, 3, 5)] == [1, 2, 2, 3]
    assert RabbitMQ(mirrors="all").mirror_count(3) == 3
    assert RabbitMQ(mirrors=2).mirror_count(5) == 2


def test_model_is_immutable_and_hashable(tmp_path):
    inv = load_inventory(write(tmp_path, HOSTS))
    with pytest.raises(dataclasses.FrozenInstanceError):
        inv.celery.concurrency = 9
    with pytest.raises(dataclasses.FrozenInstanceError):
        inv.host("node1").address = "x"
    assert isinstance(inv.hosts, tuple) and isinstance(inv.host("node1").roles, frozenset)
    assert hash(inv) == hash(load_inventory(write(tmp_path, HOSTS)))


def test_lookups_fail_loudly(tmp_path):
    inv = load_inventory(write(tmp_path, HOSTS))
    with pytest.raises(KeyError, match="no host named 'node9'.*node1, node2"):
        inv.host("node9")
    with pytest.raises(ValueError, match="unknown role 'workers'"):
        inv.with_role("workers")
    assert inv.host("node2").has("beat") and not inv.host("node1").has("worker")
    assert set(ROLES) == {"rabbitmq", "redis", "worker", "beat", "flower"}
    assert isinstance(inv, Inventory)
