"""Flower stage: rendered files, htpasswd hashing, plans. Pure: no SSH, no lab."""
from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
import warnings
from pathlib import Path

import pytest

from deploy.context import Ctx
from deploy.facts import FileState
from deploy.inventory import load_inventory
from deploy.secrets import SecretStore
from deploy import htpasswd as HT
from deploy.stages import flower as FL

INVENTORY = Path(__file__).resolve().parent / "fixtures" / "inventory.yaml"


@pytest.fixture
def inv():
    return load_inventory(INVENTORY)


def make_ctx(inv, tmp_path) -> Ctx:
    ctx = Ctx(inv)
    ctx.__dict__["secrets"] = SecretStore(tmp_path / "s.yaml")
    return ctx


@pytest.fixture
def ctx(inv, tmp_path):
    return make_ctx(inv, tmp_path)


def with_flower(inv, **kw):
    return dataclasses.replace(inv, flower=dataclasses.replace(inv.flower, **kw))


def node1(ctx):
    return ctx.inv.host("node1")


def by_path(files):
    return {f.path: f for f in files}


def secret_values(ctx) -> list[str]:
    """Every secret the stage used (the store holds exactly those it generated)."""
    return list(ctx.secrets._load().values())


def crypt_or_skip():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import crypt
        except ImportError:
            pytest.skip("no crypt module (Python >= 3.13)")
    return crypt


# nginx site ---------------------------------------------------------------------------

def server_blocks(conf: str) -> list[str]:
    """Top-level `server { ... }` blocks of an nginx config, comments removed."""
    text = "\n".join(line.split("#", 1)[0] for line in conf.splitlines())
    blocks, i = [], 0
    while (m := re.compile(r"\bserver\s*\{").search(text, i)):
        depth, j = 0, m.end() - 1
        while True:
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
            if depth == 0:
                break
        blocks.append(text[m.start():j])
        i = j
    return blocks


def server_level(block: str) -> str:
    """A server block with every nested block (locations) cut out."""
    inner = block[block.index("{") + 1:block.rindex("}")]
    out, depth = [], 0
    for ch in inner:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif depth == 0:
            out.append(ch)
    return "".join(out)


def https_and_http(conf: str) -> tuple[str, str]:
    blocks = server_blocks(conf)
    assert len(blocks) == 2
    (https,) = [b for b in blocks if " ssl;" in b]
    (http,) = [b for b in blocks if b is not https]
    return https, http


def test_site_asks_for_a_login_at_server_level_so_every_path_needs_one(ctx):
    conf = FL.site_config(ctx.inv, node1(ctx))
    https, http = https_and_http(conf)
    top = server_level(https)
    assert re.search(r'^\s*auth_basic "[^"]+";', top, re.M)
    assert f"auth_basic_user_file {FL.HTPASSWD};" in top
    # No location may opt out: /metrics, /api and /healthcheck are inside the prefix location.
    assert "auth_basic off" not in conf
    assert "auth_basic" not in http          # the redirect never asks for a password over HTTP
    # Unauthenticated answers would come from `return` in a location (rewrite phase, before
    # the login check); in the HTTPS server only the named location after try_files has one.
    for loc in re.findall(r"location\s+([^{]*)\{([^}]*)\}", https):
        if "return" in loc[1]:
            assert loc[0].strip() == "@flower_home"


def test_site_proxies_the_prefix_keeping_it_with_websocket_headers(ctx):
    conf = FL.site_config(ctx.inv, node1(ctx))
    https, _ = https_and_http(conf)
    loc = re.search(r"location /flower/ \{([^}]*)\}", https).group(1)
    assert "proxy_pass http://127.0.0.1:5555;" in loc          # no URI: the prefix is kept
    assert "proxy_http_version 1.1;" in loc
    assert "proxy_set_header Upgrade $http_upgrade;" in loc
    assert "proxy_set_header Connection $celerykit_flower_connection;" in loc
    assert re.search(r"map \$http_upgrade \$celerykit_flower_connection \{\s*default upgrade;", conf)
    timeout = int(re.search(r"proxy_read_timeout (\d+)s;", loc).group(1))
    assert timeout >= 600
    # / and /flower go to /flower/ (after the login: try_files, then the named location)
    assert re.search(r"location = / \{\s*try_files \S+ @flower_home;", https)
    assert re.search(r"location = /flower \{\s*try_files \S+ @flower_home;", https)
    assert re.search(r"location @flower_home \{\s*return 302 /flower/;", https)


