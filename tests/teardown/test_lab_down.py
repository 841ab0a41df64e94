"""Runs last: the lab comes down without leaving anything behind, even after a crash."""

from deploy.lab import procs, runtime


def _leftovers(spec):
    return {
        "links": [l for l in procs.links_with_prefix("vb-" + spec.prefix)] +
                 ([spec.bridge] if procs.link_exists(spec.bridge) else []),
        "mounts": [m for m in procs.mount_points() if m.startswith(str(spec.state_dir))],
        "nspawn": procs.pids_matching("systemd-nspawn", "--machine " + spec.prefix),
        "proxy": procs.pids_matching("tinyproxy", str(spec.state_dir)),
        "host dirs": list((spec.state_dir / "hosts").glob("*")),
    }


def test_down_after_a_crash_leaves_nothing_and_is_safe_twice(lab):
    # Simulate a crash: SIGKILL one host's systemd-nspawn, orphaning its init and veth.
    pid = runtime.load_state(lab)["hosts"]["node2"]["pid"]
    procs.signal_pids([pid], 9)
    procs.wait_gone([pid], 5)
    assert procs.pids_with_root(lab.root_dir(lab.host(2))), "the orphaned init should still run"
    runtime.down(lab)
    assert _leftovers(lab) == {"links": [], "mounts": [], "nspawn": [], "proxy": [], "host dirs": []}
    assert runtime.down(lab) == []
    assert _leftovers(lab)["links"] == []
