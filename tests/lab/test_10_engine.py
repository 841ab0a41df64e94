"""The engine on real hosts: idempotent deploys, dry-run diffs, targeted restarts,
secrets kept off command lines and output, the deploy lock, bad input touching nothing."""
import re
import stat

from conftest import INVENTORY, fab, inventory_variant, summary_rows


def test_first_deploy_changed_every_host(first_deploy, inv):
    rows = summary_rows(first_deploy["output"])
    assert set(rows) == set(inv.names())
    assert all(state != "failed" for state, _ in rows.values()), first_deploy["output"][-2000:]


def test_second_deploy_reports_zero_changed_on_every_host(first_deploy, inv):
    out = fab("deploy").stdout
    assert summary_rows(out) == {name: ("unchanged", 0) for name in inv.names()}


def test_no_secret_on_any_command_line_during_deploy(first_deploy, secrets):
    for address, samples in first_deploy["ps"].items():
        assert len(samples) >= 10, f"too few ps samples on {address} to mean anything"
        seen = "\n".join(samples)
        assert "rabbitmqctl" in seen or "apt-get" in seen or "systemctl" in seen  # deploy was visible
        for name, value in secrets.items():
            assert value not in seen, f"{name} appeared in ps output on {address}"


def test_no_secret_in_deploy_output(first_deploy, secrets):
    for name, value in secrets.items():
        assert value not in first_deploy["output"], name


def test_secrets_file_is_private(inv, first_deploy):
    mode = stat.S_IMODE((inv.state_dir / "secrets.yaml").stat().st_mode)
    assert mode == 0o600


def main_pid(host, unit):
    return host.run(f"systemctl show -p MainPID --value {unit}").stdout.strip()


def test_hand_edit_shows_in_dry_run_and_deploy_restores_it_restarting_only_redis(first_deploy, hosts):
    node1, node2 = hosts["node1"], hosts["node2"]
    conf = "/etc/redis/redis.conf"
    before = {"redis": main_pid(node1, "redis-server"), "rabbit": main_pid(node1, "rabbitmq-server"),
              "worker": main_pid(node2, "celery-worker@1")}
    sha = node1.run(f"sudo sha256sum {conf}").stdout.split()[0]
    node1.run(f"echo 'maxclients 7' | sudo tee -a {conf} >/dev/null")

    dry = fab("deploy", "--dry-run").stdout
    wanted = re.findall(r"^\s+node\d+: would change (.+)$", dry, re.M)
    assert [w.strip() for w in wanted if not w.startswith("restart")] == [f"file {conf}"], dry
    assert "-maxclients 7" in dry                      # the unified diff: the hand edit goes away
    assert "DRY RUN: nothing was changed" in dry
    assert "maxclients 7" in node1.run(f"sudo tail -1 {conf}").stdout   # dry-run changed nothing

    out = fab("deploy").stdout
    assert summary_rows(out)["node1"][0] == "changed"
    assert summary_rows(out)["node2"] == ("unchanged", 0)
    assert node1.run(f"sudo sha256sum {conf}").stdout.split()[0] == sha
    assert main_pid(node1, "redis-server") != before["redis"]          # restarted
    assert main_pid(node1, "rabbitmq-server") == before["rabbit"]      # untouched
    assert main_pid(node2, "celery-worker@1") == before["worker"]      # untouched


def test_deploy_lock_blocks_a_second_deploy_until_unlocked(first_deploy, hosts):
    node2 = hosts["node2"]
    node2.run("sudo mkdir /run/celery-kit.lock && printf 'mallory@elsewhere pid 42\\ntoken 0a0b\\n' | "
              "sudo tee /run/celery-kit.lock/owner >/dev/null")
    try:
        proc = fab("deploy", check=False)
        assert proc.returncode != 0
        assert "node2: locked by mallory@elsewhere pid 42" in proc.stdout
        assert "fab unlock" in proc.stdout
        # All or nothing: the other hosts' locks were released again.
        assert not hosts["node1"].file("/run/celery-kit.lock").exists
    finally:
        fab("unlock")
    assert not node2.file("/run/celery-kit.lock").exists


def test_invalid_inventory_touches_no_host(tmp_path, first_deploy):
    bad = tmp_path / "inventory.yaml"
    bad.write_text(INVENTORY.read_text().replace("roles: [rabbitmq, worker]", "roles: [rabbitmq, wroker]"))
    proc = fab("deploy", "--inventory", str(bad), check=False)
    assert proc.returncode == 2
    assert f"{bad}:" in proc.stdout and "hosts.node3.roles[1]" in proc.stdout and "wroker" in proc.stdout
    assert "[base]" not in proc.stdout          # no stage ran


def test_unreachable_host_is_named(tmp_path, first_deploy):
    inv = inventory_variant(tmp_path, ("10.77.0.13", "10.77.0.99"))
    proc = fab("deploy", "--inventory", str(inv), check=False)
    assert proc.returncode == 1
    assert "cannot reach" in proc.stdout and "node3 (deploy@10.77.0.99:22)" in proc.stdout


def test_fab_verify_passes_against_the_lab(first_deploy):
    out = fab("verify").stdout
    assert re.search(r"\d+ passed", out) and "failed" not in out


# Host keys ---------------------------------------------------------------------------------

