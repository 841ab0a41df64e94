"""The engine on real hosts: idempotent deploys, dry-run diffs, targeted restarts,
secrets kept off command lines and output, the deploy lock, bad input touching nothing."""
import re
import stat

from conftest import INVENTORY, fab, summary_rows


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
    node2.run("sudo mkdir /run/celery-kit.lock && echo 'mallory@elsewhere pid 42' | "
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
    inv = tmp_path / "inventory.yaml"
    inv.write_text(INVENTORY.read_text().replace("10.77.0.13", "10.77.0.99")
                   .replace("key: .state/lab/id_ed25519", f"key: {INVENTORY.parent}/.state/lab/id_ed25519"))
    proc = fab("deploy", "--inventory", str(inv), check=False)
    assert proc.returncode == 1
    assert "cannot reach" in proc.stdout and "node3 (deploy@10.77.0.99:22)" in proc.stdout


def test_fab_verify_passes_against_the_lab(first_deploy):
    out = fab("verify").stdout
    assert re.search(r"\d+ passed", out) and "failed" not in out
