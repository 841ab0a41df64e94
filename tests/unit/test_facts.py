"""Fact parsers on output recorded from a Debian 12 lab host."""
from pathlib import Path

from deploy import facts as F

REC = Path(__file__).parent / "recorded"


def test_systemctl_show():
    units = F.parse_systemctl_show((REC / "systemctl_show.txt").read_text())
    assert set(units) == {"ssh.service", "nothere.service", "systemd-networkd.service"}
    assert units["ssh.service"]["ActiveState"] == "active"
    assert units["ssh.service"]["UnitFileState"] == "enabled"
    assert units["nothere.service"]["LoadState"] == "not-found"


def test_dpkg_query_lists_installed_only():
    pk = F.parse_dpkg_query((REC / "dpkg_query.txt").read_text())
    assert pk == {"openssh-server": "1:9.2p1-2+deb12u10", "python3": "3.11.2-1+b1",
                  "sudo": "1.9.13p3-1+deb12u4"}
    assert F.parse_dpkg_query("redis-server\t5:7.0.15-1\trc \n") == {}   # removed, config left


def test_getent_passwd():
    assert F.parse_getent_passwd((REC / "getent_passwd.txt").read_text()) == {"deploy", "root"}


def test_files():
    out = "/etc/hosts\troot root 644\t" + "a" * 64 + "\n/etc/x\tredis redis 640\t" + "b" * 64 + "\n"
    st = F.parse_files(out)
    assert st["/etc/hosts"] == F.FileState("root", "root", 0o644, "a" * 64)
    assert st["/etc/x"].mode == 0o640 and "/etc/missing" not in st


def test_json_and_failures():
    assert F.parse_json('[{"name": "/"}]', 0) == [{"name": "/"}]
    assert F.parse_json("Error: unable to perform an operation", 69) is None
    assert F.parse_json("not json", 0) is None


def test_files_on_recorded_output():
    st = F.parse_files((REC / "files.txt").read_text())
    assert set(st) == {"/etc/hosts", "/etc/redis/redis.conf", "/var/lib/rabbitmq/.erlang.cookie"}
    cookie = st["/var/lib/rabbitmq/.erlang.cookie"]     # (its hash zeroed in the recording)
    assert (cookie.owner, cookie.group, cookie.mode) == ("rabbitmq", "rabbitmq", 0o400)
    conf = st["/etc/redis/redis.conf"]
    assert (conf.owner, conf.group, conf.mode) == ("redis", "redis", 0o640)
    assert all(len(s.sha256) == 64 for s in st.values())
