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



# nginx site for Flower -------------------------------------------------------------------

MOZILLA_INTERMEDIATE_WITHOUT_DHE = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305")


def site(**overrides) -> str:
    context = {"host": SimpleNamespace(name="node1", address="10.77.0.11"), "port": 5555,
               "prefix": "flower", "http_port": 80, "https_port": 443, "https_port_suffix": "",
               "tls_cert": "/etc/celery-kit/tls/flower.crt",
               "tls_key": "/etc/celery-kit/tls/flower.key",
               "htpasswd": "/etc/nginx/celery-kit-flower.htpasswd", "hsts": False,
               "server_name": "10.77.0.11"}
    return render("nginx-flower.conf.j2", **{**context, **overrides})


def without_comments(conf: str) -> str:
    return "\n".join(line.split("#", 1)[0] for line in conf.splitlines())


def blocks(text: str, head: str) -> list[tuple[int, int]]:
    """(start, end) of every `head {...}` block at the top level of text."""
    out, i = [], 0
    while (m := re.compile(rf"(?m)^{head}\s*\{{").search(text, i)):
        depth, j = 0, m.end() - 1
        while True:
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
            if depth == 0:
                break
        out.append((m.start(), j))
        i = j
    return out


def top_level(conf: str) -> str:
    """The config outside every block (what nginx puts into http {})."""
    text, out, depth = without_comments(conf), [], 0
    for ch in text:
        depth += {"{": 1, "}": -1}.get(ch, 0)
        if depth == 0 and ch != "}":
            out.append(ch)
    return "".join(out)


def servers(conf: str) -> tuple[str, str]:
    """(https server, http server), comments removed."""
    text = without_comments(conf)
    found = [text[a:b] for a, b in blocks(text, "server")]
    assert len(found) == 2
    (https,) = [b for b in found if re.search(r"listen \S+ ssl;", b)]
    (http,) = [b for b in found if b is not https]
    return https, http


def server_level(block: str) -> str:
    """Directives of a server block itself, locations cut out."""
    inner, out, depth = block[block.index("{") + 1:block.rindex("}")], [], 0
    for ch in inner:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif depth == 0:
            out.append(ch)
    return "".join(out)


def directives(text: str, name: str) -> list[str]:
    return [m.strip() for m in re.findall(rf"(?m)^\s*{name}\s+([^;]*);", text)]


def test_tls_is_mozilla_intermediate_without_dhe():
    https = server_level(servers(site())[0])
    assert directives(https, "ssl_protocols") == ["TLSv1.2 TLSv1.3"]
    assert directives(https, "ssl_ciphers") == [MOZILLA_INTERMEDIATE_WITHOUT_DHE]
    for cipher in directives(https, "ssl_ciphers")[0].split(":"):
        assert re.fullmatch(r"ECDHE-(ECDSA|RSA)-(AES128-GCM-SHA256|AES256-GCM-SHA384|CHACHA20-POLY1305)",
                            cipher), cipher
    assert directives(https, "ssl_prefer_server_ciphers") == ["off"]
    assert directives(https, "ssl_session_tickets") == ["off"]
    assert directives(https, "ssl_session_timeout") == ["1d"]
    assert re.fullmatch(r"shared:\w+:\d+m", directives(https, "ssl_session_cache")[0])
    assert "ssl_dhparam" not in https          # no DHE suites, so no parameters to ship


def test_no_weak_tls_1_2_suites_anywhere():
    # Every ssl_* directive of the site, wherever it is.
    conf = "\n".join(re.findall(r"(?m)^\s*ssl_\w+\s+[^;]*;", without_comments(site()))).upper()
    assert "SSL_CIPHERS" in conf and "SSL_PROTOCOLS" in conf
    for weak in (r"CBC", r"SHA1", r"-SHA[;:\s]", r"CAMELLIA", r"ARIA", r"(?<!EC)DHE", r"EDH",
                 r"3DES", r"RC4", r"AES(128|256)-SHA(256|384)", r"TLSV1(\.1)?\s", r"\bHIGH\b",
                 r"DEFAULT", r"ALL"):
        assert not re.search(weak, conf), weak


def test_server_tokens_off_in_both_servers():
    for server in servers(site()):
        assert directives(server_level(server), "server_tokens") == ["off"]


