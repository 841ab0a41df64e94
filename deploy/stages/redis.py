"""Redis as the Celery result backend: bound to its inventory address and localhost,
password required, dangerous commands disabled, AOF persistence, Debian's unit."""
from __future__ import annotations

from .. import facts as F
from ..context import Ctx
from ..engine import Engine, apply_plan
from ..files import from_template, managed
from ..ops import file_changes, service_changes

CONF = "/etc/redis/redis.conf"
AUTH = "/etc/redis/celery-kit-auth.conf"
UNIT = "redis-server.service"
DANGEROUS = ("FLUSHALL", "FLUSHDB", "CONFIG", "DEBUG", "MODULE", "SHUTDOWN")


def wanted_files(ctx: Ctx, host) -> list:
    password = ctx.secret("redis_password").reveal()
    return [
        from_template(CONF, "redis.conf.j2", {"host": host, "redis": ctx.inv.redis,
                                              "dangerous_commands": DANGEROUS, "auth_file": AUTH},
                      owner="redis", group="redis", mode=0o640),
        managed(AUTH, f'requirepass "{password}"\n', owner="redis", group="redis", mode=0o640,
                secret=True),
    ]


def run(ctx: Ctx, engine: Engine) -> None:
    def one(s, report):
        files = wanted_files(ctx, s.host)
        facts = s.gather([F.files([f.path for f in files]), F.units([UNIT])])
        plan = file_changes(files, facts["files"])
        plan += service_changes(UNIT, facts["units"].get(UNIT), restart=bool(plan))
        apply_plan(s, plan, report, "redis")

    engine.stage("redis", [h.name for h in ctx.inv.with_role("redis")], one)
