"""Flower, the Celery monitor, on the host with role flower, behind nginx.

Flower runs from the shipped release (the workers stage switches `current`) as its own
system user `flower`, bound to 127.0.0.1, with persistent state in /var/lib/flower. nginx
(Debian's nginx-light) serves it over HTTPS on the inventory's https_port, redirects plain
HTTP there, and asks for a login on every path.

Authentication happens twice, with the same logins. nginx checks Basic auth against an
htpasswd file of salted SHA-512-crypt hashes, for every path (Flower itself exempts /metrics
and /healthcheck). Flower 2.2.0 refuses its HTTP API (/api/...) with 401 unless it has an
authentication of its own (--basic_auth or --auth) or FLOWER_UNAUTHENTICATED_API is set
(flower/api/__init__.py, BaseApiHandler.prepare). Setting FLOWER_UNAUTHENTICATED_API would
open the API to anything that reaches 127.0.0.1:<port> on the host; instead Flower gets the
same user:password pairs as FLOWER_BASIC_AUTH in its environment file, and nginx passes the
client's Authorization header through unchanged, so a request nginx let in is also accepted
by Flower, and the port on localhost is not an open door.

Only when something changed does the plan contain anything: a second deploy with nothing
changed is an empty plan (no upload, no reload, no restart). The htpasswd file is
reproducible (salts derived with HMAC, see htpasswd_line), and the self-signed certificate
is generated on the host only when none exists yet.
"""
from __future__ import annotations

import ipaddress
from urllib.parse import quote

from .. import commands as C
from .. import facts as F
from .. import rabbitmq_model as M
from ..celery_env import broker_start, celery_env, env_file, url_host
from ..errors import DeployFailed
from ..files import ManagedFile, from_template, managed, render
from ..htpasswd import htpasswd_line
from ..ops import file_changes, reload_if_units_changed, service_changes
from ..stage import Stage, StageEnv
from ..steps import Await, Change, Plan
from .release import BASE
from .workers import FLOWER_RESTART_PENDING, queue_mode

UNIT = "flower.service"
UNIT_FILE = f"/etc/systemd/system/{UNIT}"
ENV = "/etc/celery-kit/flower.env"
STATE_DIR = "/var/lib/flower"
DB = f"{STATE_DIR}/flower.db"
STATE_SAVE_INTERVAL_MS = 60_000      # also saved on a clean stop; this bounds a crash's loss

NGINX = "nginx.service"
SITE = "/etc/nginx/sites-enabled/celery-kit-flower.conf"
DEFAULT_SITE = "/etc/nginx/sites-enabled/default"     # Debian's, also listens on :80
HTPASSWD = "/etc/nginx/celery-kit-flower.htpasswd"
TLS_DIR = "/etc/celery-kit/tls"
TLS_CERT = f"{TLS_DIR}/flower.crt"
TLS_KEY = f"{TLS_DIR}/flower.key"
SELF_SIGNED_DAYS = 3650

SALT_KEY_SECRET = "flower_htpasswd_salt_key"


def password_secret(user: str) -> str:
    """Name of a Flower user's password in the secrets file."""
    return f"flower_{user}_password"


def htpasswd_file(ctx) -> str:
    # A separate salt key: a salt keyed with the password alone would let anyone holding the
    # file test password guesses with one HMAC instead of 5000 SHA-512 rounds.
    key = ctx.secret(SALT_KEY_SECRET).reveal()
    lines = ["# Managed by celery-kit: Flower logins (passwords in the kit's secrets file)."]
    lines += [htpasswd_line(u, ctx.secret(password_secret(u)).reveal(), key) for u in ctx.inv.flower.users]
    return "\n".join(lines) + "\n"


# Flower ----------------------------------------------------------------------------------