def test_site_https_with_the_kits_certificate_and_http_redirects(ctx):
    https, http = https_and_http(FL.site_config(ctx.inv, node1(ctx)))
    assert "listen 443 ssl;" in https
    assert f"ssl_certificate {FL.TLS_CERT};" in https and f"ssl_certificate_key {FL.TLS_KEY};" in https
    assert "listen 80;" in http
    assert "return 301 https://192.0.2.11$request_uri;" in http     # the configured name, never $host
    assert "Strict-Transport-Security" not in https      # not with a self-signed certificate


def test_site_on_other_ports_keeps_the_port_in_redirect_host_and_url(inv, tmp_path):
    ctx = make_ctx(with_flower(inv, http_port=8080, https_port=8443, port=5600), tmp_path)
    https, http = https_and_http(FL.site_config(ctx.inv, node1(ctx)))
    assert "listen 8080;" in http and "listen 8443 ssl;" in https
    assert "return 301 https://192.0.2.11:8443$request_uri;" in http
    assert "proxy_set_header Host $host:8443;" in https       # Flower checks Origin against Host
    assert "proxy_pass http://127.0.0.1:5600;" in https
    assert FL.flower_url(ctx.inv) == "https://192.0.2.11:8443/flower/"


def test_site_without_prefix_proxies_the_root(inv, tmp_path):
    ctx = make_ctx(with_flower(inv, url_prefix=""), tmp_path)
    https, _ = https_and_http(FL.site_config(ctx.inv, node1(ctx)))
    assert re.search(r"location / \{[^}]*proxy_pass http://127.0.0.1:5555;", https)
    assert "@flower_home" not in https
    unit = by_path(FL.wanted_files(ctx, node1(ctx)))[FL.UNIT_FILE].content.decode()
    assert "--url_prefix" not in unit
    assert FL.flower_url(ctx.inv) == "https://192.0.2.11/"


def test_site_with_a_nested_prefix(inv, tmp_path):
    ctx = make_ctx(with_flower(inv, url_prefix="ops/flower"), tmp_path)
    https, _ = https_and_http(FL.site_config(ctx.inv, node1(ctx)))
    assert "location /ops/flower/ {" in https and "return 302 /ops/flower/;" in https
    unit = by_path(FL.wanted_files(ctx, node1(ctx)))[FL.UNIT_FILE].content.decode()
    assert "--url_prefix=ops/flower " in unit


# htpasswd ------------------------------------------------------------------------------

def test_sha512_crypt_matches_crypt3():
    crypt = crypt_or_skip()
    for pw in ["", "a", "x" * 15, "y" * 16, "z" * 64, "p" * 65, "é ünïcode", "A1b2" * 50]:
        for salt in ["a", "saltsalt", "0123456789abcdef", "./AZaz09"]:
            ours = HT.sha512_crypt(pw, salt)
            assert ours == crypt.crypt(pw, f"$6${salt}$")
            assert HT.verify_sha512_crypt(pw, ours)
            assert not HT.verify_sha512_crypt(pw + "x", ours)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl")
def test_sha512_crypt_matches_openssl_passwd():
    out = subprocess.run(["openssl", "passwd", "-6", "-salt", "abcdefgh", "-stdin"],
                         input="s3cret\n", capture_output=True, text=True, check=True).stdout.strip()
    assert HT.sha512_crypt("s3cret", "abcdefgh") == out