@pytest.mark.parametrize("server_name, https_port_suffix, target", [
    ("10.77.0.11", "", "https://10.77.0.11$request_uri"),
    ("flower.example.com", "", "https://flower.example.com$request_uri"),
    ("flower.example.com", ":8443", "https://flower.example.com:8443$request_uri"),
    ("fd00::11", "", "https://[fd00::11]$request_uri"),
    ("fd00::11", ":8443", "https://[fd00::11]:8443$request_uri"),
])
def test_http_redirects_to_the_configured_name_never_the_clients_host(
        server_name, https_port_suffix, target):
    _, http = servers(site(server_name=server_name, https_port_suffix=https_port_suffix))
    assert directives(http, "return") == [f"301 {target}"]
    assert "$host" not in http and "$http_host" not in http and "$server_name" not in http


@pytest.mark.parametrize("bad", ["", "evil.example$request_uri", "a b", "x;return 200",
                                 "x{", "[fd00::11]", "é.example"])
def test_a_server_name_that_is_no_name_or_address_fails_the_rendering(bad):
    with pytest.raises(jinja2.UndefinedError):
        site(server_name=bad)


def test_requests_are_rate_limited_per_client_address_before_the_login():
    conf = site()
    zones = directives(top_level(conf), "limit_req_zone")
    assert len(zones) == 1
    m = re.fullmatch(r"\$binary_remote_addr zone=(celerykit_\w+):(\d+)m rate=(\d+)r/s", zones[0])
    assert m, zones[0]
    zone, rate = m.group(1), int(m.group(3))
    assert 1 <= rate <= 10
    https, http = servers(conf)
    # At server level: every location is limited, and limit_req (preaccess phase) runs before
    # auth_basic (access phase), so every password guess is counted.
    (limit,) = directives(server_level(https), "limit_req")
    m = re.fullmatch(rf"zone={zone} burst=(\d+)(?: delay=(\d+)| nodelay)?", limit)
    assert m and int(m.group(1)) <= 20, limit
    assert directives(server_level(https), "limit_req_status") == ["429"]
    for body in re.findall(r"location\s+[^{]*\{([^}]*)\}", https):
        assert "limit_req" not in body                     # no location replaces the limit
    # Zones share one namespace: the TLS session cache must not reuse the name.
    assert zone not in directives(https, "ssl_session_cache")[0].split(":")


def test_login_stays_at_server_level_and_http_never_asks_for_it():
    https, http = servers(site())
    top = server_level(https)
    assert directives(top, "auth_basic") == ['"Flower"']
    assert directives(top, "auth_basic_user_file") == ["/etc/nginx/celery-kit-flower.htpasswd"]
    assert "auth_basic off" not in https and "auth_basic" not in http
    # Unauthenticated answers could only come from `return` (rewrite phase, before the login)
    for name, body in re.findall(r"location\s+([^{]*)\{([^}]*)\}", https):
        if "return" in body:
            assert name.strip() == "@flower_home"


@pytest.mark.parametrize("prefix", ["flower", "ops/flower", ""])
def test_proxy_prefix_and_websocket_handling_stay(prefix):
    conf = site(prefix=prefix)
    https, _ = servers(conf)
    loc = re.search(rf"location /{re.escape(prefix + '/' if prefix else '')} \{{([^}}]*)\}}", https).group(1)
    assert "proxy_pass http://127.0.0.1:5555;" in loc
    for line in ["proxy_http_version 1.1;", "proxy_set_header Upgrade $http_upgrade;",
                 "proxy_set_header Connection $celerykit_flower_connection;",
                 "proxy_set_header Host $host;", "proxy_buffering off;",
                 "proxy_set_header X-Forwarded-Proto $scheme;"]:
        assert line in loc
    assert re.search(r"map \$http_upgrade \$celerykit_flower_connection \{\s*default upgrade;", conf)
    if prefix:
        assert re.search(rf"location @flower_home \{{\s*return 302 /{prefix}/;", https)
        assert re.search(rf"location = /{prefix} \{{\s*try_files \S+ @flower_home;", https)
    else:
        assert "@flower_home" not in https


def test_hsts_only_with_the_inventory_certificate():
    assert "Strict-Transport-Security" not in site(hsts=False)
    https, http = servers(site(hsts=True))
    assert 'add_header Strict-Transport-Security "max-age=31536000" always;' in server_level(https)
    assert "Strict-Transport-Security" not in http