def broker_api_url(inv, host, password: str) -> str:
    """RabbitMQ's management API, for queue lengths, as the read-only monitoring user: the
    flower host's own node over loopback when it runs RabbitMQ (nothing crosses the network),
    else the first RabbitMQ host."""
    nodes = inv.with_role("rabbitmq")
    address = "127.0.0.1" if host.has("rabbitmq") else url_host(nodes[0].address)
    user = M.monitoring_user(inv)
    return (f"http://{quote(user, safe='')}:{quote(password, safe='')}@"
            f"{address}:{inv.rabbitmq.management_port}/api/")


def flower_env(ctx, host, mode: str = "mirrored") -> dict[str, str]:
    """The secret part of Flower's settings, as environment variables."""
    inv = ctx.inv
    env = celery_env(inv, ctx.secret("rabbitmq_app_password").reveal(), ctx.secret("redis_password").reveal(),
                     mode, broker_start(inv, host))
    logins = []
    for user in inv.flower.users:
        pw = ctx.secret(password_secret(user)).reveal()
        # Flower splits FLOWER_BASIC_AUTH on ","; the env file quotes values with "'".
        if any(ch in pw for ch in ",'\n\\"):
            raise DeployFailed(f"{password_secret(user)} must not contain , ' \\ or a line break")
        logins.append(f"{user}:{pw}")
    env["FLOWER_BROKER_API"] = broker_api_url(inv, host, ctx.secret("rabbitmq_monitoring_password").reveal())
    env["FLOWER_BASIC_AUTH"] = ",".join(logins)
    # Flower turns task events on in every worker every few seconds (enable_events control
    # command) unless told not to: celery.task_events: false must reach Flower too.
    env["FLOWER_ENABLE_EVENTS"] = "true" if inv.celery.task_events else "false"
    return env


def wanted_flower_files(ctx, host, mode: str = "mirrored") -> list[ManagedFile]:
    inv = ctx.inv
    text = env_file(flower_env(ctx, host, mode), "Managed by celery-kit. Contains secrets: mode 0640, root:flower.")
    unit = {"app": inv.celery.app, "host": host, "env_file": ENV, "state_dir": STATE_DIR,
            "release_dir": BASE, "port": inv.flower.port, "prefix": inv.flower.url_prefix,
            "db": DB, "state_save_interval_ms": STATE_SAVE_INTERVAL_MS}
    return [managed(ENV, text, owner="root", group="flower", mode=0o640, secret=True),
            from_template(UNIT_FILE, "flower.service.j2", unit)]


# nginx -----------------------------------------------------------------------------------

def _port_suffix(port: int) -> str:
    return "" if port == 443 else f":{port}"


def site_config(inv, host) -> str:
    f = inv.flower
    return render("nginx-flower.conf.j2", **{
        "host": host, "port": f.port, "prefix": f.url_prefix, "http_port": f.http_port,
        "https_port": f.https_port, "https_port_suffix": _port_suffix(f.https_port),
        "tls_cert": TLS_CERT, "tls_key": TLS_KEY, "htpasswd": HTPASSWD,
        "hsts": f.tls_cert is not None, "server_name": server_name(inv, host)})


def server_name(inv, host) -> str:
    """The name users type (flower.server_name), else the flower host's address: plain HTTP
    redirects there, never to whatever Host header a client sent."""
    return inv.flower.server_name or host.address


def wanted_nginx_files(ctx, host) -> list[ManagedFile]:
    inv, f = ctx.inv, ctx.inv.flower
    files = [managed(SITE, site_config(inv, host)),
             managed(HTPASSWD, htpasswd_file(ctx), owner="root", group="www-data", mode=0o640,
                     secret=True)]
    if f.tls_cert is not None:
        # The inventory's certificate, uploaded. Without one, the host keeps (or generates)
        # its own self-signed pair at the same paths, which are then not managed files.
        files += [managed(TLS_CERT, f.tls_cert.read_bytes(), mode=0o644),
                  managed(TLS_KEY, f.tls_key.read_bytes(), mode=0o600, secret=True)]
    return files


def wanted_files(ctx, host, mode: str = "mirrored") -> list[ManagedFile]:
    return wanted_flower_files(ctx, host, mode) + wanted_nginx_files(ctx, host)