def test_htpasswd_line_is_deterministic_salted_and_verifies():
    crypt = crypt_or_skip()
    line = HT.htpasswd_line("admin", "pw-one")
    assert line == HT.htpasswd_line("admin", "pw-one")
    user, hashed = line.split(":", 1)
    assert user == "admin" and hashed.startswith("$6$") and "pw-one" not in line
    assert crypt.crypt("pw-one", hashed) == hashed
    assert HT.verify_sha512_crypt("pw-one", hashed)
    salts = {HT.htpasswd_line(u, p, k).split("$")[2]
             for u, p, k in [("admin", "pw-one", ""), ("ops", "pw-one", ""), ("admin", "pw-two", ""),
                             ("admin", "pw-one", "key")]}
    assert len(salts) == 4 and all(len(s) == 16 for s in salts)


def test_htpasswd_file_is_stable_and_verifies_every_user(inv, tmp_path):
    crypt = crypt_or_skip()
    ctx = make_ctx(with_flower(inv, users=("admin", "ops")), tmp_path)
    f = by_path(FL.wanted_files(ctx, node1(ctx)))[FL.HTPASSWD]
    assert (f.owner, f.group, f.mode, f.secret) == ("root", "www-data", 0o640, True)
    text = f.content.decode()
    # A new Ctx over the same secrets file (the next deploy) renders the same bytes.
    again = by_path(FL.wanted_files(make_ctx(ctx.inv, tmp_path), node1(ctx)))[FL.HTPASSWD]
    assert again.content == f.content
    entries = dict(l.split(":", 1) for l in text.splitlines() if l and not l.startswith("#"))
    assert list(entries) == ["admin", "ops"]
    for user, hashed in entries.items():
        pw = ctx.secret(f"flower_{user}_password").reveal()
        assert crypt.crypt(pw, hashed) == hashed and pw not in text


# Flower's files ---------------------------------------------------------------------------

def test_env_file_is_secret_root_flower_0640_with_what_flower_needs(ctx):
    from flower.command import is_flower_envvar

    f = by_path(FL.wanted_files(ctx, node1(ctx)))[FL.ENV]
    assert (f.path, f.owner, f.group, f.mode, f.secret) == (
        "/etc/celery-kit/flower.env", "root", "flower", 0o640, True)
    env = dict(l.split("=", 1) for l in f.content.decode().splitlines() if l and not l.startswith("#"))
    assert {"CELERY_BROKER_URL", "CELERY_RESULT_BACKEND", "FLOWER_BROKER_API", "FLOWER_BASIC_AUTH"} <= set(env)
    assert "FLOWER_UNAUTHENTICATED_API" not in env
    for name in env:
        if name.startswith("FLOWER_"):
            assert is_flower_envvar(name), name         # a real Flower 2.2.0 option
    monitor_pw = ctx.secret("rabbitmq_monitoring_password").reveal()
    # The read-only monitoring user, over this host's own loopback (never the administrator).
    assert env["FLOWER_BROKER_API"] == f"'http://celery-kit-monitor:{monitor_pw}@127.0.0.1:15672/api/'"
    flower_pw = ctx.secret("flower_admin_password").reveal()
    assert env["FLOWER_BASIC_AUTH"] == f"'admin:{flower_pw}'"
    assert env["FLOWER_ENABLE_EVENTS"] == "'true'"


def test_flower_leaves_task_events_off_when_the_inventory_turns_them_off(inv, tmp_path):
    ctx = make_ctx(dataclasses.replace(inv, celery=dataclasses.replace(inv.celery, task_events=False)), tmp_path)
    env = FL.flower_env(ctx, node1(ctx))
    assert env["FLOWER_ENABLE_EVENTS"] == "false" and env["CELERY_TASK_EVENTS"] == "0"


def test_broker_api_uses_a_rabbitmq_host_when_flower_host_has_none(inv):
    hosts = tuple(dataclasses.replace(h, roles=frozenset({"redis", "flower"}), address="10.9.9.9")
                  if h.name == "node1" else h for h in inv.hosts)
    inv = dataclasses.replace(inv, hosts=hosts)
    url = FL.broker_api_url(inv, inv.host("node1"), "p@ss/word")
    assert url == "http://celery-kit-monitor:p%40ss%2Fword@192.0.2.12:15672/api/"   # node2: first rabbitmq host


