"""Hardening of the systemd units (systemd-analyze security exposure <= 2.5) and of the
nginx site for Flower. Templates are rendered here with a plain Jinja2 environment set up
like deploy/files.py's, so these tests do not depend on the stages that fill them in.

The exposure figures: measured here with the machine's systemd-analyze (CI installs systemd),
and recorded in tests/unit/recorded/systemd-analyze-security-<version>.txt for the versions
the kit supports (252: Debian 12, 257: Debian 13). A recording is only valid for the units
it was made from (sha256 in its header); re-record after changing a unit with
    python tests/unit/test_hardening.py record /path/to/systemd-analyze
"""
from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import jinja2
import pytest

ROOT = Path(__file__).resolve().parents[2]
REC = Path(__file__).parent / "recorded"
MAX_EXPOSURE = 2.5

_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader([str(ROOT / "deploy" / "templates"), str(ROOT / "systemd")]),
    undefined=jinja2.StrictUndefined, keep_trailing_newline=True, trim_blocks=True,
    lstrip_blocks=True, autoescape=False)


def render(template: str, **context) -> str:
    return _env.get_template(template).render(**context)


# systemd units ---------------------------------------------------------------------------

HOST = SimpleNamespace(name="node2", address="10.77.0.12")
CELERY = {"app": "app", "host": HOST, "env_file": "/etc/celery-kit/celery.env",
          "worker_env_file": "/etc/celery-kit/worker.env", "release_dir": "/opt/celery-kit",
          "stop_timeout": 1860}
FLOWER = {"app": "app", "host": HOST, "env_file": "/etc/celery-kit/flower.env",
          "state_dir": "/var/lib/flower", "release_dir": "/opt/celery-kit", "port": 5555,
          "prefix": "flower", "db": "/var/lib/flower/flower.db", "state_save_interval_ms": 60000}

# unit file name -> (template, context)
UNITS = {
    "celery-worker@.service": ("celery-worker@.service.j2", CELERY),
    "celery-beat.service": ("celery-beat.service.j2", CELERY),
    "flower.service": ("flower.service.j2", FLOWER),
}

# In every unit. Values are the whole assignment list of the directive, in order.
COMMON = {
    "NoNewPrivileges": ["yes"],
    "CapabilityBoundingSet": [""],
    "AmbientCapabilities": [""],
    "ProtectSystem": ["strict"],
    "ProtectHome": ["yes"],
    "PrivateTmp": ["yes"],
    "PrivateDevices": ["yes"],
    "PrivateUsers": ["yes"],
    "PrivateMounts": ["yes"],
    "ProtectKernelTunables": ["yes"],
    "ProtectKernelModules": ["yes"],
    "ProtectKernelLogs": ["yes"],
    "ProtectControlGroups": ["yes"],
    "ProtectClock": ["yes"],
    "ProtectHostname": ["yes"],
    "ProtectProc": ["invisible"],
    "RestrictNamespaces": ["yes"],
    "RestrictRealtime": ["yes"],
    "RestrictSUIDSGID": ["yes"],
    "LockPersonality": ["yes"],
    "MemoryDenyWriteExecute": ["yes"],
    "RestrictAddressFamilies": ["AF_INET AF_INET6 AF_UNIX"],
    "SystemCallArchitectures": ["native"],
    "SystemCallFilter": ["@system-service", "~@privileged @resources"],
    "SystemCallErrorNumber": ["EPERM"],
    "UMask": ["0077"],
    "RemoveIPC": ["yes"],
}

PER_UNIT = {
    "celery-worker@.service": {
        "User": ["celery"], "Group": ["celery"], "KillMode": ["mixed"], "KillSignal": ["SIGTERM"],
        "TimeoutStopSec": ["1860"], "ReadWritePaths": ["/var/lib/celery"], "ProcSubset": ["pid"],
        "EnvironmentFile": ["/etc/celery-kit/celery.env", "/etc/celery-kit/worker.env"],
        "WorkingDirectory": ["/var/lib/celery"], "Restart": ["always"]},
    "celery-beat.service": {
        "User": ["celery"], "Group": ["celery"], "StateDirectory": ["celery-beat"],
        "WorkingDirectory": ["/var/lib/celery-beat"], "ProcSubset": ["pid"],
        "EnvironmentFile": ["/etc/celery-kit/celery.env"], "Restart": ["always"]},
    "flower.service": {
        "User": ["flower"], "Group": ["flower"], "StateDirectory": ["flower"],
        "StateDirectoryMode": ["0750"], "ReadWritePaths": ["/var/lib/flower"],
        "WorkingDirectory": ["/var/lib/flower"], "EnvironmentFile": ["/etc/celery-kit/flower.env"],
        "Restart": ["always"]},
}

EXEC_START = {
    "celery-worker@.service": [
        "/opt/celery-kit/current/venv/bin/celery -A app worker", "--hostname=w%i@node2",
        "--concurrency=${CELERY_CONCURRENCY}", "--pool=${CELERY_POOL}", "--queues=${CELERY_QUEUES}"],
    "celery-beat.service": [
        "/opt/celery-kit/current/venv/bin/celery -A app beat",
        "--schedule=/var/lib/celery-beat/schedule"],
    "flower.service": [
        "/opt/celery-kit/current/venv/bin/celery -A app flower", "--address=127.0.0.1",
        "--port=5555", "--url_prefix=flower", "--persistent=True", "--db=/var/lib/flower/flower.db"],
}