def subject_alt_name(host) -> str:
    names = [f"DNS:{host.name}"]
    try:
        names.append(f"IP:{ipaddress.ip_address(host.address)}")
    except ValueError:
        if host.address.lower().rstrip(".") != host.name.lower():
            names.append(f"DNS:{host.address.rstrip('.')}")
    return ",".join(names)


# New key and certificate next to the targets, then renamed into place, key first: the
# certificate's presence is what later deploys check.
_SELF_SIGNED = f"""set -e
install -d -o root -g root -m 0755 {TLS_DIR}
umask 077
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -sha256 -nodes \\
  -days "$3" -subj "/CN=$1" -addext "subjectAltName=$2" \\
  -keyout {TLS_KEY}.ck-new -out {TLS_CERT}.ck-new
chmod 0600 {TLS_KEY}.ck-new
chmod 0644 {TLS_CERT}.ck-new
mv -f {TLS_KEY}.ck-new {TLS_KEY}
mv -f {TLS_CERT}.ck-new {TLS_CERT}
"""


def self_signed_change(host) -> Change:
    return Change(f"self-signed certificate {TLS_CERT} for {host.name}",
                  [C.sh(_SELF_SIGNED, host.name, subject_alt_name(host), str(SELF_SIGNED_DAYS))])


def cert_fact() -> F.Fact:
    return F.exit_ok("cert", "test", "-s", TLS_CERT, "-a", "-s", TLS_KEY)


def default_site_fact() -> F.Fact:
    return F.exit_ok("default_site", "test", "-e", DEFAULT_SITE, "-o", "-L", DEFAULT_SITE)


def nginx_ok_fact() -> F.Fact:
    return F.exit_ok("nginx_ok", "nginx", "-t", "-q")


def nginx_plan(ctx, host, files: list[ManagedFile], facts: dict) -> list[Change]:
    """Pure: certificate, site files, then `nginx -t` and a reload (or a start).

    A config nginx rejects fails the deploy at `nginx -t` with nginx's message; the running
    nginx keeps its previous config (no reload happens). The next deploy checks again
    (fact nginx_ok), so a broken config cannot go unnoticed behind an otherwise empty plan."""
    plan: list[Change] = []
    if ctx.inv.flower.tls_cert is None and not facts["cert"]:
        plan.append(self_signed_change(host))
    plan += file_changes(files, facts["files"])
    if facts["default_site"]:
        plan.append(Change(f"remove {DEFAULT_SITE} (Debian's default site, also on :80)",
                           [C.cmd("rm", "-f", DEFAULT_SITE)]))
    state = facts["units"].get(NGINX) or {}
    active = state.get("ActiveState") == "active"
    if plan or not facts["nginx_ok"]:
        plan.append(Change("check nginx configuration (nginx -t)", [C.cmd("nginx", "-t", "-q")]))
        if active:
            plan.append(Change(f"reload {NGINX}", [C.systemctl("reload", NGINX)]))
    plan += service_changes(NGINX, state, restart=False)
    return plan


def flower_plan(ctx, host, files: list[ManagedFile], facts: dict) -> list:
    """Pure: env file and unit, daemon-reload, and flower.service enabled and running;
    restarted when its files changed or its host's release was switched (a marker file the
    workers stage leaves, so a deploy that failed in between still restarts it next time),
    then awaited until its health check answers."""
    plan = file_changes(files, facts["files"])
    plan += reload_if_units_changed(plan)
    restart = bool(plan) or facts.get("release_switched", False)
    service = service_changes(UNIT, facts["units"].get(UNIT), restart=restart)
    if any(c.commands[0].argv[1] in ("start", "restart") for c in service):
        service.append(Await("Flower answers on its health check", healthcheck_fact(ctx.inv),
                             bool, 90, "Flower did not answer on 127.0.0.1 after its (re)start; see "
                             f"`journalctl -u {UNIT}` on {host.name}", interval=0.2))
        if not ctx.inv.celery.task_events:
            service.append(Change("workers stop sending task events (a Flower that had them on is gone)",
                                  [disable_events_cmd(ctx.inv)]))
        if facts.get("release_switched"):
            service.append(Change("Flower restarted onto the new release: clear the marker",
                                  [C.cmd("rm", "-f", FLOWER_RESTART_PENDING)]))
    return plan + service


