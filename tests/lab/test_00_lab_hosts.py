"""The lab hosts behave like real servers: own address, systemd, sshd, sudo, names."""
import pytest

from deploy.lab import procs, runtime
from deploy.lab.ready import try_login, wait_ready


def test_every_host_runs_systemd_and_sshd(lab_hosts):
    for name, host in lab_hosts.items():
        assert host.check_output("hostname") == name
        assert host.run("systemctl is-system-running").stdout.strip() == "running", name
        assert host.service("ssh").is_running
        assert host.user().name == "deploy"


def test_each_host_has_its_own_root_and_address(lab, lab_hosts):
    ids = {host.file("/etc/machine-id").content_string.strip() for host in lab_hosts.values()}
    assert len(ids) == len(lab_hosts)
    for h in lab.hosts():
        assert h.address in lab_hosts[h.name].check_output("ip -o -4 addr show dev host0")


def test_hosts_resolve_each_other_by_name(lab, lab_hosts):
    for host in lab_hosts.values():
        for other in lab.hosts():
            assert host.check_output(f"getent hosts {other.name}").split()[0] == other.address


def test_deploy_user_has_passwordless_sudo(lab_hosts):
    for host in lab_hosts.values():
        assert host.run("sudo -n id -u").stdout.strip() == "0"


def test_no_route_out_but_the_package_proxy(lab, lab_hosts):
    host = lab_hosts["node1"]
    assert "default" not in host.check_output("ip route")
    apt = host.run(f"sudo -n apt-get -o Acquire::http::Proxy={lab.proxy_url} "
                   "-o Acquire::Retries=0 update")
    assert apt.rc == 0, apt.stderr
    # The proxy refuses anything but Debian's archive.
    denied = host.run(f"python3 -c \"import urllib.request as u; "
                      f"u.install_opener(u.build_opener(u.ProxyHandler({{'http': '{lab.proxy_url}'}}))); "
                      f"u.urlopen('http://pypi.org/simple/', timeout=5)\"")
    assert denied.rc != 0 and "403" in denied.stderr


def test_up_again_changes_nothing(lab):
    before = runtime.load_state(lab)["hosts"]
    assert set(runtime.up(lab).values()) == {"unchanged"}
    assert runtime.load_state(lab)["hosts"] == before


def test_stop_and_start_one_host(lab, lab_hosts):
    runtime.stop_one(lab, "node3")
    states = {name: st for name, _, st in runtime.status(lab)}
    assert states["node3"] == "stopped"
    assert states["node1"].startswith("running, login ") and states["node2"].startswith("running, login ")
    assert not procs.link_exists(lab.host(3).veth)
    assert runtime.start_one(lab, "node3") == "started"
    # A NEW login right after start is quick (seen before: 34 s on a just-started host).
    login = try_login(lab.host(3).address, "deploy", lab.key_path, lab.known_hosts)
    assert login is not None and login < 5
    from conftest import lab_host
    fresh = lab_host(lab, lab.host(3).address)
    assert fresh.run("systemctl is-system-running").stdout.strip() == "running"


def test_unknown_host_is_a_clear_error(lab):
    with pytest.raises(runtime.LabError, match="no host named 'node9'"):
        runtime.stop_one(lab, "node9")


def test_readiness_restarts_a_unit_that_failed_once(lab, lab_hosts):
    """What lab.up does when an early-boot unit failed in a container."""
    host = lab_hosts["node2"]
    unit = "/etc/systemd/system/ck-once.service"
    host.run(f"printf '[Service]\\nType=oneshot\\nRemainAfterExit=yes\\nExecStart=/bin/sh -c "
             f"\"test -e /run/ck-once || {{ touch /run/ck-once; exit 1; }}\"\\n' | sudo tee {unit} >/dev/null "
             "&& sudo systemctl daemon-reload && sudo rm -f /run/ck-once")
    try:
        host.run("sudo systemctl start ck-once")
        assert host.run("systemctl is-system-running").stdout.strip() == "degraded"
        h = lab.host(2)
        ready = wait_ready(lab.root_dir(h), h.address, "deploy", lab.key_path, lab.known_hosts, 30)
        assert ready.ok and "ck-once.service" in ready.repaired, ready.describe()
        assert host.run("systemctl is-active ck-once").stdout.strip() == "active"
    finally:
        host.run(f"sudo systemctl stop ck-once; sudo rm -f {unit} /run/ck-once; sudo systemctl daemon-reload; "
                 "sudo systemctl reset-failed")


def test_a_host_refusing_logins_is_repaired_through_the_container(lab, lab_hosts):
    """The boot failure seen in CI: /run/nologin left behind, every non-root login refused.
    Readiness notices that a real login fails and repairs it without SSH."""
    h = lab.host(1)
    lab_hosts["node1"].run("sudo touch /run/nologin")
    assert try_login(h.address, "deploy", lab.key_path, lab.known_hosts) is None
    rows = {name: st for name, _, st in runtime.status(lab)}
    assert rows["node1"] == "running, login FAILED"           # lab.status checks a real login
    ready = wait_ready(lab.root_dir(h), h.address, "deploy", lab.key_path, lab.known_hosts, 30)
    assert ready.ok and "/run/nologin" in ready.repaired, ready.describe()
    assert try_login(h.address, "deploy", lab.key_path, lab.known_hosts) is not None


def test_lab_host_keys_are_recorded_and_checked(lab):
    import paramiko
    keys = paramiko.HostKeys(str(lab.known_hosts))
    for h in lab.hosts():
        assert keys.lookup(h.address) is not None and keys.lookup(h.name) is not None