def rendered_unit(name: str) -> str:
    template, context = UNITS[name]
    return render(template, **context)


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """{section: {key: [values in order]}}; continuation lines joined, comments dropped."""
    sections: dict[str, dict[str, list[str]]] = {}
    current, pending = None, ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith(("#", ";"))):
            continue
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        line, pending = pending + line, ""
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, sep, value = line.partition("=")
        assert sep and current is not None, f"not a unit file line: {raw!r}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


@pytest.mark.parametrize("name", UNITS)
def test_unit_has_the_hardening_directives(name):
    service = parse_unit(rendered_unit(name))["Service"]
    for key, values in {**COMMON, **PER_UNIT[name]}.items():
        assert service.get(key) == values, f"{name}: {key}= is {service.get(key)}, wanted {values}"


@pytest.mark.parametrize("name", UNITS)
def test_unit_keeps_its_command_and_network(name):
    service = parse_unit(rendered_unit(name))["Service"]
    (exec_start,) = service["ExecStart"]
    for part in EXEC_START[name]:
        assert part in exec_start
    # It must reach RabbitMQ/Redis (and nginx must reach Flower): no private network, and
    # no IP filtering, which needs cgroup BPF and may silently not apply on the hosts.
    for key in ("PrivateNetwork", "IPAddressDeny", "IPAddressAllow", "DynamicUser"):
        assert key not in service, f"{name}: {key}="


def test_flower_may_read_proc_stat_for_its_process_metrics():
    # ProcSubset=pid would hide /proc/stat; prometheus_client then drops every process_*
    # metric from Flower's /metrics.
    assert "ProcSubset" not in parse_unit(rendered_unit("flower.service"))["Service"]


def test_worker_warm_shutdown_settings_stay():
    unit = rendered_unit("celery-worker@.service")
    service = parse_unit(unit)["Service"]
    assert service["KillMode"] == ["mixed"] and service["TimeoutStopSec"] == ["1860"]
    assert parse_unit(unit)["Unit"]["PartOf"] == ["celery-workers.target"]


def overall_exposure(output: str) -> float:
    m = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", output)
    assert m, f"no overall exposure in:\n{output}"
    return float(m.group(1))


def analyze(systemd_analyze: str, name: str, tmp: Path) -> tuple[float, str]:
    """`systemd-analyze security --offline=true` on the rendered unit, saved under its real
    name (the template's name matters: celery-worker@.service is analysed as an instance)."""
    path = tmp / name
    path.write_text(rendered_unit(name))
    proc = subprocess.run([systemd_analyze, "security", "--offline=true", "--no-pager", str(path)],
                          capture_output=True, text=True, timeout=60)
    output = proc.stdout + proc.stderr
    return overall_exposure(output), output


@pytest.mark.parametrize("name", UNITS)
def test_unit_exposure_is_at_most_2_5(name, tmp_path):
    # No skip: CI installs systemd (a dependency of systemd-container), so a missing
    # systemd-analyze is a broken test machine, not a reason to stop checking.
    systemd_analyze = shutil.which("systemd-analyze")
    assert systemd_analyze, "systemd-analyze is not installed (apt-get install systemd)"
    exposure, output = analyze(systemd_analyze, name, tmp_path)
    assert exposure <= MAX_EXPOSURE, output


def read_recording(path: Path) -> dict[str, tuple[str, str]]:
    """{unit name: (sha256 of the unit it was made from, systemd-analyze output)}"""
    out, name = {}, None
    for line in path.read_text().splitlines(keepends=True):
        if m := re.match(r"^=== (\S+) sha256=([0-9a-f]{64})$", line.rstrip("\n")):
            name = m.group(1)
            out[name] = (m.group(2), "")
        elif name:
            out[name] = (out[name][0], out[name][1] + line)
    return out


RECORDINGS = sorted(REC.glob("systemd-analyze-security-*.txt"))


def test_both_supported_systemd_versions_are_recorded():
    assert [p.name for p in RECORDINGS] == ["systemd-analyze-security-252.txt",
                                            "systemd-analyze-security-257.txt"]


@pytest.mark.parametrize("path", RECORDINGS, ids=lambda p: p.stem)
def test_recorded_exposure_is_for_these_units_and_at_most_2_5(path):
    recording = read_recording(path)
    assert set(recording) == set(UNITS)
    for name, (sha, output) in recording.items():
        assert sha == hashlib.sha256(rendered_unit(name).encode()).hexdigest(), (
            f"{path.name} was recorded for another version of {name}: re-record it "
            f"(python tests/unit/test_hardening.py record /path/to/systemd-analyze)")
        assert overall_exposure(output) <= MAX_EXPOSURE, output


def record(systemd_analyze: str) -> Path:
    """Writes recorded/systemd-analyze-security-<version>.txt with the given binary (e.g. a
    wrapper running Debian 13's systemd-analyze) for the current units."""
    import tempfile
    version = subprocess.run([systemd_analyze, "--version"], capture_output=True, text=True,
                             check=True).stdout.split()[1]
    text = f"# systemd-analyze security --offline=true, systemd {version}; see test_hardening.py\n"
    with tempfile.TemporaryDirectory() as tmp:
        for name in UNITS:
            _, output = analyze(systemd_analyze, name, Path(tmp))
            sha = hashlib.sha256(rendered_unit(name).encode()).hexdigest()
            text += f"=== {name} sha256={sha}\n{output}"
    path = REC / f"systemd-analyze-security-{version}.txt"
    path.write_text(text)
    return path


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "record":
        sys.exit("usage: python tests/unit/test_hardening.py record /path/to/systemd-analyze")
    print(record(sys.argv[2]))