def disable_events_cmd(inv) -> C.Cmd:
    """Flower turns task events on in every worker (enable_events) until it is told not to; a
    worker keeps them on until it restarts. When the inventory turns them off, the restarted
    Flower no longer does, and this turns off what the previous Flower turned on. As the
    flower user, with Flower's settings (from its environment file, never the command line)."""
    script = 'set -a; . "$0"; set +a; exec "$1" -A "$2" control disable_events --timeout 2'
    return C.cmd("runuser", "-u", "flower", "--", "sh", "-c", script, ENV,
                 f"{BASE}/current/venv/bin/celery", inv.celery.app)


# Flower's /healthcheck (exempt from its own auth) on localhost, from the host itself.
_HEALTH = ("import sys, urllib.request\ntry:\n    urllib.request.urlopen(sys.argv[1], timeout=2).read()\n"
           "except Exception:\n    sys.exit(1)\n")


def healthcheck_fact(inv) -> F.Fact:
    prefix = f"/{inv.flower.url_prefix}" if inv.flower.url_prefix else ""
    return F.exit_ok("flower_health", "python3", "-I", "-S", "-c", _HEALTH,
                     f"http://127.0.0.1:{inv.flower.port}{prefix}/healthcheck")


class Flower(Stage):
    name = "flower"

    def hosts(self, inv) -> list:
        return list(inv.with_role("flower"))

    def facts(self, ctx, host) -> list:
        paths = [f.path for f in wanted_files(ctx, host)]
        return [F.files(paths), F.units([UNIT, NGINX]), cert_fact(), default_site_fact(), nginx_ok_fact(),
                F.exit_ok("release_switched", "test", "-e", FLOWER_RESTART_PENDING)]

    def plan(self, ctx, host, facts: dict, env: StageEnv) -> Plan:
        mode = queue_mode(ctx, env)
        steps = flower_plan(ctx, host, wanted_flower_files(ctx, host, mode), facts)
        steps += nginx_plan(ctx, host, wanted_nginx_files(ctx, host), facts)
        return Plan(steps)


# For people ------------------------------------------------------------------------------

def flower_url(inv) -> str:
    """https://<address>[:port]/<prefix>/ of the flower host."""
    hosts = inv.with_role("flower")
    if not hosts:
        raise LookupError(f"no host has role flower in {inv.path}")
    f = inv.flower
    path = f"/{f.url_prefix}/" if f.url_prefix else "/"
    return f"https://{url_host(server_name(inv, hosts[0]))}{_port_suffix(f.https_port)}{path}"


def dashboard_info(inv) -> str:
    """Where Flower is and where its logins are kept; never a password itself."""
    if not inv.with_role("flower"):
        return "Flower: no host has role flower in the inventory."
    f = inv.flower
    secrets = inv.state_dir / "secrets.yaml"
    keys = [password_secret(u) for u in f.users]
    cert = (f"certificate {f.tls_cert} (from the inventory)" if f.tls_cert is not None else
            f"self-signed certificate made on {inv.with_role('flower')[0].name} "
            f"({TLS_CERT}): expect a browser warning")
    lines = [f"Flower: {flower_url(inv)}",
             f"  users: {', '.join(f.users)}",
             f"  passwords: in {secrets}, keys {', '.join(keys)}",
             "    (an environment variable CELERYKIT_SECRET_<KEY IN UPPER CASE> overrides a key)",
             f"    e.g. grep '^{keys[0]}:' {secrets}",
             f"  HTTPS with {cert}"]
    return "\n".join(lines)