def test_broker_api_on_a_rabbitmq_flower_host_is_its_own_node(inv):
    assert FL.broker_api_url(inv, inv.host("node1"), "pw") == "http://celery-kit-monitor:pw@127.0.0.1:15672/api/"


def test_unit_runs_flower_locally_hardened_without_secrets(ctx):
    files = FL.wanted_files(ctx, node1(ctx))
    unit = by_path(files)[FL.UNIT_FILE]
    text = unit.content.decode()
    assert (unit.owner, unit.mode, unit.secret) == ("root", 0o644, False) and unit.is_unit
    exec_start = re.search(r"^ExecStart=(.*?)(?<!\\)$", text, re.M | re.S).group(1)
    assert exec_start.startswith(f"/opt/celery-kit/current/venv/bin/celery -A {ctx.inv.celery.app} flower")
    for opt in ["--address=127.0.0.1", "--port=5555", "--url_prefix=flower", "--persistent=True",
                "--db=/var/lib/flower/flower.db", "--state_save_interval="]:
        assert opt in exec_start
    assert "broker_api" not in exec_start and "basic_auth" not in exec_start
    for line in ["User=flower", "Group=flower", "EnvironmentFile=/etc/celery-kit/flower.env",
                 "WorkingDirectory=/var/lib/flower", "Restart=always", "NoNewPrivileges=yes",
                 "ProtectSystem=strict", "ReadWritePaths=/var/lib/flower", "PrivateTmp=yes",
                 "ProtectHome=yes", "WantedBy=multi-user.target"]:
        assert re.search(rf"^{re.escape(line)}$", text, re.M), line


def test_no_secret_in_any_non_secret_file(inv, tmp_path):
    ctx = make_ctx(with_flower(inv, users=("admin", "ops")), tmp_path)
    files = FL.wanted_files(ctx, node1(ctx))
    values = secret_values(ctx)
    assert len(values) >= 6            # app, redis, admin, 2 flower users, salt key
    for f in files:
        if not f.secret:
            for v in values:
                assert v not in f.content.decode(), f.path
    secret_paths = {f.path for f in files if f.secret}
    assert secret_paths == {FL.ENV, FL.HTPASSWD}


def test_inventory_certificate_is_uploaded_key_secret_0600(inv, tmp_path):
    (tmp_path / "c.pem").write_text("CERT\n")
    (tmp_path / "k.pem").write_text("KEY\n")
    ctx = make_ctx(with_flower(inv, tls_cert=tmp_path / "c.pem", tls_key=tmp_path / "k.pem"), tmp_path)
    files = by_path(FL.wanted_files(ctx, node1(ctx)))
    assert files[FL.TLS_CERT].content == b"CERT\n" and files[FL.TLS_CERT].mode == 0o644
    key = files[FL.TLS_KEY]
    assert (key.content, key.owner, key.mode, key.secret) == (b"KEY\n", "root", 0o600, True)
    assert "Strict-Transport-Security" in files[FL.SITE].content.decode()
    # No self-signed certificate is generated then, even where none exists yet.
    plan = FL.nginx_plan(ctx, node1(ctx), FL.wanted_nginx_files(ctx, node1(ctx)),
                         fresh_facts())
    assert not any("self-signed" in ch.what for ch in plan)


def test_self_signed_certificate_names_host_and_address_and_keeps_key_private(ctx):
    host = node1(ctx)
    assert FL.subject_alt_name(host) == "DNS:node1,IP:192.0.2.11"
    named = dataclasses.replace(host, address="flower.example.com")
    assert FL.subject_alt_name(named) == "DNS:node1,DNS:flower.example.com"
    (cmd,) = FL.self_signed_change(host).commands
    script = cmd.argv[2]
    assert cmd.argv[-3:] == ("node1", "DNS:node1,IP:192.0.2.11", str(FL.SELF_SIGNED_DAYS))
    assert "umask 077" in script and f"chmod 0600 {FL.TLS_KEY}.ck-new" in script
    assert 'subjectAltName=$2' in script and '/CN=$1' in script


