"""The lab's pure parts: names, addresses, files and exact command lines."""
from pathlib import Path

from deploy.lab import spec as s

SPEC = s.LabSpec(state_dir=Path("/p/.state/lab"), cache_dir=Path("/c"), count=3)


def test_hosts_get_consecutive_addresses_on_the_bridge_subnet():
    hosts = SPEC.hosts()
    assert [(h.name, h.machine, h.address) for h in hosts] == [
        ("node1", "ck-node1", "10.77.0.11"), ("node2", "ck-node2", "10.77.0.12"),
        ("node3", "ck-node3", "10.77.0.13")]
    assert SPEC.gateway == "10.77.0.1"
    assert SPEC.proxy_url == "http://10.77.0.1:3128"


def test_veth_name_fits_ifnamsiz_and_marker_does_not_match_longer_names():
    h = s.LabSpec(state_dir=Path("/p"), cache_dir=Path("/c"), prefix="verylongprefix-").host(1)
    assert len(h.veth) == 15 and h.veth.startswith("vb-verylong")
    assert SPEC.host(1).marker == "--machine ck-node1 "
    assert SPEC.host(1).marker not in " ".join(s.nspawn_argv(SPEC, SPEC.host(10)))


def test_network_file_sorts_before_nspawn_default_and_sets_static_address():
    files = s.host_files(SPEC, SPEC.host(2), "ssh-ed25519 AAAA lab", "ab" * 16)
    assert "etc/systemd/network/10-lab.network" in files
    assert sorted(["10-lab.network", "80-container-host0.network"])[0] == "10-lab.network"
    net = files["etc/systemd/network/10-lab.network"]
    assert "Name=host0" in net and "Address=10.77.0.12/24" in net and "DHCP" not in net
    assert files["etc/hostname"] == "node2\n"
    assert files["home/deploy/.ssh/authorized_keys"] == "ssh-ed25519 AAAA lab\n"


def test_hosts_file_lets_every_host_resolve_every_other():
    text = s.hosts_file(SPEC, SPEC.host(1))
    for h in SPEC.hosts():
        assert f"{h.address}\t{h.name}" in text.splitlines()


def test_nspawn_command_line():
    assert s.nspawn_argv(SPEC, SPEC.host(1)) == [
        "systemd-nspawn", "--quiet", "--keep-unit", "--register=no", "--boot",
        "-D", "/p/.state/lab/hosts/node1/root", "--machine", "ck-node1", "--hostname", "node1",
        "--network-bridge", "ckbr0", "--resolv-conf=off", "--link-journal=no",
        "--console=read-only"]


def test_overlay_mount_uses_cached_image_as_lower_layer():
    argv = s.overlay_mount_argv(SPEC, SPEC.host(3))
    assert argv[:5] == ["mount", "-t", "overlay", "overlay", "-o"]
    assert argv[5] == (f"lowerdir=/c/base-bookworm-{s.image_recipe_hash()},"
                       "upperdir=/p/.state/lab/hosts/node3/upper,workdir=/p/.state/lab/hosts/node3/work")
    assert argv[6] == "/p/.state/lab/hosts/node3/root"


def test_bridge_commands():
    assert s.bridge_up_argvs(SPEC) == [
        ["ip", "link", "add", "ckbr0", "type", "bridge"],
        ["ip", "addr", "add", "10.77.0.1/24", "dev", "ckbr0"],
        ["ip", "link", "set", "ckbr0", "up"]]


def test_releases_have_their_own_cached_image():
    trixie = s.LabSpec(state_dir=Path("/p"), cache_dir=Path("/c"), release="trixie")
    assert SPEC.release == "bookworm"
    assert SPEC.base_image() == Path(f"/c/base-bookworm-{s.image_recipe_hash('bookworm')}")
    assert trixie.base_image() == Path(f"/c/base-trixie-{s.image_recipe_hash('trixie')}")
    assert s.image_recipe_hash("bookworm") != s.image_recipe_hash("trixie")
    assert s.debootstrap_argv(Path("/t"), "trixie")[-3:] == ["trixie", "/t", s.MIRROR]
    assert s.chroot_setup_argv(Path("/t"), "trixie")[-2:] == ["setup", "trixie"]


def test_unknown_release_is_refused():
    import pytest
    with pytest.raises(ValueError, match="unknown release 'sid'"):
        s.LabSpec(state_dir=Path("/p"), cache_dir=Path("/c"), release="sid")


def test_release_from_the_environment(monkeypatch):
    monkeypatch.setenv("CELERYKIT_LAB_RELEASE", "trixie")
    assert s.default_spec(Path("/p")).release == "trixie"
    assert s.default_spec(Path("/p"), release="bookworm").release == "bookworm"
    monkeypatch.delenv("CELERYKIT_LAB_RELEASE")
    assert s.default_spec(Path("/p")).release == "bookworm"


def test_each_host_gets_its_own_cgroup_and_a_v2_hierarchy():
    assert s.LabSpec(state_dir=Path("/p"), cache_dir=Path("/c")).cgroup(SPEC.host(2)) == "celery-kit-lab/ck-node2"
    assert s.NSPAWN_ENV == {"SYSTEMD_NSPAWN_UNIFIED_HIERARCHY": "1"}


def test_image_hash_changes_with_the_recipe(monkeypatch):
    before = s.image_recipe_hash()
    monkeypatch.setattr(s, "BASE_PACKAGES", s.BASE_PACKAGES + ("vim",))
    assert s.image_recipe_hash() != before
    assert "--include=" + ",".join(s.BASE_PACKAGES) in s.debootstrap_argv(Path("/t"))


def test_proxy_only_serves_the_lab_and_only_debian():
    conf = s.tinyproxy_conf(SPEC)
    assert "Listen 10.77.0.1" in conf and "Allow 10.77.0.0/24" in conf
    assert "FilterDefaultDeny Yes" in conf and "ConnectPort 0" in conf
    assert s.TINYPROXY_FILTER.splitlines() == ["^deb\\.debian\\.org$", "^security\\.debian\\.org$"]


def test_ssh_config_names_every_host():
    cfg = s.ssh_config(SPEC)
    assert cfg.count("Host node") == 3 and "HostName 10.77.0.13" in cfg
    assert "IdentityFile /p/.state/lab/id_ed25519" in cfg
    assert "UserKnownHostsFile /p/.state/lab/known_hosts" in cfg and "StrictHostKeyChecking yes" in cfg