def test_a_changed_host_key_stops_the_deploy_before_anything_runs(tmp_path, first_deploy, hosts):
    from conftest import PROJECT
    from deploy.lab.keys import ensure_keypair
    # A known_hosts in which node2 "should" present another ed25519 key than it does.
    impostor = ensure_keypair(tmp_path / "impostor", "impostor").split()[1]
    lines = [line if not line.startswith("10.77.0.12,") else f"10.77.0.12,node2 ssh-ed25519 {impostor}"
             for line in (PROJECT / ".state/lab/known_hosts").read_text().splitlines()]
    kh = tmp_path / "known_hosts"
    kh.write_text("\n".join(lines) + "\n")
    inv = inventory_variant(tmp_path, (f"known_hosts: {PROJECT}/.state/lab/known_hosts", f"known_hosts: {kh}"))
    proc = fab("deploy", "--inventory", str(inv), check=False)
    assert proc.returncode == 1
    assert "node2 (10.77.0.12): the SSH host key CHANGED" in proc.stdout
    assert proc.stdout.count("SHA256:") >= 2 and "fab trust-hosts --replace node2" in proc.stdout
    assert "[base]" not in proc.stdout                          # nothing ran anywhere
    assert not hosts["node1"].file("/run/celery-kit.lock").exists


def test_an_unknown_host_is_refused_until_trust_hosts_records_it(tmp_path, first_deploy):
    from conftest import PROJECT
    kh = tmp_path / "known_hosts"
    inv = inventory_variant(tmp_path, (f"known_hosts: {PROJECT}/.state/lab/known_hosts", f"known_hosts: {kh}"))
    proc = fab("deploy", "--dry-run", "--inventory", str(inv), check=False)
    assert proc.returncode == 1 and "unknown SSH host key ssh-ed25519 SHA256:" in proc.stdout
    assert "fab trust-hosts" in proc.stdout and not kh.exists()
    out = fab("trust-hosts", "--inventory", str(inv)).stdout
    assert out.count("recorded ssh-ed25519 SHA256:") == 3
    # The keys recorded are the lab's own (the lab wrote them when it created the hosts).
    assert sorted(kh.read_text().split()[1::3]) == sorted(
        line.split()[1] for line in (PROJECT / ".state/lab/known_hosts").read_text().splitlines())
    assert fab("deploy", "--dry-run", "--inventory", str(inv)).returncode == 0


# Interrupted deploys converge --------------------------------------------------------------

def current(host):
    return host.run("readlink /opt/celery-kit/current").stdout.strip().rsplit("/", 1)[-1]


def worker_releases(celery_app, n=40):
    from app.tasks import release
    return {release.delay().get(timeout=60) for _ in range(n)}


def test_a_deploy_that_fails_after_the_switch_restarts_the_workers_next_time(first_deploy, hosts, celery_app):
    from conftest import PROJECT
    node2 = hosts["node2"]
    before = current(node2)
    marker = PROJECT / "app" / "interrupt_marker.py"
    marker.write_text("MARK = 'interrupted deploy'\n")
    node2.run("sudo systemctl mask --runtime celery-worker@1.service")   # its restart will fail
    try:
        proc = fab("deploy", check=False)
        assert proc.returncode == 1 and summary_rows(proc.stdout)["node2"][0] == "failed"
        new = current(node2)
        assert new != before                                     # switched, then the restart failed
        assert node2.file("/opt/celery-kit/.restart-pending").exists
        node2.run("sudo systemctl unmask --runtime celery-worker@1.service")
        again = fab("deploy").stdout
        assert "restart celery-worker@1.service, celery-worker@2.service" in again
        assert not node2.file("/opt/celery-kit/.restart-pending").exists
        assert worker_releases(celery_app) == {new}             # every worker runs the new code
    finally:
        node2.run("sudo systemctl unmask --runtime celery-worker@1.service")
        marker.unlink(missing_ok=True)
        fab("deploy")


def test_ctrl_c_stops_between_steps_releases_the_lock_and_the_next_deploy_finishes(first_deploy, hosts, celery_app):
    import signal
    import subprocess
    import sys
    from conftest import FAB, PROJECT
    marker = PROJECT / "app" / "interrupt_marker.py"
    marker.write_text("MARK = 'ctrl-c'\n")
    try:
        dry = fab("deploy", "--dry-run").stdout
        assert "switch current to release" in dry, "the code change must give a new release"
        proc = subprocess.Popen([*FAB, "deploy"], cwd=PROJECT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
        lines = []
        for line in proc.stdout:                   # until the first ping wait after a switch
            lines.append(line)
            if "waiting until w1@node2" in line:
                proc.send_signal(signal.SIGINT)
                break
        rest, _ = proc.communicate(timeout=300)
        out = "".join(lines) + rest
        sys.stdout.write(out)
        assert proc.returncode == 1
        assert "Ctrl-C: stopping after the step in progress" in out and "INTERRUPTED" in out
        assert "Traceback" not in out
        for h in hosts.values():
            assert not h.file("/run/celery-kit.lock").exists     # the lock was given back
        again = fab("deploy").stdout
        assert "workers (rolling)" in again
        assert not hosts["node2"].file("/opt/celery-kit/.restart-pending").exists
        assert worker_releases(celery_app) == {current(hosts["node2"])}
    finally:
        marker.unlink(missing_ok=True)
        fab("deploy")


def test_fabric_host_limit_runs_on_those_hosts_only(first_deploy):
    out = fab("-H", "node3", "deploy", "--dry-run").stdout
    assert "[base] node3" in out and "node1" not in out.split("DRY RUN")[0]
    bad = fab("-H", "node9", "deploy", check=False)
    assert bad.returncode == 1 and "-H: no host named node9" in bad.stdout