# Plans ------------------------------------------------------------------------------------

ACTIVE = {"ActiveState": "active", "UnitFileState": "enabled"}


def fresh_facts():
    return {"files": {}, "units": {}, "cert": False, "default_site": True, "nginx_ok": True}


def converged_facts(files):
    return {"files": {f.path: FileState(f.owner, f.group, f.mode, f.sha256) for f in files},
            "units": {FL.UNIT: dict(ACTIVE), FL.NGINX: dict(ACTIVE)},
            "cert": True, "default_site": False, "nginx_ok": True}


def full_plan(ctx, facts):
    from deploy.stage import StageEnv
    return FL.Flower().plan(ctx, node1(ctx), facts, StageEnv({}, None, {})).steps


def what(step) -> str:
    from deploy.steps import Await
    return f"await: {step.what}" if isinstance(step, Await) else step.what


def test_second_deploy_with_nothing_changed_is_an_empty_plan(ctx):
    facts = converged_facts(FL.wanted_files(ctx, node1(ctx)))
    assert full_plan(ctx, facts) == []
    # ... also for the next deploy's Ctx over the same secrets (same bytes, same hashes).
    again = make_ctx(ctx.inv, ctx.secrets.path.parent)
    assert full_plan(again, facts) == []


def test_first_deploy_plan_in_order(ctx):
    plan = full_plan(ctx, fresh_facts())
    whats = [what(ch) for ch in plan]
    assert whats == [
        f"file {FL.ENV}", f"file {FL.UNIT_FILE}", "systemd daemon-reload",
        "enable flower.service", "start flower.service", "await: Flower answers on its health check",
        f"self-signed certificate {FL.TLS_CERT} for node1",
        f"file {FL.SITE}", f"file {FL.HTPASSWD}",
        f"remove {FL.DEFAULT_SITE} (Debian's default site, also on :80)",
        "check nginx configuration (nginx -t)",
        "enable nginx.service", "start nginx.service"]
    assert plan[whats.index("check nginx configuration (nginx -t)")].commands[0].argv == ("nginx", "-t", "-q")


def test_no_secret_on_any_command_line(ctx):
    plan = full_plan(ctx, fresh_facts())
    values = secret_values(ctx)
    assert len(values) >= 4
    for ch in plan:
        for c in getattr(ch, "commands", ()):
            for v in values:
                assert v not in c.shell()


def test_switched_release_restarts_flower_only(ctx):
    facts = converged_facts(FL.wanted_files(ctx, node1(ctx)))
    facts["release_switched"] = True
    plan = full_plan(ctx, facts)
    assert [what(ch) for ch in plan] == ["restart flower.service", "await: Flower answers on its health check",
                                         "Flower restarted onto the new release: clear the marker"]
    assert plan[-1].commands[-1].argv == ("rm", "-f", FL.FLOWER_RESTART_PENDING)
    facts["release_switched"] = False
    assert full_plan(ctx, facts) == []


def test_changed_env_restarts_flower_without_touching_nginx(ctx):
    facts = converged_facts(FL.wanted_files(ctx, node1(ctx)))
    facts["files"][FL.ENV] = dataclasses.replace(facts["files"][FL.ENV], sha256="0" * 64)
    assert [what(ch) for ch in full_plan(ctx, facts)] == [f"file {FL.ENV}", "restart flower.service",
                                                          "await: Flower answers on its health check"]


def test_changed_unit_reloads_systemd_and_restarts(ctx):
    facts = converged_facts(FL.wanted_files(ctx, node1(ctx)))
    del facts["files"][FL.UNIT_FILE]
    assert [what(ch) for ch in full_plan(ctx, facts)] == [
        f"file {FL.UNIT_FILE}", "systemd daemon-reload", "restart flower.service",
        "await: Flower answers on its health check"]


