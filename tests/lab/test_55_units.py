"""The hardened units on the hosts themselves: systemd-analyze security of the running
celery-worker@, celery-beat and flower units is at most 2.5 (the kit's units measure 1.1), and
the services work under that sandbox (every other lab test uses them)."""
import re

import pytest


def exposure(host, unit: str) -> float:
    out = host.run(f"systemd-analyze security {unit} --no-pager").stdout
    m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", out)
    assert m, out[-2000:]
    return float(m.group(1))


@pytest.mark.parametrize("name,unit", [("node2", "celery-worker@1.service"), ("node2", "celery-beat.service"),
                                       ("node1", "flower.service")])
def test_units_are_hardened(hosts, first_deploy, name, unit):
    host = hosts[name]
    assert host.run(f"systemctl is-active {unit}").stdout.strip() == "active"
    level = exposure(host, unit)
    print(f"{name} {unit}: exposure {level}")
    assert level <= 2.5


def test_workers_run_as_celery_in_their_sandbox(hosts, first_deploy, celery_app):
    from app.tasks import add
    host = hosts["node2"]
    pid = host.run("systemctl show -p MainPID --value celery-worker@1").stdout.strip()
    status = host.run(f"sudo cat /proc/{pid}/status").stdout
    assert re.search(r"^CapEff:\s+0+$", status, re.M) and re.search(r"^NoNewPrivs:\s+1$", status, re.M)
    assert add.delay(2, 2).get(timeout=30) == 4