def test_changed_site_is_checked_then_reloaded_not_restarted(ctx):
    facts = converged_facts(FL.wanted_files(ctx, node1(ctx)))
    del facts["files"][FL.SITE]
    plan = full_plan(ctx, facts)
    assert [ch.what for ch in plan] == [f"file {FL.SITE}", "check nginx configuration (nginx -t)",
                                        "reload nginx.service"]
    assert plan[-1].commands[0].argv == ("systemctl", "reload", "nginx.service")


def test_wrong_mode_on_htpasswd_is_fixed_and_reloaded(ctx):
    facts = converged_facts(FL.wanted_files(ctx, node1(ctx)))
    facts["files"][FL.HTPASSWD] = dataclasses.replace(facts["files"][FL.HTPASSWD], mode=0o644)
    plan = full_plan(ctx, facts)
    assert [ch.what for ch in plan] == [f"attributes of {FL.HTPASSWD}",
                                        "check nginx configuration (nginx -t)", "reload nginx.service"]
    assert plan[0].commands[1].argv == ("chmod", "0640", FL.HTPASSWD)


def test_a_config_nginx_rejects_is_checked_again_next_deploy(ctx):
    facts = converged_facts(FL.wanted_files(ctx, node1(ctx)))
    facts["nginx_ok"] = False
    assert [ch.what for ch in full_plan(ctx, facts)] == ["check nginx configuration (nginx -t)",
                                                         "reload nginx.service"]


def test_missing_certificate_is_generated_again_and_nginx_reloaded(ctx):
    facts = converged_facts(FL.wanted_files(ctx, node1(ctx)))
    facts["cert"] = False
    assert [ch.what for ch in full_plan(ctx, facts)] == [
        f"self-signed certificate {FL.TLS_CERT} for node1", "check nginx configuration (nginx -t)",
        "reload nginx.service"]


def test_facts_are_read_only_commands():
    assert FL.cert_fact().argv == ("test", "-s", FL.TLS_CERT, "-a", "-s", FL.TLS_KEY)
    assert FL.nginx_ok_fact().argv == ("nginx", "-t", "-q")
    assert FL.cert_fact().parse("", 0) is True and FL.cert_fact().parse("", 1) is False


def test_the_stage_runs_on_the_flower_host_only(inv):
    no_flower = dataclasses.replace(inv, hosts=tuple(
        dataclasses.replace(h, roles=h.roles - {"flower"}) for h in inv.hosts))
    assert FL.Flower().hosts(no_flower) == []
    assert "no host has role flower" in FL.dashboard_info(no_flower)
    assert [h.name for h in FL.Flower().hosts(inv)] == ["node1"]


# For people -------------------------------------------------------------------------------

def test_flower_url_and_dashboard_info_show_where_not_what(ctx):
    inv = ctx.inv
    assert FL.flower_url(inv) == "https://192.0.2.11/flower/"
    pw = ctx.secret("flower_admin_password").reveal()
    info = FL.dashboard_info(inv)
    assert "https://192.0.2.11/flower/" in info
    assert str(inv.state_dir / "secrets.yaml") in info
    assert "flower_admin_password" in info and "admin" in info
    assert pw not in info


def test_with_task_events_off_a_restarted_flower_turns_the_workers_events_off(inv, tmp_path):
    ctx = make_ctx(dataclasses.replace(inv, celery=dataclasses.replace(inv.celery, task_events=False)), tmp_path)
    files = FL.wanted_files(ctx, node1(ctx))
    plan = FL.flower_plan(ctx, node1(ctx), files, {"files": {}, "units": {}})
    (change,) = [c for c in plan if getattr(c, "what", "").startswith("workers stop sending task events")]
    assert change.commands[0].argv == (
        "runuser", "-u", "flower", "--", "sh", "-c",
        'set -a; . "$0"; set +a; exec "$1" -A "$2" control disable_events --timeout 2',
        "/etc/celery-kit/flower.env", "/opt/celery-kit/current/venv/bin/celery", inv.celery.app)
    on = FL.flower_plan(make_ctx(inv, tmp_path / "on"), node1(ctx), files, {"files": {}, "units": {}})
    assert not [c for c in on if "task events" in getattr(c, "what", "")]
